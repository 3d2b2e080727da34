"""Each configuration key's help reaches the user: `train --help`, `--print-config` and the
README's configuration table (generated from the same dataclass fields)."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from chef_genius import config_help
from chef_genius.cli import main
from chef_genius.config import FLAGS, build_config, to_dict
from chef_genius.config_schema import TrainConfig
from tests.conftest import ROOT


def test_every_key_has_help():
    keys = config_help.config_keys()
    assert len(keys) > 60
    assert [k.name for k in keys if not k.help.strip()] == []
    assert config_help.field_help("optim.epochs") == "Passes over the (selected) training data."
    with pytest.raises(KeyError):
        config_help.field_help("optim.epoch")


def test_keys_cover_the_schema_exactly():
    def leaves(value, prefix=""):
        for name, inner in value.items():
            if isinstance(inner, dict):
                yield from leaves(inner, f"{prefix}{name}.")
            else:
                yield prefix + name

    assert [k.name for k in config_help.config_keys()] == list(leaves(to_dict(TrainConfig())))
    assert [name for name, _ in config_help.sections()] == [
        f.name for f in dataclasses.fields(TrainConfig) if isinstance(to_dict(TrainConfig())[f.name], dict)]


def test_train_help_shows_each_flags_help(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for flag, (key, _) in FLAGS.items():
        first_words = " ".join(config_help.field_help(key).split()[:4])
        assert first_words in text, flag
        assert f"(sets {key}" in text
    assert "sets optim.epochs)" in text and "10 % of the gradient norm" not in text  # eta has no flag
    assert "noise norm" not in text


def test_print_config_is_commented_yaml_that_loads_back(capsys):
    assert main(["train", "--epochs", "3", "--set", "eval.patience=7", "--print-config"]) == 0
    printed = capsys.readouterr().out
    assert "  # Passes over the (selected) training data.\n  epochs: 3\n" in printed
    assert "# Validation, early stopping and sample recipes.\neval:\n" in printed
    loaded = yaml.safe_load(printed)
    expected = to_dict(build_config(None, {"optim.epochs": 3, "eval.patience": 7}))
    expected["output_dir"] = loaded["output_dir"]  # a fresh runs/run-<time>
    assert loaded == expected


def test_readme_configuration_table_is_current():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start, end = readme.index(config_help.TABLE_START), readme.index(config_help.TABLE_END)
    table = readme[start + len(config_help.TABLE_START):end].strip()
    assert table == config_help.markdown_table(), (
        "README.md's configuration table is stale: run python -m chef_genius.config_help --readme README.md")
    assert table.count("\n") + 1 == len(config_help.config_keys()) + 2


def test_update_readme_rewrites_only_the_table(tmp_path):
    page = tmp_path / "README.md"
    page.write_text(f"# Title\n\nbefore\n{config_help.TABLE_START}\nSTALE ROW\n{config_help.TABLE_END}\nafter\n")
    assert config_help.update_readme(page) is True
    text = page.read_text()
    assert text.startswith("# Title\n\nbefore\n") and text.endswith(f"{config_help.TABLE_END}\nafter\n")
    assert "STALE ROW" not in text and "| `optim.epochs` | `5` |" in text
    assert config_help.update_readme(page) is False
    page.write_text("no markers\n")
    with pytest.raises(ValueError):
        config_help.update_readme(page)


def test_readme_stays_a_newcomers_page():
    """Short, with the two set-up commands (CI's .ci/run calls `make test`) and the measurements in docs/."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 300
    assert "make demo" in readme and "make test" in readme and ".venv/bin/chef-genius" in readme
    for page in ("data", "training", "quality", "ablation", "performance", "scale", "robustness", "docker"):
        assert f"(docs/{page}.md)" in readme and (ROOT / "docs" / f"{page}.md").is_file()
