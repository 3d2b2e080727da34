"""Real-model paths on a tiny Llama: a GGUF file as --model, chat-template training, generation
that stops at the end of turn, the usability metrics logged, --max-steps."""

from __future__ import annotations

import json
import time

import pytest

from chef_genius.cli import main
from chef_genius.errors import UserError
from chef_genius.training.models import gguf_folder
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
    started = time.perf_counter()
    assert gguf_folder(tiny_gguf) == folder  # cached: not converted again
    assert time.perf_counter() - started < 0.5 and (folder / "model.safetensors").stat().st_mtime_ns == written
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
