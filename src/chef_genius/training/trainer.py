"""`chef-genius train`: fine-tune a seq2seq or causal model on a prepared recipe dataset.

`run_training` builds the run (`run.build_run`: data, model, optimizer, schedule, checkpoints,
sinks), takes its starting state (fresh or resumed) and calls `train`, the loop, where each
improvement is one visible line; `optimizer_step` is one step over accumulated micro-batches. It
runs unchanged on CPU, one GPU, or several under ``torchrun`` / ``accelerate launch`` (DDP: each
rank trains on its own share of every epoch's batches).
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from tqdm import tqdm

from chef_genius.checkpoints import folder as ckpt
from chef_genius.checkpoints import run_guards as guards
from chef_genius.checkpoints.model_card import weights_note
from chef_genius.checkpoints.persistence import FinalWeights
from chef_genius.config_schema import TrainConfig
from chef_genius.dataset.collate import Collator, PlannedBatches
from chef_genius.errors import TrainingStopped
from chef_genius.model import sharding
from chef_genius.model.ranks import Ranks
from chef_genius.noise import add_gradient_noise
from chef_genius.schedule import lr_at
from chef_genius.tracking import MetricWindow, system_metrics
from chef_genius.training.evaluating import evaluate_and_keep_best, save
from chef_genius.training.interrupt import StopRequest, TrainingInterrupted, ignore_interrupts, resume_command
from chef_genius.training.preference_data import PreferenceCollator
from chef_genius.training.run import Run, build_run, start_state
from chef_genius.training.run_plan import rss_mib, timed

__all__ = ["RunResult", "TrainingStopped", "opened_run", "optimizer_step", "run_training", "train"]

MAX_BAD_STEPS_IN_A_ROW = 10
# Batch shapes when CUDA graphs are on: widths rounded up to these many tokens, rows (under a
# token budget) to this many examples. Recipe prompts are short, targets long.
GRAPH_SOURCE_MULTIPLE, GRAPH_TARGET_MULTIPLE, GRAPH_ROW_MULTIPLE = 32, 64, 8


@dataclass
class RunResult:
    steps: int
    stopped_early: bool
    best_val_loss: float | None
    best_checkpoint: str | None
    final_dir: str
    seconds: float
    schedule: dict | None = None  # the resolved schedule, so reports can draw its exact curve
    last_samples: str | None = None  # the last evaluation's sample recipes, as printed
    final_step: int | None = None  # the step whose weights final/ holds (the best one)
    final_weights: str | None = None  # that, in words
    setup: dict | None = None  # seconds of each set-up part, to the first optimizer step (`Progress.timings`)


def run_training(config: TrainConfig) -> RunResult:
    """Set up, train, clean up. Raises UserError / TrainingStopped with a one-line message."""
    try:
        with StopRequest() as stop_request, opened_run(config) as (run, state):
            return train(run, state, stop_request)
    except torch.cuda.OutOfMemoryError:
        raise TrainingStopped("CUDA out of memory: lower --batch-size, or --max-tokens when set, or use a "
                              "--preset for your card") from None


@contextlib.contextmanager
def opened_run(config: TrainConfig) -> Iterator[tuple[Run, ckpt.TrainerState]]:
    """The run (`run.build_run`) and where it starts (fresh or resumed); at the end, however it
    ends, the run folder's lock is released and the processes stop."""
    ranks = Ranks.start()
    try:
        run = build_run(config, ranks)
        try:
            yield run, start_state(run)
        finally:
            run.lock.release()
    finally:
        ranks.stop()


def train(run: Run, state: ckpt.TrainerState, stop_request: StopRequest | None = None) -> RunResult:
    """The training loop, then the final folder."""
    config, o, progress = run.config, run.config.optim, run.progress
    stop_request = stop_request or StopRequest()
    accumulation = o.gradient_accumulation_steps
    started, window = time.perf_counter(), MetricWindow()
    budget = run.schedule.total_steps
    bar = tqdm(total=budget, initial=state.step, desc="train", disable=not run.ranks.is_main or not sys.stderr.isatty(),
               dynamic_ncols=True)
    stopped_early = guards.stopped_before(state, config.eval, run.ranks.print)
    finished_before = stopped_early or state.epoch >= o.epochs or state.step >= budget
    if finished_before and run.resume_from is not None:
        run.ranks.print(f"{run.run_dir}: " + (
            f"early stopping already ended this run at step {state.step} ({state.evals_without_improvement} "
            f"evaluations without improvement, patience {config.eval.patience}); not training further"
            if stopped_early else f"this run already finished at step {state.step}; nothing to train"))
    run.model.forward.train()
    while state.epoch < o.epochs and not stopped_early and state.step < budget:
        epoch = run.plan.epoch_data(state.epoch)
        with timed(progress.timings, f"epoch_{state.epoch}_plan"):  # its batches (set-up's last part for epoch 0)
            batches = run.plan.batches(state.epoch)
        loader = batch_loader(run, PlannedBatches(batches[state.batches_done:], collator(run, epoch.examples)))
        for first in range(state.batches_done, len(batches), accumulation):
            log_curriculum(run, state, epoch, first)               # 3, 4, 7, 9: an epoch or a stage starts here
            micro_batches = [next(loader) for _ in batches[first:first + accumulation]]
            step_before = state.step
            metrics = optimizer_step(run, state, micro_batches, stop_request)      # loss, backward, step
            state.batches_done = first + len(micro_batches)
            if "first_step" not in progress.timings:
                progress.timings["first_step"] = round(time.perf_counter() - started, 3)
                progress.timings.setdefault("rss_mib", {})["first_step"] = rss_mib()
            if state.step == step_before:  # a skipped non-finite step: nothing to log or save
                continue
            window.add(metrics)
            bar.update(1)
            bar.set_postfix(loss=f"{metrics['train/loss']:.3f}", lr=f"{metrics['train/learning_rate']:.2e}")
            if state.step % config.logging.log_every == 0:
                run.tracker.log({**window.flush(), **system_metrics()}, state.step)
            if state.step % config.eval.eval_steps == 0:
                stopped_early = evaluate_and_keep_best(run, state)                  # 1. validation
            if state.step % config.checkpoint.save_steps == 0:
                save(run, state)
            if progress.stop_agreed:                                              # Ctrl-C / SIGTERM: save, exit
                stop_on_signal(run, state, stop_request)
            if stopped_early or state.step >= budget:
                break
        if state.step >= budget:
            stopped_early = evaluate_and_keep_best(run, state) or stopped_early
        elif not stopped_early:
            state.epoch, state.batches_done = state.epoch + 1, 0
            stopped_early = evaluate_and_keep_best(run, state)
    bar.close()
    if run.graphed is not None:
        g = run.graphed
        run.ranks.print(f"CUDA graphs: {len(g.graphs)} batch shapes, captured in {g.capture_seconds:.1f} s"
                        + (f"; {len(g.failed)} ran eagerly ({g.failed[0]})" if g.failed else ""))
    if window.steps:
        run.tracker.log(window.flush(), state.step)
    state.stopped_early = stopped_early
    save(run, state)  # unless the newest checkpoint already holds this state (a finished run resumed)
    final = final_weights(run, state, finished_before and run.resume_from is not None)
    run.tracker.close()
    result = RunResult(state.step, stopped_early, state.best_val_loss, run.checkpoints.best(state),
                       str(final.folder), time.perf_counter() - started, dict(run.schedule.__dict__),
                       progress.last_samples, final.step, final.note, dict(progress.timings))
    if run.ranks.is_main:
        (run.run_dir / "run_summary.json").write_text(json.dumps(result.__dict__, indent=2) + "\n")
    return result


def final_weights(run: Run, state: ckpt.TrainerState, finished_before: bool) -> FinalWeights:
    """``final/``: written now, or, for a finished run resumed, the complete one already there."""
    final_dir = run.run_dir / "final"
    if finished_before and guards.final_complete(final_dir):
        step = state.best_step if run.checkpoints.final_source(state) is not None else state.step
        return FinalWeights(final_dir, step, weights_note(state, step, run.config.eval.keep_best))
    return run.checkpoints.save_final(state, run.model.forward, run.model.saved, run.model.sharded, run.tokenizer)


def optimizer_step(run: Run, state: ckpt.TrainerState, micro_batches: list[dict[str, torch.Tensor]],
                   stop_request: StopRequest | None = None) -> dict[str, float]:
    """One optimizer step over the accumulated micro-batches. The loss is the token mean over
    every real target token of the step (all micro-batches, all ranks)."""
    o, world, device = run.config.optim, run.ranks.world, run.device
    # Target tokens (the loss's divisor; DPO: pairs) and prompt tokens of the step, over all ranks.
    targets = sum(run.objective.units(b) for b in micro_batches)
    prompts = sum(int(b["attention_mask"].sum()) for b in micro_batches)
    # The third count: ranks asking to stop (a signal), summed with the others at no extra cost.
    asked = float(stop_request is not None and stop_request.requested)
    counts = run.ranks.all_reduce(torch.tensor([float(targets), float(prompts), asked]))
    tokens, input_tokens = counts[0], float(counts[1])
    run.progress.stop_agreed = bool(counts[2] > 0)
    smoothed_total = torch.zeros((), device=device)
    nll_total = torch.zeros((), device=device)
    extras_total = torch.zeros(len(run.objective.metric_names), device=device)
    tick = time.perf_counter()
    for i, batch in enumerate(micro_batches):
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        if run.graphed is not None:                                                 # replayed CUDA graph
            smoothed, nll, _ = run.graphed(batch, world / float(tokens))
        else:
            sync = i == len(micro_batches) - 1 or world == 1
            with gradient_sync(run, sync), run.autocast():
                smoothed, nll, extras = run.loss(batch, o.label_smoothing)    # 6. label smoothing; 11. DPO
                (smoothed * world / tokens).backward()
            extras_total += extras.detach()
        smoothed_total += smoothed.detach()
        nll_total += nll.detach()
    smoothed_total, nll_total = run.ranks.all_reduce(smoothed_total), run.ranks.all_reduce(nll_total)
    metrics = {"train/loss": float(smoothed_total / tokens), "train/nll": float(nll_total / tokens)}
    if run.objective.metric_names:  # DPO: preference/loss, preference/margin, preference/accuracy
        extras = (run.ranks.all_reduce(extras_total) / tokens).tolist()
        metrics.update(zip(run.objective.metric_names, extras, strict=True))
    noise_ratio = 0.0
    trainable = run.model.trainable
    if run.config.gradient_noise.enabled:                                           # 10. gradient noise
        g = run.config.gradient_noise
        noise_ratio = add_gradient_noise(trainable, state.step, g.eta, g.gamma, run.noise_generator)
    grad_norm = sharding.full(torch.nn.utils.clip_grad_norm_(trainable, o.max_grad_norm or float("inf")))
    if not (math.isfinite(metrics["train/loss"]) and math.isfinite(float(grad_norm))):
        return skip_bad_step(run, state, metrics)
    state.bad_steps_in_a_row = 0
    learning_rate = lr_at(state.step, run.schedule)                                 # 2. warmup + cosine
    for group in run.optimizer.param_groups:
        group["lr"] = learning_rate
    run.optimizer.step()
    zero_grad(run)
    state.step += 1
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - tick
    metrics.update({"train/learning_rate": learning_rate, "train/grad_norm": float(grad_norm),
                    "train/noise_to_grad_ratio": noise_ratio, "train/tokens": input_tokens + float(tokens),
                    "train/seconds": seconds, "train/epoch": state.epoch})
    return metrics


def skip_bad_step(run: Run, state: ckpt.TrainerState, metrics: dict[str, float]) -> dict[str, float]:
    """A non-finite loss or gradient: no update; too many in a row stop the run."""
    zero_grad(run)
    state.skipped_steps += 1
    state.bad_steps_in_a_row += 1
    run.ranks.print(f"warning: non-finite loss or gradient at step {state.step}; update skipped "
                    f"({state.bad_steps_in_a_row} in a row)")
    if state.bad_steps_in_a_row >= MAX_BAD_STEPS_IN_A_ROW:
        raise TrainingStopped(f"training diverged: {MAX_BAD_STEPS_IN_A_ROW} non-finite steps in a row at step "
                              f"{state.step}; the last good checkpoint is kept in {run.run_dir / 'checkpoints'}. "
                              "Lower the learning rate or check the data.")
    return metrics


def stop_on_signal(run: Run, state: ckpt.TrainerState, stop_request: StopRequest) -> None:
    """Save this state as a checkpoint (unless the newest holds it) and stop, naming the command
    that resumes the run."""
    save(run, state)
    run.tracker.close()
    number = stop_request.signal_number or 2  # another rank's signal: say Ctrl-C's
    raise TrainingInterrupted(f"interrupted at step {state.step}: checkpoint saved in "
                              f"{run.run_dir / 'checkpoints'}; resume with: {resume_command(run.run_dir)}", number)


def collator(run: Run, examples) -> Collator | PreferenceCollator:
    """Batches for training; coarse shapes when CUDA graphs replay them; pairs for DPO."""
    if run.config.preference.pairs is not None:
        return PreferenceCollator(examples, run.pad_id, run.family, run.objective.reference)
    if run.graphed is None:
        return Collator(examples, run.pad_id, run.family)
    o = run.config.optim
    rows = o.batch_size if o.max_tokens is None else GRAPH_ROW_MULTIPLE
    return Collator(examples, run.pad_id, run.family, GRAPH_SOURCE_MULTIPLE, GRAPH_TARGET_MULTIPLE, rows)


def batch_loader(run: Run, dataset: PlannedBatches):
    """The planned batches, collated by the loader's workers (none: in this process)."""
    workers = run.config.data.num_workers
    # Its own generator: a DataLoader iterator otherwise draws a seed from the global torch RNG,
    # and a resumed run creates one more iterator than an uninterrupted one.
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, shuffle=False, num_workers=workers,
                                         pin_memory=run.device.type == "cuda", persistent_workers=False,
                                         prefetch_factor=4 if workers else None,
                                         generator=torch.Generator().manual_seed(run.config.seed),
                                         worker_init_fn=ignore_interrupts if workers else None)
    return iter(loader)


def log_curriculum(run: Run, state: ckpt.TrainerState, epoch, batch: int) -> None:
    """Log (and warn about a relaxed) selection when an epoch, or a stage by step, starts at ``batch``."""
    selection = run.plan.part_starting_at(epoch.selection.epoch, batch)
    if selection is None:
        return
    if selection.relaxed_from is not None:
        level, threshold = selection.relaxed_from
        warnings.warn(f"epoch {selection.epoch} from step {state.step + 1}: {level} recipes with quality >= "
                      f"{threshold:.2f} cannot fill a batch per rank; relaxed to {selection.level} >= "
                      f"{selection.threshold:.2f} ({len(selection.indices)} recipes)", stacklevel=2)
    run.tracker.log({"curriculum/quality_threshold": selection.threshold,
                     "curriculum/difficulty_level": selection.level_index,
                     "curriculum/selected_examples": len(selection.indices),
                     "curriculum/augmented_fraction": epoch.augmented_fraction}, state.step)


def gradient_sync(run: Run, sync: bool):
    """No gradient all-reduce on accumulation micro-batches but the last (DDP, FSDP)."""
    if sync:
        return contextlib.nullcontext()
    model = run.model.forward
    return sharding.no_gradient_sync(model) if run.model.sharded else model.no_sync()


def zero_grad(run: Run) -> None:
    # Replayed graphs add into fixed gradient buffers: zero them in place.
    run.optimizer.zero_grad(set_to_none=run.graphed is None)
