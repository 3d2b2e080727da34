"""Preference tuning (DPO) on tiny models, on CPU: the loss by hand, the prompt masked, margins
that rise, reference log-probabilities computed once, exact resume, bad pairs files, the pairs
builder."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from chef_genius.augment import canonical_prompt
from chef_genius.cli import main
from chef_genius.config_schema import SEED_TEMPLATES
from chef_genius.dataset.collate import load_split
from chef_genius.families import CAUSAL
from chef_genius.preference import dpo_losses, sequence_logps
from chef_genius.recipe import serialize
from chef_genius.training import preference_data
from chef_genius.training import trainer as trainer_module
from chef_genius.training.trainer import collator, opened_run, optimizer_step, run_training
from tests.test_training import _Crash, built, metrics_of, small_config, small_data  # noqa: F401 - fixture


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory, small_data) -> Path:  # noqa: F811
    """A 2-layer GPT-2 with a byte-level tokenizer trained on the bundled recipes."""
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    from tests.harness.byte_level import train_byte_level_tokenizer

    table = load_split(small_data, "train")
    texts = table.targets(0, len(table))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=train_byte_level_tokenizer(texts, 600),
                                        eos_token="<|endoftext|>", pad_token="<pad>")
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=256,
                                       eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
    folder = tmp_path_factory.mktemp("gpt2") / "model"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory, small_data) -> Path:  # noqa: F811
    """16 pairs: a training prompt, its real recipe chosen, the next recipe's rejected."""
    table = load_split(small_data, "train")
    recipes = [table.recipe(i) for i in range(17)]
    lines = [json.dumps({"prompt": canonical_prompt(SEED_TEMPLATES, r.title, r.ner), "chosen": serialize(r),
                         "rejected": serialize(recipes[i + 1])}) for i, r in enumerate(recipes[:16])]
    path = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def dpo_config(out: Path, data: Path, model: Path, pairs: Path, **overrides):
    settings = {"model.name": str(model), "preference.pairs": str(pairs), "preference.beta": 0.5,
                "optim.batch_size": 4, "optim.epochs": 1, "optim.learning_rate": 1e-2, "schedule.warmup_steps": 0,
                "schedule.cosine": False, "gradient_noise.enabled": False, "eval.generate_samples": False,
                "optim.label_smoothing": 0.0, "data.augmentation_prob": 0.0, "data.curriculum": False}
    settings.update(overrides)
    return small_config(out, data, **settings)


def test_the_loss_is_the_dpo_formula_by_hand():
    chosen, rejected = torch.tensor([-10.0, -20.0]), torch.tensor([-12.0, -15.0])
    ref_chosen, ref_rejected = torch.tensor([-11.0, -19.0]), torch.tensor([-11.0, -16.0])
    losses, margins = dpo_losses(chosen, rejected, ref_chosen, ref_rejected, beta=0.1)
    # pair 0: ((-10 + 11) - (-12 + 11)) = 2; pair 1: ((-20 + 19) - (-15 + 16)) = -2
    assert margins.tolist() == pytest.approx([0.2, -0.2])
    assert losses.tolist() == pytest.approx([math.log(1 + math.exp(-0.2)), math.log(1 + math.exp(0.2))])


def test_recipe_log_probabilities_mask_the_prompt(tmp_path, small_data, gpt2, pairs_file):  # noqa: F811
    run, _ = built(dpo_config(tmp_path / "run", small_data, gpt2, pairs_file))
    batch = collator(run, run.plan.epoch_data(0).examples)([0, 1])
    examples = run.plan.epoch_data(0).examples
    assert batch["input_ids"].shape[0] == 4  # chosen 0, 1, then rejected 0, 1
    prompt = len(examples.source(0))
    assert (batch["labels"][0, :prompt] == -100).all() and (batch["labels"][2, :prompt] == -100).all()
    model = run.model.forward.eval()
    with torch.no_grad():
        logps, tokens = sequence_logps(model, batch, CAUSAL, run.pad_id, None)
        log_probs = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.log_softmax(-1)
    for row, example in enumerate([0, 1, 16, 17]):
        target = examples.target(example)
        start = len(examples.source(example))
        by_hand = sum(log_probs[row, start + i - 1, int(t)] for i, t in enumerate(target))
        assert tokens[row] == len(target)
        assert float(logps[row]) == pytest.approx(float(by_hand), rel=1e-5)
    # the stored reference is the starting model's, in this batch's order
    reference = load_file(str(tmp_path / "run" / preference_data.REFERENCE_FILE))["reference_logps"]
    torch.testing.assert_close(batch["reference_logps"], torch.cat([reference[[0, 1], 0], reference[[0, 1], 1]]))
    torch.testing.assert_close(batch["reference_logps"], logps, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("lora", [True, False])
def test_a_few_steps_raise_the_margin_and_the_accuracy(tmp_path, small_data, gpt2, pairs_file, lora):  # noqa: F811
    run, state = built(dpo_config(tmp_path / "run", small_data, gpt2, pairs_file, **{
        "lora.enabled": lora, "optim.learning_rate": 1e-2 if lora else 1e-3, "lora.target_modules": ["all-linear"]}))
    run = dataclasses.replace(run, schedule=dataclasses.replace(run.schedule, total_steps=10_000))
    batch = collator(run, run.plan.epoch_data(0).examples)(list(range(8)))
    steps = [optimizer_step(run, state, [batch]) for _ in range(12)]
    first, last = steps[0], steps[-1]
    assert first["preference/loss"] == pytest.approx(math.log(2), abs=1e-4)  # policy = reference at the start
    assert first["preference/margin"] == pytest.approx(0.0, abs=1e-3)
    assert last["preference/margin"] > 1.0 and last["preference/accuracy"] == 1.0
    assert last["preference/loss"] < 0.5 * math.log(2)


def test_reference_is_computed_once_and_resume_is_exact(tmp_path, small_data, gpt2, pairs_file, monkeypatch):  # noqa: F811
    calls = []
    real_reference = preference_data.reference_logps

    def counting(*args, **kwargs):
        calls.append(1)
        return real_reference(*args, **kwargs)

    monkeypatch.setattr("chef_genius.training.parts.reference_logps", counting)
    overrides = {"optim.epochs": 2, "checkpoint.save_steps": 2, "optim.learning_rate": 1e-2}
    whole = tmp_path / "whole"
    run_training(dpo_config(whole, small_data, gpt2, pairs_file, **overrides))
    assert len(calls) == 1
    interrupted = tmp_path / "parts"
    real_step = trainer_module.optimizer_step

    def crash(run, state, micro_batches, stop_request=None):
        if state.step == 5:
            raise _Crash()
        return real_step(run, state, micro_batches, stop_request)

    monkeypatch.setattr(trainer_module, "optimizer_step", crash)
    with pytest.raises(_Crash):
        run_training(dpo_config(interrupted, small_data, gpt2, pairs_file, **overrides))
    monkeypatch.setattr(trainer_module, "optimizer_step", real_step)
    stored = (interrupted / preference_data.REFERENCE_FILE).read_bytes()
    run_training(dpo_config(interrupted, small_data, gpt2, pairs_file, **overrides, **{"checkpoint.resume": "auto"}))
    assert len(calls) == 2  # once per run: the resumed run read it back
    assert (interrupted / preference_data.REFERENCE_FILE).read_bytes() == stored

    def logged(run):
        return [(m["step"], m.get("train/loss"), m.get("preference/margin"), m.get("preference/accuracy"))
                for m in metrics_of(run) if "train/loss" in m]

    assert len(logged(whole)) == 8 and logged(interrupted) == logged(whole)
    a = load_file(str(whole / "final" / "adapter_model.safetensors"))
    b = load_file(str(interrupted / "final" / "adapter_model.safetensors"))
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=0)


@pytest.mark.parametrize("content, message", [
    ('{"prompt": "p", "chosen": "a"}\n', "'rejected' must be non-empty text"),
    ('{"prompt": "p", "chosen": "a", "rejected": "b"}\nnot json\n', ":2: invalid JSON"),
    ('["p", "a", "b"]\n', "expected an object"),
    ('{"prompt": "p", "chosen": "same", "rejected": "same"}\n', "the same text"),
    ("\n\n", "holds no preference pairs"),
])
def test_a_bad_pairs_file_is_one_line_and_exit_code_2(tmp_path, small_data, capsys, content, message):  # noqa: F811
    bad = tmp_path / "bad.jsonl"
    bad.write_text(content)
    code = main(["train", "--data", str(small_data), "--output-dir", str(tmp_path / "run"), "--preference", str(bad)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and message in err


def test_dpo_through_the_cli_on_the_tiny_t5(tmp_path, small_data, pairs_file):  # noqa: F811
    run = tmp_path / "run"
    code = main(["train", "--data", str(small_data), "--output-dir", str(run), "--preference", str(pairs_file),
                 "--dpo-beta", "0.2", "--dpo-sft-weight", "0.5", "--max-steps", "2", "--batch-size", "4",
                 "--set", "eval.generate_samples=false", "--set", "data.num_workers=0", "--set", "logging.log_every=1"])
    assert code == 0
    steps = [m for m in metrics_of(run) if "train/loss" in m]
    assert [m["step"] for m in steps] == [1, 2]
    assert {"preference/loss", "preference/margin", "preference/accuracy"} <= set(steps[0])
    # loss = DPO + 0.5 x the chosen recipes' token-mean NLL
    first = steps[0]
    assert first["train/loss"] == pytest.approx(first["preference/loss"] + 0.5 * first["train/nll"], rel=1e-4)
    assert (run / "final" / "adapter_model.safetensors").is_file()


def test_the_pairs_builder_writes_pairs_and_refuses_to_overwrite(tmp_path, small_data, gpt2, capsys):  # noqa: F811
    out = tmp_path / "pairs.jsonl"
    args = ["preference-pairs", str(gpt2), "--data", str(small_data), "--max-examples", "3", "--samples", "2",
            "--max-new-tokens", "12", "--out", str(out)]
    assert main(args) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    table = load_split(small_data, "train")
    reals = {serialize(table.recipe(i)) for i in range(len(table))}
    assert len(lines) == 6  # a random model's samples: none cookable, 3 prompts x 2 samples
    assert all(p["chosen"] in reals and p["rejected"] and not p["cookable"] and p["failed"] for p in lines)
    assert all(p["prompt"].startswith("Create a recipe: ") for p in lines)
    written = out.read_text()
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "exists; pass --force" in err and "\n" not in err and out.read_text() == written
    assert main(args + ["--force", "--max-examples", "1"]) == 0
    assert len(out.read_text().splitlines()) == 2


def test_preference_tuning_starts_from_a_trained_lora_run(tmp_path, small_data, gpt2, pairs_file, monkeypatch):  # noqa: F811
    monkeypatch.setenv("CHEF_GENIUS_CACHE", str(tmp_path / "cache"))
    sft = tmp_path / "sft"
    run_training(small_config(sft, small_data, **{"model.name": str(gpt2), "optim.max_steps": 2,
                                                  "eval.generate_samples": False, "optim.learning_rate": 3e-2}))
    references = {}
    for start in (gpt2, sft):
        with opened_run(dpo_config(tmp_path / f"dpo-{start.name}", small_data, start, pairs_file)) as (run, _):
            references[start.name] = run.objective.reference
    merged = list((tmp_path / "cache" / "merged").iterdir())
    assert len(merged) == 1 and (merged[0] / "model.safetensors").is_file()  # the run's adapter, merged once
    assert not torch.allclose(references["sft"], references["model"])  # the run's weights, not the base's
    assert float((references["sft"][:, 0] - references["model"][:, 0]).mean()) > 0  # it learned the recipes
