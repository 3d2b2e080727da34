"""Curriculum learning (Bengio et al. 2009) and the progressive quality threshold: which training
recipes each epoch uses (improvements 3 and 7).

Epoch e of E has training progress p = e / E. The curriculum stage whose ``until`` first
exceeds p gives the difficulty level (easy: at most 6 ingredients and 6 steps; medium: at most 12
and 12, easy included; all). The quality threshold rises linearly,
q(e) = q_start + (q_end - q_start) * e / (E - 1). An epoch uses the recipes at or under its level
with quality >= q(e). When that cannot fill the minimum (one batch per rank) the selection is
relaxed, first to the next looser level, then by lowering the threshold 0.05 at a time, with a
warning: training never runs on nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from chef_genius.config import DataConfig
from chef_genius.quality import Difficulty

LEVELS = ("easy", "medium", "all")
LEVEL_MAX_DIFFICULTY = {"easy": Difficulty.EASY, "medium": Difficulty.MEDIUM, "all": Difficulty.HARD}
THRESHOLD_STEP = 0.05
EPSILON = 1e-6  # quality is stored as float32


@dataclass(frozen=True)
class EpochSelection:
    """The recipes one epoch trains on, and why."""

    epoch: int
    level: str
    threshold: float
    indices: np.ndarray
    relaxed_from: tuple[str, float] | None = None  # the (level, threshold) that was too small

    @property
    def level_index(self) -> int:
        return LEVELS.index(self.level)


def difficulty_level(epoch: int, epochs: int, config: DataConfig) -> str:
    """The curriculum level of an epoch ('all' when the curriculum is off)."""
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


def matching(quality: np.ndarray, difficulty: np.ndarray, level: str, threshold: float) -> np.ndarray:
    """Row indices at or under ``level`` with quality >= ``threshold``."""
    keep = (difficulty <= LEVEL_MAX_DIFFICULTY[level]) & (quality >= threshold - EPSILON)
    return np.flatnonzero(keep)


def select_epoch(quality: np.ndarray, difficulty: np.ndarray, epoch: int, epochs: int, config: DataConfig,
                 minimum: int) -> EpochSelection:
    """The epoch's selection, relaxed when it holds fewer than ``minimum`` recipes."""
    level = difficulty_level(epoch, epochs, config)
    threshold = round(quality_threshold(epoch, epochs, config), 6)
    indices = matching(quality, difficulty, level, threshold)
    if len(indices) >= minimum:
        return EpochSelection(epoch, level, threshold, indices)
    asked = (level, threshold)
    while len(indices) < minimum and (level != "all" or threshold > 0):
        if level != "all":
            level = LEVELS[LEVELS.index(level) + 1]
        else:
            threshold = max(0.0, round(threshold - THRESHOLD_STEP, 6))
        indices = matching(quality, difficulty, level, threshold)
    return EpochSelection(epoch, level, threshold, indices, relaxed_from=asked)


def unreached_levels(epochs: int, config: DataConfig, reached: int | None = None) -> str | None:
    """A warning when the curriculum's stages by epoch never reach its last level ('all') in a run
    of ``epochs`` epochs of which ``reached`` are started (fewer under --max-steps): recipes of the
    harder levels would never be trained on."""
    if not config.curriculum:
        return None
    reached = epochs if reached is None else min(reached, epochs)
    last = config.curriculum_stages[-1].level
    seen = sorted({difficulty_level(e, epochs, config) for e in range(reached)}, key=LEVELS.index)
    if last in seen:
        return None
    where = (f"with {epochs} epoch(s)" if reached == epochs
             else f"with --max-steps ending in epoch {reached} of {epochs}")
    needed = next((n for n in range(epochs + 1, 1000) if difficulty_level(n - 1, n, config) == last), None)
    fix = f"use --epochs {needed} or more" if needed and reached == epochs else "train longer"
    return (f"{where} the curriculum stays at {' then '.join(seen) or 'no'} recipes: the harder ones are never "
            f"trained on; {fix}, or --set data.curriculum=false")
