"""What a run keeps on disk and how it comes back: checkpoints (with every rank's RNG state),
resume, and the final model folder. Rank 0 writes; under FSDP every rank first takes part in
gathering the full weights and optimizer state; the other ranks wait at a barrier.
"""

from __future__ import annotations

from pathlib import Path

import torch

from chef_genius.config import TrainConfig
from chef_genius.errors import TrainingStopped, UserError
from chef_genius.training import checkpoint as ckpt
from chef_genius.training import sharding
from chef_genius.training.ranks import Ranks


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
        return ckpt.find_resume_point(self.run_dir, resume)

    def restore(self, path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, sharded: bool,
                noise_generator: torch.Generator) -> ckpt.TrainerState:
        """Weights, optimizer, trainer state and every random generator as they were at ``path``."""
        state, rng = ckpt.load_checkpoint(path, model, optimizer, self.ranks.rank, self.config.lora.enabled,
                                          sharded)
        ckpt.restore_host_rng(state)
        ckpt.restore_device_rng(rng, noise_generator)
        return state

    def save(self, state: ckpt.TrainerState, model: torch.nn.Module, model_for_saving: torch.nn.Module,
             optimizer: torch.optim.Optimizer, sharded: bool, noise_generator: torch.Generator) -> None:
        """A complete checkpoint of this step (atomic), then old ones pruned (the best is kept).

        ``model`` is the (possibly sharded) training module, ``model_for_saving`` the one whose
        weights are written. A failed write (a full disk) stops training and names the previous,
        intact checkpoint."""
        ckpt.capture_host_rng(state)
        gathered = self.ranks.gather(ckpt.device_rng_tensors(noise_generator))
        full = ((sharding.full_model_state(model), sharding.full_optimizer_state(model, optimizer))
                if sharded else None)  # collective: every rank gathers, rank 0 holds the result
        if self.ranks.is_main:
            try:
                ckpt.save_checkpoint(self.folder, state.step, model_for_saving, optimizer, state, gathered, full)
            except OSError as error:
                previous = ckpt.list_checkpoints(self.folder)
                raise TrainingStopped(f"checkpoint at step {state.step} could not be written ({error.strerror}); "
                                      f"the previous checkpoint {previous[-1] if previous else '(none)'} is intact"
                                      ) from None
            ckpt.prune(self.folder, self.config.checkpoint.keep_last, state.best_step)
        self.ranks.barrier()

    def best(self, state: ckpt.TrainerState) -> str | None:
        return str(self.folder / f"{ckpt.PREFIX}{state.best_step:08d}") if state.best_step is not None else None

    def save_final(self, state: ckpt.TrainerState, model: torch.nn.Module, model_for_saving: torch.nn.Module,
                   sharded: bool, tokenizer) -> Path:
        """``final/``: the weights (adapter or full model), the tokenizer and a model card."""
        final = self.run_dir / "final"
        weights = sharding.full_model_state(model) if sharded else None
        if self.ranks.is_main:
            ckpt.save_weights(model_for_saving, final, weights)
            tokenizer.save_pretrained(str(final))
            (final / "README.md").write_text(ckpt.model_card(self.config, state), encoding="utf-8")
        self.ranks.barrier()
        return final
