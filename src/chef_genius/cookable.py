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
from collections import Counter
from dataclasses import dataclass

from chef_genius.foods import FoodTable, food_key, food_table, read_amount, recipe_food_keys
from chef_genius.recipe import Recipe
from chef_genius.usability import (
    _ALL_INGREDIENTS,
    _stem,
    food_words,
    ingredients_used,
    repeated_lines,
    repeated_ngrams,
)

JUDGE_REASONS = ("unlisted_foods", "title_foods_unlisted", "unknown_words", "requested_missing", "duplicates",
                 "step_amounts")
CHECKS = ("finished", "structure", "repetition", "unlisted_foods", "unused_ingredients", "non_food",
          "duplicate_ingredient", "amount", "step_amounts", "title_foods", "requested_foods", "oven", "judge")

MAX_REPEATED_LINES = 0.1
MAX_REPEATED_4GRAMS = 0.12
MIN_USED = 0.5  # share of listed ingredients the steps use
MAX_UNLISTED = 2  # foods (that real recipes always list) the steps cook without listing them
STRICT_FOOD_MIN_LISTED = 50  # a word listed in this many real recipes...
STRICT_FOOD_MAX_UNLISTED = 0.2  # ...whose steps name it unlisted at most this often, is a food one must list
AMOUNT_FACTOR = 3.0  # an amount above 3 x the 99th percentile of real recipes' amounts of that food
# Real recipes list a food again for a second part (crust and filling): more than 3 foods, and more
# than 40 % of the foods, listed twice is a loop.
MAX_DUPLICATES = 3
DUPLICATE_SHARE = 0.4
STEP_AMOUNT_FACTOR = 1.5
# Tools: listed with an amount by measure ("1/4 cup thermometer") they are not food; the first set is
# never an ingredient whatever its amount ("2 skillets").
NEVER_FOOD = frozenset("""thermometer skillet saucepan pan knife oven blender processor mixer spatula bowl tray
rack colander sieve ladle tong tongs kettle wok ramekin cutter timer griddle""".split())
EQUIPMENT = NEVER_FOOD | frozenset("toothpick skewer foil parchment towel twine string cheesecloth spray".split())
_WORD = re.compile(r"[a-zé]+(?:-[a-zé]+)*")
_BAKES = re.compile(r"\b(?:bake|baked)\b", re.IGNORECASE)
_HEAT = re.compile(r"\d\s*°|\bdegrees?\b|\b\d{3}\s*[fc]\b|\boven\b|\bgas mark\b|\bbroil", re.IGNORECASE)
_TIME = re.compile(r"\b(?:minutes?|mins?|hours?|hrs?)\b|\buntil\b", re.IGNORECASE)
_STEP_AMOUNT = re.compile(r"(\d+(?:\s+\d+/\d+)?|\d+/\d+)\s+(cups?|c\.|tablespoons?|tbsp\.?|teaspoons?|tsp\.?|"
                          r"ounces?|oz\.?|pounds?|lbs?\.?|grams?|g|ml|liters?)\s+(?:of\s+(?:the\s+)?)?"
                          r"((?:(?!and\b|or\b|with\b|each\b|plus\b)[a-z-]+\s?){1,3})", re.IGNORECASE)


@dataclass(frozen=True)
class Cookable:
    """The verdict and, for each failed check, why (``{"amount": "1/2 cup vanilla extract: ..."}``)."""

    cookable: bool
    failed: dict[str, str]

    def as_dict(self) -> dict:
        return {"cookable": self.cookable, "failed": dict(self.failed)}


def _words(text: str) -> set[str]:
    return {_stem(w) for w in _WORD.findall(text.lower())}


def _is_strict_food(word: str, table: FoodTable) -> bool:
    listed = table.listed.get(word, 0)
    if listed < STRICT_FOOD_MIN_LISTED or word in EQUIPMENT:
        return False
    return table.unlisted_in_steps.get(word, 0) <= STRICT_FOOD_MAX_UNLISTED * table.in_steps.get(word, 1)


def _is_food(word: str, table: FoodTable) -> bool:
    return table.listed.get(word, 0) >= 20 and word not in EQUIPMENT


def unlisted_foods(recipe: Recipe, table: FoodTable) -> list[str]:
    """Foods the steps name that no ingredient line (nor the title) names, among the foods real
    recipes nearly always list when their steps use them."""
    listed = set().union(*(food_words(line) for line in recipe.ingredients)) if recipe.ingredients else set()
    listed |= _words(" ".join(recipe.ingredients)) | _words(recipe.title)
    found = _words(" ".join(recipe.steps)) - listed
    return sorted(w for w in found if _is_strict_food(w, table))


def non_food_lines(recipe: Recipe) -> list[str]:
    """Ingredient lines that list equipment with an amount by measure ("1/4 cup thermometer",
    "2 tablespoons skillet"), or name no food at all but a tool."""
    bad = []
    for line in recipe.ingredients:
        amount = read_amount(line)
        words = food_words(line)
        head = words[-1] if words else ""
        if amount is not None and (head in NEVER_FOOD or (head in EQUIPMENT and amount.kind != "count")):
            bad.append(line)
    return bad


def duplicate_foods(recipe: Recipe) -> list[str]:
    keys = Counter(k for k in (food_key(line) for line in recipe.ingredients) if k)
    return [k for k, n in keys.items() if n > 1]


def excessive_amounts(recipe: Recipe, table: FoodTable) -> list[str]:
    """Lines whose amount is far above what real recipes use of that food."""
    bad = []
    for line in recipe.ingredients:
        amount = read_amount(line)
        if amount is None or not amount.food:
            continue
        limits = table.limits(amount)
        if limits and amount.base > AMOUNT_FACTOR * limits[1]:
            bad.append(f"{line} (real recipes use up to {_show(limits[1], amount.kind)})")
    return bad


def _show(base: float, kind: str) -> str:
    if kind == "volume":
        return f"{base / 48:.2g} cup" if base >= 12 else f"{base:.2g} tsp"
    if kind == "weight":
        return f"{base:.0f} g"
    return f"{base:.0f}"


def contradicting_step_amounts(recipe: Recipe) -> list[str]:
    """Steps that use more of a food, by the same kind of measure, than the list holds."""
    listed: dict[tuple[str, str], float] = {}
    for line in recipe.ingredients:
        amount = read_amount(line)
        if amount is not None and amount.food and amount.kind != "count":
            key = (amount.food.split()[-1], amount.kind)
            listed[key] = listed.get(key, 0.0) + amount.base
    bad = []
    for step in recipe.steps:
        for match in _STEP_AMOUNT.finditer(step):
            amount = read_amount(match.group(0))
            if amount is None or not amount.food or amount.kind == "count":
                continue
            have = listed.get((amount.food.split()[-1], amount.kind))
            if have is not None and amount.base > STEP_AMOUNT_FACTOR * have + 1e-9:
                bad.append(match.group(0).strip())
    return bad


def _title_foods(recipe: Recipe, table: FoodTable) -> list[str]:
    """Foods of the title a recipe lists by name (keys of the amounts table), not adjectives ("greek")."""
    title = [w for w in _WORD.findall(recipe.title.lower()) if len(w) > 2]
    return [w for w in title if _is_strict_food(_stem(w), table) and _stem(w) in table.amounts]


def _missing_from(foods: list[str], text: str) -> list[str]:
    """Foods not in the text, as a word, a plural or inside a word ("applesauce" has apple)."""
    stems = {_stem(w) for w in re.findall(r"[a-zé]+", text)}
    return sorted({f for f in foods if f not in text and _stem(f) not in stems})


def missing_title_foods(recipe: Recipe, table: FoodTable) -> list[str]:
    """Foods of the title that the ingredient list lacks."""
    return _missing_from(_title_foods(recipe, table), " ".join(recipe.ingredients).lower())


def title_foods_absent(recipe: Recipe, table: FoodTable) -> list[str]:
    """Foods of the title that neither the list nor the steps have."""
    return _missing_from(_title_foods(recipe, table), " ".join((*recipe.ingredients, *recipe.steps)).lower())


def missing_title_last(recipe: Recipe, table: FoodTable, missing: list[str]) -> bool:
    """The rule: the title's last food (it names the dish) and every other title food are absent."""
    foods = _title_foods(recipe, table)
    return bool(foods) and foods[-1] in missing and len(set(missing)) == len(set(foods))


def unknown_words(recipe: Recipe, table: FoodTable) -> list[str]:
    """Words of 5 or more letters that no real recipe of the table's corpus uses."""
    if not table.words:
        return []
    text = " ".join((recipe.title, *recipe.ingredients, *recipe.steps)).lower()
    return sorted({w for w in re.findall(r"[a-zé]+", text) if len(w) >= 5 and w not in table.words})


def missing_requested(recipe: Recipe, request_foods) -> list[str]:
    """Requested food names none of whose food words the ingredient list has."""
    listed = _words(" ".join(recipe.ingredients))
    missing = []
    for name in request_foods:
        words = food_words(name) or [_stem(w) for w in _WORD.findall(name.lower())]
        if words and not any(w in listed for w in words):
            missing.append(name)
    return missing


_WITH = re.compile(r"\bwith\b", re.IGNORECASE)
_LIST_SPLIT = re.compile(r",|\band\b|&", re.IGNORECASE)


def request_foods(prompt: str) -> list[str]:
    """The food names a request lists after its last "with" ("Create a recipe: Pie with apples,
    butter and flour" -> apples, butter, flour); none when it lists none."""
    parts = _WITH.split(prompt)
    if len(parts) < 2:
        return []
    return [name.strip(" .;:") for name in _LIST_SPLIT.split(parts[-1]) if name.strip(" .;:")]


def check_cookable(recipe: Recipe, request_foods=(), stopped: bool = True, table: FoodTable | None = None,
                   use_judge: bool = True) -> Cookable:
    """Every check of the module docstring; ``request_foods`` are the food names the request asked
    for; ``use_judge`` false leaves the learned judge out (the rules alone)."""
    from chef_genius.judge import shipped_judge

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

