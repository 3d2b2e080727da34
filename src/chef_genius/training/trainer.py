"""`chef-genius train`: fine-tune a seq2seq or causal model on a prepared recipe dataset.

`Trainer.setup()` builds the run (data, model, optimizer, schedule, resume state) with small
helpers; `Trainer.train()` is the loop, where each improvement is one visible line. It runs
unchanged on CPU, one GPU, or several under ``torchrun`` / ``accelerate launch`` (DDP: each rank
trains on its own share of every epoch's batches). Here: `setup()`, `setup_plan()`, the loop
(`_train`), one optimizer step (`_optimizer_step`), `RunResult`, `run_training`. Inherited:
`setup.TrainerSetup` (the ``_setup_*`` helpers, the loader, the plan's views) and
`evaluating.TrainerEvaluation` (validation, early stopping, samples, checkpoints). Composed
parts: `run_plan.RunPlan` (each epoch's batches; curriculum stages by epoch or by step),
`ranks.Ranks` (processes and collectives), `placement.place_model` (LoRA, levers, DDP/FSDP,
compilation), `persistence.RunCheckpoints` (checkpoints, resume, the final folder), `validation`
(loss, early stopping, samples), `graphs.GraphedSteps` (CUDA graphs).
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from chef_genius.config import TrainConfig, to_dict, to_yaml
from chef_genius.errors import TrainingStopped
from chef_genius.noise import add_gradient_noise
from chef_genius.schedule import lr_at
from chef_genius.tracking import MetricWindow, Tracker, build_tracker, system_metrics
from chef_genius.training import checkpoint as ckpt
from chef_genius.training import fingerprint as fp
from chef_genius.training import run_guards as guards
from chef_genius.training import sharding
from chef_genius.training.data import Collator, PlannedBatches
from chef_genius.training.evaluating import TrainerEvaluation
from chef_genius.training.interrupt import StopRequest, TrainingInterrupted, resume_command
from chef_genius.training.models import resolve_tokenizer
from chef_genius.training.persistence import FinalWeights, RunCheckpoints
from chef_genius.training.preference_data import PreferenceCollator
from chef_genius.training.run_plan import rss_mib
from chef_genius.training.setup import TrainerSetup

__all__ = ["RunResult", "Trainer", "TrainingStopped", "run_training"]

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
    setup: dict | None = None  # seconds of each set-up part, to the first optimizer step (`Trainer.timings`)


class Trainer(TrainerSetup, TrainerEvaluation):
    def __init__(self, config: TrainConfig):
        self.config = config
        self.lora = config.lora.enabled
        self.last_samples: str | None = None
        # Seconds of each set-up part (data, model, examples, schedule), of each epoch's build, and
        # to the first optimizer step from the loop's start (that epoch's build, the loader and
        # torch.compile's work included); "token_cache": built or reused.
        self.timings: dict = {}
        self.stop_request = StopRequest()  # Ctrl-C / SIGTERM: a checkpoint after the step (`interrupt`)
        self.stop_agreed = False  # some rank asked to stop: every rank stops after this step

    # ----------------------------------------------------------------- setup
    def setup_plan(self, scratch: Path, examples: bool = False) -> None:
        """Only what the plan view needs: data, tokenizer (a `tiny` one is built in ``scratch``),
        epochs and schedule; no model weights, nothing written to the run folder. ``examples``:
        tokenize them (token cache included) even where the plan needs no lengths."""
        self._setup_distributed()
        self.run_dir = scratch
        with self._timed("data"):
            self._setup_data()
        with self._timed("model"):
            self.tokenizer, self.causal = resolve_tokenizer(self.config.model, scratch / "base_model",
                                                            self._tokenizer_corpus(), self.config.seed)
        with self._timed("examples"):
            if self.config.optim.max_tokens is None and not examples:  # batch counts follow from selections
                self._setup_run_plan(None)
            else:
                self._setup_examples()
        with self._timed("schedule"):
            self._setup_schedule()

    def setup(self) -> None:
        self._setup_distributed()
        self.run_dir = Path(self.config.output_dir)
        guards.demo_data_needs_prepare(self.config, self.run_dir)  # every rank refuses a foreign RUN/data,
        self.lock = guards.lock_run_folder(self.run_dir, self.ranks)  # one writer per run folder (a barrier too)
        self.checkpoints = RunCheckpoints(self.run_dir, self.config, self.ranks)
        resume = self.checkpoints.resume_point()  # the newest complete checkpoint
        if guards.keep_threshold_by_epoch(self.config, resume, self.run_dir):
            self.ranks.print(f"{resume}: checkpointed before data.threshold_by_step; the quality threshold keeps "
                             "rising by epoch")
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if resume is None or not (self.run_dir / "config.yaml").exists():  # keeps the run's original settings
                (self.run_dir / "config.yaml").write_text(to_yaml(self.config), encoding="utf-8")
        with self._timed("data"):
            self._setup_data()
        self.fingerprint = fp.run_fingerprint(self.config, self.data_folder, self.world)
        changes = self._check_resume(resume, ("config", "data", "processes", "preference"))  # before the model
        with self._timed("model"):
            self._setup_model()
        self.fingerprint["tokenizer"] = fp.tokenizer_identity(self.tokenizer)
        changes += self._check_resume(resume, ("tokenizer",))
        if resume is not None:
            line = fp.refuse_or_log(changes, resume, self.run_dir, True, self.is_main)
            if line:
                self.ranks.print(line)
        if self.is_main and (resume is None or not (self.run_dir / fp.FINGERPRINT).exists()):
            fp.write_fingerprint(self.run_dir, self.fingerprint)
        with self._timed("examples"):
            self._setup_examples()
        with self._timed("objective"):
            self._setup_objective()  # DPO: the starting model's log-probabilities of the pairs, once
        self._setup_optimizer()
        self._setup_graphs()
        with self._timed("schedule"):
            self._setup_schedule()
        if self.run_plan.by_step:
            self.ranks.print(self.run_plan.describe())
        self.state = ckpt.TrainerState(config=to_dict(self.config), fingerprint=self.fingerprint)
        self.noise_generator = torch.Generator(device=self.device).manual_seed(self.config.seed + 1)
        torch.manual_seed(self.config.seed)
        self.resumed = resume is not None
        if resume is not None:
            self.state = self.checkpoints.restore(resume, self.model_for_saving, self.optimizer, self.sharded,
                                                  self.noise_generator)
            # Checkpoints from now on record the settings they are trained under.
            self.state.config, self.state.fingerprint = to_dict(self.config), self.fingerprint
            self._saved_state = self._state_key()  # the resumed checkpoint holds exactly this state
            self.ranks.print(f"resumed from {resume} at step {self.state.step} (epoch {self.state.epoch})")
        self.tracker = (build_tracker(self.config.logging.report_to, self.run_dir, self.run_name,
                                      self.config.logging.wandb_project, to_dict(self.config),
                                      self.state.step if resume is not None else None)
                        if self.is_main else Tracker([]))

    def collator(self, examples) -> Collator:
        """Batches for training; coarse shapes when CUDA graphs replay them; pairs for DPO."""
        if self.config.preference.pairs is not None:
            return PreferenceCollator(examples, self.pad_id, self.causal, self.objective.reference)
        if self.graphed is None:
            return Collator(examples, self.pad_id, self.causal)
        o = self.config.optim
        rows = o.batch_size if o.max_tokens is None else GRAPH_ROW_MULTIPLE
        return Collator(examples, self.pad_id, self.causal, GRAPH_SOURCE_MULTIPLE, GRAPH_TARGET_MULTIPLE, rows)

    # ------------------------------------------------------------------ loop
    def train(self) -> RunResult:
        """The training loop, then the final folder; the run folder's lock is released at the end
        (however it ends)."""
        try:
            return self._train()
        finally:
            if hasattr(self, "lock"):
                self.lock.release()

    def _train(self) -> RunResult:
        o, state = self.config.optim, self.state
        accumulation = o.gradient_accumulation_steps
        started, window = time.perf_counter(), MetricWindow()
        bar = tqdm(total=self.schedule.total_steps, initial=state.step, desc="train", disable=not self.is_main
                   or not sys.stderr.isatty(), dynamic_ncols=True)
        budget = self.schedule.total_steps
        stopped_early = guards.stopped_before(self.state, self.config.eval, self.ranks.print)
        finished_before = stopped_early or state.epoch >= o.epochs or state.step >= budget
        if finished_before and self.resumed:
            self.ranks.print(f"{self.run_dir}: " + (
                f"early stopping already ended this run at step {state.step} ({state.evals_without_improvement} "
                f"evaluations without improvement, patience {self.config.eval.patience}); not training further"
                if stopped_early else f"this run already finished at step {state.step}; nothing to train"))
        self.model.train()
        while state.epoch < o.epochs and not stopped_early and state.step < budget:
            epoch = self.epoch_data(state.epoch)
            with self._timed(f"epoch_{state.epoch}_plan"):  # its batches (set-up's last part for epoch 0)
                batches = self._plan(state.epoch)
            collator = self.collator(epoch.examples)
            loader = self._loader(PlannedBatches(batches[state.batches_done:], collator))
            for first in range(state.batches_done, len(batches), accumulation):
                self._log_curriculum(epoch, first)                # 3, 4, 7, 9: an epoch or a stage starts here
                micro_batches = [next(loader) for _ in batches[first:first + accumulation]]
                step_before = state.step
                metrics = self._optimizer_step(micro_batches)                       # loss, backward, step
                state.batches_done = first + len(micro_batches)
                if "first_step" not in self.timings:
                    self.timings["first_step"] = round(time.perf_counter() - started, 3)
                    self.timings.setdefault("rss_mib", {})["first_step"] = rss_mib()
                if state.step == step_before:  # a skipped non-finite step: nothing to log or save
                    continue
                window.add(metrics)
                bar.update(1)
                bar.set_postfix(loss=f"{metrics['train/loss']:.3f}", lr=f"{metrics['train/learning_rate']:.2e}")
                if state.step % self.config.logging.log_every == 0:
                    self.tracker.log({**window.flush(), **system_metrics()}, state.step)
                if state.step % self.config.eval.eval_steps == 0:
                    stopped_early = self._evaluate_and_keep_best()                  # 1. validation
                if state.step % self.config.checkpoint.save_steps == 0:
                    self._save()
                if self.stop_agreed:                                          # Ctrl-C / SIGTERM: save, exit
                    self._stop_on_signal()
                if stopped_early or state.step >= budget:
                    break
            if state.step >= budget:
                stopped_early = self._evaluate_and_keep_best() or stopped_early
            elif not stopped_early:
                state.epoch, state.batches_done = state.epoch + 1, 0
                stopped_early = self._evaluate_and_keep_best()
        bar.close()
        if self.graphed is not None:
            g = self.graphed
            self.ranks.print(f"CUDA graphs: {len(g.graphs)} batch shapes, captured in {g.capture_seconds:.1f} s"
                             + (f"; {len(g.failed)} ran eagerly ({g.failed[0]})" if g.failed else ""))
        if window.steps:
            self.tracker.log(window.flush(), state.step)
        state.stopped_early = stopped_early
        self._save()  # unless the newest checkpoint already holds this state (a finished run resumed)
        final_dir = self.run_dir / "final"
        if finished_before and self.resumed and guards.final_complete(final_dir):
            step = state.best_step if self.checkpoints.final_source(state) is not None else state.step
            final = FinalWeights(final_dir, step, ckpt.weights_note(state, step, self.config.eval.keep_best))
        else:
            final = self.checkpoints.save_final(state, self.model, self.model_for_saving, self.sharded,
                                                self.tokenizer)
        self.tracker.close()
        result = RunResult(state.step, stopped_early, state.best_val_loss, self.checkpoints.best(state),
                           str(final.folder), time.perf_counter() - started, dict(self.schedule.__dict__),
                           self.last_samples, final.step, final.note, dict(self.timings))
        if self.is_main:
            (self.run_dir / "run_summary.json").write_text(json.dumps(result.__dict__, indent=2) + "\n")
        return result

    def _optimizer_step(self, micro_batches: list[dict[str, torch.Tensor]]) -> dict[str, float]:
        """One optimizer step over the accumulated micro-batches. The loss is the token mean over
        every real target token of the step (all micro-batches, all ranks)."""
        o, state = self.config.optim, self.state
        # Target tokens (the loss's divisor; DPO: pairs) and prompt tokens of the step, over all ranks.
        targets = sum(self.objective.units(b) for b in micro_batches)
        prompts = sum(int(b["attention_mask"].sum()) for b in micro_batches)
        # The third count: ranks asking to stop (a signal), summed with the others at no extra cost.
        counts = self.ranks.all_reduce(torch.tensor([float(targets), float(prompts),
                                                     float(self.stop_request.requested)]))
        tokens, input_tokens = counts[0], float(counts[1])
        self.stop_agreed = bool(counts[2] > 0)
        smoothed_total = torch.zeros((), device=self.device)
        nll_total = torch.zeros((), device=self.device)
        extras_total = torch.zeros(len(self.objective.metric_names), device=self.device)
        tick = time.perf_counter()
        for i, batch in enumerate(micro_batches):
            batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
            if self.graphed is not None:                                             # replayed CUDA graph
                smoothed, nll, _ = self.graphed(batch, self.world / float(tokens))
            else:
                sync = i == len(micro_batches) - 1 or self.world == 1
                with self._gradient_sync(sync), self._autocast():
                    smoothed, nll, extras = self._loss(batch, o.label_smoothing)  # 6. label smoothing; 11. DPO
                    (smoothed * self.world / tokens).backward()
                extras_total += extras.detach()
            smoothed_total += smoothed.detach()
            nll_total += nll.detach()
        smoothed_total, nll_total = self.ranks.all_reduce(smoothed_total), self.ranks.all_reduce(nll_total)
        metrics = {"train/loss": float(smoothed_total / tokens), "train/nll": float(nll_total / tokens)}
        if self.objective.metric_names:  # DPO: preference/loss, preference/margin, preference/accuracy
            extras = (self.ranks.all_reduce(extras_total) / tokens).tolist()
            metrics.update(zip(self.objective.metric_names, extras, strict=True))
        noise_ratio = 0.0
        if self.config.gradient_noise.enabled:                                       # 10. gradient noise
            g = self.config.gradient_noise
            noise_ratio = add_gradient_noise(self.trainable_params, state.step, g.eta, g.gamma, self.noise_generator)
        grad_norm = sharding.full(torch.nn.utils.clip_grad_norm_(self.trainable_params,
                                                                 o.max_grad_norm or float("inf")))
        if not (math.isfinite(metrics["train/loss"]) and math.isfinite(float(grad_norm))):
            return self._skip_bad_step(metrics)
        state.bad_steps_in_a_row = 0
        learning_rate = lr_at(state.step, self.schedule)                             # 2. warmup + cosine
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate
        self.optimizer.step()
        self._zero_grad()
        state.step += 1
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - tick
        metrics.update({"train/learning_rate": learning_rate, "train/grad_norm": float(grad_norm),
                        "train/noise_to_grad_ratio": noise_ratio, "train/tokens": input_tokens + float(tokens),
                        "train/seconds": seconds, "train/epoch": state.epoch})
        return metrics

    def _stop_on_signal(self) -> None:
        """Save this state as a checkpoint (unless the newest holds it) and stop, naming the
        command that resumes the run."""
        self._save()
        self.tracker.close()
        number = self.stop_request.signal_number or 2  # another rank's signal: say Ctrl-C's
        raise TrainingInterrupted(f"interrupted at step {self.state.step}: checkpoint saved in "
                                  f"{self.run_dir / 'checkpoints'}; resume with: {resume_command(self.run_dir)}",
                                  number)

    def _skip_bad_step(self, metrics: dict[str, float]) -> dict[str, float]:
        state = self.state
        self._zero_grad()
        state.skipped_steps += 1
        state.bad_steps_in_a_row += 1
        self.ranks.print(f"warning: non-finite loss or gradient at step {state.step}; update skipped "
                         f"({state.bad_steps_in_a_row} in a row)")
        if state.bad_steps_in_a_row >= MAX_BAD_STEPS_IN_A_ROW:
            raise TrainingStopped(f"training diverged: {MAX_BAD_STEPS_IN_A_ROW} non-finite steps in a row at step "
                                  f"{state.step}; the last good checkpoint is kept in {self.run_dir / 'checkpoints'}. "
                                  "Lower the learning rate or check the data.")
        return metrics

    def _loss(self, batch: dict[str, torch.Tensor], eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The objective's sums for one batch: loss, NLL, extra metric sums (`losses.TokenObjective`,
        `preference.PreferenceObjective`)."""
        return self.objective.loss_sums(self.model, batch, eps)

    def _gradient_sync(self, sync: bool):
        if sync:
            return contextlib.nullcontext()
        return sharding.no_gradient_sync(self.model) if self.sharded else self.model.no_sync()

    def _zero_grad(self) -> None:
        # Replayed graphs add into fixed gradient buffers: zero them in place.
        self.optimizer.zero_grad(set_to_none=self.graphed is None)

    def _autocast(self, cache_enabled: bool = True):
        if self.bf16:
            return torch.autocast(self.device.type, dtype=torch.bfloat16, cache_enabled=cache_enabled)
        return contextlib.nullcontext()

    def cleanup(self) -> None:
        if hasattr(self, "lock"):
            self.lock.release()
        if hasattr(self, "ranks"):
            self.ranks.stop()


def run_training(config: TrainConfig) -> RunResult:
    """Set up, train, clean up. Raises UserError / TrainingStopped with a one-line message."""
    trainer = Trainer(config)
    try:
        with trainer.stop_request:
            trainer.setup()
            return trainer.train()
    except torch.cuda.OutOfMemoryError:
        raise TrainingStopped("CUDA out of memory: lower --batch-size, or --max-tokens when set, or use a "
                              "--preset for your card") from None
    finally:
        trainer.cleanup()

