"""Reference recipes (`data.reference`): the nearest training recipe found, written after the
request in training, validation, `evaluate` and `generate`, and never the recipe itself."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from chef_genius.augment import REFERENCE_MARK, request_of, with_reference
from chef_genius.cli import main
from chef_genius.config import build_config
from chef_genius.cookable import request_foods
from chef_genius.dataset.collate import load_split
from chef_genius.dataset.epochs import EpochBuilder
from chef_genius.errors import UserError
from chef_genius.families import CAUSAL
from chef_genius.recipe import Recipe, parse_recipe, serialize
from chef_genius.retrieval import RecipeIndex, References, query_words, reference_text
from tests.harness.tiny_causal import write_tiny_gguf
from tests.test_training import small_config, small_data  # noqa: F401 - fixture

TITLES = ["Beef Stew", "Chicken Curry", "Apple Pie", "Beef Stew", "Quick Lemon Chicken"]
FOODS = [["beef", "carrots", "potatoes"], ["chicken", "curry powder", "rice"], ["apples", "flour", "butter"],
         ["beef", "onion"], ["chicken", "lemon"]]


def test_query_words_weigh_the_title_twice_and_drop_filler():
    assert query_words("20-Minute Easy Beef Stew", ["beef", "red wine"]) == {
        "beef": 2.0, "red": 1.0, "wine": 1.0, "stew": 2.0}


def test_nearest_is_the_recipe_sharing_the_rarest_words():
    index = RecipeIndex(TITLES, FOODS)
    found = index.nearest(["Curry", "Pie with apples", "Stew", "Sushi"], [["chicken"], [], [], ["nori"]])
    assert found[0] == 1 and found[1] == 2 and found[2] in (0, 3)
    assert found[3] == -1  # no word in common: no reference


def test_a_training_recipe_never_gets_itself_or_its_title_twin():
    index = RecipeIndex(TITLES, FOODS)
    own = index.nearest(TITLES, FOODS, own_rows=np.arange(len(TITLES)))
    assert all(row != i for i, row in enumerate(own))
    assert own[0] != 3 and own[3] != 0  # "Beef Stew" twice: the twin is not a reference
    assert own[1] == 4 and own[4] == 1  # the chickens find each other


def test_reference_text_is_cut_after_a_whole_item():
    recipe = Recipe("Soup", [f"{i} cups water" for i in range(1, 40)], ["Boil the water."] * 30)
    text = reference_text(recipe, max_chars=200)
    assert len(text) <= 200 and serialize(recipe).startswith(text)
    assert text.endswith("cups water")  # cut at an item separator, not inside a word
    tea = Recipe("Tea", ["1 bag tea"], ["Steep."])
    assert reference_text(tea) == "Title: Tea || Ingredients: 1 bag tea || Steps: Steep."


def test_the_request_is_kept_apart_from_its_reference():
    prompt = with_reference("Create a recipe: Soup with water, carrots", "Title: Pie || Ingredients: 1 cup sugar")
    assert REFERENCE_MARK in prompt and prompt.startswith("Create a recipe: Soup")
    assert request_of(prompt) == "Create a recipe: Soup with water, carrots"
    assert request_foods(prompt) == ["water", "carrots"]  # the reference's words are not requested
    assert with_reference("Create a recipe: Soup", None) == "Create a recipe: Soup"


def test_a_reference_needs_room_in_the_prompt():
    with pytest.raises(UserError, match="max_source_tokens to at least 256"):
        build_config(None, {"data.reference": True})
    assert build_config(None, {"data.reference": True, "model.max_source_tokens": 384}).data.reference


def test_epoch_prompts_carry_the_nearest_other_recipe(tmp_path, small_data):  # noqa: F811
    table = load_split(small_data, "train")
    references = References(table)
    config = small_config(tmp_path / "run", small_data, **{"data.reference": True, "model.max_source_tokens": 256,
                                                           "data.augmentation_prob": 0.0})
    builder = EpochBuilder(table, None, None, config, CAUSAL, 1, references.for_training_rows)
    rows = np.arange(len(table), dtype=np.int64)
    prompts, _, _ = builder._prompts(rows, np.zeros((len(table), 5)))
    own = references._own
    assert (own >= 0).all() and (own != rows).all()
    for i in (0, len(table) // 2, len(table) - 1):
        request, reference = prompts[i].split(REFERENCE_MARK)
        assert request_of(prompts[i]) == request and table.recipe(i).title in request
        assert parse_recipe(reference).title == table.recipe(int(own[i])).title


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, small_data):  # noqa: F811
    pytest.importorskip("gguf")
    from chef_genius.training.trainer import run_training

    gguf = write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny-llama.gguf",
                           ["Title: Soup || Ingredients: 1 cup water || Steps: Boil.", "Create a recipe: soup"] * 30)
    data = tmp_path_factory.mktemp("copy") / "prepared"
    shutil.copytree(small_data, data)
    run = tmp_path_factory.mktemp("ref-run") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CHEF_GENIUS_CACHE", str(tmp_path_factory.mktemp("cache")))
        run_training(small_config(run, data, **{
            "model.name": str(gguf), "optim.max_steps": 2, "eval.eval_steps": 2, "eval.max_new_tokens": 8,
            "eval.num_validation_samples": 2, "data.reference": True, "model.max_source_tokens": 256}))
        yield run, data, patch


def test_a_reference_run_samples_generates_and_evaluates_with_references(reference_run, capsys):
    run, data, _ = reference_run
    samples = "".join(p.read_text() for p in (run / "samples").glob("*.md"))
    assert REFERENCE_MARK.strip() in samples  # validation samples were prompted as training was
    assert main(["generate", str(run), "beef stew with carrots", "--max-new-tokens", "8", "--json"]) == 0
    assert main(["evaluate", str(run), "--data", str(data), "--split", "val", "--max-examples", "2", "--samples", "1",
                 "--max-new-tokens", "8", "--out", str(run / "eval.json")]) == 0


def test_a_reference_run_without_its_training_data_is_one_line(reference_run, capsys):
    run, data, _ = reference_run
    moved = data.with_name("moved")
    data.rename(moved)
    try:
        assert main(["generate", str(run), "beef stew", "--max-new-tokens", "8"]) == 2
        err = capsys.readouterr().err
        assert "trained with data.reference" in err and "Traceback" not in err
    finally:
        moved.rename(data)


def test_the_recipe_endpoint_of_a_reference_run_prompts_with_a_reference(reference_run):
    pytest.importorskip("fastapi")
    httpx = pytest.importorskip("httpx")
    from tests.harness.serve_process import running_server

    run, _, _ = reference_run
    with running_server(run, "--decoding", "greedy") as server:
        answer = httpx.post(server.url + "/v1/recipes", json={"title": "Beef Stew", "ingredients": "beef\ncarrots",
                                                               "max_tokens": 8}, timeout=120).json()
    assert REFERENCE_MARK not in answer["prompt"] and answer["prompt"].startswith("Create a recipe: Beef Stew")
    assert answer["reference"].startswith("Title: ")  # the nearest training recipe, shown beside the recipe
