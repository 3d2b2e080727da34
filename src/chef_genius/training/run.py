"""The run as one value: `build_run(config, ranks) -> Run`.

A `Run` is a frozen dataclass of the parts a training run is made of, each made by a function
that returns it (`training.parts`): the data splits, the model placed on its device with its
family and tokenizer, the examples and each epoch's batches, the AdamW optimizer, CUDA graphs,
the learning-rate schedule; and here the checkpoints and the metric sinks. The loop
(`trainer.train`), one optimizer step and evaluation are functions of ``(run, state)``;
``state`` (`checkpoints.folder.TrainerState`) is what a checkpoint saves (`start_state` makes it,
fresh or resumed). `parts.plan_only` builds just the plan, for ``chef-genius train --plan``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from chef_genius.checkpoints import fingerprint as fp
from chef_genius.checkpoints import folder as ckpt
from chef_genius.checkpoints import run_guards as guards
from chef_genius.checkpoints.persistence import RunCheckpoints
from chef_genius.checkpoints.runlock import RunLock
from chef_genius.config import to_dict, to_yaml
from chef_genius.config_schema import TrainConfig
from chef_genius.dataset.collate import TokenizedExamples
from chef_genius.families import ModelFamily
from chef_genius.losses import TokenObjective
from chef_genius.model.graphs import GraphedSteps
from chef_genius.model.placement import PlacedModel
from chef_genius.model.ranks import Ranks
from chef_genius.preference import PreferenceObjective
from chef_genius.schedule import Schedule
from chef_genius.tracking import Tracker, build_tracker
from chef_genius.training.parts import (
    Splits,
    build_graphs,
    build_objective,
    build_optimizer,
    build_schedule,
    load_model,
    load_splits,
    plan_epochs,
    uses_bf16,
)
from chef_genius.training.preference_data import PreferencePlan
from chef_genius.training.run_plan import RunPlan, timed


@dataclass
class Progress:
    """What this process notes while the run goes, beside the checkpointed state: seconds of each
    set-up part and of the first step, the last samples printed, whether some rank asked to stop,
    and which state the newest checkpoint holds."""

    timings: dict = field(default_factory=dict)
    last_samples: str | None = None
    stop_agreed: bool = False
    saved_key: str | None = None


@dataclass(frozen=True)
class Run:
    """A training run's parts, all built (`build_run`); ``progress`` is the one mutable notebook."""

    config: TrainConfig
    ranks: Ranks
    run_dir: Path
    bf16: bool
    splits: Splits
    family: ModelFamily
    tokenizer: object
    model: PlacedModel
    decoder_start_id: int | None
    plan: RunPlan | PreferencePlan
    val_examples: TokenizedExamples
    objective: TokenObjective | PreferenceObjective
    optimizer: torch.optim.Optimizer
    graphed: GraphedSteps | None
    schedule: Schedule
    checkpoints: RunCheckpoints
    resume_from: Path | None
    fingerprint: dict
    tracker: Tracker
    noise_generator: torch.Generator
    lock: RunLock
    progress: Progress

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id

    @property
    def device(self) -> torch.device:
        return self.ranks.device

    def autocast(self, cache_enabled: bool = True):
        return autocast(self.bf16, self.device, cache_enabled)

    def loss(self, batch: dict[str, torch.Tensor], eps: float):
        """The objective's sums for one batch through the training forward: loss, NLL, extra
        metric sums (`losses.TokenObjective`, `preference.PreferenceObjective`)."""
        return self.objective.loss_sums(self.model.forward, batch, eps)


def autocast(bf16: bool, device: torch.device, cache_enabled: bool = True):
    """bfloat16 autocast where the run trains in bf16, else nothing."""
    if bf16:
        return torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=cache_enabled)
    return contextlib.nullcontext()


def build_run(config: TrainConfig, ranks: Ranks) -> Run:
    """Every part of a training run, in the order a resume checks them: the run folder locked
    (one writer), the checkpoint to resume from, data, the model, examples and plan, optimizer,
    CUDA graphs, schedule, metric sinks. A resume that changes the run is refused before the
    model loads (settings, data, processes) or right after (tokenizer).

    Raises:
        UserError: a refused resume, a locked folder, unusable data or model (one line).
    """
    progress = Progress()
    run_dir = Path(config.output_dir)
    guards.demo_data_needs_prepare(config, run_dir)  # every rank refuses a foreign RUN/data
    lock = guards.lock_run_folder(run_dir, ranks)  # one writer per run folder (a barrier too)
    try:
        return _build(config, ranks, run_dir, lock, progress)
    except BaseException:
        lock.release()
        raise


def _build(config: TrainConfig, ranks: Ranks, run_dir: Path, lock: RunLock, progress: Progress) -> Run:
    timings = progress.timings
    checkpoints = RunCheckpoints(run_dir, config, ranks)
    resume = checkpoints.resume_point()  # the newest complete checkpoint
    if guards.keep_threshold_by_epoch(config, resume, run_dir):
        ranks.print(f"{resume}: checkpointed before data.threshold_by_step; the quality threshold keeps rising by "
                    "epoch")
    if ranks.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if resume is None or not (run_dir / "config.yaml").exists():  # keeps the run's original settings
            (run_dir / "config.yaml").write_text(to_yaml(config), encoding="utf-8")
    with timed(timings, "data"):
        splits = load_splits(config, run_dir, ranks)
    fingerprint = fp.run_fingerprint(config, splits.folder, ranks.world)
    allowed = config.checkpoint.resume_changed
    changes = guards.resume_differences(resume, run_dir, fingerprint, ("config", "data", "processes", "preference"),
                                        allowed)
    bf16 = uses_bf16(config, ranks)
    with timed(timings, "model"):
        family, tokenizer, placed, decoder_start_id = load_model(config, run_dir, ranks, splits, bf16)
    fingerprint["tokenizer"] = fp.tokenizer_identity(tokenizer)
    changes += guards.resume_differences(resume, run_dir, fingerprint, ("tokenizer",), allowed)
    if resume is not None and (line := fp.refuse_or_log(changes, resume, run_dir, True, ranks.is_main)):
        ranks.print(line)
    if ranks.is_main and (resume is None or not (run_dir / fp.FINGERPRINT).exists()):
        fp.write_fingerprint(run_dir, fingerprint)
    with timed(timings, "examples"):
        plan, val_examples, pairs = plan_epochs(config, ranks, splits, tokenizer, family, timings)
    pad_id = tokenizer.pad_token_id
    with timed(timings, "objective"):  # DPO: the starting model's log-probabilities of the pairs, once
        objective = build_objective(config, ranks, run_dir, placed, family, pad_id, decoder_start_id, fingerprint,
                                    pairs, lambda cache_enabled=True: autocast(bf16, ranks.device, cache_enabled))
    optimizer = build_optimizer(config, placed.trainable, ranks.device)
    graphed = build_graphs(config, ranks, placed,
                           lambda batch, eps: family.loss_sums(placed.forward, batch, eps, pad_id, decoder_start_id),
                           lambda cache_enabled=True: autocast(bf16, ranks.device, cache_enabled))
    with timed(timings, "schedule"):
        schedule = build_schedule(config, plan, ranks.is_main)
    if plan.by_step:
        ranks.print(plan.describe())
    noise_generator = torch.Generator(device=ranks.device).manual_seed(config.seed + 1)
    torch.manual_seed(config.seed)
    resumed_step = ckpt.saved_state(resume).step if resume is not None else None
    tracker = (build_tracker(config.logging.report_to, run_dir, config.logging.run_name or run_dir.name,
                             config.logging.wandb_project, to_dict(config), resumed_step)
               if ranks.is_main else Tracker([]))
    return Run(config, ranks, run_dir, bf16, splits, family, tokenizer, placed, decoder_start_id, plan, val_examples,
               objective, optimizer, graphed, schedule, checkpoints, resume, fingerprint, tracker, noise_generator,
               lock, progress)


def start_state(run: Run) -> ckpt.TrainerState:
    """Where training starts: a fresh state, or the checkpoint's (weights, optimizer and every
    random generator restored as they were)."""
    state = ckpt.TrainerState(config=to_dict(run.config), fingerprint=run.fingerprint)
    if run.resume_from is None:
        return state
    state = run.checkpoints.restore(run.resume_from, run.model.saved, run.optimizer, run.model.sharded,
                                    run.noise_generator)
    # Checkpoints from now on record the settings they are trained under.
    state.config, state.fingerprint = to_dict(run.config), run.fingerprint
    run.progress.saved_key = state_key(state)  # the resumed checkpoint holds exactly this state
    run.ranks.print(f"resumed from {run.resume_from} at step {state.step} (epoch {state.epoch})")
    return state


def state_key(state: ckpt.TrainerState) -> str:
    """The trainer state without its RNG captures: equal keys, equal checkpoints."""
    saved = {k: v for k, v in dataclasses.asdict(state).items() if k not in ("python_rng", "numpy_rng")}
    return json.dumps(saved, sort_keys=True, default=str)
