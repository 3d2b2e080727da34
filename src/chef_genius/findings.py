"""The findings of the cookable verdict's rules: what a recipe's steps cook without listing it,
tools listed as food, foods listed twice, amounts far above real recipes', steps using more than
the list has, title foods absent, words no real recipe spells, requested foods not listed.

Each finding is a list (empty: none found); `chef_genius.cookable` turns them into the verdict
and `chef_genius.judge` counts them. Thresholds were set on real recipes (`benchmarks/cookable.py`).
"""

from __future__ import annotations

import re
from collections import Counter

from chef_genius.foods import FoodTable, food_key, read_amount
from chef_genius.recipe import Recipe
from chef_genius.usability import _stem, food_words

STRICT_FOOD_MIN_LISTED = 50  # a word listed in this many real recipes...
STRICT_FOOD_MAX_UNLISTED = 0.2  # ...whose steps name it unlisted at most this often, is a food one must list
AMOUNT_FACTOR = 3.0  # an amount above 3 x the 99th percentile of real recipes' amounts of that food
STEP_AMOUNT_FACTOR = 1.5
# Tools: listed with an amount by measure ("1/4 cup thermometer") they are not food; the first set is
# never an ingredient whatever its amount ("2 skillets").
NEVER_FOOD = frozenset("""thermometer skillet saucepan pan knife oven blender processor mixer spatula bowl tray
rack colander sieve ladle tong tongs kettle wok ramekin cutter timer griddle""".split())
EQUIPMENT = NEVER_FOOD | frozenset("toothpick skewer foil parchment towel twine string cheesecloth spray".split())
_WORD = re.compile(r"[a-zé]+(?:-[a-zé]+)*")
_STEP_AMOUNT = re.compile(r"(\d+(?:\s+\d+/\d+)?|\d+/\d+)\s+(cups?|c\.|tablespoons?|tbsp\.?|teaspoons?|tsp\.?|"
                          r"ounces?|oz\.?|pounds?|lbs?\.?|grams?|g|ml|liters?)\s+(?:of\s+(?:the\s+)?)?"
                          r"((?:(?!and\b|or\b|with\b|each\b|plus\b)[a-z-]+\s?){1,3})", re.IGNORECASE)


def _words(text: str) -> set[str]:
    return {_stem(w) for w in _WORD.findall(text.lower())}


def is_strict_food(word: str, table: FoodTable) -> bool:
    listed = table.listed.get(word, 0)
    if listed < STRICT_FOOD_MIN_LISTED or word in EQUIPMENT:
        return False
    return table.unlisted_in_steps.get(word, 0) <= STRICT_FOOD_MAX_UNLISTED * table.in_steps.get(word, 1)


def unlisted_foods(recipe: Recipe, table: FoodTable) -> list[str]:
    """Foods the steps name that no ingredient line (nor the title) names, among the foods real
    recipes nearly always list when their steps use them."""
    listed = set().union(*(food_words(line) for line in recipe.ingredients)) if recipe.ingredients else set()
    listed |= _words(" ".join(recipe.ingredients)) | _words(recipe.title)
    found = _words(" ".join(recipe.steps)) - listed
    return sorted(w for w in found if is_strict_food(w, table))


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
    return [w for w in title if is_strict_food(_stem(w), table) and _stem(w) in table.amounts]


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
