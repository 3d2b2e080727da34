"""The trainer's set-up side: `TrainerSetup`, a mixin that `trainer.Trainer` inherits.

Small helpers that `Trainer.setup()` and `Trainer.setup_plan()` call in turn, each building one
part of the run: the processes (`Ranks`), the data splits and validation prompts, the model
(placed by `placement.place_model`), the tokenized examples and the run's plan of batches
(`run_plan.RunPlan`), the AdamW optimizer, CUDA graphs, the learning-rate schedule, and the
loader that feeds the loop. Then the plan's views that the loop and ``chef-genius plan`` read
(`epoch_data`, `plan_rows`, the curriculum's log line as each epoch or stage starts). The
helpers set and read the trainer's attributes (``self.model``, ``self.run_plan``, ...); they call
`Trainer._loss` and `Trainer._autocast`, defined with the optimizer step.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch

from chef_genius.augment import canonical_prompt
from chef_genius.config import TrainConfig
from chef_genius.errors import UserError
from chef_genius.losses import TokenObjective
from chef_genius.preference import PreferenceObjective, read_pairs
from chef_genius.schedule import Schedule, ends_high
from chef_genius.training import run_guards as guards
from chef_genius.training.data import BatchPlan, PlannedBatches, load_split
from chef_genius.training.epochs import EpochBuilder, EpochData, minimum_examples
from chef_genius.training.graphs import GraphedSteps, graphs_unsupported_reason
from chef_genius.training.interrupt import ignore_interrupts
from chef_genius.training.models import resolve_model
from chef_genius.training.placement import place_model
from chef_genius.training.preference_data import (
    PreferenceCollator,
    PreferencePlan,
    reference_logps,
    store_reference,
    stored_reference,
    tokenize_pairs,
)
from chef_genius.training.ranks import Ranks
from chef_genius.training.run_plan import RunPlan, timed
from chef_genius.training.table import CHUNK_ROWS
from chef_genius.training.token_cache import TokenCache, shared_cache
from chef_genius.training.validation import validation_examples

__all__ = ["TrainerSetup"]


class TrainerSetup:
    """Builds the run's parts onto the trainer (``self``); `Trainer` sets ``config`` and ``timings``."""

    config: TrainConfig
    timings: dict

    def _timed(self, part: str):
        return timed(self.timings, part)

    def _check_resume(self, resume: Path | None, sections: tuple[str, ...]) -> list[dict]:
        return guards.resume_differences(resume, self.run_dir, self.fingerprint, sections,
                                         self.config.checkpoint.resume_changed)

    def _setup_distributed(self) -> None:
        self.ranks = Ranks.start()
        dtype = self.config.model.dtype
        self.bf16 = dtype == "bf16" or (dtype == "auto" and self.device.type == "cuda")

    # This process's place among the run's processes (`Ranks` holds it).
    @property
    def world(self) -> int:
        return self.ranks.world

    @property
    def rank(self) -> int:
        return self.ranks.rank

    @property
    def device(self) -> torch.device:
        return self.ranks.device

    @property
    def is_main(self) -> bool:
        return self.ranks.is_main

    @property
    def run_name(self) -> str:
        return self.config.logging.run_name or self.run_dir.name

    def _setup_data(self) -> None:
        folder = self.config.data.path
        if folder is None:
            folder = self.run_dir / "data"
            if self.is_main and guards.demo_data_needs_prepare(self.config, self.run_dir):
                from chef_genius.prepare import PrepareOptions, prepare
                from chef_genius.sample import sample_path

                prepare([sample_path()], folder, PrepareOptions(progress=False, workers=0))
            self.ranks.barrier()
        self.data_folder = Path(folder)
        pairs = self.config.preference.pairs  # read before the model: a bad file stops at once
        self.preference_pairs = read_pairs(pairs) if pairs is not None else None
        self.train_table = load_split(Path(folder), "train")  # memory-mapped: rows are read when used
        self.val_table = load_split(Path(folder), "val")
        if len(self.train_table) == 0:
            raise UserError(f"{folder}: the training split is empty")
        k = self.config.eval.num_validation_samples  # the validation prompts that samples are drawn for
        self.val_prompts = [canonical_prompt(self.config.data.templates, t, n)
                            for t, n in zip(self.val_table.titles[:k], self.val_table.ner[:k], strict=True)]

    def _tokenizer_corpus(self) -> Iterator[str]:
        """Texts a `tiny` tokenizer is trained on (canonical prompts, then targets), read lazily:
        only a `tiny` model built for this run consumes them."""
        if self.config.model.name != "tiny":
            return iter(())
        table, templates = self.train_table, self.config.data.templates
        prompts = (canonical_prompt(templates, t, n) for t, n in zip(table.titles, table.ner, strict=True))
        targets = (text for start in range(0, len(table), CHUNK_ROWS)
                   for text in table.targets(start, min(start + CHUNK_ROWS, len(table))))
        return itertools.chain(prompts, targets)

    def _setup_model(self) -> None:
        dtype = torch.bfloat16 if (self.bf16 and self.lora) else torch.float32
        if self.is_main:
            loaded = resolve_model(self.config.model, self.run_dir, self._tokenizer_corpus(), self.config.seed, dtype)
        self.ranks.barrier()
        if not self.is_main:
            loaded = resolve_model(self.config.model, self.run_dir, [], self.config.seed, dtype)
        self.tokenizer, self.causal = loaded.tokenizer, loaded.causal
        placed = place_model(loaded, self.config, self.device, self.world, self.bf16, self.ranks.print)
        self.model_for_saving, self.model, self.trainable_params = placed.saved, placed.forward, placed.trainable
        self.sharded, self.fast = placed.sharded, placed.fast
        base = getattr(loaded.model, "config", None)
        self.decoder_start_id = getattr(base, "decoder_start_token_id", None)

    def _setup_examples(self) -> None:
        m = self.config.model
        # Targets tokenized once per split and tokenizer, memory-mapped (rank 0 builds, the others wait).
        splits = ("val",) if self.config.preference.pairs is not None else ("train", "val")  # DPO: pairs, not recipes
        caches = {split: shared_cache(self.ranks, self.data_folder, split, self.tokenizer, m.max_target_tokens,
                                      self.causal) for split in splits}
        self.timings["token_cache"] = "built" if any(c.built for c in caches.values()) else "reused"
        self._setup_run_plan(caches.get("train"))
        self.val_examples = validation_examples(self.val_table, caches["val"], self.tokenizer, self.config,
                                                self.causal)
        self.pad_id = self.tokenizer.pad_token_id
        if not self.causal and getattr(self, "decoder_start_id", None) is None:
            self.decoder_start_id = self.pad_id

    def _setup_run_plan(self, train_cache: TokenCache | None) -> None:
        """The epochs (selected only, without a cache) and the run's plan of batches along them;
        with preference pairs, every pair in every epoch (`preference_data.PreferencePlan`)."""
        o = self.config.optim
        if self.config.preference.pairs is not None:
            self.preference_examples = tokenize_pairs(self.preference_pairs, self.tokenizer, self.config, self.causal)
            self.run_plan = PreferencePlan(self.preference_examples, self.config, self.rank, self.world)
            return
        self.epochs = EpochBuilder(self.train_table, train_cache, self.tokenizer, self.config, self.causal,
                                   minimum_examples(o.batch_size, o.max_tokens, self.world))
        self.run_plan = RunPlan(self.epochs, self.config, self.rank, self.world, self.timings)

    def _setup_objective(self) -> None:
        """What the loop minimizes: the label-smoothed cross-entropy, or DPO on the preference
        pairs against the starting model's log-probabilities (stored in the run folder, computed
        here once: the checkpoint's weights, on a resume, are loaded after this)."""
        p = self.config.preference
        if p.pairs is None:
            self.objective = TokenObjective(self.causal, self.pad_id, self.decoder_start_id)
            return
        digest, count = self.fingerprint["preference"]["pairs_sha256"], len(self.preference_examples) // 2
        reference = stored_reference(self.run_dir, digest, count)
        if reference is None:
            self.ranks.print(f"preference tuning: log-probabilities of {count} pairs under the starting model")
            collator = PreferenceCollator(self.preference_examples, self.pad_id, self.causal, None)
            reference = reference_logps(self.model, collator, self.config.optim.batch_size, self.causal, self.pad_id,
                                        self.decoder_start_id, self.device, self._autocast)
            if self.is_main:
                store_reference(self.run_dir, reference, digest, self.config.model.name)
        self.ranks.barrier()
        self.objective = PreferenceObjective(p.beta, p.sft_weight, self.causal, self.pad_id, self.decoder_start_id,
                                             reference)

    def _setup_optimizer(self) -> None:
        decay = [p for p in self.trainable_params if p.ndim >= 2]
        no_decay = [p for p in self.trainable_params if p.ndim < 2]
        groups = [{"params": decay, "weight_decay": self.config.optim.weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
        self.optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=self.config.optim.learning_rate,
                                           fused=self.device.type == "cuda")

    def _setup_graphs(self) -> None:
        self.graphed: GraphedSteps | None = None
        m = self.config.model
        if not m.cuda_graphs or self.config.preference.pairs is not None:  # DPO's loss is not the graphed one
            return
        reason = graphs_unsupported_reason(self.world, self.device, m.gradient_checkpointing,
                                           m.compile_blocks and not self.fast, self.config.optim.max_tokens is not None)
        if reason is not None:
            if self.device.type == "cuda":
                self.ranks.print(f"CUDA graphs off: {reason}")
            return
        eps = self.config.optim.label_smoothing
        self.graphed = GraphedSteps(lambda batch: self._loss(batch, eps), self.trainable_params, self._autocast)

    def _setup_schedule(self) -> None:
        o, s = self.config.optim, self.config.schedule
        self.run_plan.size()  # stages by epoch or by step; each epoch's optimizer steps (no epoch built twice)
        self.steps_per_epoch, total = self.run_plan.steps_per_epoch, self.run_plan.total_steps
        self.schedule = Schedule.build(o.learning_rate, total, s.warmup_steps, s.warmup_max_fraction,
                                       s.first_cycle_steps, s.cycle_mult, s.min_learning_rate, s.cosine)
        unseen = self.run_plan.unseen_warning()
        if unseen and self.is_main:
            warnings.warn(unseen, stacklevel=2)
        if ends_high(self.schedule) and self.is_main:
            warnings.warn(f"training ends at step {total}, in the upper half of a cosine cycle (high learning "
                          "rate); adjust schedule.first_cycle_steps or the number of epochs", stacklevel=2)

    def _loader(self, dataset: PlannedBatches):
        workers = self.config.data.num_workers
        # Its own generator: a DataLoader iterator otherwise draws a seed from the global torch RNG,
        # and a resumed run creates one more iterator than an uninterrupted one.
        loader = torch.utils.data.DataLoader(dataset, batch_size=None, shuffle=False, num_workers=workers,
                                             pin_memory=self.device.type == "cuda", persistent_workers=False,
                                             prefetch_factor=4 if workers else None,
                                             generator=torch.Generator().manual_seed(self.config.seed),
                                             worker_init_fn=ignore_interrupts if workers else None)
        return iter(loader)

    # ------------------------------------------------------------- the plan
    def epoch_data(self, epoch: int) -> EpochData:
        """The epoch's selection and tokenized examples (the last one built is kept)."""
        return self.run_plan.epoch_data(epoch)

    def _plan(self, epoch: int) -> BatchPlan:
        return self.run_plan.batches(epoch)

    def _log_curriculum(self, epoch: EpochData, batch: int) -> None:
        """Log (and warn about a relaxed) selection when an epoch, or a stage by step, starts at ``batch``."""
        selection = self.run_plan.part_starting_at(epoch.selection.epoch, batch)
        if selection is None:
            return
        if selection.relaxed_from is not None:
            level, threshold = selection.relaxed_from
            warnings.warn(f"epoch {selection.epoch} from step {self.state.step + 1}: {level} recipes with quality >= "
                          f"{threshold:.2f} cannot fill a batch per rank; relaxed to {selection.level} >= "
                          f"{selection.threshold:.2f} "
                          f"({len(selection.indices)} recipes)", stacklevel=2)
        self.tracker.log({"curriculum/quality_threshold": selection.threshold,
                          "curriculum/difficulty_level": selection.level_index,
                          "curriculum/selected_examples": len(selection.indices),
                          "curriculum/augmented_fraction": epoch.augmented_fraction}, self.state.step)

    def plan_rows(self) -> list[dict]:
        """The plan by epoch, or by segment when stages advance by step (`RunPlan.rows`)."""
        return self.run_plan.rows()
