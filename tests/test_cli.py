"""The command line: prepare, score, exit codes, and the console script."""

from __future__ import annotations

import json
import subprocess
import sys

from chef_genius.cli import main
from tests.conftest import RECIPENLG


def test_prepare_sample_prints_report_and_writes_folder(tmp_path, capsys):
    assert main(["prepare", "--sample", "--out", str(tmp_path / "d"), "--workers", "0"]) == 0
    out = capsys.readouterr().out
    assert "rows read" in out and "train recipes at each quality threshold" in out
    report = json.loads((tmp_path / "d" / "data_report.json").read_text())
    assert report["rows_read"] == 400 and report["kept"] == 400


def test_prepare_bad_file_exit_2_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("foo,bar\n1,2\n")
    assert main(["prepare", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("chef-genius: error: ") and str(bad) in err and err.count("\n") == 1
    assert main(["prepare", "--out", str(tmp_path / "o")]) == 2


def test_score_text_markdown_and_json(tmp_path, capsys):
    text = tmp_path / "r.txt"
    text.write_text("Title: Rice || Ingredients: 1 cup rice | 2 cups water || Steps: Boil the water. | Add rice.")
    assert main(["score", str(text), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["recipe"]["title"] == "Rice"
    assert result["metrics"]["ingredient_coherence"] == 1.0
    md = tmp_path / "r.md"
    md.write_text("# Rice\n\n## Ingredients\n- 1 cup rice\n- salt\n\n## Steps\n1. Boil.\n")
    assert main(["score", str(md)]) == 0
    assert "ingredient_coherence   0.50" in capsys.readouterr().out
    js = tmp_path / "r.json"
    js.write_text(json.dumps({"name": "Rice", "recipeIngredient": ["1 cup rice"], "recipeInstructions": ["Boil."]}))
    assert main(["score", str(js), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"]["instruction_quality"] == 1.0
    assert main(["score", str(tmp_path / "missing.txt")]) == 2


def test_console_entry_point_runs_as_module(tmp_path):
    result = subprocess.run([sys.executable, "-m", "chef_genius", "prepare", str(RECIPENLG), "--out",
                             str(tmp_path / "p"), "--quiet"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "p" / "train.arrow").exists()
    missing = subprocess.run([sys.executable, "-m", "chef_genius", "prepare", str(tmp_path / "nope.csv"),
                              "--out", str(tmp_path / "q")], capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and missing.stderr.strip().endswith("no such file")
    assert "Traceback" not in missing.stderr


def test_the_demo_prints_one_set_of_samples_and_says_what_the_tiny_model_is(tmp_path, capsys):
    assert main(["train", "--output-dir", str(tmp_path / "demo"), "--epochs", "1", "--eval-steps", "3",
                 "--set", "data.num_workers=0"]) == 0
    out = capsys.readouterr().out
    assert out.count("Sample recipes at step") == 1  # the last evaluation's, not one block per evaluation
    assert "starts from random weights" in out and "Quality" in out and "--model SmolLM2" in out
    assert len(list((tmp_path / "demo" / "samples").glob("step-*.md"))) >= 2  # every evaluation is still saved


def test_decoding_presets_are_one_list():
    from chef_genius.config_schema import DECODING_NAMES
    from chef_genius.inference import DECODING

    assert set(DECODING) == set(DECODING_NAMES)


def test_chef_genius_warnings_are_one_plain_line(capsys):
    """A warning of chef-genius' own (here: a LoRA learning rate for full fine-tuning) is one line
    on stderr, without Python's source path and code line."""
    assert main(["train", "--model", "some/model", "--disable-lora", "--learning-rate", "1e-3", "--print-config"]) == 0
    err = capsys.readouterr().err
    assert err == ("chef-genius: warning: full fine-tuning at learning rate 0.001, a LoRA rate; 0.0002 is the default "
                   "for full fine-tuning (--learning-rate)\n")
    import warnings

    assert warnings.showwarning.__module__ == "warnings"  # restored after the command


def test_other_libraries_warnings_keep_their_form():
    from chef_genius.cli import _one_line_warnings

    shown = []
    show = _one_line_warnings(lambda *args: shown.append(args))
    show(UserWarning("theirs"), UserWarning, "/site-packages/torch/x.py", 3)
    show(DeprecationWarning("ours, but not a UserWarning"), DeprecationWarning, "/src/chef_genius/x.py", 3)
    assert [args[0].args[0] for args in shown] == ["theirs", "ours, but not a UserWarning"]


def test_model_tiny_says_which_of_its_own_settings_it_applies(capsys):
    from chef_genius.config import build_config, tiny_settings

    applied = tiny_settings(build_config(None, {"optim.epochs": 2, "optim.learning_rate": 0.005}))
    assert "optim.epochs=6" not in applied and not any(s.startswith("optim.learning_rate") for s in applied)
    assert {"optim.batch_size=16", "lora.target_modules=all-linear", "schedule.warmup_steps=6"} <= set(applied)
    assert tiny_settings(build_config(None, {"model.name": "some/model"})) == []
    assert main(["train", "--plan", "--epochs", "2"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("--model tiny: a small random T5") and "optim.learning_rate=0.01" in first
    assert "optim.epochs" not in first


def test_a_hub_name_that_cannot_load_offline_fails_at_once(monkeypatch, capsys):
    """A typo in a hub id, offline: one line at once, not transformers' minute of retries."""
    import time

    from chef_genius.model import hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # as the tests run
    started = time.monotonic()
    assert main(["train", "--model", "no-such-org/flan-t5-bsae", "--plan"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not in the local Hugging Face cache and HF_HUB_OFFLINE is set" in err
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=3.0: False)  # no network
    assert main(["train", "--model", "no-such-org/flan-t5-bsae", "--plan"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the hub cannot be reached" in err
    assert time.monotonic() - started < 30
