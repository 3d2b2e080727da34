"""A learned judge beside the cookable rules: does a recipe read like a sound real recipe?

Rules alone cannot fail a model's recipe without failing real ones: real recipes too leave a
garnish unlisted, spell a rare chile or list butter twice. The judge weighs those findings
together with the text itself: a logistic regression over a few counts a program can make
offline (foods the steps use unlisted, the title's foods missing from the list, words no real
recipe spells, amounts beyond what real recipes use, ingredients the steps never use...) and over
the word pairs of the recipe (`words`: "bake minutes", "pasta boil"...), trained to tell real
recipes from a fine-tuned model's samples (`benchmarks/train_judge.py`), its threshold set so
that 95.5 % of real validation recipes pass. Its weights ship as ``data/judge.json``; applying it
is a sum of weights (no numerical library).

A judge trained on one model's samples knows that model's faults best: its agreement with a
cook's reading is measured on readings it was not tuned on (docs/quality.md).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

from chef_genius.findings import (
    contradicting_step_amounts,
    duplicate_foods,
    missing_requested,
    missing_title_foods,
    title_foods_absent,
    unknown_words,
    unlisted_foods,
)
from chef_genius.foods import FoodTable, read_amount
from chef_genius.recipe import Recipe
from chef_genius.usability import ingredients_used, repeated_lines, repeated_ngrams, step_sentences

FEATURES = ("unknown_words", "unlisted_foods", "title_foods_unlisted", "title_foods_absent", "requested_missing",
            "amount_excess", "duplicates", "unused_share", "repeated_4grams", "repeated_lines", "step_amounts",
            "ingredient_lines", "step_sentences", "words_per_step")


def features(recipe: Recipe, request_foods, table: FoodTable) -> dict[str, float]:
    """The counts the judge weighs (`FEATURES`)."""
    excess = 0.0
    for line in recipe.ingredients:
        amount = read_amount(line)
        limits = table.limits(amount) if amount is not None and amount.food else None
        if limits and limits[1] > 0:
            excess = max(excess, math.log(max(amount.base / limits[1], 1.0)))
    steps = max(step_sentences(recipe), 1)
    words = len(re.findall(r"\w+", " ".join(recipe.steps)))
    return {
        "unknown_words": len(unknown_words(recipe, table)),
        "unlisted_foods": len(unlisted_foods(recipe, table)),
        "title_foods_unlisted": len(missing_title_foods(recipe, table)),
        "title_foods_absent": len(title_foods_absent(recipe, table)),
        "requested_missing": len(missing_requested(recipe, request_foods)),
        "amount_excess": excess,
        "duplicates": len(duplicate_foods(recipe)),
        "unused_share": 1.0 - ingredients_used(recipe) if recipe.ingredients else 1.0,
        "repeated_4grams": repeated_ngrams(recipe),
        "repeated_lines": repeated_lines(recipe),
        "step_amounts": len(contradicting_step_amounts(recipe)),
        "ingredient_lines": math.log1p(len(recipe.ingredients)),
        "step_sentences": math.log1p(steps),
        "words_per_step": math.log1p(words / steps),
    }


_TOKEN = re.compile(r"[a-zé]+|\d+(?:[./]\d+)?")


def words(recipe: Recipe) -> set[str]:
    """The recipe's words and word pairs, lower-cased, numbers as "<n>", per section (a title word
    is "t:word", an ingredient word "i:word", a step word and pair as they are)."""
    out: set[str] = set()
    for tag, text in (("t:", recipe.title), ("i:", " ".join(recipe.ingredients)), ("", " ".join(recipe.steps))):
        tokens = ["<n>" if t[0].isdigit() else t for t in _TOKEN.findall(text.lower())]
        out.update(tag + t for t in tokens)
        if not tag:
            out.update(f"{a} {b}" for a, b in zip(tokens, tokens[1:], strict=False))
    return out


@dataclass(frozen=True)
class Judge:
    """Logistic regression on standardized `FEATURES` and on `words` (present or not);
    a recipe passes when P(real) >= threshold."""

    weights: dict[str, float]
    bias: float
    mean: dict[str, float]
    scale: dict[str, float]
    threshold: float
    word_weights: dict[str, float] = field(default_factory=dict)

    def probability(self, values: dict[str, float], present: set[str] = frozenset()) -> float:
        z = self.bias + sum(w * (values[k] - self.mean[k]) / self.scale[k] for k, w in self.weights.items())
        z += sum(self.word_weights.get(w, 0.0) for w in present)
        return 1.0 / (1.0 + math.exp(-max(min(z, 50.0), -50.0)))

    def score(self, recipe: Recipe, request_foods, table: FoodTable) -> tuple[float, dict[str, float]]:
        """P(real) of a recipe, and its counts."""
        values = features(recipe, request_foods, table)
        return self.probability(values, words(recipe) if self.word_weights else frozenset()), values

    def to_json(self) -> str:
        return json.dumps({"weights": self.weights, "bias": self.bias, "mean": self.mean, "scale": self.scale,
                           "threshold": self.threshold, "word_weights": self.word_weights}, indent=0)


@lru_cache(maxsize=1)
def shipped_judge() -> Judge | None:
    """The judge shipped with the package (None if there is none)."""
    path = resources.files("chef_genius").joinpath("data/judge.json")
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    return Judge(data["weights"], data["bias"], data["mean"], data["scale"], data["threshold"],
                 data.get("word_weights", {}))
