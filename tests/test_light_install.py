"""`pip install chef-genius` without the `train` extras: `--help`, `prepare`, `score` and
`--print-config` run without torch or any other library of those extras.

Each command runs in a fresh interpreter whose import system refuses the extras' packages (as if
they were not installed), so a module-level ``import torch`` anywhere on these paths fails the test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import JUNK, ROOT, WIKIBOOKS

# The import names of the `train` extras (pyproject.toml), and numpy, which none of the light
# dependencies needs.
EXTRAS = ("torch", "transformers", "peft", "accelerate", "safetensors", "sacrebleu", "rouge_score", "gguf",
          "jiwer", "rapidfuzz", "matplotlib", "wandb", "tensorboard", "huggingface_hub", "numpy")

RUNNER = f"""
import sys

class NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {EXTRAS!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked: a light install)", name=name)

sys.meta_path.insert(0, NotInstalled())
from chef_genius.cli import main

sys.exit(main(sys.argv[1:]))
"""

RECIPE = "Pancakes\n\nIngredients:\n- 2 eggs\n- 1 cup flour\n\nSteps:\n1. Mix the eggs and flour.\n2. Fry in a pan.\n"


def _light(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    return subprocess.run([sys.executable, "-c", RUNNER, *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=120)


def test_training_without_the_extras_is_one_line(tmp_path):
    """The runner really refuses torch: a command that needs it says so in one line, exit 2."""
    done = _light("train", "--plan", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr == ("chef-genius: error: train needs the training stack (torch is not installed): "
                           "pip install 'chef-genius[train]'\n")
    (tmp_path / "run").mkdir()
    done = _light("generate", "run", "tomato soup", cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.startswith("chef-genius: error: generate needs the training stack")


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["train", "--help"], ["prepare", "--help"],
                                  ["generate", "--help"], ["evaluate", "--help"]])
def test_help_without_torch(tmp_path, args):
    done = _light(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "chef-genius" in done.stdout


def test_prepare_without_torch(tmp_path):
    done = _light("prepare", "--sample", str(JUNK), str(WIKIBOOKS), "--out", str(tmp_path / "data"), "--workers", "0",
                  cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert {p.name for p in (tmp_path / "data").iterdir()} >= {"train.arrow", "val.arrow", "test.arrow"}
    assert "blocked" not in done.stderr


def test_score_and_print_config_without_torch(tmp_path):
    (tmp_path / "recipe.txt").write_text(RECIPE, encoding="utf-8")
    done = _light("score", "--json", "recipe.txt", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["recipe"]["title"] == "Pancakes"
    done = _light("train", "--print-config", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "max_target_tokens: 512" in done.stdout
