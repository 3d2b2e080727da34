"""Learning-rate schedule: linear warmup, then cosine annealing with warm restarts (SGDR,
Loshchilov & Hutter 2016), or linear warmup and linear decay.

`lr_at` is a pure function of the optimizer step, so a resumed run continues exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Schedule:
    """Resolved schedule parameters (see `ScheduleConfig`); `warmup` already capped."""

    peak: float
    total_steps: int
    warmup: int
    first_cycle: int
    cycle_mult: int
    minimum: float
    cosine: bool = True

    @classmethod
    def build(cls, peak: float, total_steps: int, warmup_steps: int, warmup_max_fraction: float,
              first_cycle: int, cycle_mult: int, minimum: float, cosine: bool) -> Schedule:
        warmup = min(warmup_steps, int(warmup_max_fraction * total_steps))
        return cls(peak, total_steps, warmup, first_cycle, cycle_mult, minimum, cosine)


def cycle_position(tau: int, first_cycle: int, cycle_mult: int) -> tuple[int, int, int]:
    """(cycle index i, position inside it, its length T_i) for step tau after warmup."""
    index, length = 0, first_cycle
    while tau >= length:
        tau -= length
        index += 1
        length *= cycle_mult
    return index, tau, length


def lr_at(step: int, s: Schedule) -> float:
    """Learning rate for optimizer step ``step`` (0-based: the step about to be taken)."""
    if step < s.warmup:
        return s.peak * step / s.warmup
    tau = step - s.warmup
    if not s.cosine:
        remaining = max(s.total_steps - s.warmup, 1)
        return s.peak * max(0.0, 1.0 - tau / remaining)
    _, position, length = cycle_position(tau, s.first_cycle, s.cycle_mult)
    return s.minimum + (s.peak - s.minimum) * (1 + math.cos(math.pi * position / length)) / 2


def ends_high(s: Schedule) -> bool:
    """True when training stops in the upper half of a cosine cycle (the original's mistake)."""
    if not s.cosine or s.total_steps <= s.warmup:
        return False
    _, position, length = cycle_position(s.total_steps - 1 - s.warmup, s.first_cycle, s.cycle_mult)
    return position < length / 2
