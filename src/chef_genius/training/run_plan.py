"""The run's plan: each epoch's batches and optimizer steps, and the curriculum's parts along them.

A `RunPlan`, when made, decides whether the curriculum's stages advance by epoch or by optimizer step
(`curriculum.stages_by_step`: by step when, by epoch, the run would never reach the last stage)
and counts every epoch's optimizer steps for the schedule: from the selections' sizes without a
token budget (nothing is built), else from the built epochs' lengths (epoch 0 built last, so the
loop starts on the kept one; later ones are built again when the loop reaches them, and a run that
--max-steps turns from by epoch to by step also builds its by-epoch selections to find that, see
`RunPlan._size`). By epoch, an epoch is one pass over its selection, as before. By step, an epoch is one
pass over its pool (every recipe at the run's lowest threshold) in length, and its batches are its
segments' own plans in stage order (`epochs.segment_batches`), each over its selection's index
array inside the pool. The loop asks for an epoch's batches and for the curriculum part (an
epoch, or a segment) that starts at a batch, to log it. All of it is a pure function of (seed,
settings, rank, world): a resumed run rebuilds the same batches and skips those already trained on.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import time
from pathlib import Path

from chef_genius.config_schema import TrainConfig
from chef_genius.curriculum import EpochSelection, Segment, run_segments, stages_by_step, unseen_classes
from chef_genius.dataset.collate import BatchPlan, batch_count, plan_batches
from chef_genius.dataset.epochs import EpochBuilder, EpochData, segment_batches


def rss_mib() -> int | None:
    """This process's resident memory now, in MiB (Linux's /proc; None elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20)


@contextlib.contextmanager
def timed(timings: dict, part: str):
    """Record the seconds the block takes as ``timings[part]``, and the resident memory after it
    as ``timings["rss_mib"][part]`` (the scale benchmark tells the data side from the model by it)."""
    started = time.perf_counter()
    yield
    timings[part] = round(time.perf_counter() - started, 3)
    timings.setdefault("rss_mib", {})[part] = rss_mib()


def run_steps(steps_per_epoch: list[int], max_steps: int | None) -> int:
    """The optimizer steps the run trains: all epochs', or --max-steps when fewer."""
    total = sum(steps_per_epoch)
    return total if max_steps is None else min(total, max_steps)


def epochs_started(steps_per_epoch: list[int], total_steps: int) -> int:
    """How many epochs begin before the run's last step."""
    return sum(1 for before in itertools.accumulate([0] + steps_per_epoch[:-1]) if before < total_steps)


class RunPlan:
    """Every epoch's batches for one rank, and the curriculum parts (epochs or segments) of the run."""

    def __init__(self, builder: EpochBuilder, config: TrainConfig, rank: int, world: int,
                 timings: dict | None = None):
        self.builder = builder
        self.timings = {} if timings is None else timings  # seconds of each epoch's build
        self.config = config
        self.rank, self.world = rank, world
        self.by_step = False
        self.segments: list[Segment] = []
        self.steps_per_epoch: list[int] = []
        self.total_steps = 0
        self._built: EpochData | None = None
        self._pool_lengths: list[int] = []  # this rank's batches per epoch: one pass over its pool
        self._selections: dict[Segment, EpochSelection] = {}
        self._size()  # made whole: its steps counted and its segments known

    def _size(self) -> None:
        """Decide how the stages advance; count each epoch's optimizer steps and the run's."""
        o, data = self.config.optim, self.config.data
        self.by_step = stages_by_step(o.epochs, o.epochs, data)
        if not self.by_step:
            self._count_steps()
            self.by_step = stages_by_step(o.epochs, epochs_started(self.steps_per_epoch, self.total_steps), data)
        if self.by_step:
            # --max-steps stops before the last stage: count again over pools (with a token budget
            # the by-epoch selections were built to count, and the pools are built now)
            self._built = None
            self._count_steps()
            self.segments = run_segments(self.steps_per_epoch, self.total_steps, data)

    def _count_steps(self) -> None:
        o = self.config.optim
        if o.max_tokens is None:  # batches of batch_size: their count follows from the selection's size
            self._pool_lengths = [batch_count(len(self._selection_of(epoch).indices), o.batch_size, self.world)
                                  for epoch in range(o.epochs)]
        else:  # from the built epochs' lengths; epoch 0 built last, so the loop starts on the kept one
            self._pool_lengths = [len(self._pool_batches(epoch)) for epoch in reversed(range(o.epochs))][::-1]
        self.steps_per_epoch = [math.ceil(n / o.gradient_accumulation_steps) for n in self._pool_lengths]
        self.total_steps = run_steps(self.steps_per_epoch, o.max_steps)

    def epoch_data(self, epoch: int) -> EpochData:
        """The epoch's tokenized examples: its selection, or its pool by step (the last one built is kept)."""
        if self._built is None or self._built.selection.epoch != epoch:
            with timed(self.timings, f"epoch_{epoch}_build"):
                self._built = self.builder.build(epoch, self._selection_of(epoch))
        return self._built

    def _selection_of(self, epoch: int) -> EpochSelection:
        """What the epoch holds: its pool by step, its curriculum selection by epoch."""
        return self.builder.select_pool(epoch) if self.by_step else self.builder.select(epoch)

    def _pool_batches(self, epoch: int) -> BatchPlan:
        o = self.config.optim
        return plan_batches(self.epoch_data(epoch).examples.lengths(), self.config.seed, epoch, o.batch_size,
                            o.max_tokens, shuffle=True, rank=self.rank, world=self.world)

    def batches(self, epoch: int) -> BatchPlan:
        """The epoch's batches (example positions) for this rank; each segment's share, by step."""
        if not self.by_step:
            return self._pool_batches(epoch)
        o, start = self.config.optim, self._first_step(epoch)
        accumulation, length = o.gradient_accumulation_steps, self._pool_lengths[epoch]
        parts = [(self.selection(s), min((s.end_step - start) * accumulation, length)
                  - (s.first_step - start) * accumulation) for s in self.segments if s.epoch == epoch]
        examples = self.epoch_data(epoch).examples
        return segment_batches(examples.lengths(), examples.index, parts, self.config.seed, epoch, o.batch_size,
                               o.max_tokens, self.rank, self.world)

    def selection(self, segment: Segment) -> EpochSelection:
        """A segment's recipes (inside its epoch's pool)."""
        if segment not in self._selections:
            self._selections[segment] = self.builder.select_segment(segment, self.builder.select_pool(segment.epoch))
        return self._selections[segment]

    def part_starting_at(self, epoch: int, batch: int) -> EpochSelection | None:
        """The selection of the curriculum part (the epoch, or a segment) that starts at this batch."""
        if not self.by_step:
            return self.epoch_data(epoch).selection if batch == 0 else None
        start, accumulation = self._first_step(epoch), self.config.optim.gradient_accumulation_steps
        return next((self.selection(s) for s in self.segments
                     if s.epoch == epoch and (s.first_step - start) * accumulation == batch), None)

    def _first_step(self, epoch: int) -> int:
        return sum(self.steps_per_epoch[:epoch])

    def _parts(self) -> list[tuple[int, EpochSelection, int, int]]:
        """(epoch, selection, first step, end step) of each curriculum part."""
        if self.by_step:
            return [(s.epoch, self.selection(s), s.first_step, s.end_step) for s in self.segments]
        return [(epoch, self.builder.select(epoch), self._first_step(epoch), self._first_step(epoch) + steps)
                for epoch, steps in enumerate(self.steps_per_epoch)]

    def rows(self) -> list[dict]:
        """The plan view: each part's epoch, steps (numbered from 1, as logged), difficulty,
        threshold, examples and optimizer steps."""
        return [{"epoch": epoch, "first_step": first + 1, "last_step": end, "difficulty": selection.level,
                 "quality_threshold": selection.threshold, "examples": len(selection.indices),
                 "optimizer_steps": end - first, "relaxed_from": selection.relaxed_from}
                for epoch, selection, first, end in self._parts()]

    def unseen_warning(self) -> str | None:
        """A warning when a difficulty class of the training split is in no part that trains."""
        trained = [selection for _, selection, first, _ in self._parts() if first < self.total_steps]
        return unseen_classes(self.builder.table.difficulty, trained)

    def describe(self) -> str:
        """One line on the stages by step, for the training output."""
        data = self.config.data
        spans = []
        for k, stage in enumerate(data.curriculum_stages):
            mine = [s for s in self.segments if s.stage == k and s.first_step < self.total_steps]
            if mine:  # the curriculum off: the threshold alone changes (every level 'all')
                name = stage.level if data.curriculum else f"quality >= {mine[0].threshold:.4g}"
                spans.append(f"{name} steps {mine[0].first_step + 1}-{min(mine[-1].end_step, self.total_steps)}")
        epochs, planned = len(self.steps_per_epoch), sum(self.steps_per_epoch)
        what = "curriculum stages" if data.curriculum else "quality threshold"
        if self.total_steps < planned:  # --max-steps: say what is trained, and of what plan
            started = epochs_started(self.steps_per_epoch, self.total_steps)
            span = (f"{self.total_steps:,} of the {planned:,} optimizer steps planned over {epochs} "
                    f"epoch{'s' if epochs > 1 else ''}: --max-steps stops training in epoch {started - 1}")
        else:
            span = f"{epochs} epoch{'s' if epochs > 1 else ''}, {planned:,} optimizer steps in all"
        return f"{what} by optimizer step ({span}): " + ", ".join(spans)
