"""Recipe-specific metrics (improvement 8 of Training V2), each in [0, 1], on a parsed `Recipe`.

- ingredient coherence: share of ingredient lines with a quantity (digits, fractions such as
  ``1/2`` or ``½``, ranges, words like "pinch") or a unit;
- instruction quality: share of steps containing a cooking action verb (whole words, inflections
  included);
- completeness: 1/3 for ingredients, 1/3 for steps, 1/3 when the canonical text is 100-2000
  characters long;
- format correctness: 1/2 for an ingredients section, 1/2 for a steps section;
- overall quality: the mean of the four.

Metrics work on parsed recipes, never on raw newlines, so T5 output (which has none) scores the
same as the text it was trained on.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from chef_genius.recipe import ParsedRecipe, Recipe, parse_recipe_text, serialized_length

UNICODE_FRACTIONS = "½⅓⅔¼¾⅕⅖⅗⅘⅙⅚⅛⅜⅝⅞"

QUANTITY_WORDS = frozenset(
    """one two three four five six seven eight nine ten eleven twelve dozen half quarter third
    pinch pinches dash dashes handful handfuls sprinkle splash drizzle knob""".split()
)

UNITS = frozenset(
    """c. cup cups tbsp tbsp. tbs tbs. tbl tablespoon tablespoons tsp tsp. teaspoon teaspoons
    oz oz. ounce ounces lb lb. lbs lbs. pound pounds gr gram grams kg kilogram kilograms mg ml
    milliliter milliliters millilitre millilitres liter liters litre litres dl cl qt qt. quart
    quarts pt pt. pint pints gal gallon gallons can cans pkg pkg. pkgs package packages packet
    packets jar jars bottle bottles box boxes carton cartons envelope envelopes stick sticks
    clove cloves slice slices bunch bunches head heads sprig sprigs stalk stalks sheet sheets
    piece pieces fillet fillets inch inches cm bag bags container containers loaf loaves
    scoop scoops drop drops""".split()
)

_QUANTITY_PATTERN = re.compile(rf"\d|[{UNICODE_FRACTIONS}]")
_WORD = re.compile(r"[a-z]+\.?")

# Base forms; `_inflections` adds -s/-es, -ed, -ing with the usual spelling rules.
ACTION_VERBS = """add arrange assemble bake baste beat blanch blend boil braise bread break broil
brown brush burn carve chill chop coat combine cook cool core cover cream crumble crush cube cut
debone deglaze dice dip discard dissolve divide dot drain dredge drizzle drop dust empty fill
fillet flip fold fry garnish glaze grate grease grill grind halve heat insert julienne knead
layer let line marinate mash measure melt microwave mince mix moisten peel pierce pinch pipe
place poach pound pour preheat prepare press process puree put reduce refrigerate reheat remove
rinse roast roll rub saute sauté scald scoop scramble sear season separate serve set shake shape
shred sift simmer skim slice smooth soak spoon spread sprinkle squeeze steam steep stir strain
stuff sweeten taste tie top toss transfer trim turn unmold warm wash whip whisk wrap zest bring
keep leave make mould mold freeze thaw toast split sieve pat pack open bind arrange stand tear
drain flatten form lower increase decrease repeat microwave blitz pulse""".split()
IRREGULAR_FORMS = """beaten broken brought bound built froze frozen ground kept left made put
set shaken split spread stood stuck torn cut""".split()

_VOWELS = "aeiou"


def _inflections(verb: str) -> set[str]:
    forms = {verb}
    if verb.endswith(("s", "sh", "ch", "x", "z")):
        forms.add(verb + "es")
    elif verb.endswith("y") and verb[-2] not in _VOWELS:
        forms.add(verb[:-1] + "ies")
    else:
        forms.add(verb + "s")
    if verb.endswith("e"):
        forms |= {verb + "d", verb[:-1] + "ing"}
    elif verb.endswith("y") and verb[-2] not in _VOWELS:
        forms |= {verb[:-1] + "ied", verb + "ing"}
    else:
        forms |= {verb + "ed", verb + "ing"}
        # consonant-vowel-consonant: chop -> chopped, stir -> stirring
        if len(verb) >= 3 and verb[-1] not in _VOWELS + "wxy" and verb[-2] in _VOWELS and (
            verb[-3] not in _VOWELS
        ):
            forms |= {verb + verb[-1] + "ed", verb + verb[-1] + "ing"}
    return forms


ACTION_VERB_FORMS: frozenset[str] = frozenset(
    form for verb in ACTION_VERBS for form in _inflections(verb)
) | frozenset(IRREGULAR_FORMS)
_ALPHA_WORD = re.compile(r"[a-zé]+")


def has_quantity(line: str) -> bool:
    """True when an ingredient line has a number, a fraction, a quantity word or a unit."""
    if _QUANTITY_PATTERN.search(line):
        return True
    words = _WORD.findall(line.lower())
    return any(w in UNITS or w.rstrip(".") in UNITS or w.rstrip(".") in QUANTITY_WORDS for w in words)


def has_action_verb(step: str) -> bool:
    """True when a step contains a cooking verb as a whole word (any inflection)."""
    return not ACTION_VERB_FORMS.isdisjoint(_ALPHA_WORD.findall(step.lower()))


def ingredient_coherence(recipe: Recipe) -> float:
    if not recipe.ingredients:
        return 0.0
    return sum(map(has_quantity, recipe.ingredients)) / len(recipe.ingredients)


def instruction_quality(recipe: Recipe) -> float:
    if not recipe.steps:
        return 0.0
    return sum(map(has_action_verb, recipe.steps)) / len(recipe.steps)


def completeness(recipe: Recipe) -> float:
    length = serialized_length(recipe)
    return (bool(recipe.ingredients) + bool(recipe.steps) + (100 <= length <= 2000)) / 3


def format_correctness(parsed: ParsedRecipe) -> float:
    return (parsed.has_ingredients_section + parsed.has_steps_section) / 2


@dataclass(frozen=True)
class RecipeScores:
    """The seed's five recipe metrics; `as_log` gives the logged ``recipe/...`` names."""

    ingredient_coherence: float
    instruction_quality: float
    completeness: float
    format_correctness: float
    overall_quality: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

    def as_log(self) -> dict[str, float]:
        return {f"recipe/{name}": value for name, value in asdict(self).items()}


def score_parsed(parsed: ParsedRecipe) -> RecipeScores:
    """All five metrics for a parsed recipe."""
    recipe = parsed.recipe
    parts = (
        ingredient_coherence(recipe),
        instruction_quality(recipe),
        completeness(recipe),
        format_correctness(parsed),
    )
    return RecipeScores(*parts, overall_quality=sum(parts) / 4)


def score_recipe(recipe: Recipe) -> RecipeScores:
    """Metrics for a structured recipe: a section counts as found when it has items."""
    return score_parsed(ParsedRecipe(recipe, bool(recipe.ingredients), bool(recipe.steps)))


def score_text(text: str) -> RecipeScores:
    """Metrics for recipe text (model output, Markdown, plain text)."""
    return score_parsed(parse_recipe_text(text))


def mean_scores(scores: list[RecipeScores]) -> RecipeScores:
    """The per-metric mean of several scores (all zeros for an empty list)."""
    if not scores:
        return RecipeScores(0.0, 0.0, 0.0, 0.0, 0.0)
    keys = scores[0].as_dict().keys()
    return RecipeScores(**{k: sum(s.as_dict()[k] for s in scores) / len(scores) for k in keys})
