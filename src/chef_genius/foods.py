"""What recipes are made of: ingredient lines read as amount + unit + food, and a food table
learned from real recipes (which words name foods, how much of each real recipes use).

An ingredient line is read as ``Amount(quantity, unit, kind, food)``: "1 1/2 cups chopped walnuts"
-> 1.5 cup, a volume of 72 teaspoons, food "walnut". Volumes are counted in teaspoons, weights in
grams, everything else as a count of its unit ("2 cans", "3 eggs").

`FoodTable` is built from corpora (`build_food_table`) and shipped as ``data/foods.json``: for each
food key, in how many recipes it is listed, how often real recipes' steps name it without listing
it, and the high percentiles of the amounts real recipes use, per kind of amount. The cookable
verdict (`chef_genius.cookable`) reads it. The table holds food words and numbers, no recipe text.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from chef_genius.recipe import Recipe
from chef_genius.usability import _stem, food_words

# A quantity at the start of a line: "1", "1 1/2", "1/2", "½", "1½", "2-3", "2 to 3", "1.5".
_FRACTIONS = {"½": 0.5, "⅓": 1 / 3, "⅔": 2 / 3, "¼": 0.25, "¾": 0.75, "⅕": 0.2, "⅛": 0.125, "⅜": 0.375,
              "⅝": 0.625, "⅞": 0.875, "⅙": 1 / 6, "⅚": 5 / 6}
_NUMBER = r"(?:\d+\s+\d+/\d+|\d+/\d+|\d+(?:\.\d+)?(?:\s*[½⅓⅔¼¾⅕⅛⅜⅝⅞⅙⅚])?|[½⅓⅔¼¾⅕⅛⅜⅝⅞⅙⅚])"
_QUANTITY = re.compile(rf"^\s*({_NUMBER})(?:\s*(?:-|–|to|or)\s*({_NUMBER}))?\s*")
_PARENS = re.compile(r"^\(([^)]*)\)\s*")
# Canonical units: volume in teaspoons, weight in grams.
VOLUME = {"tsp": 1.0, "tbsp": 3.0, "cup": 48.0, "ml": 0.2029, "l": 202.9, "dl": 20.29, "cl": 2.029,
          "pint": 96.0, "quart": 192.0, "gallon": 768.0, "fl oz": 6.0}
WEIGHT = {"g": 1.0, "kg": 1000.0, "mg": 0.001, "oz": 28.35, "lb": 453.6}
_UNIT_NAMES = {
    "tsp": "teaspoon teaspoons tsp tsp. tsps t. t",
    "tbsp": "tablespoon tablespoons tbsp tbsp. tbs tbs. tbl tbl. tb T T. Tbsp. Tbsp Tbs. Tbs",
    "cup": "cup cups c. c", "ml": "ml ml. milliliter milliliters millilitre millilitres",
    "l": "l liter liters litre litres",
    "dl": "dl", "cl": "cl", "pint": "pint pints pt pt.", "quart": "quart quarts qt qt.", "gallon": "gallon gallons gal",
    "g": "g g. gr gram grams gramme grammes", "kg": "kg kilogram kilograms kilo kilos", "mg": "mg",
    "oz": "oz oz. ounce ounces", "lb": "lb lb. lbs lbs. pound pounds",
}
UNIT_OF = {word: unit for unit, words in _UNIT_NAMES.items() for word in words.split()}
_FLUID_OUNCE = re.compile(r"^(?:fl\.?|fluid)\s+(?:oz\.?|ounces?)\b", re.IGNORECASE)
_WORD = re.compile(r"[A-Za-z]+\.?")


def _number(text: str) -> float:
    total = 0.0
    for part in re.findall(r"\d+/\d+|\d+(?:\.\d+)?|[½⅓⅔¼¾⅕⅛⅜⅝⅞⅙⅚]", text):
        if "/" in part:
            top, bottom = part.split("/")
            total += int(top) / int(bottom) if int(bottom) else 0.0
        elif part in _FRACTIONS:
            total += _FRACTIONS[part]
        else:
            total += float(part)
    return total


@dataclass(frozen=True)
class Amount:
    """One ingredient line's amount: ``quantity`` of ``unit`` ("" for a count), ``kind``
    ("volume" in teaspoons, "weight" in grams, "count"), ``base`` (the quantity in those base
    units) and the ``food`` key (`food_key`)."""

    quantity: float
    unit: str
    kind: str
    base: float
    food: str


def food_key(line: str) -> str:
    """The food a line names, as one key: its last two food words, stemmed ("2 cups packed brown
    sugar" -> "brown sugar"); "" when it names none."""
    return " ".join(food_words(line)[-2:])


def read_amount(line: str) -> Amount | None:
    """The amount at the start of an ingredient line, or None when it has none ("salt to taste")."""
    match = _QUANTITY.match(line)
    if not match:
        return None
    quantity = _number(match.group(2) or match.group(1))  # a range: its upper end
    if quantity <= 0:
        return None
    rest = line[match.end():]
    inner = _PARENS.match(rest)  # "1 (16 ounce) package": 16 ounces
    if inner:
        inside = read_amount(inner.group(1))
        rest = rest[inner.end():]
        if inside is not None and inside.kind != "count":
            key = food_key(rest)
            return Amount(quantity * inside.quantity, inside.unit, inside.kind, quantity * inside.base, key)
    unit = ""
    if _FLUID_OUNCE.match(rest):
        unit, rest = "fl oz", rest[_FLUID_OUNCE.match(rest).end():]
    else:
        word = _WORD.match(rest)
        # "T" is a tablespoon and "t" a teaspoon only as written; other units in any case.
        name = word.group(0) if word and word.group(0) in UNIT_OF else word.group(0).lower() if word else ""
        if name in UNIT_OF:
            unit, rest = UNIT_OF[name], rest[word.end():]
    if unit in VOLUME:
        return Amount(quantity, unit, "volume", quantity * VOLUME[unit], food_key(rest))
    if unit in WEIGHT:
        return Amount(quantity, unit, "weight", quantity * WEIGHT[unit], food_key(rest))
    return Amount(quantity, unit, "count", quantity, food_key(rest))


def recipe_food_keys(recipe: Recipe) -> list[str]:
    return [k for k in (food_key(line) for line in recipe.ingredients) if k]


@dataclass(frozen=True)
class FoodTable:
    """Foods learned from real recipes (module docstring).

    Attributes:
        recipes: how many recipes the table was built from.
        listed: food word (stemmed) -> recipes whose ingredient lines name it.
        in_steps: food word -> recipes whose steps name it.
        unlisted_in_steps: food word -> recipes whose steps name it while no line lists it.
        amounts: food key or word -> kind -> [p50, p99, max] of the amounts real recipes list
            (base units: teaspoons, grams, count), for keys seen often enough.
        words: every word of 4+ letters that at least 3 real recipes use (titles, lines, steps):
            a spelling dictionary ("allspirgin" is not in it).
    """

    recipes: int
    listed: dict[str, int]
    in_steps: dict[str, int]
    unlisted_in_steps: dict[str, int]
    amounts: dict[str, dict[str, list[float]]]
    words: frozenset[str] = frozenset()

    def limits(self, amount: Amount) -> list[float] | None:
        """[p50, p99, max] for the amount's food (its two-word key, else its last word) and kind."""
        words = amount.food.split()
        for key in (amount.food, words[-1] if words else ""):
            found = self.amounts.get(key, {}).get(amount.kind)
            if found:
                return found
        return None

    def to_json(self) -> str:
        return json.dumps({"recipes": self.recipes, "listed": self.listed, "in_steps": self.in_steps,
                           "unlisted_in_steps": self.unlisted_in_steps,
                           "amounts": self.amounts, "words": sorted(self.words)}, sort_keys=True,
                          separators=(",", ":"))


MIN_AMOUNTS = 30  # amounts of a food and kind needed before its percentiles are kept
MIN_WORD_RECIPES = 3  # recipes that must use a word before the spelling dictionary holds it
_ANY_WORD = re.compile(r"[a-zé]+")


def _step_words(recipe: Recipe) -> set[str]:
    return {_stem(w) for w in re.findall(r"[a-zé]+(?:-[a-zé]+)*", " ".join(recipe.steps).lower())}


def build_food_table(recipes: Iterable[Recipe], min_listed: int = 5) -> FoodTable:
    """Count foods and their amounts over real recipes (anything with ``title``, ``ingredients``
    and ``steps``)."""
    spelled: Counter[str] = Counter()
    listed: Counter[str] = Counter()
    in_steps: Counter[str] = Counter()
    unlisted: Counter[str] = Counter()
    values: dict[tuple[str, str], list[float]] = defaultdict(list)
    count = 0
    for recipe in recipes:
        count += 1
        spelled.update({w for w in _ANY_WORD.findall(" ".join((recipe.title, *recipe.ingredients,
                                                               *recipe.steps)).lower()) if len(w) >= 4})
        words: set[str] = set()
        for line in recipe.ingredients:
            words.update(food_words(line))
            amount = read_amount(line)
            if amount is not None and amount.food:
                values[(amount.food, amount.kind)].append(amount.base)
                last = amount.food.split()[-1]
                if last != amount.food:
                    values[(last, amount.kind)].append(amount.base)
        listed.update(words)
        named = _step_words(recipe)
        in_steps.update(named)
        unlisted.update(named - words)
    listed = Counter({w: n for w, n in listed.items() if n >= min_listed})
    amounts: dict[str, dict[str, list[float]]] = defaultdict(dict)
    for (key, kind), found in values.items():
        if len(found) >= MIN_AMOUNTS:
            found.sort()
            amounts[key][kind] = [round(found[len(found) // 2], 4), round(found[int(len(found) * 0.99)], 4),
                                  round(found[-1], 4)]
    return FoodTable(count, dict(listed), {w: in_steps[w] for w in listed if in_steps[w]},
                     {w: unlisted[w] for w in listed if unlisted[w]}, dict(amounts),
                     frozenset(w for w, n in spelled.items() if n >= MIN_WORD_RECIPES))


@lru_cache(maxsize=1)
def food_table() -> FoodTable:
    """The table shipped with the package (``data/foods.json``; `benchmarks/food_table.py` builds it)."""
    data = json.loads(resources.files("chef_genius").joinpath("data/foods.json").read_text(encoding="utf-8"))
    return FoodTable(data["recipes"], data["listed"], data["in_steps"], data["unlisted_in_steps"], data["amounts"],
                     frozenset(data.get("words", ())))
