"""What one epoch trains on: the curriculum's selection, each example's prompt (mixed templates,
augmentation) and target, tokenized.

Canonical targets come from the split's token cache (`token_cache`, memory-mapped, not copied);
an epoch tokenizes its prompts and only the targets that augmentation rewrote, a chunk of rows at
a time into flat arrays. Everything is a pure function of (seed, epoch), so the plan view, the
schedule, the loop and a resumed run all see the same epochs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from chef_genius.augment import ExampleDraws, paraphrase_recipe, training_prompt
from chef_genius.config import TrainConfig
from chef_genius.curriculum import EpochSelection, select_epoch
from chef_genius.encoding import encode_sources, encode_targets
from chef_genius.recipe import serialize
from chef_genius.training.data import TokenizedExamples, concatenate_flat, flatten
from chef_genius.training.table import CHUNK_ROWS, RecipeTable
from chef_genius.training.token_cache import TokenCache


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

    def build(self, epoch: int) -> EpochData:
        if self.target_cache is None:
            raise ValueError("this EpochBuilder selects only: it has no token cache to build examples from")
        selection = self.select(epoch)
        draws = ExampleDraws.for_epoch(self.config.seed, epoch, len(self.table)).values
        sources, rewritten, augmented = [], [], 0
        rows = selection.indices
        for start in range(0, len(rows), CHUNK_ROWS):
            chunk = rows[start:start + CHUNK_ROWS]
            prompts, paraphrased, chunk_augmented = self._prompts(chunk, draws)
            augmented += chunk_augmented
            sources.append(flatten(encode_sources(self.tokenizer, prompts, self.config.model.max_source_tokens,
                                                  self.causal)))
            if paraphrased:
                rewritten.append((start + np.asarray(paraphrased, dtype=np.int64),
                                  self._paraphrased_targets(chunk[paraphrased])))
        return EpochData(selection, self._examples(rows, concatenate_flat(sources), rewritten), augmented)

    def _prompts(self, rows: np.ndarray, draws: np.ndarray) -> tuple[list[str], list[int], int]:
        """Prompts of ``rows``, the positions whose targets are paraphrased, and how many were augmented."""
        data = self.config.data
        prompts, paraphrased, augmented = [], [], 0
        for position, (row, title, names) in enumerate(zip(rows.tolist(), self.table.take(rows, "title"),
                                                           self.table.food_names(rows), strict=True)):
            drawn = training_prompt(title, names, draws[row], data.templates, data.mixed_templates,
                                    data.augmentation_prob)
            prompts.append(drawn.prompt)
            augmented += drawn.augmentation is not None
            if drawn.augmentation == "paraphrase":
                paraphrased.append(position)
        return prompts, paraphrased, augmented

    def _paraphrased_targets(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        texts = [serialize(paraphrase_recipe(recipe)) for recipe in self.table.rows(rows)]
        return flatten(encode_targets(self.tokenizer, texts, self.config.model.max_target_tokens, self.causal))

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



