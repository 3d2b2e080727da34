"""What one epoch trains on: the curriculum's selection, each example's prompt (mixed templates,
augmentation) and target, tokenized.

Canonical targets are tokenized once for the whole split; an epoch tokenizes its prompts and
only the targets that augmentation rewrote. Everything is a pure function of (seed, epoch), so
the plan view, the schedule, the loop and a resumed run all see the same epochs.
"""

from __future__ import annotations

from dataclasses import dataclass

from chef_genius.augment import ExampleDraws, paraphrase_recipe, training_prompt
from chef_genius.config import TrainConfig
from chef_genius.curriculum import EpochSelection, select_epoch
from chef_genius.encoding import encode_sources, encode_targets
from chef_genius.recipe import serialize
from chef_genius.training.data import RecipeTable, TokenizedExamples


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

    def build(self, epoch: int) -> EpochData:
        data, model = self.config.data, self.config.model
        selection = self.select(epoch)
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



