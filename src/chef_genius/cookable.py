"""Could a cook make it tonight? The `cookable` verdict: checks a program can make offline.

`usable` (`chef_genius.usability`) checks form, and a fine-tuned model learns form: a blind
cook's reading (`benchmarks/cook_reading.py`) rejected recipes that `usable` passed for "1/4 cup
deep-fry thermometer", "1/2 cup vanilla extract", requested anchos never used, a hot fudge sundae
with no chocolate, steps that loop until the token limit. Each check below looks for one such
fault, using the food table learned from real recipes (`chef_genius.foods`):

- finished: generation stopped at an end token;
- structure: a title, ingredient lines and steps;
- repetition: lines repeated, or word 4-grams repeated more than real recipes ever do;
- unlisted_foods: the steps cook foods the list does not have (foods real recipes always list);
- unused_ingredients: listed ingredients the steps never use;
- non_food: equipment or tools listed with an amount ("1/4 cup deep-fry thermometer");
- duplicate_ingredient: the same food listed on several lines;
- amount: an amount far above what real recipes use for that food ("1/2 cup vanilla extract");
- step_amounts: a step uses more of a food than the list has;
- title_foods: the dish the title names is nowhere in the recipe ("Banana Bread" with no banana or bread);
- requested_foods: foods the request asked for are not listed;
- oven: the steps bake with no temperature and no time;
- judge: the learned judge (`chef_genius.judge`) weighs the findings that real recipes also show
  now and then (an unlisted food, a title food missing from the list, a word no real recipe
  spells, a large amount, unused ingredients) and fails recipes that read unlike sound real ones.

A recipe is cookable when no check fails. The thresholds were set so that about 95 % of real
held-out recipes pass (each check's false-fail rate on real recipes: `benchmarks/cookable.py`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from chef_genius.augment import request_of
from chef_genius.findings import (
    contradicting_step_amounts,
    duplicate_foods,
    excessive_amounts,
    missing_requested,
    missing_title_last,
    non_food_lines,
    title_foods_absent,
    unlisted_foods,
)
from chef_genius.foods import FoodTable, food_table, recipe_food_keys
from chef_genius.judge import shipped_judge
from chef_genius.recipe import Recipe
from chef_genius.usability import _ALL_INGREDIENTS, ingredients_used, repeated_lines, repeated_ngrams

JUDGE_REASONS = ("unlisted_foods", "title_foods_unlisted", "unknown_words", "requested_missing", "duplicates",
                 "step_amounts")
CHECKS = ("finished", "structure", "repetition", "unlisted_foods", "unused_ingredients", "non_food",
          "duplicate_ingredient", "amount", "step_amounts", "title_foods", "requested_foods", "oven", "judge")

MAX_REPEATED_LINES = 0.1
MAX_REPEATED_4GRAMS = 0.12
MIN_USED = 0.5  # share of listed ingredients the steps use
MAX_UNLISTED = 2  # foods (that real recipes always list) the steps cook without listing them
# Real recipes list a food again for a second part (crust and filling): more than 3 foods, and more
# than 40 % of the foods, listed twice is a loop.
MAX_DUPLICATES = 3
DUPLICATE_SHARE = 0.4
_BAKES = re.compile(r"\b(?:bake|baked)\b", re.IGNORECASE)
_HEAT = re.compile(r"\d\s*°|\bdegrees?\b|\b\d{3}\s*[fc]\b|\boven\b|\bgas mark\b|\bbroil", re.IGNORECASE)
_TIME = re.compile(r"\b(?:minutes?|mins?|hours?|hrs?)\b|\buntil\b", re.IGNORECASE)


@dataclass(frozen=True)
class Cookable:
    """The verdict and, for each failed check, why (``{"amount": "1/2 cup vanilla extract: ..."}``)."""

    cookable: bool
    failed: dict[str, str]

    def as_dict(self) -> dict:
        return {"cookable": self.cookable, "failed": dict(self.failed)}


_WITH = re.compile(r"\bwith\b", re.IGNORECASE)
_LIST_SPLIT = re.compile(r",|\band\b|&", re.IGNORECASE)


def request_foods(prompt: str) -> list[str]:
    """The food names a request lists after its last "with" ("Create a recipe: Pie with apples,
    butter and flour" -> apples, butter, flour); none when it lists none."""
    parts = _WITH.split(request_of(prompt))  # a reference recipe's words are not requested
    if len(parts) < 2:
        return []
    return [name.strip(" .;:") for name in _LIST_SPLIT.split(parts[-1]) if name.strip(" .;:")]


def check_cookable(recipe: Recipe, request_foods=(), stopped: bool = True, table: FoodTable | None = None,
                   use_judge: bool = True) -> Cookable:
    """Every check of the module docstring; ``request_foods`` are the food names the request asked
    for; ``use_judge`` false leaves the learned judge out (the rules alone)."""
    table = table or food_table()
    failed: dict[str, str] = {}
    if not stopped:
        failed["finished"] = "cut off at the token limit"
    if not recipe.title or not recipe.ingredients or not recipe.steps:
        failed["structure"] = (f"title {'yes' if recipe.title else 'no'}, {len(recipe.ingredients)} ingredient lines, "
                               f"{len(recipe.steps)} steps")
    lines, grams = repeated_lines(recipe), repeated_ngrams(recipe)
    if lines > MAX_REPEATED_LINES or grams > MAX_REPEATED_4GRAMS:
        failed["repetition"] = f"{lines:.0%} of lines and {grams:.0%} of 4-grams repeat"
    # Soft findings: real recipes show them now and then; they fail a recipe only with the judge
    # (or alone when no judge is shipped).
    soft: dict[str, str] = {}
    if (unlisted := unlisted_foods(recipe, table)) and len(unlisted) > MAX_UNLISTED:
        soft["unlisted_foods"] = "steps use unlisted " + ", ".join(unlisted)
    method = " ".join(recipe.steps).lower()
    if recipe.ingredients and not _ALL_INGREDIENTS.search(method) and ingredients_used(recipe) < MIN_USED:
        soft["unused_ingredients"] = f"the steps use {ingredients_used(recipe):.0%} of the listed ingredients"
    if contradictions := contradicting_step_amounts(recipe):
        soft["step_amounts"] = "steps use more than listed: " + "; ".join(contradictions)
    if (missing := title_foods_absent(recipe, table)) and missing_title_last(recipe, table, missing):
        soft["title_foods"] = "the title's " + ", ".join(missing) + " not in the recipe"
    if tools := non_food_lines(recipe):
        failed["non_food"] = "; ".join(tools)
    duplicates = duplicate_foods(recipe)
    if len(duplicates) > MAX_DUPLICATES and len(duplicates) > DUPLICATE_SHARE * len(set(recipe_food_keys(recipe))):
        failed["duplicate_ingredient"] = "listed more than once: " + ", ".join(duplicates)
    if excessive := excessive_amounts(recipe, table):
        failed["amount"] = "; ".join(excessive)
    if missing := missing_requested(recipe, request_foods):
        failed["requested_foods"] = "requested but not listed: " + ", ".join(missing)
    if _BAKES.search(method) and not _HEAT.search(method) and not _TIME.search(method):
        failed["oven"] = "bakes with no temperature and no time"
    judge = shipped_judge() if use_judge else None
    if judge is None:
        failed.update(soft)
    else:
        probability, values = judge.score(recipe, request_foods, table)
        if probability < judge.threshold:
            found = [f"{name.replace('_', ' ')} {values[name]:.0f}" for name in JUDGE_REASONS if values[name] >= 1]
            failed["judge"] = f"reads unlike a sound recipe (score {probability:.2f} < {judge.threshold:.2f}" + (
                f": {', '.join(found)})" if found else ")")
            failed.update(soft)
    return Cookable(not failed, failed)


def summarize_cookable(verdicts: list[Cookable]) -> dict[str, float]:
    """``recipe/cookable_rate`` and each check's failure rate (``cookable/fails/<check>``)."""
    n = max(len(verdicts), 1)
    out = {"recipe/cookable_rate": sum(v.cookable for v in verdicts) / n}
    for name in CHECKS:
        out[f"cookable/fails/{name}"] = sum(name in v.failed for v in verdicts) / n
    return out

