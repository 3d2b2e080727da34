"""The usability checks pass real recipes and fail loops, step-less lists and cut-off output; the
paraphrase augmentation never breaks a target."""

from __future__ import annotations

import json
import re

import pytest

from chef_genius.augment import VERB_PARAPHRASES, paraphrase_verbs
from chef_genius.recipe import Recipe, parse_recipe
from chef_genius.sample import sample_path
from chef_genius.usability import (
    check,
    food_names,
    food_words,
    ingredients_used,
    repeated_lines,
    repeated_ngrams,
    step_sentences,
    summarize,
)
from tests.conftest import SHARED_DATA, WIKIBOOKS, needs_shared

GOOD = Recipe("Carrot soup", ["2 tablespoons butter", "1 onion, chopped", "4 large carrots, sliced", "1 l stock"],
              ["Melt the butter and soften the onion.", "Add the carrots and the stock; simmer 20 minutes.",
               "Blend until smooth."])


def _bundled() -> list[Recipe]:
    return [Recipe(r["title"], r["ingredients"], r["steps"]) for r in json.loads(sample_path().read_text())]


def test_a_real_recipe_is_usable_and_its_numbers():
    result = check(GOOD)
    assert result.usable and result.stopped
    assert result.repeated_lines == 0.0 and result.ingredients_used == 1.0
    assert food_words("4 large carrots, sliced") == ["carrot"]
    assert food_words("1 (16 ounce) package frozen chopped spinach, thawed") == ["spinach"]
    assert food_names(GOOD) == ["butter", "onion", "carrots", "stock"]  # names as written, not stems
    assert food_names(Recipe("x", ["3 cups all-purpose flour", "salt and pepper to taste", "1/2 cup hummus"])) == [
        "all-purpose flour", "salt", "pepper", "hummus"]


def test_loops_step_less_lists_and_cut_off_output_are_not_usable():
    loop = Recipe("Basil", ["1 cup chopped fresh basil"] * 35, [])
    assert repeated_lines(loop) == pytest.approx(34 / 35) and not check(loop).usable
    no_steps = Recipe(GOOD.title, GOOD.ingredients, [])
    assert step_sentences(no_steps) == 0 and not check(no_steps).usable
    assert not check(GOOD, stopped=False).usable  # cut by the token limit
    unrelated = Recipe("Soup", ["2 cups lentils", "1 onion", "3 carrots"], ["Put 8 into a meringel.", "Cook them."])
    assert ingredients_used(unrelated) == 0.0 and not check(unrelated).usable
    looping_steps = Recipe("x", GOOD.ingredients, ["Stir the soup."] * 6)
    assert not check(looping_steps).usable
    # One paragraph of three sentences is three steps (openrecipes writes methods that way).
    assert step_sentences(Recipe("x", [], ["Melt butter. Add onion. Cook 5 minutes."])) == 3


def test_repetition_measures_on_known_text():
    recipe = Recipe("x", ["a b c d", "a b c d", "e f"], ["g h i j k"])
    assert repeated_lines(recipe) == pytest.approx(1 / 4)
    # words: a b c d a b c d e f g h i j k -> 12 4-grams, one (a b c d) repeated
    assert repeated_ngrams(recipe) == pytest.approx(1 / 12)
    summary = summarize([check(GOOD), check(GOOD, stopped=False)])
    assert summary["recipe/usable_rate"] == 0.5 and summary["recipe/stopped_rate"] == 0.5


def test_real_recipes_pass():
    """The verdict is calibrated on real recipes: nearly all of them are usable."""
    bundled = [check(r) for r in _bundled()]
    assert summarize(bundled)["recipe/usable_rate"] >= 0.9
    wikibooks = json.loads(WIKIBOOKS.read_text())
    checks = [check(Recipe(v["title"], v["ingredients"] or [], v["steps"] or [])) for v in wikibooks.values()]
    assert summarize(checks)["recipe/usable_rate"] >= 0.9
    assert summarize(checks)["recipe/repetition"] <= 0.01


@needs_shared
def test_the_openrecipes_corpus_passes():
    path = SHARED_DATA / "openrecipes_54k.jsonl"
    if not path.exists():
        pytest.skip("openrecipes_54k.jsonl is not in the shared folder")
    recipes = []
    with path.open() as lines:
        for i, line in enumerate(lines):
            if i % 25 == 0:
                row = json.loads(line)
                recipes.append(Recipe(row["title"], row.get("ingredients") or [], row.get("directions") or []))
    summary = summarize([check(r) for r in recipes])
    assert summary["recipe/usable_rate"] >= 0.95 and summary["recipe/repetition"] <= 0.005


def test_parsed_model_output_is_judged_like_its_recipe():
    text = ("Title: Carrot soup || Ingredients: 2 tablespoons butter | 1 onion, chopped | 4 large carrots, sliced "
            "|| Steps: Melt the butter and soften the onion. | Add the carrots; simmer 20 minutes.")
    assert check(parse_recipe(text)).usable
    looping = "Title: Pasta || Ingredients: " + " | ".join(["1000g pasta"] * 30)
    assert not check(parse_recipe(looping)).usable


# What context-free swaps produced (the old verb list, then a first short list reviewed on the corpora).
BROKEN = ("bring to a bring to a", "over medium warm", "taco combine", "stir in in", "mix in in", "combine in ",
          "grate chicken", "whisk with a mortar", "combine well", "shred the cheese with a grater")


def _steps_of_every_corpus() -> list[str]:
    steps = [s for r in _bundled() for s in r.steps]
    steps += [s for v in json.loads(WIKIBOOKS.read_text()).values() for s in (v["steps"] or [])]
    openrecipes = SHARED_DATA / "openrecipes_54k.jsonl"
    if openrecipes.exists():
        with openrecipes.open() as lines:
            steps += [s for i, line in enumerate(lines) if i % 10 == 0
                      for s in json.loads(line).get("directions") or []]
    return steps


def test_paraphrase_never_breaks_a_target():
    words = re.compile(r"\S+")
    changed = 0
    for step in _steps_of_every_corpus():
        out = paraphrase_verbs(step)
        if out == step:
            continue
        changed += 1
        lowered = out.lower()
        assert not any(b in lowered and b not in step.lower() for b in BROKEN), (step, out)
        # Only sentence-opening verbs from the list changed: every other word is where it was.
        before, after = words.findall(step), words.findall(out)
        swaps = {k.split()[0] for k in VERB_PARAPHRASES} | {v.split()[0] for v in VERB_PARAPHRASES.values()}
        differing = [(a, b) for a, b in zip(before, after, strict=False) if a != b]
        assert len(before) == len(after) and all(a.lower() in swaps and b.lower() in swaps for a, b in differing), \
            (step, out)
        assert not re.search(r"\b(\w+) \1\b", out.lower()) or re.search(r"\b(\w+) \1\b", step.lower()), (step, out)
    assert changed > 50  # the augmentation still does something
