"""Real-model paths on a tiny Llama: a GGUF file as --model, chat-template training, generation
that stops at the end of turn, the usability metrics logged, --max-steps."""

from __future__ import annotations

import json

import pytest

from chef_genius.cli import main
from chef_genius.errors import UserError
from chef_genius.families import CAUSAL, SEQ2SEQ
from chef_genius.model.loading import gguf_folder
from tests.harness.tiny_causal import write_tiny_gguf
from tests.test_training import metrics_of, small_config, small_data  # noqa: F401 - fixture

pytest.importorskip("gguf")
TEXTS = ["Title: Soup || Ingredients: 1 cup water | 2 carrots || Steps: Boil the water. | Add the carrots.",
         "Create a recipe: tomato soup with basil, onion and garlic"] * 40


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny-llama.Q8.gguf", TEXTS)


@pytest.fixture(autouse=True)
def cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("CHEF_GENIUS_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def test_a_gguf_file_is_converted_once_into_a_model_folder(tiny_gguf):
    folder = gguf_folder(tiny_gguf)
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in folder.iterdir()}
    assert json.loads((folder / "config.json").read_text())["model_type"] == "llama"
    written = (folder / "model.safetensors").stat().st_mtime_ns
    assert gguf_folder(tiny_gguf) == folder  # cached: not converted again
    assert (folder / "model.safetensors").stat().st_mtime_ns == written
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(str(folder)).chat_template  # the template travels with it


def test_a_missing_gguf_file_is_one_line(tmp_path):
    with pytest.raises(UserError, match="no such GGUF file"):
        gguf_folder(tmp_path / "nope.gguf")


@pytest.fixture(scope="module")
def gguf_run(tmp_path_factory, small_data, tiny_gguf):  # noqa: F811
    from chef_genius.training.trainer import run_training

    run = tmp_path_factory.mktemp("gguf-run") / "run"
    result = run_training(small_config(run, small_data, **{
        "model.name": str(tiny_gguf), "optim.max_steps": 3, "eval.eval_steps": 3, "eval.max_new_tokens": 16,
        "eval.num_validation_samples": 1, "optim.learning_rate": 1e-3}))
    return run, result


def test_training_from_a_gguf_file_with_its_chat_template(gguf_run):
    run, result = gguf_run
    assert result.steps == 3 and result.schedule["total_steps"] == 3  # --max-steps bounds the run and schedule
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(run / "final"))
    assert tokenizer.chat_template  # trained as chat turns, saved for generate
    base = json.loads((run / "final" / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert "tiny-llama.Q8" in base and (base.endswith(".gguf") is False)
    logged = [m for m in metrics_of(run) if "recipe/usable_rate" in m]
    assert logged and {"recipe/repetition", "recipe/stopped_rate", "recipe/overall_quality"} <= set(logged[-1])
    # 16 new tokens cannot hold a recipe: the random model's samples are not usable.
    assert logged[-1]["recipe/usable_rate"] == 0.0


def test_generate_from_the_gguf_run(gguf_run, capsys):
    run, _ = gguf_run
    assert main(["generate", str(run), "tomato soup", "--max-new-tokens", "8", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out[0]["prompt"] == "tomato soup" and set(out[0]) >= {"title", "ingredients", "steps"}


def test_chat_template_off_trains_and_saves_plain_prompts(tmp_path, small_data, tiny_gguf):  # noqa: F811
    from transformers import AutoTokenizer

    from chef_genius.training.trainer import run_training

    run = tmp_path / "run"
    run_training(small_config(run, small_data, **{"model.name": str(tiny_gguf), "model.chat_template": False,
                                                 "optim.max_steps": 1, "eval.generate_samples": False}))
    assert not AutoTokenizer.from_pretrained(str(run / "final")).chat_template


def test_generation_that_ends_with_the_end_of_turn_reports_stopped(tiny_gguf):
    """A model whose head always prefers the end-of-turn token stops at once; the same model
    forbidden that token runs to the limit."""
    import torch

    from chef_genius.encoding import end_of_turn_id
    from chef_genius.inference import generate_details, load_run

    loaded = load_run(gguf_folder(tiny_gguf), device="cpu")
    model, tokenizer = loaded.model, loaded.tokenizer
    head = model.lm_head
    biased = torch.nn.Linear(head.in_features, head.out_features, bias=True)
    biased.weight.data.copy_(head.weight.data)
    biased.bias.data.zero_()
    end = end_of_turn_id(tokenizer)
    biased.bias.data[end] = 100.0
    model.lm_head = biased
    [[stopped]] = generate_details(model, tokenizer, ["soup"], CAUSAL, "greedy", 12)
    assert stopped.stopped and stopped.tokens == 0 and stopped.text == ""
    biased.bias.data[end] = -100.0
    biased.bias.data[tokenizer.eos_token_id] = -100.0
    [[running]] = generate_details(model, tokenizer, ["soup"], CAUSAL, "greedy", 12)
    assert not running.stopped and running.tokens == 12


def test_a_seq2seq_model_that_ends_reports_stopped(t5_tokenizer):
    import torch
    from transformers import PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

    from chef_genius.inference import generate_details

    tokenizer = PreTrainedTokenizerFast(tokenizer_object=t5_tokenizer, pad_token="<pad>", eos_token="</s>",
                                        unk_token="<unk>")
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=1,
                                                num_heads=4, decoder_start_token_id=0, pad_token_id=0,
                                                eos_token_id=1, tie_word_embeddings=False)).eval()
    model.lm_head = torch.nn.Linear(32, len(tokenizer), bias=True)  # scores EOS (id 1) highest, always
    with torch.no_grad():
        model.lm_head.weight.zero_()
        model.lm_head.bias.zero_()
        model.lm_head.bias[1] = 10.0
    [[stopped]] = generate_details(model, tokenizer, ["soup"], SEQ2SEQ, "greedy", 12)
    assert stopped.stopped and stopped.tokens == 0
