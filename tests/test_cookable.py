"""The cookable verdict: the faults a blind cook's reading rejected are caught, real recipes pass."""

from __future__ import annotations

from importlib import resources

import pytest

from chef_genius.cookable import CHECKS, check_cookable, request_foods, summarize_cookable
from chef_genius.evaluation import requested_names
from chef_genius.foods import build_food_table, food_key, food_table, read_amount
from chef_genius.judge import features, shipped_judge
from chef_genius.recipe import Recipe
from chef_genius.sources import open_source, read_rows

SOFT = ("unlisted_foods", "unused_ingredients", "step_amounts", "title_foods")
GOOD = Recipe(
    "Vanilla Cookies",
    ("1 cup butter, softened", "1 cup white sugar", "1 egg", "1 teaspoon vanilla extract",
     "2 1/4 cups all-purpose flour", "1 teaspoon baking soda", "1/2 teaspoon salt"),
    ("Preheat the oven to 350 degrees F.", "Cream the butter and sugar; beat in the egg and vanilla.",
     "Stir in the flour, baking soda and salt. Drop by spoonfuls onto a baking sheet.",
     "Bake for 8 to 10 minutes, until golden."))


def _with(**changes) -> Recipe:
    fields = {"title": GOOD.title, "ingredients": GOOD.ingredients, "steps": GOOD.steps, **changes}
    return Recipe(fields["title"], fields["ingredients"], fields["steps"])


@pytest.mark.parametrize(("line", "quantity", "unit", "kind", "base", "food"), [
    ("1/2 cup vanilla extract", 0.5, "cup", "volume", 24.0, "vanilla extract"),
    ("1 1/2 cups chopped walnuts", 1.5, "cup", "volume", 72.0, "walnut"),
    ("1½ cups milk", 1.5, "cup", "volume", 72.0, "milk"),
    ("2 to 3 tablespoons olive oil", 3.0, "tbsp", "volume", 9.0, "olive oil"),
    ("1 T. butter", 1.0, "tbsp", "volume", 3.0, "butter"),
    ("1 t. salt", 1.0, "tsp", "volume", 1.0, "salt"),
    ("1 (16 ounce) package frozen spinach", 16.0, "oz", "weight", 16 * 28.35, "spinach"),
    ("8 fl oz cream", 8.0, "fl oz", "volume", 48.0, "cream"),
    ("3 eggs", 3.0, "", "count", 3.0, "egg"),
    ("250 g dark chocolate", 250.0, "g", "weight", 250.0, "dark chocolate"),
])
def test_ingredient_lines_are_read_as_amount_unit_and_food(line, quantity, unit, kind, base, food):
    amount = read_amount(line)
    assert (amount.quantity, amount.unit, amount.kind, amount.food) == (pytest.approx(quantity), unit, kind, food)
    assert amount.base == pytest.approx(base)


def test_a_line_without_an_amount_has_none():
    assert read_amount("salt and pepper to taste") is None
    assert food_key("salt and pepper to taste") == "salt pepper"


def test_the_food_table_counts_foods_and_the_amounts_real_recipes_use():
    recipes = [Recipe(f"Tea {i}", (f"{1 + i % 3} teaspoons sugar", "1 cup water"), ("Boil the water with the sugar.",))
               for i in range(40)]
    table = build_food_table(recipes, min_listed=5)
    assert table.recipes == 40 and table.listed["sugar"] == 40 and table.listed["water"] == 40
    assert table.amounts["sugar"]["volume"] == [2.0, 3.0, 3.0]  # median, 99th percentile, max in teaspoons
    assert table.amounts["water"]["volume"] == [48.0, 48.0, 48.0]
    assert "sugar" not in table.unlisted_in_steps  # listed wherever the steps name it


def test_a_sound_recipe_is_cookable():
    verdict = check_cookable(GOOD, ["butter", "egg", "flour"])
    assert verdict.cookable and verdict.failed == {}


@pytest.mark.parametrize(("recipe", "check"), [
    # the reader's reasons (../shared/COOK_READING.md), one fault each
    (_with(ingredients=(*GOOD.ingredients, "1/4 cup deep-fry thermometer")), "non_food"),
    (_with(ingredients=tuple(line.replace("1 teaspoon vanilla", "1/2 cup vanilla") for line in GOOD.ingredients)),
     "amount"),
    (_with(steps=(*GOOD.steps, *["Fold 1/2 cup cream into 1/2 cup milk and fold again."] * 6)), "repetition"),
    (_with(steps=GOOD.steps[:2] + ("Add the chicken, shrimp and bacon to the dough; add the mushrooms.",)),
     "unlisted_foods"),
    (_with(title="Banana Chicken Pie"), "title_foods"),  # ("Hot Fudge Sundae": fudge is not in the table)
    (_with(steps=("Mix the ingredients well.", "Serve."), ingredients=GOOD.ingredients + (
        "1 cup raisins", "1 cup pecans", "2 bananas", "1 cup oats", "1 lemon", "1 cup rice", "2 apples")),
     "unused_ingredients"),
    (_with(ingredients=GOOD.ingredients + ("1 cup white sugar", "2 cups butter", "2 eggs", "1 teaspoon salt",
                                           "1 teaspoon vanilla extract")), "duplicate_ingredient"),
    (_with(steps=("Cream 3 cups butter with the sugar.", *GOOD.steps[1:])), "step_amounts"),
    (_with(steps=("Mix everything.", "Bake.")), "oven"),
    (_with(steps=()), "structure"),
])
def test_each_fault_fails_its_check(recipe, check):
    """The rules alone; the soft ones (unlisted foods, unused ingredients, step amounts, title
    foods) fail a recipe with the judge only when the judge fails it too."""
    verdict = check_cookable(recipe, use_judge=False)
    assert not verdict.cookable
    assert check in verdict.failed, verdict.failed
    if check not in SOFT:
        assert check in check_cookable(recipe).failed


def test_requested_foods_missing_from_the_list_fail():
    verdict = check_cookable(GOOD, ["ancho chiles", "butter"], use_judge=False)
    assert list(verdict.failed) == ["requested_foods"] and "ancho chiles" in verdict.failed["requested_foods"]
    assert "requested_foods" in check_cookable(GOOD, ["ancho chiles", "butter"]).failed


def test_text_cut_at_the_token_limit_is_not_cookable():
    assert check_cookable(GOOD, stopped=False, use_judge=False).failed == {"finished": "cut off at the token limit"}
    assert not check_cookable(GOOD, stopped=False).cookable


def test_request_foods_are_read_from_the_prompt():
    assert request_foods("Create a recipe: Chicken with Lemon with chicken breasts, lemons and rice") == [
        "chicken breasts", "lemons", "rice"]
    assert request_foods("Create a simple pasta dish") == []


def test_summary_names_the_rate_and_each_check():
    verdicts = [check_cookable(GOOD), check_cookable(GOOD, stopped=False)]
    summary = summarize_cookable(verdicts)
    assert summary["recipe/cookable_rate"] == 0.5 and summary["cookable/fails/finished"] == 0.5
    assert set(summary) == {"recipe/cookable_rate", *(f"cookable/fails/{c}" for c in CHECKS)}


def test_real_recipes_of_the_bundled_sample_mostly_pass():
    """Wikibooks recipes (not in the table's corpus): the verdict fails few real recipes (the
    larger held-out measurement is benchmarks/cookable.py: about 94 % pass)."""
    path = resources.files("chef_genius").joinpath("data/wikibooks_sample.json")
    recipes = [r for _, r in read_rows(open_source(str(path), progress=False)) if isinstance(r, Recipe)]
    verdicts = [check_cookable(r, requested_names(r)) for r in recipes]
    summary = summarize_cookable(verdicts)
    assert len(recipes) == 400
    assert summary["recipe/cookable_rate"] >= 0.85
    assert all(summary[f"cookable/fails/{c}"] <= 0.06 for c in CHECKS), summary


def test_the_judge_passes_a_sound_recipe_and_fails_one_that_reads_like_a_broken_sample():
    judge = shipped_judge()
    assert judge is not None and 0 < judge.threshold < 1
    sound = judge.probability(features(GOOD, ["butter", "egg"], food_table()))
    broken = _with(title="Chicken Allspirgin Bake",
                   ingredients=GOOD.ingredients + ("1/2 cup allspirgin", "1 cup sugar"),
                   steps=GOOD.steps + ("Add the chicken, shrimp, bacon and rice.",) * 3)
    score = judge.probability(features(broken, ["ancho chiles", "pork"], food_table()))
    assert sound >= judge.threshold > score
    verdict = check_cookable(broken, ["ancho chiles", "pork"])
    assert "judge" in verdict.failed and "unlisted foods" in verdict.failed["judge"]
    assert set(SOFT) & set(verdict.failed)  # the soft findings are given as reasons


def test_the_shipped_food_table_knows_common_foods_and_not_tools():
    table = food_table()
    assert table.recipes > 40000
    assert table.listed["flour"] > 1000 and table.listed["chicken"] > 1000 and "thermometer" not in table.listed
    assert 3 <= table.amounts["vanilla extract"]["volume"][1] <= 12  # teaspoons: the 99th percentile
