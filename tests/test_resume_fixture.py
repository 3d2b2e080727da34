"""A run checkpointed by the chef-genius of before issue 24's reorganisation resumes under
today's code and trains on exactly as it did then.

tests/data/resume_v1/ (built once by tests/data/make_resume_fixture.py, never rebuilt by the
tests) holds, for a seq2seq (`tiny` T5) and a causal (two-layer GPT-2) run with every improvement
on, the run's settings, its checkpoint at step 6 (mid-epoch) and what the run logged after it.
The resume reads the checkpoint format of then; its losses, learning rates and gradient norms
must be those of then.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from chef_genius.cli import main

FIXTURE = Path(__file__).parent / "data" / "resume_v1"
COMPARED = ("train/loss", "train/nll", "train/learning_rate", "train/grad_norm", "train/epoch", "val_loss")


@pytest.mark.parametrize("family", ["seq2seq", "causal"])
def test_a_checkpoint_of_the_old_layout_resumes_and_trains_as_then(family, tmp_path, monkeypatch, capsys):
    for name in ("data", "gpt2", family):
        shutil.copytree(FIXTURE / name, tmp_path / name)
    monkeypatch.chdir(tmp_path)  # the run's settings name its folders relative to here
    # The copied data folder has another path and modification times: the only changes allowed.
    assert main(["train", "--config", f"{family}/config.yaml", "--resume", "auto", "--resume-changed"]) == 0
    out = capsys.readouterr().out
    assert f"resumed from {family}/checkpoints/step-00000006 at step 6 (epoch 1)" in out
    logged_changes = [json.loads(line) for line in (tmp_path / family / "resume_log.jsonl").read_text().splitlines()]
    changed = {c["key"] for record in logged_changes for c in record["changes"]}
    assert changed and changed <= {"data.folder", "data.train.arrow.modified", "data.val.arrow.modified"}, changed

    expected = [json.loads(line) for line in (FIXTURE / family / "expected.jsonl").read_text().splitlines()]
    logged = [json.loads(line) for line in (tmp_path / family / "metrics.jsonl").read_text().splitlines()]
    logged = [m for m in logged if m["step"] > 6]

    def compared(records):
        return [(m["step"], {k: m[k] for k in COMPARED if k in m}) for m in records if set(COMPARED) & set(m)]

    got, want = compared(logged), compared(expected)
    assert [s for s, _ in got] == [s for s, _ in want]
    for (step, values), (_, then) in zip(got, want, strict=True):
        assert values.keys() == then.keys(), step
        for key in values:
            assert values[key] == pytest.approx(then[key], rel=1e-5, abs=1e-7), (step, key)
    summary = json.loads((tmp_path / family / "run_summary.json").read_text())
    assert summary["steps"] == 8
