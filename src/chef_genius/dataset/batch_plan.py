"""Length-grouped batch plans, held as arrays.

A plan is a pure function of (seed, epoch, lengths, batch settings, rank, world size), so a
resumed run rebuilds exactly the same batches and skips the ones already trained on. Its
batches are slices of one position array (`BatchPlan`), not a Python list per batch: an epoch of
two million examples would otherwise hold a million lists and two million int objects.

The random draws are Python's ``random.Random(f"{seed}:{epoch}")`` shuffles, as they always
were (the order of the examples, then of the batches), so plans, and resumed runs, are
unchanged; the sorting and packing between the two shuffles is done on arrays.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Iterator, Sequence

import numpy as np


class BatchPlan(Sequence):
    """Batches of example positions: batch ``i`` is ``positions[starts[i]:ends[i]]``, read as a
    list of ints (what the collator and the tests take). A slice is a plan again (no copy)."""

    def __init__(self, positions: np.ndarray, starts: np.ndarray, ends: np.ndarray):
        self.positions = positions
        self.starts = starts
        self.ends = ends

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return BatchPlan(self.positions, self.starts[i], self.ends[i])
        return self.positions[self.starts[i]:self.ends[i]].tolist()

    def __iter__(self) -> Iterator[list[int]]:
        for start, end in zip(self.starts.tolist(), self.ends.tolist(), strict=True):
            yield self.positions[start:end].tolist()

    def __eq__(self, other) -> bool:
        if not isinstance(other, Sequence):
            return NotImplemented
        return len(self) == len(other) and all(list(a) == list(b) for a, b in zip(self, other, strict=True))

    __hash__ = None  # mutable arrays, compared by value

    def __repr__(self) -> str:
        return f"BatchPlan({len(self)} batches of {int((self.ends - self.starts).sum())} positions)"

    def mapped(self, positions: np.ndarray) -> BatchPlan:
        """The same batches with each position ``p`` read as ``positions[p]``."""
        return BatchPlan(positions[self.positions], self.starts, self.ends)

    @classmethod
    def join(cls, plans: list[BatchPlan]) -> BatchPlan:
        """The plans' batches one after another."""
        flat = [plan._flat() for plan in plans]
        sizes = [np.diff(offsets) for _, offsets in flat]
        sizes = np.concatenate(sizes) if sizes else np.zeros(0, dtype=np.int64)
        ends = np.cumsum(sizes, dtype=np.int64)
        positions = np.concatenate([p for p, _ in flat]) if flat else np.zeros(0, dtype=np.int64)
        return cls(positions, ends - sizes, ends)

    def _flat(self) -> tuple[np.ndarray, np.ndarray]:
        """The batches' positions end to end, in batch order, and their offsets."""
        sizes = (self.ends - self.starts).astype(np.int64)
        offsets = np.zeros(len(sizes) + 1, dtype=np.int64)
        np.cumsum(sizes, out=offsets[1:])
        within = np.arange(offsets[-1], dtype=np.int64) - np.repeat(offsets[:-1], sizes)
        return self.positions[np.repeat(self.starts.astype(np.int64), sizes) + within], offsets


def batch_count(examples: int, batch_size: int, world: int = 1) -> int:
    """How many batches `plan_batches` gives each rank without a token budget: every pool is cut
    into ``batch_size`` examples, so the count follows from the number of examples alone."""
    return -(-examples // batch_size) // world


def plan_batches(lengths: np.ndarray, seed: int, epoch: int | str, batch_size: int, max_tokens: int | None = None,
                 shuffle: bool = True, rank: int = 0, world: int = 1, pool_batches: int = 64) -> BatchPlan:
    """Length-grouped batches of example positions for one epoch, for this rank.

    Examples are shuffled (seeded by seed and epoch), cut into pools of about ``pool_batches``
    batches, sorted by length inside each pool, and packed: ``batch_size`` examples, or as many
    as keep ``count * longest <= max_tokens`` when a token budget is given. Batch order is then
    shuffled. With several ranks each takes every world-th batch and all get the same count.
    """
    rng = random.Random(f"{seed}:{epoch}")
    order_list = list(range(len(lengths)))
    if shuffle:
        rng.shuffle(order_list)
    order = np.asarray(order_list, dtype=np.int64)
    del order_list
    mean_length = max(float(lengths.mean()) if len(lengths) else 1.0, 1.0)
    per_batch = batch_size if max_tokens is None else max(1, int(max_tokens / mean_length))
    pool = max(per_batch * pool_batches, 1)
    positions = _sorted_in_pools(order, np.asarray(lengths, dtype=np.int64), pool)
    if max_tokens is None:  # every batch_size-th position of a pool starts a batch
        starts = np.flatnonzero(np.arange(len(positions), dtype=np.int64) % pool % batch_size == 0)
    else:
        starts = _token_batch_starts(np.asarray(lengths)[positions].tolist(), pool, max_tokens)
    ends = np.append(starts[1:], len(positions))[:len(starts)].astype(np.int64)  # batches tile the positions
    if shuffle:  # the same draws as shuffling the list of batches: a shuffle depends on its length only
        batch_order = list(range(len(starts)))
        rng.shuffle(batch_order)
        starts, ends = starts[batch_order], ends[batch_order]
    if world > 1:
        per_rank = len(starts) // world
        starts, ends = starts[rank::world][:per_rank], ends[rank::world][:per_rank]
    return BatchPlan(positions, starts, ends)


def _sorted_in_pools(order: np.ndarray, lengths: np.ndarray, pool: int) -> np.ndarray:
    """``order`` cut into pools of ``pool`` positions, each sorted by length (stable: equal
    lengths keep their shuffled order), as one sort on (pool, length)."""
    pools = np.arange(len(order), dtype=np.int64) // pool
    key = pools * (int(lengths.max(initial=0)) + 1) + lengths[order]
    return order[np.argsort(key, kind="stable")]


def _token_batch_starts(sorted_lengths: list[int], pool: int, max_tokens: int) -> np.ndarray:
    """Where each batch starts when packing by token budget, pool by pool: a batch takes the next
    example while ``count * longest <= max_tokens`` (its first one always). Lengths rise inside a
    pool, so the newest example is the longest and ``count * length`` rises with each example:
    each batch's end is a bisection, not a step per example."""
    starts = []
    for pool_start in range(0, len(sorted_lengths), pool):
        pool_end = min(pool_start + pool, len(sorted_lengths))
        start = pool_start
        while start < pool_end:
            starts.append(start)
            first = start  # bound for the key below
            start = bisect.bisect_right(range(first + 1, pool_end), max_tokens,
                                        key=lambda j: (j - first + 1) * sorted_lengths[j]) + first + 1
    return np.asarray(starts, dtype=np.int64)
