"""The Recipe record, its serialization, the tokenizer round trip and the tolerant parser."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from chef_genius.recipe import (
    _BULLET,
    Recipe,
    clean_text,
    parse_recipe,
    parse_recipe_text,
    serialize,
    serialized_length,
    to_dict,
    to_markdown,
)
from tests.conftest import RECIPE_ALPHABET

field_text = st.text(alphabet=RECIPE_ALPHABET + "|\n\t", min_size=0, max_size=40)
recipes = st.builds(
    Recipe,
    title=field_text,
    ingredients=st.lists(field_text, max_size=8),
    steps=st.lists(field_text, max_size=8),
)
SLOW = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_clean_text_keeps_fractions_and_collapses_whitespace():
    assert clean_text("  1 ½ cups\u00a0 flour\n(sifted) ") == "1 ½ cups flour (sifted)"
    assert clean_text("1/2 tsp. salt") == "1/2 tsp. salt"
    assert clean_text("salt | pepper") == "salt / pepper"
    assert clean_text("1 package () sliced mushrooms") == "1 package sliced mushrooms"
    assert clean_text("Fish &amp; chips") == "Fish & chips"
    assert clean_text("cafe\u0301") == "café"  # NFC: decomposed accent composed


def test_recipe_fields_are_normalized_on_construction():
    recipe = Recipe("  Pancakes ", ["2 eggs", "", "  1 cup milk  "], ("Whisk.",), ner=["eggs"])
    assert recipe.title == "Pancakes"
    assert recipe.ingredients == ("2 eggs", "1 cup milk")
    assert recipe.steps == ("Whisk.",)
    assert recipe == Recipe("Pancakes", ["2 eggs", "1 cup milk"], ["Whisk."], ner=["eggs"])


def test_serialize_is_single_line_with_separators():
    recipe = Recipe("Toast", ["1 slice bread", "butter"], ["Toast the bread.", "Spread butter."])
    assert serialize(recipe) == (
        "Title: Toast || Ingredients: 1 slice bread | butter || Steps: Toast the bread. | Spread butter."
    )


@SLOW
@given(recipes)
def test_parse_inverts_serialize(recipe):
    # A lone item that opens with a list marker ("- 0", "* x", "2. y") reads as a bullet point (T5 and
    # causal models write steps so): that one shape is ambiguous, as in the tokenizer round trip below.
    assume(not any(len(items) == 1 and _BULLET.match(items[0]) for items in (recipe.ingredients, recipe.steps)))
    assert parse_recipe(serialize(recipe)) == recipe
    assert serialized_length(recipe) == len(serialize(recipe))


@SLOW
@given(recipes)
def test_round_trip_through_t5_style_tokenizer(t5_tokenizer, recipe):
    text = serialize(recipe)
    # A literal special-token string in the text ("</s>") is read as that token by any tokenizer.
    assume(not any(token in text for token in ("<pad>", "</s>", "<unk>")))
    # Decoded text reads a lone item that opens with a list marker ("* 0", "- x", "2. y") as a bullet
    # point (T5 output lists steps so): that one shape is ambiguous and does not come back as it went.
    assume(not any(len(items) == 1 and _BULLET.match(items[0]) for items in (recipe.ingredients, recipe.steps)))
    ids = t5_tokenizer.encode(text).ids
    assert t5_tokenizer.token_to_id("<unk>") not in ids
    assert parse_recipe(t5_tokenizer.decode(ids, skip_special_tokens=True)) == recipe


@SLOW
@given(recipes)
def test_round_trip_through_byte_level_tokenizer(byte_tokenizer, recipe):
    assume("<pad>" not in serialize(recipe) and "<|endoftext|>" not in serialize(recipe))
    ids = byte_tokenizer.encode(serialize(recipe)).ids
    assert parse_recipe(byte_tokenizer.decode(ids, skip_special_tokens=True)) == recipe


def test_t5_style_tokenizer_really_drops_newlines(t5_tokenizer):
    decoded = t5_tokenizer.decode(t5_tokenizer.encode("Ingredients:\n- 2 eggs\n\nSteps:\n1. Whisk").ids)
    assert "\n" not in decoded
    assert decoded == "Ingredients: - 2 eggs Steps: 1. Whisk"


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=300))
def test_parser_never_raises_on_arbitrary_text(text):
    parsed = parse_recipe_text(text)
    assert isinstance(parsed.recipe, Recipe)


@pytest.mark.parametrize(
    "text, title, ingredients, steps",
    [
        # Model output that lost its section separators.
        ("Title: Rice Ingredients: 1 cup rice | 2 cups water Steps: Boil water. | Add rice.",
         "Rice", ("1 cup rice", "2 cups water"), ("Boil water.", "Add rice.")),
        # Cut off in the middle of the ingredients.
        ("Title: Soup || Ingredients: 1 onion | 2 carr", "Soup", ("1 onion", "2 carr"), ()),
        # Markdown, as people and to_markdown write it.
        ("# Pancakes\n\n## Ingredients\n\n- 2 eggs\n- 1 cup milk\n\n## Steps\n\n1. Whisk.\n2. Fry.\n",
         "Pancakes", ("2 eggs", "1 cup milk"), ("Whisk.", "Fry.")),
        # The seed document's example, with T5's newlines gone and inline numbering.
        ("Ingredients: - 2 cups flour - 1 tsp salt Instructions: 1. Mix flour and salt 2. Add water "
         "gradually 3. Knead for 10 minutes", "", ("2 cups flour", "1 tsp salt"),
         ("Mix flour and salt", "Add water gradually", "Knead for 10 minutes")),
        ("", "", (), ()),
        ("just some words", "just some words", (), ()),
    ],
)
def test_tolerant_parser_on_messy_text(text, title, ingredients, steps):
    recipe = parse_recipe(text)
    assert (recipe.title, recipe.ingredients, recipe.steps) == (title, ingredients, steps)


def test_markdown_rendering_parses_back():
    recipe = Recipe("Tea", ["1 tea bag", "1 cup water"], ["Boil the water.", "Steep 3 minutes."])
    markdown = to_markdown(recipe)
    assert markdown.startswith("# Tea\n\n## Ingredients\n\n- 1 tea bag\n")
    assert "2. Steep 3 minutes." in markdown
    assert parse_recipe(markdown) == recipe


def test_json_rendering():
    recipe = Recipe("Tea", ["1 tea bag"], ["Steep."], ner=["tea"], source="Gathered")
    assert json.loads(json.dumps(to_dict(recipe))) == {
        "title": "Tea", "ingredients": ["1 tea bag"], "steps": ["Steep."], "ner": ["tea"], "source": "Gathered"}


def test_parsed_sections_are_reported():
    assert parse_recipe_text("Title: A || Ingredients: x").has_steps_section is False
    parsed = parse_recipe_text("Title: A || Ingredients: x || Steps: y")
    assert parsed.has_ingredients_section and parsed.has_steps_section
