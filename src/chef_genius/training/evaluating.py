"""Evaluation as the loop runs it, on ``(run, state)``: improvement 1's validation loss (the
token-mean cross-entropy on the validation split, `validation.validation_loss`), logged with
sample recipes; `validation.record_validation` decides on early stopping; the best state is
saved. `save` writes a checkpoint through `persistence.RunCheckpoints` unless the newest one
already holds this state.
"""

from __future__ import annotations

import math
import time

import torch

from chef_genius.checkpoints.folder import TrainerState
from chef_genius.training import validation
from chef_genius.training.run import Run, state_key

__all__ = ["evaluate_and_keep_best", "sample_recipes", "save", "validation_loss"]


@torch.no_grad()
def validation_loss(run: Run) -> float | None:
    """Token-mean cross-entropy without label smoothing on the validation split."""
    return validation.validation_loss(run.model.forward, run.val_examples, run.config, run.ranks, run.pad_id,
                                      run.family, run.decoder_start_id, run.autocast)


def evaluate_and_keep_best(run: Run, state: TrainerState) -> bool:
    """Validate, log, save the best checkpoint; True when early stopping says stop."""
    e = run.config.eval
    if state.last_eval_step == state.step:  # an epoch that ends on an evaluation step
        return False
    state.last_eval_step = state.step
    started = time.perf_counter()
    val_loss = validation_loss(run)
    if val_loss is None:
        return False
    run.tracker.log({"val_loss": val_loss, "val_perplexity": math.exp(min(val_loss, 50.0)),
                     "eval/loss_seconds": time.perf_counter() - started}, state.step)
    if e.generate_samples:
        started = time.perf_counter()
        sample_recipes(run, state)
        run.tracker.log({"eval/sample_seconds": time.perf_counter() - started}, state.step)
    verdict = validation.record_validation(state, val_loss, e.min_delta, e.patience)
    state.stopped_early = verdict.stop  # saved with the state: a resume does not train on
    if verdict.best:
        save(run, state)
    return verdict.stop


def sample_recipes(run: Run, state: TrainerState) -> None:
    """Sample recipes on rank 0 (the others wait); not under FSDP, where rank 0 cannot run the
    sharded model alone (`generate` on the saved model can)."""
    if not run.model.sharded and run.ranks.is_main:
        e = run.config.eval
        prompts = list(e.sample_prompts) + run.splits.val_prompts[: e.num_validation_samples]
        # The random `tiny` model's samples are noise: the demo prints only the last set.
        run.progress.last_samples = validation.sample_and_log(
            run.model.saved, run.tokenizer, run.family, prompts, e, state.step, run.run_dir, run.tracker,
            run.autocast, echo=run.config.model.name != "tiny")
    run.ranks.barrier()


def save(run: Run, state: TrainerState) -> None:
    """A checkpoint of this state, unless the newest one already holds it."""
    key = state_key(state)
    if key == run.progress.saved_key:
        return
    run.checkpoints.save(state, run.model.forward, run.model.saved, run.optimizer, run.model.sharded,
                         run.noise_generator, run.tokenizer)
    run.progress.saved_key = key
