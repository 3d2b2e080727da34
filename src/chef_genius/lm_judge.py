"""A second judge for the cookable verdict: a frozen language model reads the recipe.

The shipped judge (`chef_genius.judge`) weighs counts and word pairs; a model tuned or searched
against it learns to pass it (readings D-H, docs/quality.md). This judge reads the recipe with a
small frozen language model, the untuned SmolLM2-135M-Instruct that chef-genius fine-tunes by
default (its GGUF, which the user has: it is not shipped), given the request: the mean of its
hidden states over the recipe's tokens at a third, two thirds and the end of its layers, and the
mean and spread of the recipe's token log-probabilities. A logistic regression on these, fitted
to tell real validation recipes from fine-tuned models' samples on validation prompts
(`benchmarks/train_lm_judge.py`), gives P(real); its threshold passes 95.5 % of other real
validation recipes. Its weights ship as ``data/lm_judge.json`` with a fingerprint of the model
they were fitted on; another model is refused.

Optional: `evaluate --judge-model FILE` and `benchmarks/quality.py pick --judge-model FILE` report
``cookable_lm`` (the cookable verdict and this judge both pass) beside ``cookable``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch

from chef_genius.errors import UserError
from chef_genius.recipe import Recipe

MAX_RECIPE_TOKENS = 384  # a recipe's tokens read (the 95th-percentile recipe is ~450 SmolLM2 tokens)
WEIGHTS = "data/lm_judge.json"


def render(recipe: Recipe) -> str:
    """The recipe as the judge reads it: the same plain layout whoever wrote it."""
    steps = "\n".join(f"{k + 1}. {step}" for k, step in enumerate(recipe.steps))
    return f"{recipe.title}\nIngredients:\n" + "\n".join(f"- {line}" for line in recipe.ingredients) + \
        f"\nSteps:\n{steps}"


def layers_read(model) -> tuple[int, int, int]:
    """The hidden states averaged: after a third, two thirds and all of the layers."""
    n = model.config.num_hidden_layers
    return n // 3, 2 * n // 3, n


def fingerprint(model) -> str:
    """A short hash of the model's token embeddings (float32 bytes): the same weights, the same hash."""
    weight = model.get_input_embeddings().weight.detach().float().cpu().contiguous()
    return hashlib.sha256(weight.numpy().tobytes()).hexdigest()[:16]


def token_logprobs(model, rows: list[list[int]], pad: int, device, hidden: bool = False):
    """Right-padded rows through ``model``: each token's log-probability given the tokens before it
    (float32, rows x longest - 1), and the hidden states when ``hidden``."""
    longest = max(map(len, rows))
    ids = torch.full((len(rows), longest), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), longest), dtype=torch.long)
    for j, row in enumerate(rows):
        ids[j, :len(row)] = torch.tensor(row)
        mask[j, :len(row)] = 1
    ids, mask = ids.to(device), mask.to(device)
    result = model(input_ids=ids, attention_mask=mask, output_hidden_states=hidden)
    logp = torch.log_softmax(result.logits[:, :-1].float(), -1).gather(2, ids[:, 1:, None])[..., 0]
    return logp, result.hidden_states if hidden else None


@torch.inference_mode()
def read_recipes(model, tokenizer, requests: list[str], recipes: list[Recipe], batch_size: int = 8,
                 progress=None) -> torch.Tensor:
    """One row of features per recipe: the hidden states' means (`layers_read`), then the mean and
    standard deviation of the recipe tokens' log-probabilities given the request. Recipes are read
    in batches of similar length, right-padded (float32 rows, in the input order)."""
    device = next(model.parameters()).device
    encoded = []
    for request, recipe in zip(requests, recipes, strict=True):
        head = tokenizer(request + "\n\n").input_ids
        body = tokenizer(render(recipe)).input_ids[:MAX_RECIPE_TOKENS] or [tokenizer.eos_token_id or 0]
        encoded.append((head, body))
    layers = layers_read(model)
    width = model.config.hidden_size
    out = torch.zeros(len(recipes), len(layers) * width + 2)
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]) + len(encoded[i][1]))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    for start in range(0, len(order), batch_size):
        index = order[start:start + batch_size]
        logp, hidden = token_logprobs(model, [encoded[i][0] + encoded[i][1] for i in index], pad, device, True)
        for j, i in enumerate(index):
            h, b = len(encoded[i][0]), len(encoded[i][1])
            states = [hidden[layer][j, h:h + b].float().mean(0) for layer in layers]
            token_logp = logp[j, h - 1:h + b - 1]
            spread = token_logp.std() if b > 1 else token_logp.new_zeros(())
            out[i] = torch.cat([*states, token_logp.mean()[None], spread[None]]).cpu()
        if progress is not None:
            progress(len(index))
    return out


@dataclass(frozen=True)
class LMJudge:
    """Logistic regression on standardized `read_recipes` features: P(real) >= threshold passes."""

    coef: list[float]
    intercept: float
    mean: list[float]
    scale: list[float]
    threshold: float
    fingerprint: str
    model: str  # what the weights were fitted on, in words

    def probabilities(self, features: torch.Tensor) -> torch.Tensor:
        mean, scale = torch.tensor(self.mean), torch.tensor(self.scale)
        if features.shape[1] != len(self.coef):
            raise UserError(f"the LM judge expects {len(self.coef)} features, got {features.shape[1]}: "
                            f"another model than {self.model}")
        z = ((features.double() - mean.double()) / scale.double()) @ torch.tensor(self.coef, dtype=torch.float64)
        return torch.sigmoid(z + self.intercept).float()

    def to_dict(self) -> dict:
        return {"coef": self.coef, "intercept": self.intercept, "mean": self.mean, "scale": self.scale,
                "threshold": self.threshold, "fingerprint": self.fingerprint, "model": self.model}

    @classmethod
    def from_dict(cls, data: dict) -> LMJudge:
        return cls(data["coef"], data["intercept"], data["mean"], data["scale"], data["threshold"],
                   data["fingerprint"], data["model"])


def shipped_lm_judge() -> LMJudge | None:
    path = resources.files("chef_genius").joinpath(WEIGHTS)
    return LMJudge.from_dict(json.loads(path.read_text(encoding="utf-8"))) if path.is_file() else None


class JudgeReader:
    """A judge and the model it reads with, loaded once: `score` gives each recipe's P(real) and
    whether it passes."""

    def __init__(self, model, tokenizer, judge: LMJudge, batch_size: int = 8):
        found = fingerprint(model)
        if found != judge.fingerprint:
            raise UserError(f"--judge-model: its weights are not the ones the LM judge was fitted on ({judge.model}; "
                            f"fingerprint {found}, expected {judge.fingerprint})")
        self.model, self.tokenizer, self.judge, self.batch_size = model, tokenizer, judge, batch_size

    @classmethod
    def load(cls, path: str | Path, judge: LMJudge | None = None, device: str | None = None) -> JudgeReader:
        """The judge model from ``path`` (a GGUF file or a model folder), in bfloat16 on a GPU or
        a CPU that has it; ``judge``: the shipped weights when None."""
        from chef_genius.inference import load_run

        judge = judge or shipped_lm_judge()
        if judge is None:
            raise UserError("no LM judge weights are shipped with this package")
        loaded = load_run(path, device=device)
        reader = cls(loaded.model, loaded.tokenizer, judge)
        reader.model.to(torch.bfloat16)
        return reader

    def score(self, requests: list[str], recipes: list[Recipe]) -> list[tuple[float, bool]]:
        features = read_recipes(self.model, self.tokenizer, requests, recipes, self.batch_size)
        probabilities = self.judge.probabilities(features).tolist()
        return [(p, p >= self.judge.threshold) for p in probabilities]
