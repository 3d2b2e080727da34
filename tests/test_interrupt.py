"""Ctrl-C (SIGINT) and SIGTERM during `chef-genius train`: the step under way finishes, a
checkpoint is written, the command that resumes the run is printed, and that command resumes it."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chef_genius.checkpoints.folder import checkpoint_problem
from tests.conftest import ROOT
from tests.test_training import small_data  # noqa: F401 - fixture


def _environment() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "PYTHONWARNINGS": "ignore",
            "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}


def _train(data: Path, run: Path) -> list[str]:
    # No periodic checkpoint and no validation before the end: a checkpoint in the run folder can
    # only be the one the signal asked for. Two loader workers: they must survive Ctrl-C.
    return [sys.executable, "-m", "chef_genius", "train", "--data", str(data), "--output-dir", str(run),
            "--epochs", "3", "--batch-size", "2", "--report-to", "jsonl", "--eval-steps", "100000",
            "--set", "checkpoint.save_steps=100000", "--set", "logging.log_every=1", "--set", "data.num_workers=2",
            "--set", "model.max_target_tokens=64", "--set", "eval.generate_samples=false"]


def _steps_logged(run: Path) -> list[int]:
    path = run / "metrics.jsonl"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue  # a line being written
    return [r["step"] for r in rows if "train/loss" in r]


def _interrupt(command: list[str], run: Path, number: int) -> subprocess.CompletedProcess:
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=_environment(), start_new_session=True)
    deadline = time.monotonic() + 240
    while len(_steps_logged(run)) < 2 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert process.poll() is None, "training ended before it could be interrupted"
    # As a terminal's Ctrl-C does: the whole process group (the loader workers too); SIGTERM to
    # the trainer alone, as `kill` does.
    if number == signal.SIGINT:
        os.killpg(process.pid, number)
    else:
        process.send_signal(number)
    out, err = process.communicate(timeout=240)
    return subprocess.CompletedProcess(command, process.returncode, out, err)


@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_saves_a_checkpoint_and_says_how_to_resume(tmp_path, small_data, number):  # noqa: F811
    run = tmp_path / "run"
    done = _interrupt(_train(small_data, run), run, number)
    assert done.returncode == 128 + number, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    step = _steps_logged(run)[-1]
    assert last.startswith(f"chef-genius: interrupted at step {step}: checkpoint saved in {run / 'checkpoints'}; ")
    assert last.endswith(f"resume with: chef-genius train --config {shlex.quote(str(run / 'config.yaml'))} "
                         "--resume auto")
    assert "Traceback" not in done.stderr
    saved = sorted((run / "checkpoints").glob("step-*"))
    assert [p.name for p in saved] == [f"step-{step:08d}"] and checkpoint_problem(saved[0]) is None
    assert not (run / "final").exists()

    if number == signal.SIGINT:  # the printed command resumes the run and finishes it
        printed = shlex.split(last.partition("resume with: ")[2])
        assert printed[:2] == ["chef-genius", "train"]
        resumed = subprocess.run([sys.executable, "-m", "chef_genius", *printed[1:]], capture_output=True,
                                 text=True, env=_environment(), timeout=300)
        assert resumed.returncode == 0, resumed.stderr
        assert f"resumed from {saved[0]} at step {step}" in resumed.stdout
        steps = _steps_logged(run)
        assert steps == list(range(1, len(steps) + 1)) and len(steps) > step  # each step once, trained on
        assert (run / "final").is_dir()
