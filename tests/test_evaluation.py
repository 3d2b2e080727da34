"""Validation, early stopping, samples, reference metrics, generate / merge / evaluate / report."""

from __future__ import annotations

import json
import math

import pytest

from chef_genius.cli import main
from chef_genius.families import SEQ2SEQ
from chef_genius.inference import generate, load_run
from chef_genius.recipe import Recipe
from chef_genius.reference_metrics import (
    chef_transformer_protocol,
    clean_for_protocol,
    corpus_bleu,
    cosim,
    ingredient_coverage,
    rouge,
    word_error_rate,
)
from chef_genius.training import evaluating
from chef_genius.training.trainer import run_training
from tests.test_training import metrics_of, small_config, small_data  # noqa: F401 - fixture


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, small_data):  # noqa: F811
    run = tmp_path_factory.mktemp("trained") / "run"
    run_training(small_config(run, small_data, **{"eval.eval_steps": 5, "eval.max_new_tokens": 24,
                                                   "optim.epochs": 2}))
    return run


def test_early_stopping_on_rising_val_loss_keeps_the_best(tmp_path, small_data, monkeypatch):  # noqa: F811
    losses = iter([2.0, 2.5, 3.0, 3.5, 4.0])
    monkeypatch.setattr(evaluating, "validation_loss", lambda run: next(losses))
    run = tmp_path / "run"
    result = run_training(small_config(run, small_data, **{
        "eval.patience": 1, "eval.eval_steps": 2, "eval.generate_samples": False, "optim.batch_size": 2,
        "checkpoint.save_steps": 1000}))
    assert result.stopped_early and result.steps == 4  # evaluations at steps 2 (best) and 4 (worse): stop
    assert result.best_val_loss == 2.0
    assert result.best_checkpoint.endswith("step-00000002")
    assert (run / "checkpoints" / "step-00000002").is_dir()
    summary = json.loads((run / "run_summary.json").read_text())
    assert summary["best_checkpoint"] == result.best_checkpoint and summary["stopped_early"] is True
    assert [m["val_loss"] for m in metrics_of(run) if "val_loss" in m] == [2.0, 2.5]


def test_min_delta_counts_small_gains_as_no_improvement(tmp_path, small_data, monkeypatch):  # noqa: F811
    losses = iter([2.0, 1.99, 1.98, 1.0])
    monkeypatch.setattr(evaluating, "validation_loss", lambda run: next(losses))
    result = run_training(small_config(tmp_path / "run", small_data, **{
        "eval.patience": 2, "eval.min_delta": 0.05, "eval.eval_steps": 2, "eval.generate_samples": False,
        "optim.batch_size": 2}))
    assert result.stopped_early and result.steps == 6 and result.best_val_loss == 2.0


def test_record_validation_keeps_the_best_and_counts_patience():
    from chef_genius.checkpoints.folder import TrainerState
    from chef_genius.training.validation import record_validation

    state = TrainerState()
    verdicts = []
    for step, loss in [(2, 3.0), (4, 2.0), (6, 1.97), (8, 2.5), (10, 1.9), (12, 1.95), (14, 1.93)]:
        state.step = step
        verdicts.append(record_validation(state, loss, min_delta=0.05, patience=2))
    # 1.97 is not better than 2.0 by more than 0.05; 1.9 is; then two evaluations without gain stop.
    assert [(v.best, v.stop) for v in verdicts] == [(True, False), (True, False), (False, False), (False, True),
                                                   (True, False), (False, False), (False, True)]
    assert (state.best_val_loss, state.best_step, state.evals_without_improvement) == (1.9, 10, 2)
    state = TrainerState(best_val_loss=1.0, best_step=2)
    assert not any(record_validation(state, 5.0, 0.0, patience=0).stop for _ in range(20))  # 0: never stops


def test_val_loss_is_plain_cross_entropy(trained_run):
    rows = [m for m in metrics_of(trained_run) if "val_loss" in m]
    assert rows and all(m["val_perplexity"] == pytest.approx(math.exp(m["val_loss"])) for m in rows)


def test_samples_are_printed_saved_and_scored(trained_run):
    samples = sorted((trained_run / "samples").glob("step-*.md"))
    assert samples
    text = samples[0].read_text()
    assert "## Prompt: Create a simple pasta dish" in text and "Metrics: ingredient coherence" in text
    logged = [m for m in metrics_of(trained_run) if "recipe/overall_quality" in m]
    assert len(logged) == len(samples)
    for m in logged:
        parts = [m[f"recipe/{k}"] for k in ("ingredient_coherence", "instruction_quality", "completeness",
                                             "format_correctness")]
        assert m["recipe/overall_quality"] == pytest.approx(sum(parts) / 4)


def test_cosim_wer_coverage_bleu_rouge_hand_computed():
    assert cosim("a a b", "a b b") == pytest.approx(4 / 5)  # (2*1 + 1*2) / (sqrt5 * sqrt5)
    assert cosim("x", "y") == 0.0
    assert clean_for_protocol("Mix the Flour, and the SUGAR!") == "mix flour sugar"
    assert word_error_rate("mix flour sugar", "mix flour salt") == pytest.approx(1 / 3)
    recipe = Recipe("Soup", ["2 leeks", "1 potato"], ["Simmer the leeks and potato in stock."])
    assert ingredient_coverage(["leeks", "potato", "cream"], recipe) == pytest.approx(2 / 3)
    assert corpus_bleu(["the cat sat on the mat"], ["the cat sat on the mat"]) == pytest.approx(1.0)  # 0-1
    scores = rouge("the cat sat on the mat", "the cat is on the mat")
    assert scores["rougeL"] == pytest.approx(5 / 6) and scores["rouge2"] == pytest.approx(3 / 5)


def test_chef_transformer_protocol_takes_the_best_of_n():
    reference = "Boil the pasta. Add tomatoes and basil."
    result = chef_transformer_protocol([["Bake a cake with chocolate.", "Boil pasta, add tomatoes and basil."]],
                                       [reference])
    best = clean_for_protocol("Boil pasta, add tomatoes and basil.")
    assert result["cosim"] == pytest.approx(cosim(best, clean_for_protocol(reference)))
    assert result["wer"] == pytest.approx(word_error_rate(best, clean_for_protocol(reference)))


def test_generate_after_merge_equals_generate_with_the_adapter(trained_run, tmp_path):
    assert main(["merge", str(trained_run), "--out", str(tmp_path / "merged")]) == 0
    adapter = load_run(trained_run)
    merged = load_run(tmp_path / "merged")
    assert adapter.is_adapter and not merged.is_adapter
    prompts = ["Create a recipe: pasta with tomatoes and basil", "Create a recipe: a dish with chicken and rice"]
    with_adapter = generate(adapter.model, adapter.tokenizer, prompts, SEQ2SEQ, "greedy", 24)
    standalone = generate(merged.model, merged.tokenizer, prompts, SEQ2SEQ, "greedy", 24)
    assert with_adapter == standalone


def test_generate_cli_markdown_json_and_errors(trained_run, tmp_path, capsys):
    assert main(["generate", str(trained_run), "pasta with tomatoes and basil", "--max-new-tokens", "16"]) == 0
    assert capsys.readouterr().out.startswith("# ")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("lasagna\n\nsomething with chicken, rice and lemon\n")
    assert main(["generate", str(trained_run), "--file", str(prompts), "--json", "--max-new-tokens", "16"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [p["prompt"] for p in printed] == ["lasagna", "something with chicken, rice and lemon"]
    assert {"title", "ingredients", "steps"} <= set(printed[0])
    assert main(["generate", str(tmp_path / "nothing"), "x"]) == 2
    assert main(["merge", str(tmp_path / "merged-full"), "--out", str(tmp_path / "o")]) == 2


def test_evaluate_cli_writes_json_with_every_metric(trained_run, small_data, capsys):  # noqa: F811
    out = trained_run / "eval.json"
    assert main(["evaluate", str(trained_run), "--data", str(small_data), "--split", "val", "--max-examples", "4",
                 "--samples", "2", "--max-new-tokens", "16", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["examples"] == 4 and result["split"] == "val"
    assert result["val_perplexity"] == pytest.approx(math.exp(result["val_loss"]))
    assert "test_loss" not in result
    # the loss is measured at the run's own token limits (small_config's), not 512 / 512
    assert (result["max_source_tokens"], result["max_target_tokens"]) == (32, 64)
    assert 0.0 <= result["bleu"] <= 1.0 and 0.0 <= result["chef_transformer"]["bleu"] <= 1.0
    assert {"recipe/overall_quality", "rougeL", "bleu", "ingredient_coverage", "recipe/usable_rate",
            "recipe/repetition", "recipe/stopped_rate", "recipe/ingredients_used"} <= set(result)
    assert set(result["chef_transformer"]) == {"cosim", "wer", "rouge2", "bleu", "samples_per_input", "examples"}
    # 16 tokens cannot hold a recipe: nothing stopped, so nothing is usable.
    assert result["recipe/stopped_rate"] == 0.0 and result["recipe/usable_rate"] == 0.0
    assert len(result["samples"]) == 4 and all(not s["stopped"] for s in result["samples"])
    assert "chef_transformer/cosim" in capsys.readouterr().out


def test_evaluate_refuses_a_judge_model_the_lm_judge_was_not_fitted_on(trained_run, small_data, tmp_path,  # noqa: F811
                                                                      capsys):
    pytest.importorskip("gguf")
    from chef_genius.cli import EXIT_USER_ERROR
    from tests.harness.tiny_causal import write_tiny_gguf

    gguf = write_tiny_gguf(tmp_path / "judge.gguf", ["Title: Soup || Ingredients: 1 cup water || Steps: Boil it."])
    out = tmp_path / "eval.json"
    assert main(["evaluate", str(trained_run), "--data", str(small_data), "--max-examples", "2",
                 "--judge-model", str(gguf), "--out", str(out)]) == EXIT_USER_ERROR
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("chef-genius: error: --judge-model: its weights are not the ones the LM judge")
    assert not out.exists()  # refused before anything ran


def test_evaluate_names_the_loss_by_its_split_and_cuts_at_the_limits_given(trained_run, small_data):  # noqa: F811
    from chef_genius.dataset.collate import load_split
    from chef_genius.evaluation import evaluate_loaded
    from chef_genius.inference import load_run

    loaded = load_run(trained_run, device="cpu")
    table = load_split(small_data, "val")
    recipes = [table.recipe(i) for i in range(4)]
    results = [evaluate_loaded(loaded.model, loaded.tokenizer, loaded.family, recipes, ["Recipe for: {text}"],
                               "greedy", 8, protocol_examples=0, split="test", max_source_tokens=source,
                               max_target_tokens=target) for source, target in ((32, 16), (512, 512))]
    for result in results:
        assert "val_loss" not in result and result["test_perplexity"] == pytest.approx(math.exp(result["test_loss"]))
    assert results[0]["test_loss"] != pytest.approx(results[1]["test_loss"])  # 16 target tokens cut the recipes


def test_report_includes_evaluations_and_no_raw_dicts(tmp_path):
    from chef_genius.report import flatten, write_report

    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text(json.dumps({"step": 1, "train/loss": 2.0, "val_loss": 1.5}) + "\n")
    (run / "run_summary.json").write_text(json.dumps({"steps": 1, "data_report": {"rows": 1, "kept": 1},
                                                      "final_weights": "best"}))
    (run / "evaluation-test.json").write_text(json.dumps({
        "run": "runs/x", "data": "prepared", "split": "test", "examples": 4, "test_loss": 2.25, "bleu": 0.125,
        "chef_transformer": {"cosim": 0.5, "bleu": 0.0625}, "samples": [{"prompt": "p", "text": "t"}]}))
    page = write_report(run).read_text()
    assert "Evaluation on the test split (4 recipes of prepared" in page
    assert "<th>test_loss</th><td>2.25</td>" in page and "<th>chef_transformer.bleu</th><td>0.0625</td>" in page
    assert "<th>data_report.rows</th><td>1</td>" in page
    assert "{" not in page.split("<body>")[1].replace("{}", "")  # no Python dict anywhere in the page body
    assert flatten({"a": {"b": [1, 2.5]}, "c": None}) == [("a.b", "1, 2.5"), ("c", "-")]


def test_report_writes_the_plots_and_html(trained_run):
    assert main(["report", str(trained_run)]) == 0
    names = {p.stem for p in (trained_run / "plots").glob("*.png")}
    assert names == {"train_loss", "val_loss", "learning_rate", "curriculum", "recipe_metrics"}
    for path in (trained_run / "plots").glob("*.png"):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
    page = (trained_run / "report.html").read_text()
    assert all(f"plots/{name}.png" in page for name in names) and "best_checkpoint" in page
    assert main(["report", str(trained_run / "nope")]) == 2


def test_validation_uses_a_fixed_random_subset_not_the_shortest_recipes():
    import numpy as np

    from chef_genius.config import build_config
    from chef_genius.dataset.collate import TokenizedExamples
    from chef_genius.training.validation import validation_batches

    rng = np.random.default_rng(0)
    lengths = rng.integers(20, 600, size=2000)
    examples = TokenizedExamples.from_sequences([[1]] * 2000, [[2] * (n - 1) for n in lengths], np.arange(2000))
    config = build_config(None, {"optim.batch_size": 10, "eval.max_eval_batches": 20})
    chosen = [i for batch in validation_batches(examples, config) for i in batch]
    assert len(chosen) == 200 and chosen == [i for b in validation_batches(examples, config) for i in b]  # fixed
    # The first 20 batches of an unshuffled plan: the shortest recipes of the first pool.
    from chef_genius.dataset.collate import plan_batches

    shortest = [i for b in plan_batches(examples.lengths(), 0, 0, 10, shuffle=False)[:20] for i in b]
    whole = examples.lengths().mean()
    assert abs(examples.lengths()[chosen].mean() - whole) < 0.25 * whole  # 20 batches: about 2 standard errors
    assert examples.lengths()[shortest].mean() < 0.5 * whole
    halves = [validation_batches(examples, config, rank, 2) for rank in (0, 1)]
    assert sorted(i for h in halves for b in h for i in b) == sorted(chosen)  # ranks split the same subset


def test_rouge_l_is_rouge_scores_own_on_recipe_sized_texts():
    """ROUGE-L with rapidfuzz's longest common subsequence equals rouge-score's, on texts with
    case, punctuation, numbers and repeats, of 0 to 300 words; ROUGE-2 is rouge-score's."""
    import random

    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL", "rouge2"])
    rng = random.Random(0)
    words = ["Add", "the", "flour", "1/2", "cup", "sugar,", "stir;", "bake", "350F", "until", "golden.", "salt"]
    for _ in range(40):
        hypothesis = " ".join(rng.choices(words, k=rng.randint(0, 300)))
        reference = " ".join(rng.choices(words, k=rng.randint(0, 120)))
        expected = scorer.score(reference, hypothesis)
        got = rouge(hypothesis, reference)
        assert got["rougeL"] == pytest.approx(expected["rougeL"].fmeasure, abs=1e-12)
        assert got["rouge2"] == pytest.approx(expected["rouge2"].fmeasure, abs=1e-12)
    assert rouge("a b c", "a b c", ("rougeL",)) == {"rougeL": 1.0}
