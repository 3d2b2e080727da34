"""What keeps a run folder safe before and after training: one writer at a time, a resume that
continues the same run, the demo's data folder never the user's, a stopped run not trained on."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from chef_genius.checkpoints import fingerprint as fp
from chef_genius.checkpoints.folder import TrainerState
from chef_genius.checkpoints.runlock import RunLock
from chef_genius.config_schema import EvalConfig, TrainConfig
from chef_genius.errors import UserError
from chef_genius.model.ranks import Ranks


def lock_run_folder(run_dir: Path, ranks: Ranks) -> RunLock:
    """The main process locks the run folder (`runlock.RunLock`); every rank stops when it
    cannot.

    Raises:
        UserError: another `train` holds the lock (named by its pid).
    """
    lock = RunLock(run_dir)
    refused: UserError | None = None
    if ranks.is_main:
        try:
            lock.acquire()
        except UserError as error:
            refused = error
    failed = ranks.all_reduce(torch.tensor([1.0 if refused else 0.0]))
    if refused is not None:
        raise refused
    if float(failed[0]) > 0:
        raise UserError(f"{run_dir}: another chef-genius train is writing this run folder")
    return lock


def resume_differences(resume: Path | None, run_dir: Path, fingerprint: dict, sections: tuple[str, ...],
                       resume_changed: bool) -> list[dict]:
    """The meaningful differences between the current fingerprint and the checkpoint's, in
    ``sections``; refused at once without --resume-changed.

    Raises:
        UserError: a difference, and no --resume-changed (`fingerprint.refuse_or_log`).
    """
    if resume is None:
        return []
    changes = fp.differences(fp.saved_fingerprint(resume, run_dir), fingerprint, sections)
    if changes and not resume_changed:
        fp.refuse_or_log(changes, resume, run_dir, False, False)
    return changes


def keep_threshold_by_epoch(config: TrainConfig, resume: Path | None, run_dir: Path) -> bool:
    """A run checkpointed before ``data.threshold_by_step`` existed raised its threshold by epoch
    only: it resumes so (its batches continue where they were), returning True when that applies."""
    if resume is None or not config.data.threshold_by_step:
        return False
    saved = fp.saved_fingerprint(resume, run_dir).get("config") or {}
    if "data" not in saved or "threshold_by_step" in saved["data"]:
        return False
    config.data.threshold_by_step = False
    return True


def demo_data_needs_prepare(config: TrainConfig, run_dir: Path) -> bool:
    """Without ``data.path`` the bundled sample is prepared into RUN/data: when that folder is
    absent, empty or a chef-genius dataset without train.arrow. A folder with train.arrow is
    used as it is (runs prepared before datasets had a marker); any other folder is the
    user's, and is refused.

    Raises:
        UserError: RUN/data exists and is not a chef-genius dataset.
    """
    if config.data.path is not None:
        return False
    from chef_genius.outputs import OutputFolder
    from chef_genius.prepare import MARKER

    folder = run_dir / "data"
    if (folder / "train.arrow").is_file():
        return False
    if OutputFolder(folder, MARKER, "dataset").state() == "foreign":
        raise UserError(f"{folder}: is not a chef-genius dataset (no train.arrow, no {MARKER}), and the demo "
                        f"prepares its sample there; pass --data PREPARED_FOLDER, or another --output-dir")
    return True


def stopped_before(state: TrainerState, e: EvalConfig, say: Callable[[str], None]) -> bool:
    """Whether early stopping ended this run before (a resumed state), by the current
    patience: a larger one (or 0) lets the run train on."""
    if not state.stopped_early:
        return False
    still = e.patience > 0 and state.evals_without_improvement >= e.patience
    if not still:
        say(f"early stopping ended this run at step {state.step}; eval.patience {e.patience} lets it train on")
    state.stopped_early = still
    return still


def final_complete(folder: Path) -> bool:
    return (folder / "README.md").is_file() and any(
        (folder / name).is_file() for name in ("adapter_model.safetensors", "model.safetensors",
                                               "model.safetensors.index.json"))
