"""The LM judge (`chef_genius.lm_judge`): a frozen language model's reading of a recipe, weighed by
a logistic regression; its features, its arithmetic, the model it refuses and `evaluate --judge-model`."""

from __future__ import annotations

import json
import math

import pytest
import torch

from chef_genius.errors import UserError
from chef_genius.lm_judge import (
    JudgeReader,
    LMJudge,
    fingerprint,
    layers_read,
    read_recipes,
    render,
    shipped_lm_judge,
)
from chef_genius.recipe import Recipe
from tests.harness.tiny_causal import write_tiny_gguf

pytest.importorskip("gguf")
TEXTS = ["Title: Soup || Ingredients: 1 cup water | 2 carrots || Steps: Boil the water. | Add the carrots.",
         "Title: Toast || Ingredients: 2 slices bread | 1 tablespoon butter || Steps: Toast the bread. | Butter it."]
RECIPES = [Recipe("Soup", ["1 cup water", "2 carrots"], ["Boil the water.", "Add the carrots and cook 10 minutes."]),
           Recipe("Toast", ["2 slices bread"], ["Toast the bread."]),
           Recipe("Carrot Soup", ["1 cup water", "2 carrots", "1 tablespoon butter"],
                  ["Melt the butter.", "Add the carrots and the water.", "Boil 20 minutes."])]
REQUESTS = ["Create a recipe: Soup with water, carrots", "Create a recipe: Toast with bread",
            "Create a recipe: Carrot Soup with water, carrots, butter"]


@pytest.fixture(scope="module")
def judge_model(tmp_path_factory):
    torch.set_num_threads(1)
    from chef_genius.inference import load_run

    path = write_tiny_gguf(tmp_path_factory.mktemp("judge") / "judge.gguf", TEXTS, layers=3)
    loaded = load_run(path, device="cpu")
    return path, loaded.model, loaded.tokenizer


def test_render_lays_out_any_recipe_alike():
    assert render(RECIPES[1]) == "Toast\nIngredients:\n- 2 slices bread\nSteps:\n1. Toast the bread."


def test_features_are_hidden_means_and_the_recipes_log_probabilities(judge_model):
    _, model, tokenizer = judge_model
    x = read_recipes(model, tokenizer, REQUESTS, RECIPES, batch_size=2)
    width = model.config.hidden_size
    assert layers_read(model) == (1, 2, 3)
    assert x.shape == (3, 3 * width + 2)
    # Recipe 0 by hand: its request, then its tokens; the features are over the recipe's tokens only.
    head = tokenizer(REQUESTS[0] + "\n\n").input_ids
    body = tokenizer(render(RECIPES[0])).input_ids
    with torch.inference_mode():
        out = model(input_ids=torch.tensor([head + body]), output_hidden_states=True)
    logp = torch.log_softmax(out.logits[0, :-1].float(), -1).gather(1, torch.tensor([head + body])[0, 1:, None])[:, 0]
    mine = logp[len(head) - 1:]
    assert x[0, -2].item() == pytest.approx(mine.mean().item(), abs=1e-4)
    assert x[0, -1].item() == pytest.approx(mine.std().item(), abs=1e-4)
    last = out.hidden_states[3][0, len(head):].mean(0)
    torch.testing.assert_close(x[0, 2 * width:3 * width], last, atol=1e-4, rtol=1e-4)
    # Each row is its recipe's whatever the batch and order (right padding, masked).
    alone = read_recipes(model, tokenizer, REQUESTS[::-1], RECIPES[::-1], batch_size=1)
    torch.testing.assert_close(alone.flip(0), x, atol=1e-4, rtol=1e-4)


def test_the_judge_is_a_standardized_logistic_regression():
    judge = LMJudge(coef=[2.0, -1.0], intercept=0.5, mean=[1.0, 0.0], scale=[2.0, 1.0], threshold=0.6,
                    fingerprint="x", model="m")
    p = judge.probabilities(torch.tensor([[3.0, 1.0], [1.0, 0.0]]))
    assert p.tolist() == pytest.approx([1 / (1 + math.exp(-(2.0 - 1.0 + 0.5))), 1 / (1 + math.exp(-0.5))])
    with pytest.raises(UserError, match="expects 2 features"):
        judge.probabilities(torch.zeros(1, 3))
    assert LMJudge.from_dict(json.loads(json.dumps(judge.to_dict()))) == judge


def test_a_reader_refuses_another_model_and_scores_with_its_own(judge_model):
    path, model, tokenizer = judge_model
    width = 3 * model.config.hidden_size + 2
    other = LMJudge([0.0] * width, 0.0, [0.0] * width, [1.0] * width, 0.5, "0123456789abcdef", "SmolLM2")
    with pytest.raises(UserError, match="not the ones the LM judge was fitted on"):
        JudgeReader.load(path, other, device="cpu")
    # Weights that read only the mean log-probability: the likelier recipe scores higher.
    coef = [0.0] * (width - 2) + [1.0, 0.0]
    mine = LMJudge(coef, 0.0, [0.0] * width, [1.0] * width, 0.3, fingerprint(model), "tiny")
    reader = JudgeReader.load(path, mine, device="cpu")
    scores = reader.score(REQUESTS, RECIPES)
    x = read_recipes(reader.model, tokenizer, REQUESTS, RECIPES)
    assert [p for p, _ in scores] == pytest.approx(torch.sigmoid(x[:, -2]).tolist(), abs=1e-5)
    assert [ok for _, ok in scores] == [p >= 0.3 for p, _ in scores]


def test_the_shipped_weights_name_their_model():
    judge = shipped_lm_judge()
    assert judge is not None and "SmolLM2" in judge.model
    assert len(judge.coef) == len(judge.mean) == len(judge.scale) == 3 * 576 + 2  # SmolLM2-135M's width
    assert 0.0 < judge.threshold < 1.0 and len(judge.fingerprint) == 16
    assert all(s > 0 for s in judge.scale)


def test_evaluate_with_a_judge_model_reports_cookable_lm(judge_model, tmp_path, monkeypatch):
    from chef_genius import lm_judge
    from chef_genius.evaluation import evaluate_loaded
    from chef_genius.families import CAUSAL

    path, model, tokenizer = judge_model
    width = 3 * model.config.hidden_size + 2
    everything = LMJudge([0.0] * width, 5.0, [0.0] * width, [1.0] * width, 0.5, fingerprint(model), "tiny")
    reader = JudgeReader.load(path, everything, device="cpu")
    result = evaluate_loaded(model, tokenizer, CAUSAL, RECIPES, ["Create a recipe: {text}"], "greedy", 8,
                             protocol_examples=0, judge=reader)
    assert result["lm_judge_pass_rate"] == 1.0  # P(real) = sigmoid(5) for every recipe
    assert result["cookable_lm_rate"] == result["recipe/cookable_rate"]
    assert all(s["lm_judge"] == pytest.approx(1 / (1 + math.exp(-5.0)), abs=1e-4) for s in result["samples"])
    assert lm_judge.MAX_RECIPE_TOKENS == 384


def test_best_of_with_the_judge_prefers_both_verdicts_then_the_judges_probability():
    from chef_genius.best_of import best_index, judged_key
    from chef_genius.cookable import Cookable

    good, bad = Cookable(True, {}), Cookable(False, {"judge": "x"})
    worse = Cookable(False, {"judge": "x", "amount": "y"})
    assert best_index([judged_key(good, (0.9, False)), judged_key(good, (0.2, True))]) == 1  # both pass
    assert best_index([judged_key(bad, (0.99, True)), judged_key(good, (0.1, False))]) == 1  # the verdict next
    assert best_index([judged_key(worse, (0.9, True)), judged_key(bad, (0.1, False))]) == 1  # fewer failed checks
    assert best_index([judged_key(bad, (0.3, False)), judged_key(bad, (0.6, False))]) == 1  # then P(real)
