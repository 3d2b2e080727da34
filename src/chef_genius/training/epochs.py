"""What one epoch trains on: the curriculum's selection, each example's prompt (mixed templates,
augmentation) and target, tokenized; and, when the curriculum's stages advance by step, the
epoch's batches segment by segment.

Canonical targets are tokenized once for the whole split; an epoch tokenizes its prompts and
only the targets that augmentation rewrote. An epoch whose stages advance by step tokenizes its
pool (every recipe at the run's lowest threshold: one pass over it sets the epoch's length), and
each segment trains on its own selection inside that pool (`segment_batches`). Everything is a
pure function of (seed, epoch), so the plan view, the schedule, the loop and a resumed run all see
the same epochs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from chef_genius.augment import ExampleDraws, paraphrase_recipe, training_prompt
from chef_genius.config import TrainConfig
from chef_genius.curriculum import EpochSelection, Segment, select, select_epoch, stage_thresholds
from chef_genius.encoding import encode_sources, encode_targets
from chef_genius.recipe import serialize
from chef_genius.training.data import RecipeTable, TokenizedExamples, plan_batches


@dataclass
class EpochData:
    selection: EpochSelection
    examples: TokenizedExamples
    augmented: int

    @property
    def augmented_fraction(self) -> float:
        return self.augmented / max(len(self.examples), 1)


class EpochBuilder:
    """Builds `EpochData` for any epoch of a run."""

    def __init__(self, table: RecipeTable, target_cache: list[list[int]], tokenizer, config: TrainConfig,
                 causal: bool, minimum: int):
        self.table = table
        self.target_cache = target_cache
        self.tokenizer = tokenizer
        self.config = config
        self.causal = causal
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
        data, model = self.config.data, self.config.model
        selection = self.select(epoch) if selection is None else selection
        draws = ExampleDraws.for_epoch(self.config.seed, epoch, len(self.table)).values
        prompts, rewritten, rewritten_texts, augmented = [], [], [], 0
        for position, row in enumerate(selection.indices.tolist()):
            drawn = training_prompt(self.table.titles[row], self.table.ner[row], draws[row], data.templates,
                                    data.mixed_templates, data.augmentation_prob)
            prompts.append(drawn.prompt)
            augmented += drawn.augmentation is not None
            if drawn.augmentation == "paraphrase":
                rewritten.append(position)
                rewritten_texts.append(serialize(paraphrase_recipe(self.table.recipe(row))))
        sources = encode_sources(self.tokenizer, prompts, model.max_source_tokens, self.causal)
        targets = [self.target_cache[row] for row in selection.indices.tolist()]
        rewritten_ids = encode_targets(self.tokenizer, rewritten_texts, model.max_target_tokens, self.causal)
        for position, ids in zip(rewritten, rewritten_ids, strict=True):
            targets[position] = ids
        return EpochData(selection, TokenizedExamples.from_sequences(sources, targets, selection.indices), augmented)


def minimum_examples(batch_size: int, max_tokens: int | None, world: int) -> int:
    """The smallest selection that gives every rank one batch."""
    return world * (batch_size if max_tokens is None else 1)





def segment_batches(lengths: np.ndarray, rows: np.ndarray, parts: list[tuple[EpochSelection, int]], seed: int,
                    epoch: int, batch_size: int, max_tokens: int | None, rank: int = 0,
                    world: int = 1) -> list[list[int]]:
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
    plan: list[list[int]] = []
    for k, (selection, share) in enumerate(parts):
        positions = np.searchsorted(rows, selection.indices)
        if not np.array_equal(rows[np.minimum(positions, len(rows) - 1)], selection.indices):
            raise ValueError(f"segment {k} of epoch {epoch} selects recipes outside the epoch's pool")
        batches: list[list[int]] = []
        passes = 0
        while len(batches) < share:
            drawn = plan_batches(lengths[positions], seed, f"{epoch}.{k}.{passes}", batch_size, max_tokens,
                                 shuffle=True, rank=rank, world=world)
            if not drawn:
                raise ValueError(f"segment {k} of epoch {epoch}: {len(positions)} recipes give no batch per rank")
            batches.extend(positions[batch].tolist() for batch in drawn)
            passes += 1
        plan.extend(batches[:share])
    return plan
