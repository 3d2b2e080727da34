"""Training examples, length-grouped batch plans and collation.

An example is a prompt (the dish and its key food names in an instruction template) and a
target (the recipe's serialization). Token ids live in flat int32 arrays with offsets, so
millions of examples cost a few bytes per token rather than a Python object each.

Batch plans (`batch_plan`) are pure functions of (seed, epoch, lengths, batch settings, rank,
world size), so a resumed run rebuilds exactly the same batches and skips those already trained on.
"""

from __future__ import annotations

import itertools
import mmap
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from chef_genius.dataset.batch_plan import BatchPlan, batch_count, plan_batches
from chef_genius.dataset.table import RecipeTable, load_split
from chef_genius.families import ModelFamily
from chef_genius.families.padding import PAD_MULTIPLE, round_up

__all__ = ["BatchPlan", "Collator", "PlannedBatches", "RecipeTable", "TokenizedExamples", "batch_count",
           "concatenate_flat", "flatten", "load_split", "plan_batches", "tokenize_examples"]


@dataclass
class TokenizedExamples:
    """Token ids of prompts and targets; ``index`` maps examples to table rows.

    Prompts are flat with offsets. Targets are read from a token store, ``target_ids`` (flat: a
    split's memory-mapped token cache, shared by every epoch, or these examples' own ids), at
    ``target_starts`` for ``target_lengths`` tokens; a start at or past the store's end reads
    ``extra_target_ids`` instead (targets rewritten for one epoch by augmentation). Nothing of
    the store is copied per epoch.
    """

    source_ids: np.ndarray
    source_offsets: np.ndarray
    target_ids: np.ndarray
    target_starts: np.ndarray
    target_lengths: np.ndarray
    index: np.ndarray
    extra_target_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int32))

    def __len__(self) -> int:
        return len(self.index)

    def source(self, i: int) -> np.ndarray:
        return self.source_ids[self.source_offsets[i]:self.source_offsets[i + 1]]

    def target(self, i: int) -> np.ndarray:
        start, length, stored = int(self.target_starts[i]), int(self.target_lengths[i]), len(self.target_ids)
        if start < stored:
            return self.target_ids[start:start + length]
        return self.extra_target_ids[start - stored:start - stored + length]

    def lengths(self) -> np.ndarray:
        """Tokens per example (prompt + target): the batch planner's cost."""
        return np.diff(self.source_offsets) + self.target_lengths

    def nbytes(self) -> int:
        """Bytes these examples hold in memory (a memory-mapped store counts nothing)."""
        held = [self.source_ids, self.source_offsets, self.target_starts, self.target_lengths, self.index,
                self.extra_target_ids] + ([] if _mapped(self.target_ids) else [self.target_ids])
        return sum(a.nbytes for a in held)

    @classmethod
    def from_sequences(cls, sources: list, targets: list, index: np.ndarray) -> TokenizedExamples:
        source_ids, source_offsets = flatten(sources)
        target_ids, target_offsets = flatten(targets)
        return cls(source_ids, source_offsets, target_ids, target_offsets[:-1], np.diff(target_offsets), index)

    def __getstate__(self) -> dict:
        # A memory-mapped store travels as its file, not its contents (DataLoader workers that
        # are spawned rather than forked unpickle the collator and its examples).
        state = dict(self.__dict__)
        if _mapped(self.target_ids):
            ids = self.target_ids
            state["target_ids"] = ("memmap", ids.filename, ids.offset, ids.shape, ids.dtype.str)
        return state

    def __setstate__(self, state: dict) -> None:
        ids = state["target_ids"]
        if isinstance(ids, tuple):
            _, filename, offset, shape, dtype = ids
            state["target_ids"] = np.memmap(filename, dtype=np.dtype(dtype), mode="r", offset=offset, shape=shape)
        self.__dict__.update(state)


def _mapped(array: np.ndarray) -> bool:
    """A whole memory-mapped file (not a view of one)."""
    return isinstance(array, np.memmap) and isinstance(array.base, mmap.mmap)


def flatten(sequences: list) -> tuple[np.ndarray, np.ndarray]:
    """Token id lists as one flat int32 array and int64 offsets (``len(sequences) + 1``)."""
    lengths = np.fromiter(map(len, sequences), dtype=np.int64, count=len(sequences))
    offsets = np.zeros(len(sequences) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    ids = np.fromiter(itertools.chain.from_iterable(sequences), dtype=np.int32, count=int(offsets[-1]))
    return ids, offsets


def concatenate_flat(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Flat (ids, offsets) pairs joined into one."""
    if not parts:
        return np.zeros(0, dtype=np.int32), np.zeros(1, dtype=np.int64)
    ids = np.concatenate([p[0] for p in parts]).astype(np.int32, copy=False)
    lengths = np.concatenate([np.diff(p[1]) for p in parts])
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return ids, offsets


def tokenize_examples(tokenizer, prompts: list[str], targets: list[str], max_source: int, max_target: int,
                      family: ModelFamily, index: np.ndarray | None = None) -> TokenizedExamples:
    """Tokenize prompt/target pairs as ``family`` encodes them (`chef_genius.families`)."""
    index = np.arange(len(prompts)) if index is None else index
    return TokenizedExamples.from_sequences(family.encode_sources(tokenizer, prompts, max_source),
                                            family.encode_targets(tokenizer, targets, max_target), index)


class Collator:
    """Pads a batch of example positions into model inputs, laid out as the model's family does
    (`ModelFamily.collate`).

    Widths are rounded up to ``source_multiple`` / ``target_multiple`` tokens (causal: the
    target multiple) and the row count to ``row_multiple``, with filler rows that hold one
    visible pad token and no target (they add nothing to the loss or the gradients). Coarse
    multiples give few distinct batch shapes, which CUDA graphs need; the defaults pad little.
    """

    def __init__(self, examples: TokenizedExamples, pad_id: int, family: ModelFamily,
                 source_multiple: int = PAD_MULTIPLE, target_multiple: int = PAD_MULTIPLE, row_multiple: int = 1):
        self.examples = examples
        self.pad_id = pad_id
        self.family = family
        self.source_multiple = source_multiple
        self.target_multiple = target_multiple
        self.row_multiple = row_multiple

    def __call__(self, positions: list[int]) -> dict[str, torch.Tensor]:
        sources = [self.examples.source(p) for p in positions]
        targets = [self.examples.target(p) for p in positions]
        fillers = round_up(len(positions), self.row_multiple) - len(positions)
        return self.family.collate(sources, targets, self.pad_id, self.source_multiple, self.target_multiple,
                                   fillers)


class PlannedBatches(torch.utils.data.Dataset):
    """Planned batches (a `BatchPlan`, or a list) as a map-style dataset, so DataLoader workers
    collate them."""

    def __init__(self, batches: Sequence[list[int]], collator: Collator):
        self.batches = batches
        self.collator = collator

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.collator(self.batches[i])
