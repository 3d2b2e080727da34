"""What defines a run, so that a resume can check it continues the same training.

A fingerprint holds the resolved config, the identity of the data files (name, size and
modification time of ``train.arrow`` and ``val.arrow``, and the folder they are in), the number
of processes (each rank trains on its share of the batches) and the tokenizer (class and
vocabulary size). A new run writes it to ``RUN/fingerprint.json``, and every checkpoint carries
the one it was trained under. On ``--resume`` the current fingerprint is compared with the
checkpoint's: a difference in what changes the data order, the schedule or the model stops the
run with one line listing each difference, unless ``--resume-changed`` is given; then the run
goes on and the differences are appended to ``RUN/resume_log.jsonl``.

`HARMLESS` keys (logging, evaluation, checkpoint cadence, data loader workers, speed levers,
the output folder) may change freely; the preference pairs file is compared by its sha256.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from chef_genius.config import to_dict
from chef_genius.config_schema import TrainConfig
from chef_genius.errors import UserError
from chef_genius.preference import pairs_digest

FINGERPRINT = "fingerprint.json"
RESUME_LOG = "resume_log.jsonl"
SPLITS = ("train", "val")

# Keys (a name, or a section ending in ".") that do not change what is trained: logging, when
# and how validation runs, checkpoint cadence, loader workers, the output folder, and the GPU
# speed levers (same values, other kernels). The preset's values are compared where they land,
# and the data folder by its resolved path (in "data.folder"), not as typed.
HARMLESS = (
    "output_dir", "preset", "logging.", "eval.", "checkpoint.save_steps", "checkpoint.keep_last",
    "checkpoint.resume", "checkpoint.resume_changed", "data.num_workers", "data.path",
    "model.compile_blocks", "model.cuda_graphs", "model.fast_forward", "model.fused_norm",
    "model.shared_bias_attention", "model.gradient_checkpointing", "model.fsdp", "preference.pairs",
)


def data_identity(folder: Path) -> dict[str, Any]:
    """The data folder (resolved) and each split file's size and modification time."""
    identity: dict[str, Any] = {"folder": str(folder.resolve())}
    for split in SPLITS:
        path = folder / f"{split}.arrow"
        try:
            stat = path.stat()
        except OSError:
            identity[f"{split}.arrow"] = None
            continue
        identity[f"{split}.arrow"] = {"size": stat.st_size, "modified": _time(stat.st_mtime_ns)}
    return identity


def _time(ns: int) -> str:
    seconds, rest = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{rest:09d}Z"


def run_fingerprint(config: TrainConfig, data_folder: Path, processes: int) -> dict[str, Any]:
    """The fingerprint without its tokenizer part (`tokenizer_identity` adds it once loaded)."""
    pairs = config.preference.pairs  # by content: the same pairs moved elsewhere are the same run
    return {"config": to_dict(config), "data": data_identity(data_folder), "processes": processes,
            "preference": {"pairs_sha256": pairs_digest(pairs) if pairs is not None else None}}


def tokenizer_identity(tokenizer) -> dict[str, Any]:
    return {"class": type(tokenizer).__name__, "vocabulary": len(tokenizer)}


def _harmless(key: str) -> bool:
    return any(key == h or (h.endswith(".") and key.startswith(h)) for h in HARMLESS)


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, name))
        else:
            flat[name] = value
    return flat


def differences(saved: dict[str, Any], current: dict[str, Any], sections: tuple[str, ...] | None = None
                ) -> list[dict[str, Any]]:
    """``[{"key", "was", "now"}]`` for every meaningful key of ``sections`` (default: all) that
    differs. Config keys are named as in the config (``optim.epochs``); keys the saved
    fingerprint lacks (written by an older chef-genius) are not compared."""
    changes = []
    for section in sections or tuple(current):
        if section not in saved or section not in current:
            continue
        old, new = _flatten(saved[section]), _flatten(current[section])
        for key in new:
            if key not in old:
                continue
            name = key if section == "config" else f"{section}.{key}" if key else section
            if section == "config" and _harmless(key):
                continue
            if _normal(old[key]) != _normal(new[key]):
                changes.append({"key": name, "was": old[key], "now": new[key]})
    return changes


def _normal(value: Any) -> Any:
    """JSON round trip: tuples and lists, ints and floats compare as they were saved."""
    return json.loads(json.dumps(value))


def describe(changes: list[dict[str, Any]]) -> str:
    """``optim.epochs 1 -> 2; data.train.arrow.size 1,204 -> 2,400``."""
    return "; ".join(f"{c['key']} {_short(c['was'])} -> {_short(c['now'])}" for c in changes)


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[: limit - 3] + "..."


def saved_fingerprint(checkpoint: Path, run_dir: Path) -> dict[str, Any]:
    """What the checkpoint was trained under: its own fingerprint, else the run folder's, else
    its resolved config (checkpoints written before fingerprints)."""
    try:
        state = json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        state = {}
    if state.get("fingerprint"):
        return state["fingerprint"]
    try:
        return json.loads((run_dir / FINGERPRINT).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"config": state.get("config") or {}}


def refuse_or_log(changes: list[dict[str, Any]], checkpoint: Path, run_dir: Path, allowed: bool,
                  write: bool) -> str | None:
    """Refuse a resume that changes the run, or (``allowed``: --resume-changed) append the
    changes to the run's resume log (when ``write``: the main rank) and return the line to print.

    Raises:
        UserError: changes and not ``allowed``; the message lists each one.
    """
    if not changes:
        return None
    listed = describe(changes)
    if not allowed:
        raise UserError(f"cannot resume from {checkpoint}: these settings differ from the ones it was trained with: "
                        f"{listed}; resume with the run's settings (`--config {run_dir / 'config.yaml'}` gives "
                        f"them, also when the defaults have changed since), or pass --resume-changed to continue "
                        f"anyway (the changes are then logged in {run_dir / RESUME_LOG})")
    if write:
        record = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "checkpoint": str(checkpoint),
                  "changes": changes}
        with open(run_dir / RESUME_LOG, "a", encoding="utf-8") as log:
            log.write(json.dumps(record, ensure_ascii=False) + "\n")
    return f"resuming from {checkpoint} with changed settings (--resume-changed): {listed}"


def write_fingerprint(run_dir: Path, fingerprint: dict[str, Any]) -> None:
    (run_dir / FINGERPRINT).write_text(json.dumps(fingerprint, indent=2, ensure_ascii=False) + "\n",
                                       encoding="utf-8")
