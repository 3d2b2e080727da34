"""Checkpoints: the full training state, written atomically.

A checkpoint folder ``checkpoints/step-00000040/`` holds

    adapter_model.safetensors + adapter_config.json   (LoRA)  or  model.safetensors (full)
    optimizer.pt        optimizer state (tensors and numbers only: loads with weights_only=True)
    rng-rank{r}.safetensors   torch CPU / CUDA / gradient-noise generator states, per rank
    trainer_state.json  step, epoch, batches done in the epoch, best val_loss, whether early
                        stopping ended the run, Python and NumPy RNG states, the resolved config
                        and the run's fingerprint (`chef_genius.checkpoints.fingerprint`)
    tokenizer files     so `generate`, `evaluate` and `merge` can load the checkpoint alone
    manifest.json       written last: every other file's name, size and sha256

It is written under ``checkpoints/.tmp-*`` and renamed into place, so a crash mid-write leaves
only a temporary folder, which is ignored and removed on the next save. A folder named
``step-*`` can still be damaged later (a truncated copy, a bad disk): `checkpoint_problem`
checks it against its manifest before it is resumed from or loaded.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

PREFIX = "step-"
TMP_PREFIX = ".tmp-"
ASIDE_PREFIX = f"{TMP_PREFIX}old-"  # a checkpoint moved aside while the same step is written again
MANIFEST = "manifest.json"
# What only training needs; the rest of a checkpoint (weights, configs, tokenizer) is a model folder.
TRAINING_FILES = ("optimizer.pt", "trainer_state.json", MANIFEST)


@dataclass
class TrainerState:
    """Where training stands; saved with every checkpoint."""

    step: int = 0
    epoch: int = 0
    batches_done: int = 0  # micro-batches of this epoch already trained (this rank)
    best_val_loss: float | None = None
    best_step: int | None = None
    last_eval_step: int | None = None
    evals_without_improvement: int = 0
    bad_steps_in_a_row: int = 0
    skipped_steps: int = 0
    stopped_early: bool = False  # early stopping ended the run: a resume does not train on
    python_rng: list = field(default_factory=list)
    numpy_rng: list = field(default_factory=list)
    config: dict = field(default_factory=dict)
    fingerprint: dict = field(default_factory=dict)  # what defines the run (`fingerprint.run_fingerprint`)


def _fsync_tree(folder: Path) -> None:
    for path in folder.iterdir():
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(folder: Path) -> None:
    """``manifest.json``: name, size and sha256 of every file of ``folder`` (written last)."""
    files = {path.name: {"size": path.stat().st_size, "sha256": _sha256(path)}
             for path in sorted(folder.iterdir()) if path.is_file() and path.name != MANIFEST}
    (folder / MANIFEST).write_text(json.dumps({"files": files}, indent=1) + "\n", encoding="utf-8")


def checkpoint_problem(folder: Path) -> str | None:
    """Why the checkpoint ``folder`` cannot be used (no manifest, a file missing, of another size
    or checksum), or None when it is complete. Sizes are checked before any file is hashed."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return f"no {MANIFEST}: not completely written, or by a chef-genius before manifests"
    except (OSError, ValueError):
        return f"{MANIFEST} is unreadable"
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or "trainer_state.json" not in files:
        return f"{MANIFEST} lists no checkpoint files"
    entries = []
    for name, entry in files.items():
        if name != Path(name).name or not isinstance(entry, dict):
            return f"{MANIFEST} has a bad entry"
        path = folder / name
        try:
            size = path.stat().st_size
        except OSError:
            return f"{name} is missing"
        if size != entry.get("size"):
            return f"{name} has {size:,} bytes, the manifest says {entry.get('size'):,}"
        entries.append((name, path, entry))
    for name, path, entry in entries:
        try:
            if _sha256(path) != entry.get("sha256"):
                return f"{name} does not match its sha256"
        except OSError as error:
            return f"{name} cannot be read ({error.strerror})"
    return None


def save_checkpoint(folder: Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    state: TrainerState, rng_by_rank: dict[int, dict[str, torch.Tensor]],
                    gathered: tuple[dict, dict] | None = None, tokenizer=None) -> Path:
    """Write a checkpoint atomically and return its folder. ``gathered``: the full model and
    optimizer states of a sharded run (`sharding.full_model_state` / `full_optimizer_state`);
    ``tokenizer``: saved beside the weights, so the checkpoint loads as a model folder.

    Raises:
        OSError: the write failed (a full disk, say); the previous checkpoints are untouched.
    """
    folder.mkdir(parents=True, exist_ok=True)
    _recover_set_aside(folder)
    for stale in folder.glob(f"{TMP_PREFIX}*"):
        shutil.rmtree(stale, ignore_errors=True)
    final = folder / f"{PREFIX}{step:08d}"
    tmp = folder / f"{TMP_PREFIX}{PREFIX}{step:08d}"
    try:
        tmp.mkdir()
        save_weights(model, tmp, gathered[0] if gathered else None)
        torch.save(gathered[1] if gathered else optimizer.state_dict(), tmp / "optimizer.pt")
        for rank, tensors in rng_by_rank.items():
            save_file(tensors, str(tmp / f"rng-rank{rank}.safetensors"))
        (tmp / "trainer_state.json").write_text(json.dumps(asdict(state)), encoding="utf-8")
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
        write_manifest(tmp)  # last: a checkpoint without one was not completely written
        _fsync_tree(tmp)
        if final.exists():  # the same step written again (a resumed run's end, say)
            # Moved aside whole first: a kill while it is deleted leaves a temporary folder,
            # never a half-deleted checkpoint under its own name.
            aside = folder / f"{ASIDE_PREFIX}{final.name}"
            shutil.rmtree(aside, ignore_errors=True)
            os.replace(final, aside)
            os.replace(tmp, final)
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def save_weights(model: torch.nn.Module, folder: Path, state_dict: dict | None = None) -> None:
    """The adapter only (LoRA) or the whole model, as safetensors in Hugging Face layout
    (``state_dict``: the gathered weights of a sharded model)."""
    if state_dict is None:
        model.save_pretrained(str(folder), safe_serialization=True)
    else:
        model.save_pretrained(str(folder), safe_serialization=True, state_dict=state_dict)


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    weights = {}
    for shard in sorted(folder.glob("model*.safetensors")):
        weights.update(load_file(str(shard)))
    return weights


def load_weights(model: torch.nn.Module, folder: Path, lora: bool) -> None:
    if lora:
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, load_file(str(folder / "adapter_model.safetensors")))
        return
    missing, unexpected = model.load_state_dict(read_weights(folder), strict=False)
    tied = {name for name in missing if "embed_tokens" in name or name.endswith("lm_head.weight")}
    if set(missing) - tied or unexpected:
        raise RuntimeError(f"checkpoint {folder} does not match the model: missing {sorted(set(missing) - tied)[:3]}"
                           f", unexpected {unexpected[:3]}")


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, rank: int,
                    lora: bool, sharded: bool = False) -> tuple[TrainerState, dict[str, torch.Tensor]]:
    """Restore weights and optimizer (into the shards of a sharded model: every rank reads the
    full files); return the trainer state and this rank's RNG tensors."""
    optimizer_state = torch.load(path / "optimizer.pt", weights_only=True, map_location="cpu")
    if sharded:
        from chef_genius.model.sharding import load_full_state

        missing = load_full_state(model, optimizer, read_weights(path), optimizer_state)
        if missing:
            raise RuntimeError(f"checkpoint {path} does not match the model: missing {missing[:3]}")
    else:
        load_weights(model, path, lora)
        optimizer.load_state_dict(optimizer_state)
    state = saved_state(path)
    rng_file = path / f"rng-rank{rank}.safetensors"
    rng = load_file(str(rng_file)) if rng_file.exists() else load_file(str(path / "rng-rank0.safetensors"))
    return state, rng


def saved_state(path: Path) -> TrainerState:
    """The trainer state a checkpoint holds (nothing else is read)."""
    return TrainerState(**json.loads((path / "trainer_state.json").read_text(encoding="utf-8")))


def list_checkpoints(folder: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    if not folder.exists():
        return []
    _recover_set_aside(folder)
    return sorted(p for p in folder.glob(f"{PREFIX}*") if p.is_dir())


def _recover_set_aside(folder: Path) -> None:
    """A checkpoint moved aside to be rewritten or deleted, whose process died before its name
    was taken again (between the two renames), goes back under its name if it is complete."""
    for aside in folder.glob(f"{ASIDE_PREFIX}{PREFIX}*"):
        original = folder / aside.name.removeprefix(ASIDE_PREFIX)
        if not original.exists() and checkpoint_problem(aside) is None:
            with contextlib.suppress(OSError):  # another rank got there first
                os.replace(aside, original)


def newest_complete(checkpoints: list[Path], report=None) -> Path | None:
    """The newest complete checkpoint of ``checkpoints`` (oldest first); ``report`` gets one line
    for each damaged one passed over."""
    for path in reversed(checkpoints):
        problem = checkpoint_problem(path)
        if problem is None:
            return path
        if report is not None:
            report(f"warning: checkpoint {path} is incomplete or damaged ({problem}); using the one before")
    return None


def find_resume_point(output_dir: Path, resume: str, report=None) -> Path | None:
    """The checkpoint named by ``--resume``: 'auto' is the newest complete one in the run folder
    (or none, when it has no checkpoint); a path must be a complete checkpoint.

    Raises:
        UserError: 'auto' finds checkpoints but none is complete; a path is not a complete checkpoint.
    """
    from chef_genius.errors import UserError

    if resume == "auto":
        found = list_checkpoints(output_dir / "checkpoints")
        if not found:
            return None
        path = newest_complete(found, report)
        if path is None:
            raise UserError(f"{output_dir / 'checkpoints'}: no complete checkpoint to resume from "
                            f"({found[-1].name}: {checkpoint_problem(found[-1])}); start a new run with another "
                            "--output-dir")
        return path
    path = Path(resume)
    if not (path / "trainer_state.json").exists():
        raise UserError(f"--resume {resume}: not a checkpoint folder (no trainer_state.json)")
    problem = checkpoint_problem(path)
    if problem is not None:
        others = [p for p in list_checkpoints(path.parent) if p.name != path.name]
        fallback = newest_complete(others)
        hint = f"; {fallback} is complete" if fallback is not None else ""
        raise UserError(f"--resume {resume}: the checkpoint is incomplete or damaged ({problem}){hint}")
    return path


def prune(folder: Path, keep_last: int, best_step: int | None) -> None:
    """Delete old checkpoints, keeping the newest ``keep_last`` and the best."""
    checkpoints = list_checkpoints(folder)
    keep = set(checkpoints[-keep_last:])
    if best_step is not None:
        keep.add(folder / f"{PREFIX}{best_step:08d}")
    for path in checkpoints:
        if path not in keep:
            # Renamed away whole before it is deleted: a kill mid-delete leaves a temporary folder
            # (removed at the next save), never a half-deleted checkpoint under its name.
            gone = folder / f"{TMP_PREFIX}pruned-{path.name}"
            os.replace(path, gone)
            shutil.rmtree(gone, ignore_errors=True)
