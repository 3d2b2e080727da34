"""Best-of-N, grounded decoding and the blind-reading script, on a tiny Llama and in-memory data."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from chef_genius.best_of import best_index, mean_logprobs, pick, rank_key
from chef_genius.cli import main
from chef_genius.config_schema import EvalConfig
from chef_genius.cookable import Cookable
from chef_genius.evaluation import loss_on
from chef_genius.families import CAUSAL
from chef_genius.inference import load_run
from chef_genius.model.loading import gguf_folder
from chef_genius.recipe import serialize
from chef_genius.sampling import sample_recipes
from chef_genius.usability import Usability
from tests.harness.tiny_causal import write_tiny_gguf
from tests.test_cookable import GOOD

pytest.importorskip("gguf")
TEXTS = [serialize(GOOD), "Create a recipe: tomato soup with basil, onion and garlic",
         "Title: Soup || Ingredients: 1 cup water | 2 carrots || Steps: Boil the water. | Add the butter."] * 40


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CHEF_GENIUS_CACHE", str(cache))
        folder = gguf_folder(write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny-llama.gguf", TEXTS))
        yield load_run(folder, device="cpu")


def test_rank_prefers_cookable_then_fewer_failures_then_usable_then_likelihood():
    usable, unusable = Usability(True, 0, 0, 1, True), Usability(False, 0, 0, 1, True)
    keys = [rank_key(Cookable(False, {"a": "", "b": ""}), usable, -0.1),
            rank_key(Cookable(False, {"a": ""}), unusable, -3.0),
            rank_key(Cookable(False, {"a": ""}), usable, -2.0),
            rank_key(Cookable(True, {}), unusable, -9.0)]
    assert best_index(keys) == 3
    assert best_index(keys[:3]) == 2
    assert best_index([keys[2], keys[2]]) == 0  # ties keep sampling order


def test_pick_takes_the_cookable_candidate():
    broken = serialize(GOOD).replace("1 teaspoon vanilla extract", "1/2 cup deep-fry thermometer")
    assert pick([broken, serialize(GOOD)], [True, True], [0.0, -5.0], ["butter"]) == 1
    assert pick([serialize(GOOD), serialize(GOOD)], [False, True], [0.0, -5.0], []) == 1  # cut off loses


def test_mean_logprobs_is_minus_the_per_token_loss(tiny):
    prompts, texts = ["Create a recipe: soup"] * 2, [serialize(GOOD), "Title: Soup || Ingredients: 1 cup water"]
    scores = mean_logprobs(tiny.model, tiny.tokenizer, CAUSAL, prompts, texts, batch_size=2)
    for prompt, text, score in zip(prompts, texts, scores, strict=True):
        assert score == pytest.approx(-loss_on(tiny.model, tiny.tokenizer, CAUSAL, [prompt], [text]), rel=1e-4)


def test_scoring_batches_hold_a_bounded_share_of_logits(tiny, monkeypatch):
    """Every text once, rows of similar length together, never more than the budget's logits past one
    row; and the scores do not depend on how the texts are batched."""
    from chef_genius import best_of

    lengths = [900, 10, 450, 30, 900, 440, 20]
    batches = best_of.score_batches(lengths, vocab=49152, batch_size=4, budget=900 * 49152 * 4 * 2)
    assert sorted(i for b in batches for i in b) == list(range(7))
    assert batches[0] == [0, 4]  # the two longest fill the budget
    assert all(len(b) <= 4 and (len(b) == 1 or len(b) * lengths[b[0]] * 49152 * 4 <= 900 * 49152 * 8)
               for b in batches)
    assert best_of.score_batches([5000], vocab=49152, batch_size=4, budget=1) == [[0]]  # one row always goes
    prompts = ["Create a recipe: soup", "Create a recipe: cake", "Create a recipe: tea"]
    texts = [serialize(GOOD), "Title: Soup || Ingredients: 1 cup water", "Title: Tea"]
    passes = []
    planned = best_of.score_batches
    monkeypatch.setattr(best_of, "score_batches", lambda *a: passes.append(planned(*a)) or passes[-1])
    together = mean_logprobs(tiny.model, tiny.tokenizer, CAUSAL, prompts, texts, batch_size=8)
    monkeypatch.setattr(best_of, "LOGITS_BUDGET", 1)  # one text a pass
    alone = mean_logprobs(tiny.model, tiny.tokenizer, CAUSAL, prompts, texts, batch_size=8)
    assert [len(b) for b in passes[0]] == [3] and [len(b) for b in passes[1]] == [1, 1, 1]
    assert alone == pytest.approx(together, rel=1e-5) and len(set(together)) == 3


def test_best_of_n_returns_one_sample_a_prompt_ranked_by_the_verdict(tiny):
    config = EvalConfig(decoding="sample", max_new_tokens=24, best_of=3)
    prompts = ["Create a recipe: Soup with water", "Create a recipe: Cookies with butter"]
    samples = sample_recipes(tiny.model, tiny.tokenizer, CAUSAL, prompts, config, seed=0)
    assert [s.prompt for s in samples] == prompts
    plain = sample_recipes(tiny.model, tiny.tokenizer, CAUSAL, prompts,
                           EvalConfig(decoding="sample", max_new_tokens=24))
    for best, first in zip(samples, plain, strict=True):  # the pick is never worse than the first candidate
        assert (best.cookable.cookable, -len(best.cookable.failed)) >= (first.cookable.cookable,
                                                                         -len(first.cookable.failed))


def test_grounded_decoding_pushes_unlisted_foods_down_once_the_steps_begin(tiny):
    from chef_genius.grounding import GroundedFoods

    tokenizer = tiny.tokenizer
    grounded = GroundedFoods(tokenizer, 0, ["Create a recipe: Soup with water"], penalty=4.0)
    butter = [i for w, ids in grounded.tokens.items() if w == "butter" for i in ids]
    assert butter, "the tiny vocabulary spells butter in one token"
    before = torch.tensor([tokenizer.encode("Title: Soup || Ingredients: 1 cup water | 2 carrots")])
    scores = grounded(before, torch.zeros(1, len(tokenizer)))
    assert scores.abs().sum() == 0  # still in the ingredient list: nothing pushed
    steps = torch.tensor([tokenizer.encode("Title: Soup || Ingredients: 1 cup water | 2 carrots || Steps:")])
    scores = grounded(steps, torch.zeros(1, len(tokenizer)))
    assert all(scores[0, i] == -4.0 for i in butter) and (scores[0] < 0).sum() >= len(butter)
    listed = torch.tensor([tokenizer.encode("Title: Soup || Ingredients: 1 cup butter || Steps:")])
    scores = GroundedFoods(tokenizer, 0, ["Soup"], penalty=4.0)(listed, torch.zeros(1, len(tokenizer)))
    assert all(scores[0, i] == 0 for i in butter)  # listed: free to use


def test_generate_reports_the_checks_and_refuses_a_bad_best_of(tiny, capsys):
    assert main(["generate", str(tiny.folder), "soup with water", "--best-of", "0"]) == 2
    assert "--best-of must be positive" in capsys.readouterr().err
    assert main(["generate", str(tiny.folder), "soup with water", "--json", "--best-of", "2", "--grounded", "3",
                 "--max-new-tokens", "16"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out[0]["checks"]) == {"usable", "cookable", "failed"}


def _generations(path, name, rows):
    path.write_text("".join(json.dumps({"row": r, "request": f"Create a recipe: Dish {r} with butter",
                                        "foods": ["butter"], "text": serialize(GOOD), "stopped": r % 2 == 0}) + "\n"
                            for r in rows))
    return f"{name}={path}"


def test_a_reading_is_built_blind_and_joined_with_its_key(tmp_path, monkeypatch):
    script = [sys.executable, "benchmarks/cook_reading.py"]
    a, b = _generations(tmp_path / "a.jsonl", "model-a", range(10)), _generations(tmp_path / "b.jsonl", "model-b",
                                                                                   range(3, 12))
    out = tmp_path / "reading"
    build = [*script, "build", "--out", str(out), "--arm", a, "--arm", b, "--per-arm", 5, "--real-n", "0"]
    subprocess.run([str(x) for x in build], check=True, capture_output=True)
    text = (out / "reading.md").read_text()
    key = json.loads((out / "key.json").read_text())["entries"]
    assert text.count("## Recipe ") == 10 and "model-a" not in text and "model-b" not in text
    assert {e["row"] for e in key if e["source"] == "model-a"} == {e["row"] for e in key if e["source"] == "model-b"}
    again = subprocess.run([str(x) for x in build], capture_output=True, text=True)
    assert again.returncode != 0 and "never overwritten" in again.stderr
    ratings = [{"i": e["i"], "cookable": e["stopped"], "matches": True, "score": 4 if e["stopped"] else 1,
                "reason": "x"} for e in key]
    (out / "ratings.json").write_text(json.dumps(ratings))
    from benchmarks import cook_reading

    summary = cook_reading.score(out)
    rows = {r["source"]: r for r in summary["readings"]}
    for name in ("model-a", "model-b"):
        stopped = sum(e["stopped"] for e in key if e["source"] == name) / 5
        assert rows[name]["cookable"] == pytest.approx(stopped)
        # the verdict fails exactly the recipes cut off (the reader's "no" here): full agreement
        assert rows[name]["agreement"] == 1.0 and rows[name]["n"] == 5
    assert summary["second_reader"] is None
    # the two arms share their prompts, and a row's recipe is the same in both: no discordant pair
    (pair,) = summary["paired"]
    assert pair["arms"] == ["model-a", "model-b"] and pair["prompts"] == 5
    assert pair["cookable"] == {"first_only": 0, "second_only": 0, "sign_test_p": 1.0}
    rejected = sum(not e["stopped"] for e in key)
    assert summary["reasons"]["rejected"] == rejected and summary["reasons"]["quantities"] == 0
    second = [{**r, "cookable": True} for r in ratings]  # a lenient second reader
    (out / "ratings-2.json").write_text(json.dumps(second))
    readers = cook_reading.score(out)["second_reader"]
    assert readers["n"] == 10 and readers["matches_agreement"] == 1.0
    assert readers["cookable_agreement"] == pytest.approx(sum(e["stopped"] for e in key) / 10)


def test_the_sign_test_of_paired_readings():
    from benchmarks.cook_reading import paired, sign_test

    assert sign_test(8, 2) == pytest.approx(0.109375) and sign_test(6, 4) == pytest.approx(0.75390625)
    assert sign_test(0, 0) == 1.0 and sign_test(5, 5) == 1.0 and sign_test(0, 6) == pytest.approx(2 / 64)
    sources = ["a", "a", "a", "b", "b", "b", "real"]
    entries = [{"i": i, "source": source, "row": i % 3} for i, source in enumerate(sources)]
    ratings = {i: {"cookable": i in (0, 1), "matches": i in (0, 3)} for i in range(7)}
    (row,) = paired(entries, ratings)  # rows 0, 1, 2: a cookable on rows 0 and 1, b on none
    assert row["arms"] == ["a", "b"] and row["prompts"] == 3
    assert row["cookable"]["first_only"] == 2 and row["cookable"]["second_only"] == 0
    assert row["matches"] == {"first_only": 0, "second_only": 0, "sign_test_p": 1.0}  # both match on row 0


def test_the_held_out_sites_are_split_off_with_or_without_www(tmp_path):
    from benchmarks.quality import split_sites

    sources = ["allrecipes.com", "www.foodnetwork.com", "williams-sonoma.com", "www.allrecipes.com", None]
    (tmp_path / "openrecipes_54k.jsonl").write_text(
        "".join(json.dumps({"title": f"Dish {i}", "source": s}) + "\n" for i, s in enumerate(sources)))
    kept, held = split_sites(tmp_path, tmp_path)
    held_titles = [json.loads(line)["title"] for line in held.read_text().splitlines()]
    kept_titles = [json.loads(line)["title"] for line in kept.read_text().splitlines()]
    assert held_titles == ["Dish 1", "Dish 2"] and kept_titles == ["Dish 0", "Dish 3", "Dish 4"]
