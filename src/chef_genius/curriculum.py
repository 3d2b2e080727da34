"""Curriculum learning (Bengio et al. 2009) and the progressive quality threshold: which training
recipes each part of a run uses (improvements 3 and 7).

Levels: easy (at most 6 ingredients and 6 steps), medium (at most 12 and 12, easy included),
all. The curriculum's stages (default: easy while training progress is below 0.3, medium below
0.6, then all) advance with training progress; the last stage is always 'all' (the config says so)
and every run reaches it:

- By epoch, when that reaches the last stage (the defaults: 3 epochs or more). Epoch e of E has
  progress p = e / E and the level of the stage whose ``until`` first exceeds p; the threshold
  rises linearly, q(e) = q_start + (q_end - q_start) * e / (E - 1).
- By optimizer step otherwise (1 or 2 epochs with the curriculum on, or ``--max-steps`` ending the
  run before the last stage's epoch). Over the run's T optimizer steps, stage k covers the steps
  [until(k-1) * T, until(k) * T), rounded (the last stage at least one step), cut at the epoch
  boundaries into `Segment` s. Stage k's threshold is q at its start, rising linearly from q_start
  at step 0 to q_end where the last stage starts: one epoch gets the levels and thresholds of three
  (easy >= 0.50, medium >= 0.625, all >= 0.75). How a segment fills its share of its epoch:
  `chef_genius.dataset.epochs`.
- With the curriculum off and the progressive threshold on, likewise by step when by epoch the
  threshold would never reach q_end (one epoch, or --max-steps ending the run before the last
  epoch; ``data.threshold_by_step``, on by default): the same stages, each at level 'all', so the
  threshold still rises 0.50 -> 0.625 -> 0.75 inside the run.

A part of the run uses the recipes at or under its level with quality >= its threshold. When
that cannot fill the minimum (one batch per rank) the selection is relaxed, first to the next
looser level, then by lowering the threshold 0.05 at a time, with a warning: training never runs
on nothing. `unseen_classes` warns when a difficulty class of the data is in no selection that
trains (a threshold above every hard recipe's quality, say).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from chef_genius.config_schema import DataConfig
from chef_genius.quality import Difficulty

LEVELS = ("easy", "medium", "all")
LEVEL_MAX_DIFFICULTY = {"easy": Difficulty.EASY, "medium": Difficulty.MEDIUM, "all": Difficulty.HARD}
THRESHOLD_STEP = 0.05
EPSILON = 1e-6  # quality is stored as float32


@dataclass(frozen=True)
class EpochSelection:
    """The recipes one epoch (or one segment of it) trains on, and why."""

    epoch: int
    level: str
    threshold: float
    indices: np.ndarray
    relaxed_from: tuple[str, float] | None = None  # the (level, threshold) that was too small

    @property
    def level_index(self) -> int:
        return LEVELS.index(self.level)


@dataclass(frozen=True)
class Segment:
    """A stretch of one epoch's optimizer steps that trains on one curriculum stage."""

    epoch: int
    stage: int  # its index in DataConfig.curriculum_stages
    level: str
    threshold: float
    first_step: int  # the run's optimizer steps first_step .. end_step - 1
    end_step: int

    @property
    def steps(self) -> int:
        return self.end_step - self.first_step


def difficulty_level(epoch: int, epochs: int, config: DataConfig) -> str:
    """The curriculum level of an epoch when stages advance by epoch ('all' when the curriculum is off)."""
    if not config.curriculum:
        return "all"
    progress = epoch / epochs
    for stage in config.curriculum_stages:
        if progress < stage.until:
            return stage.level
    return config.curriculum_stages[-1].level


def quality_threshold(epoch: int, epochs: int, config: DataConfig) -> float:
    """q(e), or 0 when the progressive threshold is off."""
    if not config.progressive_quality:
        return 0.0
    if epochs == 1:
        return config.quality_start
    return config.quality_start + (config.quality_end - config.quality_start) * epoch / (epochs - 1)


def stages_by_step(epochs: int, started: int, config: DataConfig) -> bool:
    """Whether the stages advance by optimizer step: by epoch, the ``started`` epochs of the run
    (fewer than ``epochs`` under --max-steps) would never reach the last stage (the curriculum
    on) or the last threshold, q_end (the curriculum off, the progressive threshold on: then the
    stages keep their boundaries and change the threshold alone, every level 'all')."""
    reached = range(min(started, epochs))
    if config.curriculum:
        last = config.curriculum_stages[-1].level
        return all(difficulty_level(e, epochs, config) != last for e in reached)
    if config.progressive_quality and config.threshold_by_step and config.quality_end > config.quality_start:
        return all(quality_threshold(e, epochs, config) < config.quality_end - EPSILON for e in reached)
    return False


def stage_thresholds(config: DataConfig) -> list[float]:
    """Each stage's quality threshold when stages advance by step (0 when the progressive
    threshold is off): q_start at progress 0 rising linearly to q_end where the last stage starts."""
    stages = config.curriculum_stages
    if not config.progressive_quality:
        return [0.0] * len(stages)
    starts = [0.0] + [stage.until for stage in stages[:-1]]
    rise = config.quality_end - config.quality_start
    return [round(config.quality_start + rise * (start / starts[-1] if starts[-1] > 0 else 0.0), 6)
            for start in starts]


def run_segments(steps_per_epoch: list[int], total_steps: int, config: DataConfig) -> list[Segment]:
    """The stages by optimizer step over a run of ``total_steps`` (the schedule's, --max-steps
    included), cut at the epoch boundaries; the last stage also covers any planned steps after
    ``total_steps``. Every stage before the last ends at round(until * total_steps), at most
    ``total_steps - 1``, so the last one always trains."""
    stages, thresholds = config.curriculum_stages, stage_thresholds(config)
    latest = max(total_steps - 1, 0)
    cuts = [min(math.floor(stage.until * total_steps + 0.5), latest) for stage in stages[:-1]]
    bounds = [0, *cuts, sum(steps_per_epoch)]
    segments, start = [], 0
    for epoch, steps in enumerate(steps_per_epoch):
        for k, stage in enumerate(stages):
            first, end = max(start, bounds[k]), min(start + steps, bounds[k + 1])
            if first < end:
                level = stage.level if config.curriculum else "all"  # the threshold alone rises
                segments.append(Segment(epoch, k, level, thresholds[k], first, end))
        start += steps
    return segments


def matching(quality: np.ndarray, difficulty: np.ndarray, level: str, threshold: float) -> np.ndarray:
    """Row indices at or under ``level`` with quality >= ``threshold``."""
    keep = (difficulty <= LEVEL_MAX_DIFFICULTY[level]) & (quality >= threshold - EPSILON)
    return np.flatnonzero(keep)


def select(quality: np.ndarray, difficulty: np.ndarray, level: str, threshold: float, minimum: int, epoch: int,
           floor: float = 0.0) -> EpochSelection:
    """The recipes at ``level`` and ``threshold``; when fewer than ``minimum``, relaxed to the next
    looser level, then to thresholds 0.05 lower, down to ``floor``."""
    threshold = round(threshold, 6)
    indices = matching(quality, difficulty, level, threshold)
    if len(indices) >= minimum:
        return EpochSelection(epoch, level, threshold, indices)
    asked = (level, threshold)
    while len(indices) < minimum and (level != "all" or threshold > floor):
        if level != "all":
            level = LEVELS[LEVELS.index(level) + 1]
        else:
            threshold = max(floor, round(threshold - THRESHOLD_STEP, 6))
        indices = matching(quality, difficulty, level, threshold)
    return EpochSelection(epoch, level, threshold, indices, relaxed_from=asked)


def select_epoch(quality: np.ndarray, difficulty: np.ndarray, epoch: int, epochs: int, config: DataConfig,
                 minimum: int) -> EpochSelection:
    """The selection of an epoch when stages advance by epoch."""
    return select(quality, difficulty, difficulty_level(epoch, epochs, config),
                  quality_threshold(epoch, epochs, config), minimum, epoch)


def unseen_classes(difficulty: np.ndarray, selections: list[EpochSelection]) -> str | None:
    """A warning naming the difficulty classes of the training split that none of ``selections``
    (those of the parts of the run that train) includes: their recipes would never be trained on."""
    seen: set[int] = set()
    for selection in selections:
        seen.update(np.unique(difficulty[selection.indices]).tolist())
    missing = sorted(set(np.unique(difficulty).tolist()) - seen)
    if not missing:
        return None
    names = " and ".join(f"{Difficulty(d).label} ({int((difficulty == d).sum()):,})" for d in missing)
    highest = max((s.threshold for s in selections), default=0.0)
    return (f"the {names} recipes of the training split are never trained on: the quality thresholds (up to "
            f"{highest:.2f}) exclude them all; lower data.quality_end, or --set data.progressive_quality=false")
