"""Output folders: `prepare --out`, the demo's RUN/data and `merge --out` never delete or overwrite
what chef-genius did not write; failures are one line and exit code 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from chef_genius.cli import main
from chef_genius.errors import UserError
from chef_genius.outputs import STAGING_PREFIX, OutputFolder
from chef_genius.prepare import MARKER, OUTPUT_FILES, PrepareOptions, prepare
from tests.conftest import ROOT, WIKIBOOKS

QUIET = ["--quiet", "--workers", "0"]
DATASET = set(OUTPUT_FILES)


@pytest.fixture(scope="module")
def recipes_json() -> bytes:
    """A small recipe file (30 Wikibooks recipes as a JSON list), as bytes."""
    data = json.loads(WIKIBOOKS.read_text(encoding="utf-8"))
    return json.dumps(list(data.values())[:30]).encode()


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("chef-genius: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def no_staging_left(*folders: Path) -> bool:
    return not any(p.name.startswith(STAGING_PREFIX) or ".partial-" in p.name
                   for folder in folders if folder.is_dir() for p in folder.iterdir())


# ------------------------------------------------------------------ prepare --out
def test_prepare_into_the_current_folder_refuses_and_keeps_the_input(tmp_path, monkeypatch, capsys, recipes_json):
    (tmp_path / "my.json").write_bytes(recipes_json)
    (tmp_path / "notes.txt").write_text("mine")
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    assert main(["prepare", "my.json", "--out", ".", *QUIET]) == 2
    err = one_line_error(capsys)
    assert "--overwrite" in err and "not empty" in err
    assert snapshot(tmp_path) == before and no_staging_left(tmp_path, tmp_path.parent)


def test_overwrite_adds_the_dataset_and_keeps_every_other_file(tmp_path, monkeypatch, capsys, recipes_json):
    (tmp_path / "my.json").write_bytes(recipes_json)
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "deep.txt").write_text("deep")
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    assert main(["prepare", "my.json", "--out", ".", "--overwrite", *QUIET]) == 0
    after = snapshot(tmp_path)
    assert {k: after[k] for k in before} == before  # every earlier file, byte for byte
    assert set(after) - set(before) == DATASET
    marker = json.loads((tmp_path / MARKER).read_text())
    assert marker["tool"] == "chef-genius" and marker["kind"] == "dataset"
    assert set(marker["files"]) == DATASET - {MARKER} and marker["version"] and marker["created"]
    assert json.loads((tmp_path / "data_report.json").read_text())["kept"] == 30
    assert no_staging_left(tmp_path, tmp_path.parent)


def test_an_earlier_dataset_is_replaced_file_by_file_and_foreign_files_stay(tmp_path, recipes_json):
    source = tmp_path / "r.json"
    source.write_bytes(recipes_json)
    out = tmp_path / "data"
    assert main(["prepare", str(source), "--out", str(out), *QUIET]) == 0
    assert {p.name for p in out.iterdir()} == DATASET  # a new folder: renamed into place
    (out / "my_notes.md").write_text("added by the user")
    source.write_bytes(json.dumps(json.loads(recipes_json)[:10]).encode())
    assert main(["prepare", str(source), "--out", str(out), *QUIET]) == 0  # holds the marker: no flag needed
    assert json.loads((out / "data_report.json").read_text())["kept"] == 10
    assert (out / "my_notes.md").read_text() == "added by the user"
    assert {p.name for p in out.iterdir()} == DATASET | {"my_notes.md"}


def test_an_empty_folder_is_filled(tmp_path, recipes_json):
    source = tmp_path / "r.json"
    source.write_bytes(recipes_json)
    (tmp_path / "empty").mkdir()
    prepare([source], tmp_path / "empty", PrepareOptions(progress=False, workers=0))
    assert {p.name for p in (tmp_path / "empty").iterdir()} == DATASET


def test_an_output_file_never_replaces_an_input(tmp_path, capsys, recipes_json):
    out = tmp_path / "data"
    out.mkdir()
    source = out / "rejects.jsonl"  # a JSON Lines recipe file that has an output file's name
    source.write_text("\n".join(json.dumps(r) for r in json.loads(recipes_json)) + "\n")
    before = snapshot(out)
    assert main(["prepare", str(source), "--out", str(out), "--overwrite", *QUIET]) == 2
    assert "is an input of this command" in one_line_error(capsys)
    assert snapshot(out) == before and no_staging_left(out, tmp_path)


def test_a_folder_with_an_output_files_name_is_not_replaced(tmp_path, capsys, recipes_json):
    source = tmp_path / "r.json"
    source.write_bytes(recipes_json)
    out = tmp_path / "data"
    (out / "train.arrow").mkdir(parents=True)
    (out / "train.arrow" / "keep.txt").write_text("x")
    assert main(["prepare", str(source), "--out", str(out), "--overwrite", *QUIET]) == 2
    assert "is a folder" in one_line_error(capsys)
    assert (out / "train.arrow" / "keep.txt").read_text() == "x" and no_staging_left(out, tmp_path)


@pytest.mark.parametrize("target", ["file", "proc", "broken_link"])
def test_unusable_out_is_one_line(tmp_path, capsys, recipes_json, target):
    source = tmp_path / "r.json"
    source.write_bytes(recipes_json)
    if target == "file":
        out = tmp_path / "taken.txt"
        out.write_text("mine")
    elif target == "proc":
        out = Path("/proc/chef-genius-test/data")
    else:
        out = tmp_path / "link"
        out.symlink_to(tmp_path / "nowhere")
    assert main(["prepare", str(source), "--out", str(out), *QUIET]) == 2
    one_line_error(capsys)
    if target == "file":
        assert out.read_text() == "mine"
    if target == "broken_link":
        assert out.is_symlink() and not (tmp_path / "nowhere").exists()
    assert no_staging_left(tmp_path)


@pytest.mark.parametrize("inside", [False, True])
def test_a_read_only_place_is_one_line(tmp_path, capsys, monkeypatch, recipes_json, inside):
    source = tmp_path / "r.json"
    source.write_bytes(recipes_json)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    if os.geteuid() == 0:  # root writes anyway: refuse as the folder would refuse anyone else
        mkdir = Path.mkdir

        def refusing_mkdir(self, *args, **kwargs):
            if locked in self.parents:
                raise PermissionError(13, "Permission denied", str(self))
            return mkdir(self, *args, **kwargs)

        monkeypatch.setattr(Path, "mkdir", refusing_mkdir)
    try:
        out = locked if inside else locked / "data"
        assert main(["prepare", str(source), "--out", str(out), *QUIET]) == 2
        assert "cannot write there" in one_line_error(capsys)
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)


def test_cli_subprocess_refusal_has_no_traceback(tmp_path, recipes_json):
    (tmp_path / "my.json").write_bytes(recipes_json)
    result = subprocess.run([sys.executable, "-m", "chef_genius", "prepare", "my.json", "--out", ".", "--quiet"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), *sys.path])})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and "--overwrite" in result.stderr
    assert (tmp_path / "my.json").read_bytes() == recipes_json and sorted(os.listdir(tmp_path)) == ["my.json"]


# ------------------------------------------------------------ nothing kept
def test_a_prepare_that_keeps_nothing_fails_and_leaves_the_earlier_dataset(tmp_path, capsys, recipes_json):
    good = tmp_path / "r.json"
    good.write_bytes(recipes_json)
    out = tmp_path / "data"
    assert main(["prepare", str(good), "--out", str(out), *QUIET]) == 0
    before = snapshot(out)
    bad = tmp_path / "w.json"
    bad.write_text('{"a": 1, "b": [1, 2]}')
    assert main(["prepare", str(bad), "--out", str(out), *QUIET]) == 2
    err = one_line_error(capsys)
    assert "no recipe kept" in err and "missing_title 1" in err
    assert snapshot(out) == before and no_staging_left(out, tmp_path)
    assert main(["prepare", str(bad), "--out", str(tmp_path / "new"), *QUIET]) == 2
    assert not (tmp_path / "new").exists() and no_staging_left(tmp_path)


def test_nothing_kept_names_the_top_reasons_with_counts(tmp_path):
    rows = [{"title": "", "ingredients": ["1 egg"], "steps": ["Fry."]}] * 3 + \
           [{"title": "A", "ingredients": [], "steps": ["Fry."]}] * 2 + [{"title": "B", "ingredients": ["1 egg"]}]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(rows))
    with pytest.raises(UserError) as error:
        prepare([path], tmp_path / "out", PrepareOptions(progress=False, workers=0))
    assert "missing_title 3, missing_ingredients 2, missing_steps 1" in str(error.value)
    assert "\n" not in str(error.value) and not (tmp_path / "out").exists()


# ------------------------------------------------------------ the output folder itself
def test_stale_files_of_an_earlier_output_go_and_foreign_ones_stay(tmp_path):
    out = tmp_path / "model"
    folder = OutputFolder(out, ".chef-genius-model", "merged model")
    staging = folder.stage()
    (staging / "model-00001-of-00002.safetensors").write_text("old shard")
    (staging / "config.json").write_text("old")
    folder.install(staging)
    (out / "user.txt").write_text("mine")
    marker = json.loads((out / ".chef-genius-model").read_text())
    marker["files"].append("../escape.txt")  # a marker never reaches outside its folder
    (out / ".chef-genius-model").write_text(json.dumps(marker))
    (tmp_path / "escape.txt").write_text("outside")
    staging = folder.stage()
    (staging / "config.json").write_text("new")
    folder.install(staging)
    assert sorted(os.listdir(out)) == [".chef-genius-model", "config.json", "user.txt"]
    assert (out / "config.json").read_text() == "new" and (tmp_path / "escape.txt").exists()


def test_a_marker_of_another_kind_is_not_ours(tmp_path, recipes_json):
    source = tmp_path / "r.json"
    source.write_bytes(recipes_json)
    prepare([source], tmp_path / "data", PrepareOptions(progress=False, workers=0))
    assert OutputFolder(tmp_path / "data", MARKER, "dataset").state() == "ours"
    assert OutputFolder(tmp_path / "data", ".chef-genius-model", "merged model").state() == "foreign"
    (tmp_path / "data" / MARKER).write_text("not json")
    assert OutputFolder(tmp_path / "data", MARKER, "dataset").state() == "foreign"


# ------------------------------------------------------------ train's demo data
def test_the_demo_refuses_a_foreign_run_data_folder(tmp_path, capsys):
    run = tmp_path / "d"
    (run / "data").mkdir(parents=True)
    (run / "data" / "mydata.csv").write_text("title,ingredients,directions\n")
    before = snapshot(run)
    assert main(["train", "--output-dir", str(run)]) == 2
    err = one_line_error(capsys)
    assert "not a chef-genius dataset" in err and "--data" in err and "--output-dir" in err
    assert snapshot(run) == before and sorted(os.listdir(run)) == ["data"]


def test_the_demo_prepares_into_an_absent_or_own_data_folder(tmp_path):
    from chef_genius.config import build_config
    from chef_genius.training.parts import plan_only

    config = build_config(None, {"output_dir": str(tmp_path / "unused")})
    for scratch in (tmp_path / "absent", tmp_path / "own"):
        if scratch.name == "own":  # a dataset folder (marker) that lost its train.arrow, plus a user file
            (scratch / "data").mkdir(parents=True)
            (scratch / "data" / MARKER).write_text(json.dumps({"tool": "chef-genius", "kind": "dataset",
                                                                "files": []}))
            (scratch / "data" / "keep.txt").write_text("mine")
        plan_only(config, scratch)
        assert (scratch / "data" / "train.arrow").is_file() and (scratch / "data" / MARKER).is_file()
    assert (tmp_path / "own" / "data" / "keep.txt").read_text() == "mine"


# ------------------------------------------------------------ merge --out
@pytest.fixture(scope="module")
def adapter(tmp_path_factory) -> Path:
    """A tiny T5 base model folder and a LoRA adapter on it (untrained), like a run's final/."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer, T5ForConditionalGeneration

    from chef_genius.model.loading import build_tiny

    root = tmp_path_factory.mktemp("merge")
    texts = [f"Create a recipe: dish {i} with eggs and rice. Beat the eggs. Boil the rice." for i in range(50)]
    base = build_tiny(texts, 0, root / "base")
    model = get_peft_model(T5ForConditionalGeneration.from_pretrained(str(base)),
                           LoraConfig(r=2, lora_alpha=4, target_modules=["q", "v"]))
    model.save_pretrained(str(root / "final"))
    AutoTokenizer.from_pretrained(str(base)).save_pretrained(str(root / "final"))
    return root / "final"


def test_merge_refuses_a_foreign_folder_and_overwrite_keeps_its_files(tmp_path, capsys, adapter):
    out = tmp_path / "models"
    out.mkdir()
    (out / "config.json").write_text("the user's")
    (out / "model-00001-of-00002.safetensors").write_text("the user's shard")
    before = snapshot(out)
    assert main(["merge", str(adapter), "--out", str(out)]) == 2
    assert "--overwrite" in one_line_error(capsys)
    assert snapshot(out) == before
    assert main(["merge", str(adapter), "--out", str(out), "--overwrite"]) == 0
    capsys.readouterr()
    # The shard survives (Transformers' save_pretrained would delete it in place); config.json
    # is the model's now, as --overwrite asked.
    assert (out / "model-00001-of-00002.safetensors").read_text() == "the user's shard"
    assert (out / "model.safetensors").is_file() and (out / ".chef-genius-model").is_file()
    assert json.loads((out / "config.json").read_text())["model_type"] == "t5"
    assert no_staging_left(out, tmp_path)


def test_merge_into_a_new_then_its_own_folder(tmp_path, capsys, adapter):
    out = tmp_path / "merged"
    assert main(["merge", str(adapter), "--out", str(out)]) == 0
    (out / "README.md").write_text("my notes")
    assert main(["merge", str(adapter), "--out", str(out)]) == 0  # ours: no flag needed
    assert (out / "README.md").read_text() == "my notes" and (out / "model.safetensors").is_file()
    assert main(["merge", str(adapter), "--out", str(adapter), "--overwrite"]) == 2
    assert "reads from" in one_line_error(capsys)
    assert main(["merge", str(adapter), "--out", str(adapter.parent / "base"), "--overwrite"]) == 2
    assert "is an input of this command" in one_line_error(capsys)
