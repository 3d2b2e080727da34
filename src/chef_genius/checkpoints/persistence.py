"""What a run keeps on disk and how it comes back: checkpoints (with every rank's RNG state and
a manifest), resume (from the newest complete checkpoint), and the final model folder (the best
checkpoint's weights). Rank 0 writes; under FSDP every rank first takes part in gathering the
full weights and optimizer state; the other ranks wait at a barrier.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from chef_genius.checkpoints import folder as ckpt
from chef_genius.checkpoints.model_card import model_card, weights_note
from chef_genius.checkpoints.rng import capture_host_rng, device_rng_tensors, restore_device_rng, restore_host_rng
from chef_genius.config_schema import TrainConfig
from chef_genius.errors import TrainingStopped, UserError
from chef_genius.model import sharding
from chef_genius.model.ranks import Ranks


class RunCheckpoints:
    """The checkpoints of one run folder.

    Args:
        run_dir: the run folder (``checkpoints/`` and ``final/`` live in it).
        config: the run's config (resume policy, how many checkpoints to keep, the model card).
        ranks: the processes; rank 0 writes.
    """

    def __init__(self, run_dir: Path, config: TrainConfig, ranks: Ranks):
        self.run_dir, self.config, self.ranks = run_dir, config, ranks
        self.folder = run_dir / "checkpoints"

    def resume_point(self) -> Path | None:
        """The checkpoint to resume from (``--resume auto`` or a path), or None for a fresh run;
        refuses to start fresh over existing checkpoints."""
        resume = self.config.checkpoint.resume
        if resume is None:
            if ckpt.list_checkpoints(self.folder):
                raise UserError(f"{self.run_dir} already holds checkpoints: pass --resume auto to continue, "
                                "or choose another --output-dir")
            return None
        return ckpt.find_resume_point(self.run_dir, resume, self.ranks.print)

    def restore(self, path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, sharded: bool,
                noise_generator: torch.Generator) -> ckpt.TrainerState:
        """Weights, optimizer, trainer state and every random generator as they were at ``path``."""
        state, rng = ckpt.load_checkpoint(path, model, optimizer, self.ranks.rank, self.config.lora.enabled,
                                          sharded)
        restore_host_rng(state)
        restore_device_rng(rng, noise_generator)
        return state

    def save(self, state: ckpt.TrainerState, model: torch.nn.Module, model_for_saving: torch.nn.Module,
             optimizer: torch.optim.Optimizer, sharded: bool, noise_generator: torch.Generator,
             tokenizer=None) -> None:
        """A complete checkpoint of this step (atomic), then old ones pruned (the best is kept).

        ``model`` is the (possibly sharded) training module, ``model_for_saving`` the one whose
        weights are written. A failed write (a full disk) stops training and names the previous,
        intact checkpoint."""
        capture_host_rng(state)
        gathered = self.ranks.gather(device_rng_tensors(noise_generator))
        full = ((sharding.full_model_state(model), sharding.full_optimizer_state(model, optimizer))
                if sharded else None)  # collective: every rank gathers, rank 0 holds the result
        if self.ranks.is_main:
            try:
                ckpt.save_checkpoint(self.folder, state.step, model_for_saving, optimizer, state, gathered, full,
                                     tokenizer)
            except OSError as error:
                previous = ckpt.list_checkpoints(self.folder)
                raise TrainingStopped(f"checkpoint at step {state.step} could not be written ({error.strerror}); "
                                      f"the previous checkpoint {previous[-1] if previous else '(none)'} is intact"
                                      ) from None
            ckpt.prune(self.folder, self.config.checkpoint.keep_last, state.best_step)
        self.ranks.barrier()

    def best(self, state: ckpt.TrainerState) -> str | None:
        return str(self.folder / f"{ckpt.PREFIX}{state.best_step:08d}") if state.best_step is not None else None

    def final_source(self, state: ckpt.TrainerState) -> Path | None:
        """The best checkpoint, when its weights are not the last ones and it is complete (else
        None: final/ gets the model's current weights). Rank 0 decides for every rank."""
        if not self.config.eval.keep_best or state.best_step is None or state.best_step == state.step:
            return None
        path = self.folder / f"{ckpt.PREFIX}{state.best_step:08d}"
        usable = 0.0
        if self.ranks.is_main:
            problem = ckpt.checkpoint_problem(path) if path.is_dir() else "it is missing"
            if problem is None:
                usable = 1.0
            else:
                self.ranks.print(f"warning: the best checkpoint {path} cannot be used ({problem}); final/ holds "
                                 f"the last weights (step {state.step})")
        return path if float(self.ranks.all_reduce(torch.tensor([usable]))[0]) > 0 else None

    def save_final(self, state: ckpt.TrainerState, model: torch.nn.Module, model_for_saving: torch.nn.Module,
                   sharded: bool, tokenizer) -> FinalWeights:
        """``final/``: the best checkpoint's weights (adapter or full model; the last weights when
        no validation loss was measured), the tokenizer and a model card saying which step's
        weights these are. Written beside and moved in file by file (os.replace), so a kill never
        leaves a half-written weights file, and files of others in final/ stay."""
        final = self.run_dir / "final"
        source = self.final_source(state)
        weights = sharding.full_model_state(model) if sharded and source is None else None  # collective
        step = state.best_step if source is not None else state.step
        if self.ranks.is_main:
            staging = self.run_dir / f".final.partial-{os.getpid()}"
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir()
            try:
                if source is not None:
                    for path in source.iterdir():
                        if path.is_file() and path.name not in ckpt.TRAINING_FILES and not path.name.startswith("rng-"):
                            shutil.copy2(path, staging / path.name)
                else:
                    ckpt.save_weights(model_for_saving, staging, weights)
                tokenizer.save_pretrained(str(staging))
                (staging / "README.md").write_text(model_card(self.config, state, step), encoding="utf-8")
                if not final.exists():
                    os.replace(staging, final)
                else:
                    for path in sorted(staging.iterdir()):
                        os.replace(path, final / path.name)
                    staging.rmdir()
            except OSError as error:
                shutil.rmtree(staging, ignore_errors=True)
                raise TrainingStopped(f"{final} could not be written ({error.strerror or error}); the checkpoints "
                                      f"in {self.folder} are intact") from None
        self.ranks.barrier()
        return FinalWeights(final, step, weights_note(state, step, self.config.eval.keep_best))


@dataclass(frozen=True)
class FinalWeights:
    """What final/ holds: its path, the step of its weights, and that in words."""

    folder: Path
    step: int
    note: str
