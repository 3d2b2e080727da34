"""Gemma 3 as a base model, on a tiny random Gemma 3 GGUF file (tests/harness/tiny_gemma.py) shaped
like Gemma 3 270M's: conversion (norms, tied embeddings, the text-only model type), the encoding
with and without Gemma's chat template (<end_of_turn>, <eos>, <bos>), `generate FILE.gguf`, and a
LoRA run with `generate` from it. docs/models.md says what was checked on the real file."""

from __future__ import annotations

import json

import pytest

from chef_genius.cli import main
from chef_genius.encoding import end_of_turn_id
from chef_genius.families import CAUSAL
from chef_genius.model.loading import LORA_TARGETS, gguf_folder
from tests.harness.tiny_gemma import GEMMA_TEMPLATE, write_tiny_gemma_gguf
from tests.test_training import small_config, small_data  # noqa: F401 - fixture

pytest.importorskip("gguf")
TEXTS = ["Title: Soup || Ingredients: 1 cup water | 2 carrots || Steps: Boil the water. | Add the carrots.",
         "Create a recipe: tomato soup with basil, onion and garlic"] * 40
PAD, EOS, BOS, START_OF_TURN, END_OF_TURN = 0, 1, 2, 5, 6


@pytest.fixture(scope="module")
def base_gguf(tmp_path_factory):
    """Like Gemma 3 270M's file: the pretrained model, no chat template."""
    return write_tiny_gemma_gguf(tmp_path_factory.mktemp("gemma") / "tiny-gemma3.Q8.gguf", TEXTS)


@pytest.fixture(scope="module")
def chat_gguf(tmp_path_factory):
    """Like an instruction-tuned Gemma 3 file: Gemma's turns."""
    return write_tiny_gemma_gguf(tmp_path_factory.mktemp("gemma-it") / "tiny-gemma3-it.Q8.gguf", TEXTS,
                                 chat_template=GEMMA_TEMPLATE)


@pytest.fixture(autouse=True)
def cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("CHEF_GENIUS_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def _tokenizer(path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(gguf_folder(path)))


def test_a_gemma3_gguf_converts_to_the_text_model_with_tied_embeddings(base_gguf):
    import torch
    from transformers import AutoModelForCausalLM

    folder = gguf_folder(base_gguf)
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "gemma3_text" and config["tie_word_embeddings"] is True
    assert config["model_type"] in LORA_TARGETS  # LoRA has default targets for it
    converted = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    direct = AutoModelForCausalLM.from_pretrained(str(base_gguf.parent), gguf_file=base_gguf.name,
                                                  dtype=torch.float32).eval()
    assert converted.lm_head.weight.data_ptr() == converted.model.embed_tokens.weight.data_ptr()
    ids = torch.tensor([[BOS, 300, 301, 302, 303]])
    with torch.no_grad():  # the folder is the file's model: norms shifted once, nothing lost on saving
        assert torch.equal(converted(ids).logits, direct(ids).logits)
    tokenizer = _tokenizer(base_gguf)
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.bos_token_id) == (PAD, EOS, BOS)


def test_base_gemma_prompts_start_with_bos_and_targets_end_with_eos(base_gguf):
    tokenizer = _tokenizer(base_gguf)
    assert not tokenizer.chat_template
    [source] = CAUSAL.encode_sources(tokenizer, ["tomato soup"], 32)
    assert source[0] == BOS and source.count(BOS) == 1 and source[-1] != EOS
    [target] = CAUSAL.encode_targets(tokenizer, ["Boil the water."], 32)
    assert target[-1] == EOS and CAUSAL.stop_ids(tokenizer) == [EOS]


def test_gemma_chat_turns_end_with_end_of_turn(chat_gguf):
    tokenizer = _tokenizer(chat_gguf)
    assert tokenizer.chat_template and end_of_turn_id(tokenizer) == END_OF_TURN
    [source] = CAUSAL.encode_sources(tokenizer, ["tomato soup"], 32)
    assert source[:2] == [BOS, START_OF_TURN] and source.count(BOS) == 1  # the template's BOS, not a second one
    assert tokenizer.decode(source).endswith("<start_of_turn>model\n")
    [target] = CAUSAL.encode_targets(tokenizer, ["Boil the water."], 32)
    assert target[-1] == END_OF_TURN and CAUSAL.stop_ids(tokenizer) == [END_OF_TURN, EOS]


def test_generate_takes_a_gguf_file(base_gguf, capsys):
    """The generation engine writes Gemma's recipes (its sliding-window layers get their own mask):
    greedy, the very text `transformers.generate` writes."""
    texts = []
    for engine in ("chef-genius", "transformers"):
        assert main(["generate", str(base_gguf), "tomato soup", "--max-new-tokens", "12", "--decoding", "greedy",
                     "--engine", engine, "--json"]) == 0
        captured = capsys.readouterr()
        [row] = json.loads(captured.out)
        assert row["prompt"] == "tomato soup" and "generating with transformers" not in captured.err
        texts.append((row["title"], row["ingredients"], row["steps"]))
    assert texts[0] == texts[1] and texts[0][0]


def test_generate_from_a_missing_gguf_file_is_one_line(tmp_path, capsys):
    assert main(["generate", str(tmp_path / "nope.gguf"), "soup"]) != 0
    assert "no such GGUF file" in capsys.readouterr().err


def test_lora_training_from_a_gemma_gguf_with_its_turns(tmp_path, small_data, chat_gguf, capsys):  # noqa: F811
    from transformers import AutoTokenizer

    from chef_genius.training.trainer import run_training

    run = tmp_path / "run"
    result = run_training(small_config(run, small_data, **{
        "model.name": str(chat_gguf), "optim.max_steps": 2, "eval.generate_samples": False,
        "optim.learning_rate": 1e-3}))
    assert result.steps == 2
    adapter = json.loads((run / "final" / "adapter_config.json").read_text())
    assert set(adapter["target_modules"]) == {"q_proj", "v_proj"}
    assert end_of_turn_id(AutoTokenizer.from_pretrained(str(run / "final"))) == END_OF_TURN
    capsys.readouterr()
    assert main(["generate", str(run), "tomato soup", "--max-new-tokens", "8", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["prompt"] == "tomato soup"
