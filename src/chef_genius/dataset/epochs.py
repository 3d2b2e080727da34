"""What one epoch trains on: the curriculum's selection, each example's prompt (mixed templates,
augmentation) and target, tokenized; and, when the curriculum's stages advance by step, the
epoch's batches segment by segment.

Canonical targets come from the split's token cache (`token_cache`, memory-mapped, not copied);
an epoch tokenizes its prompts and only the targets that augmentation rewrote, a chunk of rows at
a time into flat arrays (the prompts' choices drawn as arrays, `augment.training_prompts`; the
encoding in the tokenizers library's threads, `encoding.tokenizer_threads`). An epoch whose
stages advance by step tokenizes its pool (every recipe at the run's lowest threshold: one pass
over it sets the epoch's length), and each segment trains on its own selection (an index array)
inside that pool (`segment_batches`). Everything is a pure function of (seed, epoch), so the plan
view, the schedule, the loop and a resumed run all see the same epochs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from chef_genius.augment import ExampleDraws, paraphrase_recipe, training_prompts, with_references
from chef_genius.config_schema import TrainConfig
from chef_genius.curriculum import EpochSelection, Segment, select, select_epoch, stage_thresholds
from chef_genius.dataset.collate import BatchPlan, TokenizedExamples, concatenate_flat, flatten, plan_batches
from chef_genius.dataset.table import CHUNK_ROWS, RecipeTable, many_objects
from chef_genius.dataset.token_cache import TokenCache
from chef_genius.encoding import tokenizer_threads
from chef_genius.families import ModelFamily
from chef_genius.recipe import serialize


@dataclass
class EpochData:
    selection: EpochSelection
    examples: TokenizedExamples
    augmented: int

    @property
    def augmented_fraction(self) -> float:
        return self.augmented / max(len(self.examples), 1)


class EpochBuilder:
    """Builds `EpochData` for any epoch of a run (selects only, without a ``target_cache``)."""

    def __init__(self, table: RecipeTable, target_cache: TokenCache | None, tokenizer, config: TrainConfig,
                 family: ModelFamily, minimum: int,
                 references: Callable[[np.ndarray], list[str | None]] | None = None):
        self.table = table
        self.references = references  # rows -> their reference recipes (`data.reference`)
        self.target_cache = target_cache
        self.tokenizer = tokenizer
        self.config = config
        self.family = family
        self.minimum = minimum

    def select(self, epoch: int) -> EpochSelection:
        return select_epoch(self.table.quality, self.table.difficulty, epoch, self.config.optim.epochs,
                            self.config.data, self.minimum)

    def select_pool(self, epoch: int) -> EpochSelection:
        """Every recipe at the run's lowest stage threshold: what an epoch whose stages advance by
        step holds (each segment's selection lies inside it)."""
        return select(self.table.quality, self.table.difficulty, "all", min(stage_thresholds(self.config.data)),
                      self.minimum, epoch)

    def select_segment(self, segment: Segment, pool: EpochSelection) -> EpochSelection:
        """A segment's recipes; relaxed no lower than the pool's threshold, so they lie inside it."""
        return select(self.table.quality, self.table.difficulty, segment.level, segment.threshold, self.minimum,
                      segment.epoch, floor=pool.threshold)

    def build(self, epoch: int, selection: EpochSelection | None = None) -> EpochData:
        """The epoch's examples: its curriculum selection, or ``selection`` (a pool)."""
        if self.target_cache is None:
            raise ValueError("this EpochBuilder selects only: it has no token cache to build examples from")
        selection = self.select(epoch) if selection is None else selection
        draws = ExampleDraws.for_epoch(self.config.seed, epoch, len(self.table)).values
        sources, rewritten, augmented = [], [], 0
        rows = selection.indices
        with tokenizer_threads(), many_objects():  # in the trainer's process; DataLoader workers fork later
            for start in range(0, len(rows), CHUNK_ROWS):
                chunk = rows[start:start + CHUNK_ROWS]
                prompts, paraphrased, chunk_augmented = self._prompts(chunk, draws)
                augmented += chunk_augmented
                sources.append(flatten(self.family.encode_sources(self.tokenizer, prompts,
                                                                  self.config.model.max_source_tokens)))
                if paraphrased:
                    rewritten.append((start + np.asarray(paraphrased, dtype=np.int64),
                                      self._paraphrased_targets(chunk[paraphrased])))
        return EpochData(selection, self._examples(rows, concatenate_flat(sources), rewritten), augmented)

    def _prompts(self, rows: np.ndarray, draws: np.ndarray) -> tuple[list[str], list[int], int]:
        """Prompts of ``rows``, the positions whose targets are paraphrased, and how many were augmented."""
        data = self.config.data
        prompts, augmentations = training_prompts(self.table.take(rows, "title"), self.table.food_names(rows),
                                                  draws[rows], data.templates, data.mixed_templates,
                                                  data.augmentation_prob)
        if self.references is not None:
            prompts = with_references(prompts, self.references(rows))
        paraphrased = [position for position, kind in enumerate(augmentations) if kind == "paraphrase"]
        return prompts, paraphrased, sum(kind is not None for kind in augmentations)

    def _paraphrased_targets(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        texts = [serialize(paraphrase_recipe(recipe)) for recipe in self.table.rows(rows)]
        return flatten(self.family.encode_targets(self.tokenizer, texts, self.config.model.max_target_tokens))

    def _examples(self, rows: np.ndarray, sources: tuple[np.ndarray, np.ndarray],
                  rewritten: list[tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]]) -> TokenizedExamples:
        """Prompts as built; targets from the cache, except the rewritten ones (an epoch-only store)."""
        starts, lengths = self.target_cache.starts_and_lengths(rows)
        extra_ids, extra_offsets = concatenate_flat([ids for _, ids in rewritten])
        if rewritten:
            positions = np.concatenate([p for p, _ in rewritten])
            starts[positions] = len(self.target_cache.ids) + extra_offsets[:-1]
            lengths[positions] = np.diff(extra_offsets)
        return TokenizedExamples(sources[0], sources[1], self.target_cache.ids, starts, lengths, rows, extra_ids)


def minimum_examples(batch_size: int, max_tokens: int | None, world: int) -> int:
    """The smallest selection that gives every rank one batch."""
    return world * (batch_size if max_tokens is None else 1)


def segment_batches(lengths: np.ndarray, rows: np.ndarray, parts: list[tuple[EpochSelection, int]], seed: int,
                    epoch: int, batch_size: int, max_tokens: int | None, rank: int = 0,
                    world: int = 1) -> BatchPlan:
    """An epoch's batches when its stages advance by step: for each segment in order, its own
    length-grouped plan (seeded by seed, epoch, segment and pass) over its selection's positions,
    cut to its share; a selection smaller than its share is planned again for another pass.

    Args:
        lengths: tokens per example of the epoch's examples (its pool).
        rows: the table row of each example, sorted (the pool's indices).
        parts: each segment's selection (inside the pool) and its share of batches per rank.

    Returns:
        Batches of example positions for this rank; every rank gets each segment's share.
    """
    plan: list[BatchPlan] = []
    for k, (selection, share) in enumerate(parts):
        positions = np.searchsorted(rows, selection.indices)
        if not np.array_equal(rows[np.minimum(positions, len(rows) - 1)], selection.indices):
            raise ValueError(f"segment {k} of epoch {epoch} selects recipes outside the epoch's pool")
        taken, passes = 0, 0
        while taken < share:
            drawn = plan_batches(lengths[positions], seed, f"{epoch}.{k}.{passes}", batch_size, max_tokens,
                                 shuffle=True, rank=rank, world=world)
            if not len(drawn):
                raise ValueError(f"segment {k} of epoch {epoch}: {len(positions)} recipes give no batch per rank")
            plan.append(drawn.mapped(positions)[:share - taken])
            taken += len(plan[-1])
            passes += 1
    return BatchPlan.join(plan)
