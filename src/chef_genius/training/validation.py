"""Improvement 1 during training: validation loss, early stopping, sample recipes.

`validation_loss` is the token-mean cross-entropy without label smoothing on the validation
split, summed over ranks; `record_validation` decides, from it and the run's state, whether this
is the best model so far and whether early stopping ends the run; `sample_and_log` generates,
prints, saves and scores sample recipes (improvement 8's metrics).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from chef_genius.augment import canonical_prompt, with_references
from chef_genius.checkpoints.folder import TrainerState
from chef_genius.config_schema import EvalConfig, TrainConfig
from chef_genius.dataset.collate import BatchPlan, Collator, TokenizedExamples, concatenate_flat, flatten, plan_batches
from chef_genius.dataset.table import CHUNK_ROWS, RecipeTable, many_objects
from chef_genius.dataset.token_cache import TokenCache
from chef_genius.encoding import tokenizer_threads
from chef_genius.families import ModelFamily
from chef_genius.losses import nll_sums
from chef_genius.model.ranks import Ranks
from chef_genius.sampling import format_samples, sample_metrics, sample_recipes, save_samples
from chef_genius.tracking import Tracker


def validation_examples(table: RecipeTable, targets: TokenCache, tokenizer, config: TrainConfig,
                        family: ModelFamily, references: Callable | None = None) -> TokenizedExamples:
    """Every validation recipe: its canonical prompt (tokenized a chunk at a time), with its
    reference recipe when ``references`` ((titles, food names) -> texts) is given, and its target
    from the split's token cache."""
    templates, sources = config.data.templates, []
    with tokenizer_threads(), many_objects():  # in the trainer's process, before DataLoader workers fork
        for start in range(0, len(table), CHUNK_ROWS):
            rows = np.arange(start, min(start + CHUNK_ROWS, len(table)), dtype=np.int64)
            titles, foods = table.take(rows, "title"), table.food_names(rows)
            prompts = [canonical_prompt(templates, title, names) for title, names in zip(titles, foods, strict=True)]
            if references is not None:
                prompts = with_references(prompts, references(titles, foods))
            sources.append(flatten(family.encode_sources(tokenizer, prompts, config.model.max_source_tokens)))
    rows = np.arange(len(table), dtype=np.int64)
    starts, lengths = targets.starts_and_lengths(rows)
    return TokenizedExamples(*concatenate_flat(sources), targets.ids, starts, lengths, rows)


def validation_loss(model: torch.nn.Module, examples: TokenizedExamples, config: TrainConfig, ranks: Ranks,
                    pad_id: int, family: ModelFamily, decoder_start_id: int | None, autocast: Callable) -> float | None:
    """Each rank takes its share of ``eval.max_eval_batches`` batches; None without data."""
    if len(examples) == 0:
        return None
    batches = validation_batches(examples, config, ranks.rank, ranks.world)
    nll_sum, count = nll_sums(model, Collator(examples, pad_id, family), batches, family, pad_id, decoder_start_id,
                              autocast)
    nll_sum, count = ranks.all_reduce(nll_sum), ranks.all_reduce(count)
    return float(nll_sum / count) if count > 0 else None


VALIDATION_SEED = 0  # the same subset for every run and setting compared


def validation_batches(examples: TokenizedExamples, config: TrainConfig, rank: int = 0,
                       world: int = 1) -> BatchPlan:
    """A fixed random subset of the validation split, in length-grouped batches: the planner's
    batches drawn in a seeded random order and the first ``eval.max_eval_batches`` kept (taking
    the first batches of an unshuffled plan measured the shortest recipes, an optimistic loss)."""
    o, e = config.optim, config.eval
    batches = plan_batches(examples.lengths(), VALIDATION_SEED, 0, o.batch_size, o.max_tokens, shuffle=True,
                           rank=0, world=1)[: e.max_eval_batches]
    return batches[rank::world][: len(batches) // world] if world > 1 else batches


@dataclass(frozen=True)
class Verdict:
    best: bool  # the best validation loss so far: keep this checkpoint
    stop: bool  # early stopping: `patience` evaluations in a row without improvement


def record_validation(state: TrainerState, val_loss: float, min_delta: float, patience: int) -> Verdict:
    """Update the best loss and the count of evaluations without improvement (by more than
    ``min_delta``); ``patience`` 0 never stops."""
    if state.best_val_loss is None or val_loss < state.best_val_loss - min_delta:
        state.best_val_loss, state.best_step = val_loss, state.step
        state.evals_without_improvement = 0
        return Verdict(best=True, stop=False)
    state.evals_without_improvement += 1
    return Verdict(best=False, stop=patience > 0 and state.evals_without_improvement >= patience)


def sample_and_log(model: torch.nn.Module, tokenizer, family: ModelFamily, prompts: list[str], config: EvalConfig,
                   step: int, run_dir: Path, tracker: Tracker, autocast: Callable, echo: bool = True) -> str:
    """Generate a recipe per prompt (the model in eval mode, back to training after), print them
    (unless ``echo`` is false), save them under ``run_dir/samples`` and log their mean recipe
    scores and usability checks. Returns the printed block."""
    model.eval()
    try:
        with autocast():
            samples = sample_recipes(model, tokenizer, family, prompts, config)
    finally:
        model.train()
    block = format_samples(step, samples)
    if echo:
        print(block, flush=True)
    save_samples(run_dir / "samples", step, samples)
    tracker.log(sample_metrics(samples), step)
    return block
