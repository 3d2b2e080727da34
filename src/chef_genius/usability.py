"""Could a person cook it? Checks that a loop, a list without steps or nonsense cannot pass.

The seed's four metrics (`chef_genius.metrics`) rate form: a looping ingredient list or a sampled
"Put 8 into a meringel, and cook them." can score 1.0. These look at what goes wrong in model
output, each on a parsed `Recipe`:

- repetition: the share of ingredient and step lines that repeat an earlier line (after case,
  spacing and punctuation), and the share of word 4-grams that repeat an earlier one;
- ingredients used: the share of ingredient lines whose food words (quantities, units and
  preparation words removed) appear in the steps;
- requested food names covered (`reference_metrics.ingredient_coverage`);
- stopped: generation ended with the end token rather than at the token limit.

And one verdict, **usable**: a title, at least 2 ingredients and 2 step sentences, at most 10 %
of its lines repeating an earlier line, stopped before the limit, and at least half of its
ingredients used in the steps. Real recipes
pass it (tests/test_usability.py measures the shared corpora), a loop or a bare list does not.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from chef_genius.metrics import QUANTITY_WORDS, UNITS
from chef_genius.recipe import Recipe

MIN_ITEMS = 2
MIN_INGREDIENTS_USED = 0.5
MAX_REPEATED_LINES = 0.1  # real recipes repeat a line now and then ("2 tbsp butter" for crust and filling)
_ALL_INGREDIENTS = re.compile(r"\b(?:all|remaining|rest of the|all of the|all the) ingredients\b|\beverything\b")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")

# Words of an ingredient line that name no food: preparation, size, state, filler.
NOT_FOOD = frozenset("""about additional all and any as at beaten boiled boiling boneless bottled canned chilled
chopped coarse coarsely cold cooked cored crumbled crushed cubed cut dash deveined diced divided dried drained
extra fine finely firm fresh freshly frozen grated ground halved heaping heavy hot into inch large lean level
light lightly low medium melted minced more needed new optional or packed peeled pitted plain plus pound
prepared quartered rinsed ripe room shelled shredded sifted skinless sliced slivered small soft softened
split squeezed taste temperature thawed thick thin thinly to torn trimmed unsalted uncooked warm washed
whole with your each for of the a an in on cups cup tablespoons teaspoons""".split()) | QUANTITY_WORDS
_WORD = re.compile(r"[a-zé]+(?:-[a-zé]+)*")  # "all-purpose" is one word
_CONJUNCTION = re.compile(r"\b(?:and|or)\b")
_PARENS = re.compile(r"\([^)]*\)")
_LINE_NOISE = re.compile(r"[^a-z0-9 ]+")


def _stem(word: str) -> str:
    """A crude singular: tomatoes -> tomato, berries -> berry, eggs -> egg."""
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith("oes") and len(word) > 4:
        return word[:-2]
    if word.endswith("s") and not word.endswith("ss") and len(word) > 3:
        return word[:-1]
    return word


def food_words(line: str, stem: bool = True) -> list[str]:
    """The words of an ingredient line that name the food ("2 cups chopped fresh basil" -> basil),
    stemmed for matching against the steps unless ``stem`` is false."""
    head = _PARENS.sub(" ", line.lower()).split(",")[0]
    words = [w for w in _WORD.findall(head)
             if len(w) > 2 and w not in NOT_FOOD and w not in UNITS and w.rstrip(".") not in UNITS]
    return [_stem(w) for w in words] if stem else words


def food_names(recipe: Recipe, limit: int = 6) -> list[str]:
    """Food names of a recipe without a NER column (see `food_names_of`)."""
    return food_names_of(recipe.ingredients, limit)


def food_names_of(ingredients, limit: int = 6) -> list[str]:
    """A stand-in for RecipeNLG's NER column in requests: the last two food words of each
    ingredient line, as written ("chicken breasts", "all-purpose flour"), "salt and pepper" as two
    names, in order, without repeats."""
    names: list[str] = []
    for line in ingredients:
        head = _PARENS.sub(" ", line.lower()).split(",")[0]
        for part in _CONJUNCTION.split(head):
            name = " ".join(food_words(part, stem=False)[-2:])
            if name and name not in names:
                names.append(name)
            if len(names) == limit:
                return names
    return names


def ingredients_used(recipe: Recipe) -> float:
    """Share of ingredient lines with a food word that the steps mention (1.0 when the steps use
    "all ingredients"; 0.0 when no line names a food)."""
    method = " ".join(recipe.steps).lower()
    if _ALL_INGREDIENTS.search(method):
        return 1.0
    step_words = {_stem(w) for w in _WORD.findall(method)}
    lines = [food_words(line) for line in recipe.ingredients]
    lines = [words for words in lines if words]
    if not lines:
        return 0.0
    return sum(any(w in step_words for w in words) for words in lines) / len(lines)


def step_sentences(recipe: Recipe) -> int:
    """Sentences of the method: one paragraph of three sentences is three steps."""
    return sum(len([s for s in _SENTENCE_END.split(step) if s.strip()]) for step in recipe.steps)


def _normalized(line: str) -> str:
    return " ".join(_LINE_NOISE.sub(" ", line.lower()).split())


def repeated_lines(recipe: Recipe) -> float:
    """Share of ingredient and step lines that repeat an earlier line of the same section."""
    repeats, total = 0, 0
    for section in (recipe.ingredients, recipe.steps):
        seen: set[str] = set()
        for line in section:
            key = _normalized(line)
            repeats += key in seen
            seen.add(key)
            total += 1
    return repeats / total if total else 0.0


def repeated_ngrams(recipe: Recipe, n: int = 4) -> float:
    """Share of word n-grams (ingredients and steps) that repeat an earlier one."""
    words = _normalized(" ".join((*recipe.ingredients, *recipe.steps))).split()
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return (len(grams) - len(set(grams))) / len(grams) if grams else 0.0


@dataclass(frozen=True)
class Usability:
    """Checks of one generated recipe; `as_log` gives the logged ``recipe/...`` names."""

    usable: bool
    repeated_lines: float
    repeated_4grams: float
    ingredients_used: float
    stopped: bool

    def as_dict(self) -> dict:
        return asdict(self)


def check(recipe: Recipe, stopped: bool = True) -> Usability:
    """The checks and the usable verdict (module docstring) for a parsed recipe."""
    lines = repeated_lines(recipe)
    used = ingredients_used(recipe)
    usable = (bool(recipe.title) and len(recipe.ingredients) >= MIN_ITEMS and step_sentences(recipe) >= MIN_ITEMS
              and lines <= MAX_REPEATED_LINES and stopped and used >= MIN_INGREDIENTS_USED)
    return Usability(usable, lines, repeated_ngrams(recipe), used, stopped)


def summarize(checks: list[Usability]) -> dict[str, float]:
    """Mean of each check over recipes, as logged: ``recipe/usable_rate``, ``recipe/repetition``
    (repeated lines), ``recipe/repeated_4grams``, ``recipe/ingredients_used``, ``recipe/stopped_rate``."""
    n = max(len(checks), 1)
    return {
        "recipe/usable_rate": sum(c.usable for c in checks) / n,
        "recipe/repetition": sum(c.repeated_lines for c in checks) / n,
        "recipe/repeated_4grams": sum(c.repeated_4grams for c in checks) / n,
        "recipe/ingredients_used": sum(c.ingredients_used for c in checks) / n,
        "recipe/stopped_rate": sum(c.stopped for c in checks) / n,
    }
