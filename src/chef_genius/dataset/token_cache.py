"""The token cache: a split's training targets, tokenized once and memory-mapped by every run.

A split's canonical targets (`recipe.serialize`, encoded by the model family's `encode_targets`) are
tokenized in parallel (a process pool over chunks of rows, each worker mapping the Arrow file
itself) into ``ids.bin`` (flat little-endian int32) and ``offsets.npy`` (int64, rows + 1), with
``meta.json`` saying what they were built from. Training maps them read-only: 4 bytes a token
on disk, nothing in memory but the pages in use, one copy for all ranks and runs.

Where: ``DATA/token-cache/<key>/`` when chef-genius made the dataset folder (its marker is there)
and it is writable, else ``$CHEF_GENIUS_CACHE/token-cache/<key>/`` (``~/.cache/chef-genius``).
The key is a hash of everything the ids depend on: the tokenizer (its full definition, special
tokens and chat template), `encoding.ENCODING_VERSION`, ``max_target_tokens``, the model family,
and the split file (name, size, modification time, and a hash of its first and last MiB).
Anything else gives another folder; deleting ``token-cache/`` is always safe.

A build writes into ``.partial-<key>-<host>-<pid>/`` beside its place and renames it into place
when complete, so an interrupted build is never read (it is removed by a later build on the same
host once its process is gone). Under several ranks, rank 0 builds and the others wait at a
barrier, then map it (or build it themselves when their disk does not see rank 0's).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from chef_genius.dataset.collate import flatten
from chef_genius.dataset.table import RecipeTable, load_split
from chef_genius.encoding import ENCODING_VERSION
from chef_genius.errors import UserError
from chef_genius.families import ModelFamily

CACHE_FORMAT = 1
FOLDER = "token-cache"
PARTIAL = ".partial-"
CHUNK_ROWS = 10_000  # rows per task of the pool
PARALLEL_MIN_ROWS = 20_000  # below this, starting workers costs more than it saves
SAMPLE_BYTES = 2**20


@dataclass
class TokenCache:
    """A built cache, mapped: ``target(row)`` is a view, ``ids`` the whole store."""

    folder: Path
    ids: np.ndarray
    offsets: np.ndarray
    built: bool  # built by this process (False: reused)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def target(self, row: int) -> np.ndarray:
        return self.ids[self.offsets[row]:self.offsets[row + 1]]

    def starts_and_lengths(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Where each of ``rows``' targets starts in ``ids``, and its length."""
        starts = np.asarray(self.offsets[rows], dtype=np.int64)
        return starts, np.asarray(self.offsets[rows + 1], dtype=np.int64) - starts


def tokenizer_digest(tokenizer) -> str:
    """A hash of what decides a tokenizer's ids: its definition (for fast tokenizers the full
    ``tokenizer.json`` less per-call truncation and padding settings, else the vocabulary),
    special tokens and chat template."""
    digest = hashlib.sha256(type(tokenizer).__name__.encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        definition = json.loads(backend.to_str())
        definition.pop("truncation", None)
        definition.pop("padding", None)
    else:
        definition = sorted(tokenizer.get_vocab().items())
    digest.update(json.dumps(definition, sort_keys=True).encode())
    special = {"special": getattr(tokenizer, "all_special_ids", None), "eos": tokenizer.eos_token_id,
               "bos": getattr(tokenizer, "bos_token_id", None), "template": getattr(tokenizer, "chat_template", None),
               "added": {str(k): str(v) for k, v in (getattr(tokenizer, "added_tokens_decoder", {}) or {}).items()}}
    digest.update(json.dumps(special, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def file_identity(path: Path) -> dict:
    """Name, size, modification time and a hash of the first and last MiB of a data file."""
    stat = path.stat()
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        digest.update(handle.read(SAMPLE_BYTES))
        handle.seek(max(stat.st_size - SAMPLE_BYTES, 0))
        digest.update(handle.read(SAMPLE_BYTES))
    return {"name": path.name, "size": stat.st_size, "modified_ns": stat.st_mtime_ns, "sample": digest.hexdigest()}


def cache_inputs(tokenizer, split_file: Path, max_target: int, family: ModelFamily) -> dict:
    """What a cache's ids depend on (its key is a hash of this; the family as its ``cache_tag``,
    under "causal" as caches were keyed before families, so that they are reused)."""
    return {"format": CACHE_FORMAT, "encoding": ENCODING_VERSION, "tokenizer": tokenizer_digest(tokenizer),
            "max_target_tokens": max_target, "causal": family.cache_tag, "data": file_identity(split_file)}


def cache_key(inputs: dict) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:20]


def cache_root(data_folder: Path) -> Path:
    """``DATA/token-cache`` when chef-genius made DATA and may write there, else the user cache."""
    from chef_genius.model.loading import cache_dir
    from chef_genius.prepare import MARKER  # `prepare`'s marker: chef-genius made the folder

    data_folder = Path(data_folder)
    own = data_folder / FOLDER
    if ((data_folder / MARKER).is_file() and os.access(data_folder, os.W_OK | os.X_OK)
            and (own.is_dir() or not own.exists())):
        return own
    return cache_dir() / FOLDER


def shared_cache(ranks, data_folder: Path, split: str, tokenizer, max_target: int, family: ModelFamily,
                 progress: bool = True, workers: int | None = None) -> TokenCache:
    """The split's token cache, built by rank 0 if missing (the other ranks wait), then mapped."""
    split_file = Path(data_folder) / f"{split}.arrow"
    inputs = cache_inputs(tokenizer, split_file, max_target, family)
    folder = cache_root(data_folder) / cache_key(inputs)
    cache = None
    if ranks.is_main:
        cache = open_or_build(folder, inputs, split_file, tokenizer, max_target, family, progress, workers)
    ranks.barrier()
    return cache or open_or_build(folder, inputs, split_file, tokenizer, max_target, family, False, workers)


def open_or_build(folder: Path, inputs: dict, split_file: Path, tokenizer, max_target: int, family: ModelFamily,
                  progress: bool = True, workers: int | None = None) -> TokenCache:
    """Map the cache in ``folder``, building it first when it is not there."""
    if (folder / "meta.json").is_file():
        return open_cache(folder)
    build(folder, inputs, split_file, tokenizer, max_target, family, progress, workers)
    cache = open_cache(folder)
    cache.built = True
    return cache


def open_cache(folder: Path) -> TokenCache:
    """Map a complete cache read-only.

    Raises:
        UserError: its files disagree with its meta.json (damaged: delete the folder).
    """
    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    offsets = np.load(folder / "offsets.npy", mmap_mode="r")
    tokens, path = meta["tokens"], folder / "ids.bin"
    if len(offsets) != meta["rows"] + 1 or int(offsets[-1]) != tokens or path.stat().st_size != 4 * tokens:
        raise UserError(f"{folder}: damaged token cache (its files disagree with meta.json); delete that folder "
                        "and it is rebuilt")
    ids = np.memmap(path, dtype="<i4", mode="r", shape=(tokens,)) if tokens else np.zeros(0, dtype=np.int32)
    return TokenCache(folder, ids, offsets, built=False)


def build(folder: Path, inputs: dict, split_file: Path, tokenizer, max_target: int, family: ModelFamily,
          progress: bool = True, workers: int | None = None) -> None:
    """Tokenize every row's target into ``folder`` (through a partial folder renamed at the end)."""
    started = time.perf_counter()
    folder.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(folder)
    partial = folder.with_name(f"{PARTIAL}{folder.name}-{socket.gethostname()}-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    try:
        rows, lengths = _write_ids(partial / "ids.bin", split_file, tokenizer, max_target, family, progress, workers)
        offsets = np.zeros(rows + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        np.save(partial / "offsets.npy", offsets)
        meta = {"rows": rows, "tokens": int(offsets[-1]), "dtype": "<i4", "inputs": inputs,
                "split_file": str(split_file.resolve()), "seconds": round(time.perf_counter() - started, 2)}
        with open(partial / "meta.json", "w", encoding="utf-8") as handle:  # last: says the rest is complete
            json.dump(meta, handle, indent=2)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.rename(partial, folder)
        except OSError:
            if not (folder / "meta.json").is_file():
                raise
            shutil.rmtree(partial, ignore_errors=True)  # another process built the same cache first
    except OSError as error:
        shutil.rmtree(partial, ignore_errors=True)
        raise UserError(f"cannot write the token cache in {folder.parent}: {error.strerror or error}") from None
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def _write_ids(path: Path, split_file: Path, tokenizer, max_target: int, family: ModelFamily, progress: bool,
               workers: int | None) -> tuple[int, np.ndarray]:
    rows = load_split(split_file.parent, split_file.stem).table.num_rows
    tasks = [(start, min(start + CHUNK_ROWS, rows)) for start in range(0, rows, CHUNK_ROWS)]
    workers = available_cores() if workers is None else workers
    workers = min(workers, len(tasks)) if rows >= PARALLEL_MIN_ROWS else 0
    bar = tqdm(total=rows, desc=f"token cache ({split_file.stem})", unit=" recipes", dynamic_ncols=True,
               disable=not (progress and sys.stderr.isatty()))
    lengths = []
    with open(path, "wb") as handle:
        for chunk_lengths, ids in _encoded_chunks(tasks, split_file, tokenizer, max_target, family, workers):
            ids.astype("<i4", copy=False).tofile(handle)
            lengths.append(chunk_lengths)
            bar.update(len(chunk_lengths))
        handle.flush()
        os.fsync(handle.fileno())
    bar.close()
    return rows, np.concatenate(lengths) if lengths else np.zeros(0, dtype=np.int64)


def _encoded_chunks(tasks, split_file, tokenizer, max_target, family, workers):
    """(lengths, flat ids) per task, in order; in ``workers`` processes when above one."""
    if workers <= 1:
        _start_worker(split_file, tokenizer, max_target, family)
        yield from map(_encode_chunk, tasks)
        return
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    # Workers never use the tokenizers library's own threads (a fork after they ran warns).
    configured = "TOKENIZERS_PARALLELISM" in os.environ
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        with multiprocessing.get_context(method).Pool(workers, _start_worker,
                                                      (split_file, tokenizer, max_target, family)) as pool:
            yield from pool.imap(_encode_chunk, tasks)
    finally:
        if not configured:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)


def available_cores() -> int:
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity else os.cpu_count() or 1


_WORKER: dict = {}


def _start_worker(split_file: Path, tokenizer, max_target: int, family: ModelFamily) -> None:
    table = load_split(split_file.parent, split_file.stem)
    _WORKER.update(table=table, tokenizer=tokenizer, max_target=max_target, family=family)


def _encode_chunk(task: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    table: RecipeTable = _WORKER["table"]
    encoded = _WORKER["family"].encode_targets(_WORKER["tokenizer"], table.targets(*task), _WORKER["max_target"])
    ids, offsets = flatten(encoded)
    return np.diff(offsets), ids


def _remove_abandoned(folder: Path) -> None:
    """Partial builds of this key left by processes of this host that are gone (killed builds)."""
    host = socket.gethostname()
    for partial in folder.parent.glob(f"{PARTIAL}{folder.name}-{host}-*"):
        pid = partial.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(partial, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
