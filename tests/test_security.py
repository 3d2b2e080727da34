"""Security: no secrets in the repository, safe loading only, weights as safetensors, output only
where the user pointed."""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

from chef_genius.training.trainer import run_training
from tests.conftest import ROOT
from tests.test_training import small_config, small_data  # noqa: F401 - fixture

SECRET_PATTERNS = [
    re.compile(r"WANDB_API_KEY\s*[=:]\s*['\"]?[0-9a-f]{20,}", re.IGNORECASE),
    re.compile(r"\b[0-9a-f]{40}\b"),  # the shape of a W&B API key
    re.compile(r"hooks\.slack\.com/services/"),
    re.compile(r"\bAKIA[0-9A-Z]{16}\b"),
    re.compile(r"\bhf_[A-Za-z0-9]{30,}\b"),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
]


def tracked_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [ROOT / name for name in listed.splitlines() if (ROOT / name).is_file()]


def test_no_secrets_in_tracked_files():
    for path in tracked_files():
        if path.suffix in (".png", ".safetensors") or path.name == "wikibooks_sample.json":
            continue
        text = path.read_text(encoding="utf-8", errors="ignore")
        for pattern in SECRET_PATTERNS:
            assert not pattern.search(text), f"{path}: looks like a secret ({pattern.pattern})"


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            yield name, node


def test_every_torch_load_is_weights_only_and_nothing_is_evaluated():
    sources = list((ROOT / "src").rglob("*.py")) + list((ROOT / "benchmarks").rglob("*.py"))
    loads = 0
    for path in sources:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for name, node in _calls(tree):
            bare = isinstance(node.func, ast.Name)  # model.eval() is not Python's eval
            assert not (bare and name in ("eval", "exec")), f"{path}:{node.lineno} calls {name}"
            if name == "load" and isinstance(node.func, ast.Attribute) and getattr(node.func.value, "id", "") in (
                    "torch", "pickle"):
                loads += 1
                assert getattr(node.func.value, "id", "") == "torch", f"{path}:{node.lineno} uses pickle.load"
                keywords = {k.arg: k.value for k in node.keywords}
                flag = keywords.get("weights_only")
                assert isinstance(flag, ast.Constant) and flag.value is True, \
                    f"{path}:{node.lineno}: torch.load without weights_only=True"
        assert "import pickle" not in path.read_text(encoding="utf-8")
    assert loads >= 1


def test_weights_are_safetensors_and_output_stays_in_the_run_folder(tmp_path, small_data, monkeypatch):  # noqa: F811
    monkeypatch.chdir(tmp_path)
    before = set(tmp_path.iterdir())
    run = tmp_path / "run"
    run_training(small_config(run, small_data, **{"optim.epochs": 1}))
    assert set(tmp_path.iterdir()) - before == {run}
    weight_files = [p for p in run.rglob("*") if p.suffix in (".bin", ".pt", ".pth", ".pkl", ".safetensors")]
    assert {p.suffix for p in weight_files} <= {".safetensors", ".pt"}
    assert all(p.name == "optimizer.pt" for p in weight_files if p.suffix == ".pt")  # read with weights_only=True
    assert (run / "final" / "adapter_model.safetensors").exists()
