"""Preference pairs as training data: tokenized pairs, their batches per epoch, their collation,
and the starting model's log-probabilities of every pair, computed once (`chef_genius.preference`).

The pairs file flows like the recipes do, one way: file -> tokenized examples (2N of them: the
N chosen recipes, then the N rejected ones, each behind its prompt, encoded exactly as training
encodes recipes) -> an epoch's batches of pair positions (`PreferencePlan`, seeded by (seed,
epoch): a resumed run rebuilds the same batches) -> a collated batch (`PreferenceCollator`: the
chosen rows, then the rejected rows, and their reference log-probabilities) -> the loop.

The reference log-probabilities are the starting model's, before any update: `reference_logps`
runs it batched without gradients, in eval mode, on every rank in lockstep (as validation does),
and rank 0 stores them in ``RUN/preference/reference.safetensors`` with the pairs file's sha256.
A resumed run reads them back; it never recomputes them from trained weights (and set-up loads
the checkpoint's weights only after this step, so even a missing file is recomputed from the
starting model).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from chef_genius.config_schema import TrainConfig
from chef_genius.curriculum import EpochSelection
from chef_genius.dataset.collate import BatchPlan, Collator, TokenizedExamples, plan_batches, tokenize_examples
from chef_genius.dataset.epochs import EpochData
from chef_genius.errors import UserError
from chef_genius.families import ModelFamily
from chef_genius.preference import PreferencePair, sequence_logps
from chef_genius.training.run_plan import run_steps

REFERENCE_FILE = Path("preference") / "reference.safetensors"


def tokenize_pairs(pairs: list[PreferencePair], tokenizer, config: TrainConfig,
                   family: ModelFamily) -> TokenizedExamples:
    """Examples ``0..N-1`` are the chosen recipes, ``N..2N-1`` the rejected ones, each behind its prompt."""
    m = config.model
    prompts = [p.prompt for p in pairs]
    return tokenize_examples(tokenizer, prompts + prompts, [p.chosen for p in pairs] + [p.rejected for p in pairs],
                             m.max_source_tokens, m.max_target_tokens, family)


class PreferenceCollator:
    """Pair positions -> one padded batch: the chosen rows, then the rejected rows (`Collator`),
    and ``reference_logps`` in the same order (when ``reference`` is given)."""

    def __init__(self, examples: TokenizedExamples, pad_id: int, family: ModelFamily, reference: torch.Tensor | None):
        self.rows = Collator(examples, pad_id, family)
        self.pairs = len(examples) // 2
        self.reference = reference

    def __call__(self, positions: list[int]) -> dict[str, torch.Tensor]:
        positions = list(positions)
        batch = self.rows(positions + [p + self.pairs for p in positions])
        if self.reference is not None:
            batch["reference_logps"] = torch.cat([self.reference[positions, 0], self.reference[positions, 1]])
        return batch


class PreferencePlan:
    """Every epoch's batches of pairs for one rank: the loop's view of the run (`run_plan.RunPlan`'s
    face, without curriculum or quality threshold: every pair in every epoch)."""

    by_step = False

    def __init__(self, examples: TokenizedExamples, config: TrainConfig, rank: int, world: int):
        self.examples, self.config, self.rank, self.world = examples, config, rank, world
        lengths = examples.lengths()
        self.pairs = len(examples) // 2
        self.lengths = lengths[:self.pairs] + lengths[self.pairs:]  # a pair costs both of its rows
        self.steps_per_epoch: list[int] = []
        self.total_steps = 0
        self._size()  # made whole: its steps counted

    def _size(self) -> None:
        o = self.config.optim
        self.steps_per_epoch = [math.ceil(len(self.batches(e)) / o.gradient_accumulation_steps)
                                for e in range(o.epochs)]
        if not any(self.steps_per_epoch):
            raise UserError(f"{self.pairs} preference pairs cannot fill a batch on each of {self.world} processes")
        self.total_steps = run_steps(self.steps_per_epoch, o.max_steps)

    def _selection(self, epoch: int) -> EpochSelection:
        return EpochSelection(epoch, "all", 0.0, np.arange(self.pairs))

    def epoch_data(self, epoch: int) -> EpochData:
        return EpochData(self._selection(epoch), self.examples, 0)

    def batches(self, epoch: int) -> BatchPlan:
        o = self.config.optim
        max_tokens = None if o.max_tokens is None else 2 * o.max_tokens  # a budget per pair row, as for recipes
        return plan_batches(self.lengths, self.config.seed, epoch, o.batch_size, max_tokens,
                            shuffle=True, rank=self.rank, world=self.world)

    def part_starting_at(self, epoch: int, batch: int) -> EpochSelection | None:
        return None  # no curriculum to log

    def rows(self) -> list[dict]:
        first = 0
        rows = []
        for epoch, steps in enumerate(self.steps_per_epoch):
            rows.append({"epoch": epoch, "first_step": first + 1, "last_step": first + steps, "difficulty": "pairs",
                         "quality_threshold": 0.0, "examples": self.pairs, "optimizer_steps": steps,
                         "relaxed_from": None})
            first += steps
        return rows

    def unseen_warning(self) -> str | None:
        return None

    def describe(self) -> str:
        return f"preference tuning: {self.pairs} pairs per epoch"


@torch.no_grad()
def reference_logps(model: torch.nn.Module, collator: PreferenceCollator, batch_size: int, family: ModelFamily,
                    pad_id: int, decoder_start_id: int | None, device: torch.device, autocast) -> torch.Tensor:
    """[pairs, 2] summed log-probabilities (chosen, rejected) of every pair under ``model`` as it
    is now, in eval mode, batched; the model's mode is put back."""
    was_training = model.training
    model.eval()
    result = torch.zeros(collator.pairs, 2, dtype=torch.float32)
    for start in range(0, collator.pairs, batch_size):
        positions = list(range(start, min(start + batch_size, collator.pairs)))
        batch = {k: v.to(device) for k, v in collator(positions).items()}
        with autocast():
            logps, _ = sequence_logps(model, batch, family, pad_id, decoder_start_id)
        logps = logps.float().cpu()
        result[start:start + len(positions), 0] = logps[:len(positions)]
        result[start:start + len(positions), 1] = logps[len(positions):]
    model.train(was_training)
    return result


def stored_reference(run_dir: Path, digest: str, pairs: int) -> torch.Tensor | None:
    """The reference log-probabilities stored in the run folder for this pairs file, or None."""
    path = run_dir / REFERENCE_FILE
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as file:
            metadata = file.metadata() or {}
            values = file.get_tensor("reference_logps")
    except (OSError, ValueError, RuntimeError):
        return None
    if metadata.get("pairs_sha256") != digest or tuple(values.shape) != (pairs, 2):
        return None
    return values


def store_reference(run_dir: Path, values: torch.Tensor, digest: str, model_name: str) -> None:
    """Write the reference log-probabilities (beside, then renamed: never half a file)."""
    path = run_dir / REFERENCE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.partial-{os.getpid()}")
    save_file({"reference_logps": values.contiguous()}, str(staging),
              metadata={"pairs_sha256": digest, "model": model_name, "pairs": str(values.shape[0])})
    os.replace(staging, path)
