"""The parts of a training run, each made by a function that returns it (`run.build_run` puts
them together): the data splits, the model placed for training with its family and tokenizer,
the plan of epochs and batches with the validation examples, the AdamW optimizer, CUDA graphs of
the step and the learning-rate schedule. `plan_only` makes just the plan (``train --plan``).
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from chef_genius.augment import canonical_prompt, with_references
from chef_genius.checkpoints import run_guards as guards
from chef_genius.config_schema import TrainConfig
from chef_genius.dataset.collate import TokenizedExamples, load_split
from chef_genius.dataset.epochs import EpochBuilder, minimum_examples
from chef_genius.dataset.table import CHUNK_ROWS, RecipeTable
from chef_genius.dataset.token_cache import shared_cache
from chef_genius.errors import UserError
from chef_genius.families import ModelFamily
from chef_genius.inference import training_model_name
from chef_genius.losses import TokenObjective
from chef_genius.model.graphs import GraphedSteps, graphs_unsupported_reason
from chef_genius.model.loading import resolve_model, resolve_tokenizer
from chef_genius.model.placement import PlacedModel, place_model
from chef_genius.model.ranks import Ranks
from chef_genius.preference import PreferenceObjective, PreferencePair, read_pairs
from chef_genius.retrieval import References
from chef_genius.schedule import Schedule, ends_high
from chef_genius.training.preference_data import (
    PreferenceCollator,
    PreferencePlan,
    reference_logps,
    store_reference,
    stored_reference,
    tokenize_pairs,
)
from chef_genius.training.run_plan import RunPlan, timed
from chef_genius.training.validation import validation_examples


@dataclass(frozen=True)
class Splits:
    """The prepared data: its folder, the memory-mapped train and validation splits, the
    validation prompts that samples are drawn for, and the preference pairs when tuning on them."""

    folder: Path
    train: RecipeTable
    val: RecipeTable
    val_prompts: list[str]
    preference_pairs: list[PreferencePair] | None  # DPO: the pairs file's pairs (`preference.pairs`)
    references: References | None = None  # `data.reference`: the training split, indexed


def uses_bf16(config: TrainConfig, ranks: Ranks) -> bool:
    dtype = config.model.dtype
    return dtype == "bf16" or (dtype == "auto" and ranks.device.type == "cuda")


def load_splits(config: TrainConfig, run_dir: Path, ranks: Ranks) -> Splits:
    """The data folder (the bundled sample prepared into ``RUN/data`` when none is set) and its splits."""
    folder = config.data.path
    if folder is None:
        folder = run_dir / "data"
        if ranks.is_main and guards.demo_data_needs_prepare(config, run_dir):
            from chef_genius.prepare import PrepareOptions, prepare
            from chef_genius.sample import sample_path

            prepare([sample_path()], folder, PrepareOptions(progress=False, workers=0))
        ranks.barrier()
    pairs = read_pairs(config.preference.pairs) if config.preference.pairs is not None else None  # fails at once
    train, val = load_split(Path(folder), "train"), load_split(Path(folder), "val")  # memory-mapped
    if len(train) == 0:
        raise UserError(f"{folder}: the training split is empty")
    k = config.eval.num_validation_samples
    titles, foods = val.titles[:k], val.ner[:k]
    prompts = [canonical_prompt(config.data.templates, t, n) for t, n in zip(titles, foods, strict=True)]
    references = None
    if config.data.reference:
        if pairs is not None:
            raise UserError("data.reference: preference tuning on reference prompts is not supported yet")
        references = References(train)
        prompts = with_references(prompts, references.for_requests(titles, foods))
    return Splits(Path(folder), train, val, prompts, pairs, references)


def tokenizer_corpus(config: TrainConfig, splits: Splits) -> Iterator[str]:
    """Texts a `tiny` tokenizer is trained on (canonical prompts, then targets), read lazily:
    only a `tiny` model built for this run consumes them."""
    if config.model.name != "tiny":
        return iter(())
    table, templates = splits.train, config.data.templates
    prompts = (canonical_prompt(templates, t, n) for t, n in zip(table.titles, table.ner, strict=True))
    targets = (text for start in range(0, len(table), CHUNK_ROWS)
               for text in table.targets(start, min(start + CHUNK_ROWS, len(table))))
    return itertools.chain(prompts, targets)


def load_model(config: TrainConfig, run_dir: Path, ranks: Ranks, splits: Splits, bf16: bool
               ) -> tuple[ModelFamily, object, PlacedModel, int | None]:
    """(family, tokenizer, the model placed for training, decoder start id). Rank 0 loads (and
    builds a `tiny` model) first; the others load what it wrote."""
    dtype = torch.bfloat16 if (bf16 and config.lora.enabled) else torch.float32
    if ranks.is_main:
        loaded = resolve_model(config.model, run_dir, tokenizer_corpus(config, splits), config.seed, dtype,
                               training_model_name)
    ranks.barrier()
    if not ranks.is_main:
        loaded = resolve_model(config.model, run_dir, [], config.seed, dtype, training_model_name)
    placed = place_model(loaded, config, ranks.device, ranks.world, bf16, ranks.print)
    start = loaded.family.decoder_start(loaded.model, loaded.tokenizer.pad_token_id)
    return loaded.family, loaded.tokenizer, placed, start


def plan_epochs(config: TrainConfig, ranks: Ranks, splits: Splits, tokenizer, family: ModelFamily,
                timings: dict, examples: bool = True
                ) -> tuple[RunPlan | PreferencePlan, TokenizedExamples | None, TokenizedExamples | None]:
    """(the run's plan of batches along its epochs, the validation examples, the preference pairs'
    examples). Targets are tokenized once per split and tokenizer, memory-mapped (rank 0 builds,
    the others wait); without ``examples`` the epochs only select (batch counts follow from the
    selections). With preference pairs every epoch holds every pair (`PreferencePlan`)."""
    o, preference = config.optim, splits.preference_pairs is not None
    caches = {}
    if examples:
        for split in ("val",) if preference else ("train", "val"):  # DPO: pairs, not recipes
            caches[split] = shared_cache(ranks, splits.folder, split, tokenizer, config.model.max_target_tokens, family)
        timings["token_cache"] = "built" if any(c.built for c in caches.values()) else "reused"
    refs = splits.references
    val = validation_examples(splits.val, caches["val"], tokenizer, config, family,
                              refs.for_requests if refs else None) if caches else None
    if preference:
        pairs = tokenize_pairs(splits.preference_pairs, tokenizer, config, family)
        return PreferencePlan(pairs, config, ranks.rank, ranks.world), val, pairs
    epochs = EpochBuilder(splits.train, caches.get("train"), tokenizer, config, family,
                          minimum_examples(o.batch_size, o.max_tokens, ranks.world),
                          refs.for_training_rows if refs else None)
    return RunPlan(epochs, config, ranks.rank, ranks.world, timings), val, None


def build_objective(config: TrainConfig, ranks: Ranks, run_dir: Path, placed: PlacedModel, family: ModelFamily,
                    pad_id: int, decoder_start_id: int | None, fingerprint: dict,
                    pairs: TokenizedExamples | None, autocast) -> TokenObjective | PreferenceObjective:
    """What the loop minimizes: the label-smoothed cross-entropy, or DPO on the preference pairs
    against the starting model's log-probabilities (stored in the run folder, computed here once:
    the checkpoint's weights, on a resume, are loaded after this)."""
    p = config.preference
    if p.pairs is None:
        return TokenObjective(family, pad_id, decoder_start_id)
    digest, count = fingerprint["preference"]["pairs_sha256"], len(pairs) // 2
    reference = stored_reference(run_dir, digest, count)
    if reference is None:
        ranks.print(f"preference tuning: log-probabilities of {count} pairs under the starting model")
        collator = PreferenceCollator(pairs, pad_id, family, None)
        reference = reference_logps(placed.forward, collator, config.optim.batch_size, family, pad_id,
                                    decoder_start_id, ranks.device, autocast)
        if ranks.is_main:
            store_reference(run_dir, reference, digest, config.model.name)
    ranks.barrier()
    return PreferenceObjective(p.beta, p.sft_weight, family, pad_id, decoder_start_id, reference)


def build_optimizer(config: TrainConfig, trainable: list[torch.nn.Parameter], device: torch.device
                    ) -> torch.optim.Optimizer:
    """AdamW; weight decay on matrices only (not on biases and norms)."""
    decay = [p for p in trainable if p.ndim >= 2]
    no_decay = [p for p in trainable if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": config.optim.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=config.optim.learning_rate,
                             fused=device.type == "cuda")


def build_graphs(config: TrainConfig, ranks: Ranks, placed: PlacedModel, loss, autocast) -> GraphedSteps | None:
    """CUDA graphs of the training step, where they can run (else None, saying why on a GPU)."""
    m = config.model
    if not m.cuda_graphs or config.preference.pairs is not None:  # DPO's loss is not the graphed one
        return None
    reason = graphs_unsupported_reason(ranks.world, ranks.device, m.gradient_checkpointing,
                                       m.compile_blocks and not placed.fast, config.optim.max_tokens is not None)
    if reason is not None:
        if ranks.device.type == "cuda":
            ranks.print(f"CUDA graphs off: {reason}")
        return None
    eps = config.optim.label_smoothing
    return GraphedSteps(lambda batch: loss(batch, eps), placed.trainable, autocast)


def build_schedule(config: TrainConfig, plan: RunPlan, is_main: bool) -> Schedule:
    """Warmup + cosine over the plan's optimizer steps (each epoch's counted, none built twice)."""
    o, s = config.optim, config.schedule
    schedule = Schedule.build(o.learning_rate, plan.total_steps, s.warmup_steps, s.warmup_max_fraction,
                              s.first_cycle_steps, s.cycle_mult, s.min_learning_rate, s.cosine)
    unseen = plan.unseen_warning()
    if unseen and is_main:
        warnings.warn(unseen, stacklevel=3)
    if ends_high(schedule) and is_main:
        warnings.warn(f"training ends at step {plan.total_steps}, in the upper half of a cosine cycle (high learning "
                      "rate); adjust schedule.first_cycle_steps or the number of epochs", stacklevel=3)
    return schedule


def plan_only(config: TrainConfig, scratch: Path, examples: bool = False, ranks: Ranks | None = None) -> RunPlan:
    """Only what the plan view needs: data, tokenizer (a `tiny` one is built in ``scratch``),
    epochs and schedule; no model weights, nothing written to the run folder. ``examples``:
    tokenize them (token cache included) even where the plan needs no lengths. ``ranks``: this
    process's place among the run's (default: `Ranks.start`)."""
    ranks = ranks or Ranks.start()
    timings: dict = {}
    with timed(timings, "data"):
        splits = load_splits(config, scratch, ranks)
    with timed(timings, "model"):
        tokenizer, family = resolve_tokenizer(config.model, scratch / "base_model", tokenizer_corpus(config, splits),
                                              config.seed, training_model_name)
    with timed(timings, "examples"):
        plan, _, _ = plan_epochs(config, ranks, splits, tokenizer, family, timings,
                                 examples or config.optim.max_tokens is not None)
    with timed(timings, "schedule"):
        build_schedule(config, plan, ranks.is_main)
    return plan
