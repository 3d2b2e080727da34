"""Recipe metrics, quality score and difficulty on hand-computed recipes."""

from __future__ import annotations

import math

import pytest

from chef_genius.metrics import (
    completeness,
    has_action_verb,
    has_quantity,
    ingredient_coherence,
    instruction_quality,
    mean_scores,
    score_recipe,
    score_text,
)
from chef_genius.quality import (
    Difficulty,
    detail,
    difficulty,
    exact_key,
    hygiene_problems,
    near_duplicate_key,
    quality_score,
)
from chef_genius.recipe import Recipe, serialize

SEED_EXAMPLE = """Ingredients:
- 2 cups flour
- 1 tsp salt

Instructions:
1. Mix flour and salt
2. Add water gradually
3. Knead for 10 minutes"""


def test_seed_example_scores_one_everywhere():
    scores = score_text(SEED_EXAMPLE).as_dict()
    assert scores == {"ingredient_coherence": 1.0, "instruction_quality": 1.0, "completeness": 1.0,
                      "format_correctness": 1.0, "overall_quality": 1.0}


def test_seed_example_scores_the_same_after_t5_removed_newlines():
    # The original implementation split on newlines and scored this 0.33.
    flattened = " ".join(SEED_EXAMPLE.split())
    assert score_text(flattened).overall_quality == 1.0


@pytest.mark.parametrize("line, expected", [
    ("2 cups flour", True), ("½ cup sugar", True), ("1/2 tsp salt", True), ("2-3 cloves garlic", True),
    ("pinch of salt", True), ("Salt to taste", False), ("butter", False), ("one onion", True),
    ("a dash of vanilla", True), ("Tbsp. honey", True), ("chopped parsley", False),
])
def test_has_quantity(line, expected):
    assert has_quantity(line) is expected


@pytest.mark.parametrize("step, expected", [
    ("Mix well.", True), ("Stirring constantly, cook 5 minutes.", True), ("CHOP the onions", True),
    ("Chopped onions go in last.", True), ("Fried until golden.", True), ("About 4 portions.", False),
    ("Enjoy!", False), ("The mixture will be thick.", False),  # "mixture" is not "mix"
])
def test_has_action_verb(step, expected):
    assert has_action_verb(step) is expected


def test_each_metric_on_a_hand_computed_recipe():
    recipe = Recipe(
        "Plain Rice",
        ["1 cup rice", "water", "2 tsp salt", "butter"],  # 2 of 4 with quantity or unit
        ["Rinse the rice.", "Enjoy.", "Boil with salt."],  # 2 of 3 with a verb
    )
    assert ingredient_coherence(recipe) == 0.5
    assert instruction_quality(recipe) == pytest.approx(2 / 3)
    # "Title: Plain Rice" 17 + " || " 4 + "Ingredients: " 13 + items and separators 40 + 4
    # + "Steps: " 7 + 42 = 127 characters: inside 100-2000.
    assert len(serialize(recipe)) == 127
    assert completeness(recipe) == 1.0
    assert completeness(Recipe("Rice", ["1 cup rice"], ["Boil."])) == pytest.approx(2 / 3)  # too short
    scores = score_recipe(recipe)
    assert scores.format_correctness == 1.0
    assert scores.overall_quality == pytest.approx((0.5 + 2 / 3 + 1.0 + 1.0) / 4)


def test_missing_sections_score_zero_not_error():
    scores = score_text("Title: Nothing here")
    assert scores.ingredient_coherence == 0.0
    assert scores.instruction_quality == 0.0
    assert scores.completeness == 0.0
    assert scores.format_correctness == 0.0
    half = score_text("Ingredients: 2 eggs")
    assert half.format_correctness == 0.5
    assert half.completeness == pytest.approx(1 / 3)


def test_scores_log_under_the_seed_metric_names():
    logged = score_text(SEED_EXAMPLE).as_log()
    assert sorted(logged) == sorted(f"recipe/{n}" for n in (
        "ingredient_coherence", "instruction_quality", "completeness", "format_correctness", "overall_quality"))
    assert mean_scores([score_text(SEED_EXAMPLE), score_text("")]).overall_quality == 0.5


def test_difficulty_boundaries():
    def make(n_ingredients, n_steps):
        return Recipe("t", [f"{i} cup x" for i in range(n_ingredients)], [f"Mix {i}." for i in range(n_steps)])

    assert difficulty(make(6, 6)) is Difficulty.EASY
    assert difficulty(make(7, 2)) is Difficulty.MEDIUM
    assert difficulty(make(2, 12)) is Difficulty.MEDIUM
    assert difficulty(make(12, 13)) is Difficulty.HARD


def test_detail_is_log_scaled_between_60_and_1200_characters():
    def with_step_chars(n):
        return Recipe("t", ["1 egg"], ["x" * n])

    assert detail(with_step_chars(60)) == 0.0
    assert detail(with_step_chars(1200)) == 1.0
    assert detail(with_step_chars(5000)) == 1.0
    assert detail(with_step_chars(268)) == pytest.approx(math.log(268 / 60) / math.log(20))


def test_quality_score_hand_computed():
    steps = ["Beat the eggs with the milk in a large bowl until smooth and frothy.",
             "Heat the butter in a frying pan over medium heat until it foams.",
             "Pour in the egg mixture and stir gently until just set, then serve at once."]
    recipe = Recipe("Scrambled Eggs", ["4 eggs", "1/4 cup milk", "1 tbsp butter"], steps)
    assert score_recipe(recipe).overall_quality == 1.0
    chars = sum(map(len, steps))
    expected = 0.3 * 1.0 + 0.7 * math.log(chars / 60) / math.log(1200 / 60)
    assert hygiene_problems(recipe) == []
    assert quality_score(recipe) == pytest.approx(expected)


def test_hygiene_penalties_on_the_real_junk_rows():
    recipe = Recipe("Guacamole", ["6 avocados", "1 tsp. lemon juice"], ["Mix together and CHOW!!!!!!!!!!"])
    assert hygiene_problems(recipe) == ["too_short", "shouting", "repeated_punctuation"]
    assert quality_score(recipe) == 0.0  # 0.3 * overall + 0.7 * 0 detail - 3 * 0.1 < 0: clipped
    doubled = Recipe("Tea", ["1 tea bag"], ["Boil water.", "Steep.", "boil water"])
    assert "duplicated_steps" in hygiene_problems(doubled)


def test_duplicate_keys():
    a = Recipe("Banana Bread", ["3 bananas", "2 cups flour"], ["Mix.", "Bake."])
    reordered = Recipe("banana bread!", ["2 Cups Flour", "3 bananas"], ["Stir.", "Bake an hour."])
    other = Recipe("Banana Bread", ["3 bananas", "2 cups flour", "1 egg"], ["Mix.", "Bake."])
    assert near_duplicate_key(a) == near_duplicate_key(reordered)
    assert exact_key(a) != exact_key(reordered)
    assert near_duplicate_key(a) != near_duplicate_key(other)
    assert exact_key(a) == exact_key(Recipe("Banana  Bread", ["3 bananas", "2 cups flour"], ["Mix.", "Bake."]))
