"""Issue 13: a resume checks what it continues (settings, data, tokenizer), early stopping and the
best weights survive a resume, checkpoints are verified against their manifest, one writer per
run folder, and generate / evaluate / merge take checkpoints and interrupted runs."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from chef_genius.checkpoints import folder as ckpt
from chef_genius.checkpoints.fingerprint import FINGERPRINT, RESUME_LOG
from chef_genius.checkpoints.runlock import LOCK_FILE, RunLock
from chef_genius.cli import main
from chef_genius.training import evaluating
from chef_genius.training.run import Run
from tests.test_training import metrics_of, small_data  # noqa: F401 - fixture

BEST_STEP = 2


def train_args(run: Path, data: Path, *extra: str) -> list[str]:
    return ["train", "--data", str(data), "--output-dir", str(run), "--report-to", "jsonl", "--epochs", "2",
            "--batch-size", "4", "--gradient-accumulation-steps", "1", "--eval-steps", "1",
            "--set", "data.num_workers=0", "--set", "model.max_target_tokens=64", "--set", "model.max_source_tokens=32",
            "--set", "checkpoint.save_steps=1", "--set", "eval.generate_samples=false", "--set", "eval.patience=0",
            "--set", "logging.log_every=1", *extra]


def scripted_losses(monkeypatch, losses) -> None:
    values = iter(losses)
    monkeypatch.setattr(evaluating, "validation_loss", lambda run: next(values))


def best_in_the_middle():
    """val_loss 3.0, then the best 2.0 (step 2), then worse and worse."""
    return itertools.chain([3.0, 2.0], itertools.count(2.5, 0.1))


@pytest.fixture(scope="module")
def finished(tmp_path_factory, small_data):  # noqa: F811
    """A finished CLI run whose best val_loss is at step 2, with a checkpoint every step."""
    run = tmp_path_factory.mktemp("finished") / "run"
    with pytest.MonkeyPatch.context() as patch:
        scripted_losses(patch, best_in_the_middle())
        assert main(train_args(run, small_data)) == 0
    return run


@pytest.fixture
def run_copy(finished, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(finished, copy)
    return copy


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def steps_trained(run: Path) -> list[int]:
    return [m["step"] for m in metrics_of(run) if "train/loss" in m]


def checkpoint_names(run: Path) -> list[str]:
    return [p.name for p in ckpt.list_checkpoints(run / "checkpoints")]


# ------------------------------------------------------------ A. resume checks its meaning
def test_a_new_run_writes_its_fingerprint_and_config(finished, small_data):  # noqa: F811
    fingerprint = json.loads((finished / FINGERPRINT).read_text())
    assert fingerprint["config"]["optim"]["batch_size"] == 4 and fingerprint["processes"] == 1
    stat = (small_data / "train.arrow").stat()
    assert fingerprint["data"]["train.arrow"]["size"] == stat.st_size
    assert fingerprint["data"]["folder"] == str(small_data.resolve())
    assert fingerprint["tokenizer"]["vocabulary"] > 100
    state = json.loads((ckpt.list_checkpoints(finished / "checkpoints")[-1] / "trainer_state.json").read_text())
    assert state["fingerprint"] == fingerprint


def test_a_resume_that_changes_the_run_is_refused_listing_each_change(run_copy, small_data, capsys):  # noqa: F811
    before = checkpoint_names(run_copy), (run_copy / "metrics.jsonl").read_text()
    args = train_args(run_copy, small_data, "--resume", "auto", "--learning-rate", "0.02", "--seed", "7",
                      "--lora-r", "8", "--label-smoothing", "0.2", "--set", "data.curriculum=true")
    assert main(args) == 2
    err = one_line_error(capsys)
    for change in ("optim.learning_rate 0.01 -> 0.02", "seed 42 -> 7", "lora.r 16 -> 8",
                   "optim.label_smoothing 0.0 -> 0.2", "data.curriculum false -> true", "--resume-changed"):
        assert change in err, change
    assert (checkpoint_names(run_copy), (run_copy / "metrics.jsonl").read_text()) == before  # nothing trained
    assert not (run_copy / RESUME_LOG).exists()


def test_changed_data_is_refused(tmp_path, small_data, capsys):  # noqa: F811
    data = tmp_path / "data"
    shutil.copytree(small_data, data)
    run = tmp_path / "run"
    assert main(train_args(run, data, "--epochs", "1", "--max-steps", "2")) == 0
    os.utime(data / "train.arrow", ns=(1_000_000_000, 1_000_000_000))  # re-prepared: another file
    capsys.readouterr()
    assert main(train_args(run, data, "--epochs", "1", "--max-steps", "3", "--resume", "auto")) == 2
    err = one_line_error(capsys)
    assert "data.train.arrow.modified" in err and "optim.max_steps 2 -> 3" in err
    other = tmp_path / "other"
    shutil.copytree(small_data, other, copy_function=shutil.copy2)
    assert main(train_args(run, other, "--epochs", "1", "--max-steps", "2", "--resume", "auto")) == 2
    assert "data.folder" in one_line_error(capsys)


def test_harmless_changes_are_allowed(run_copy, small_data, capsys):  # noqa: F811
    args = train_args(run_copy, small_data, "--resume", "auto", "--eval-steps", "7", "--report-to", "jsonl,console",
                      "--set", "checkpoint.save_steps=5", "--set", "checkpoint.keep_last=3",
                      "--set", "data.num_workers=1", "--set", "logging.log_every=3", "--set", "eval.max_new_tokens=9")
    assert main(args) == 0
    assert "already finished" in capsys.readouterr().out


def test_resume_changed_continues_and_logs_the_changes(run_copy, small_data, capsys):  # noqa: F811
    # 2 epochs go by curriculum stages by step (22 steps, each epoch a pass over the pool); 6 go by
    # epoch (smaller epochs: 3 would train fewer steps in all than 2), so 6 train on.
    config_before = (run_copy / "config.yaml").read_text()
    steps_before = steps_trained(run_copy)
    with pytest.MonkeyPatch.context() as patch:
        scripted_losses(patch, itertools.count(5.0, 0.1))
        assert main(train_args(run_copy, small_data, "--resume", "auto", "--epochs", "6", "--resume-changed")) == 0
    out = capsys.readouterr().out
    assert "with changed settings (--resume-changed): optim.epochs 2 -> 6" in out
    log = [json.loads(line) for line in (run_copy / RESUME_LOG).read_text().splitlines()]
    assert len(log) == 1 and log[0]["changes"] == [{"key": "optim.epochs", "was": 2, "now": 6}]
    steps = steps_trained(run_copy)
    assert len(steps) > len(steps_before) and steps == list(range(1, len(steps) + 1))
    assert (run_copy / "config.yaml").read_text() == config_before  # the run's original settings
    # The newest checkpoint records the settings it was trained under: the same command resumes.
    newest = ckpt.list_checkpoints(run_copy / "checkpoints")[-1]
    assert json.loads((newest / "trainer_state.json").read_text())["config"]["optim"]["epochs"] == 6
    assert main(train_args(run_copy, small_data, "--resume", "auto", "--epochs", "6")) == 0


# -------------------------------------------- B. early stopping and the best weights
def test_final_holds_the_best_weights_and_says_which_step(finished):
    summary = json.loads((finished / "run_summary.json").read_text())
    last = summary["steps"]
    assert summary["final_step"] == BEST_STEP < last
    final = load_file(str(finished / "final" / "adapter_model.safetensors"))
    best = load_file(str(finished / "checkpoints" / f"step-{BEST_STEP:08d}" / "adapter_model.safetensors"))
    newest = load_file(str(finished / "checkpoints" / f"step-{last:08d}" / "adapter_model.safetensors"))
    assert all(bool((final[k] == best[k]).all()) for k in final)
    assert any(not bool((final[k] == newest[k]).all()) for k in final)  # the last weights stay reachable
    card = (finished / "final" / "README.md").read_text()
    assert f"step {BEST_STEP} of {last}, the best val_loss, 2.0000" in card
    assert f"checkpoints/step-{last:08d}" in card
    assert (finished / "final" / "tokenizer.json").is_file()


def test_keep_best_off_leaves_the_last_weights_in_final(tmp_path, small_data, monkeypatch):  # noqa: F811
    """Improvement 1 switched off, as the ablation study runs it: validation still logged, final/
    holds the last step's weights and says where the best one was."""
    run = tmp_path / "run"
    scripted_losses(monkeypatch, best_in_the_middle())
    assert main(train_args(run, small_data, "--set", "eval.keep_best=false")) == 0
    summary = json.loads((run / "run_summary.json").read_text())
    last = summary["steps"]
    assert summary["final_step"] == last > BEST_STEP and summary["best_val_loss"] == 2.0
    final = load_file(str(run / "final" / "adapter_model.safetensors"))
    newest = load_file(str(run / "checkpoints" / f"step-{last:08d}" / "adapter_model.safetensors"))
    assert all(bool((final[k] == newest[k]).all()) for k in final)
    assert f"step {last}, the last step (eval.keep_best is off; the best val_loss, 2.0000, was at step " \
           f"{BEST_STEP})" in (run / "final" / "README.md").read_text()


def test_an_early_stopped_run_resumed_does_not_train_on(tmp_path, small_data, monkeypatch, capsys):  # noqa: F811
    run = tmp_path / "run"
    scripted_losses(monkeypatch, itertools.chain([2.0], itertools.repeat(2.5)))
    assert main(train_args(run, small_data, "--set", "eval.patience=2")) == 0
    out = capsys.readouterr().out
    assert "(stopped early)" in out and "weights of step 1 of 3" in out
    assert json.loads((run / "run_summary.json").read_text())["stopped_early"] is True
    metrics, checkpoints = (run / "metrics.jsonl").read_text(), checkpoint_names(run)
    shutil.rmtree(run / "final")
    assert main(train_args(run, small_data, "--set", "eval.patience=2", "--resume", "auto")) == 0
    out = capsys.readouterr().out
    assert "early stopping already ended this run at step 3" in out
    assert (run / "metrics.jsonl").read_text() == metrics and checkpoint_names(run) == checkpoints
    assert "step 1 of 3" in (run / "final" / "README.md").read_text()  # written again, from the best
    # A larger patience (an evaluation setting, harmless) lets it train on.
    assert main(train_args(run, small_data, "--set", "eval.patience=4", "--resume", "auto")) == 0
    assert "lets it train on" in capsys.readouterr().out
    assert len(steps_trained(run)) > 3


# --------------------------------------------------- C. checkpoints verified on load
def test_manifest_catches_truncation_and_missing_files(finished, tmp_path):
    folder = tmp_path / "ckpt"
    shutil.copytree(ckpt.list_checkpoints(finished / "checkpoints")[-1], folder)
    assert ckpt.checkpoint_problem(folder) is None
    manifest = json.loads((folder / ckpt.MANIFEST).read_text())["files"]
    assert {"adapter_model.safetensors", "optimizer.pt", "trainer_state.json", "tokenizer.json"} <= set(manifest)
    data = (folder / "optimizer.pt").read_bytes()
    (folder / "optimizer.pt").write_bytes(data[: len(data) // 2])
    assert "optimizer.pt has" in ckpt.checkpoint_problem(folder)
    flipped = bytearray(data)
    flipped[-10] ^= 0xFF
    (folder / "optimizer.pt").write_bytes(bytes(flipped))  # same size, other bytes
    assert "sha256" in ckpt.checkpoint_problem(folder)
    (folder / ckpt.MANIFEST).unlink()
    assert "no manifest.json" in ckpt.checkpoint_problem(folder)


def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, small_data, capsys):  # noqa: F811
    run = tmp_path / "run"
    assert main(train_args(run, small_data, "--max-steps", "3")) == 0
    newest = ckpt.list_checkpoints(run / "checkpoints")[-1]
    assert newest.name == "step-00000003"
    weights = newest / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # truncated
    capsys.readouterr()
    assert main(train_args(run, small_data, "--max-steps", "3", "--resume", "auto")) == 0
    out = capsys.readouterr().out
    assert f"checkpoint {newest} is incomplete or damaged (adapter_model.safetensors has 100 bytes" in out
    assert "resumed from" in out and "step-00000002 at step 2" in out
    assert ckpt.checkpoint_problem(newest) is None  # step 3 trained again and rewritten
    assert steps_trained(run) == [1, 2, 3]  # the lost step trained again, logged once


def test_no_complete_checkpoint_is_one_line_exit_2(run_copy, small_data, capsys):  # noqa: F811
    for folder in ckpt.list_checkpoints(run_copy / "checkpoints"):
        (folder / ckpt.MANIFEST).unlink()
    assert main(train_args(run_copy, small_data, "--resume", "auto")) == 2
    assert "no complete checkpoint to resume from" in one_line_error(capsys)
    path = ckpt.list_checkpoints(run_copy / "checkpoints")[-1]
    assert main(train_args(run_copy, small_data, "--resume", str(path))) == 2
    assert "incomplete or damaged (no manifest.json" in one_line_error(capsys)


# ------------------------------------------------------ D. one writer per run folder
def test_a_second_train_on_a_locked_run_folder_names_the_pid(tmp_path, small_data, capsys):  # noqa: F811
    run = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from chef_genius.checkpoints.runlock import RunLock; "
         f"lock = RunLock({str(run)!r}); lock.acquire(); print('locked', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert main(train_args(run, small_data)) == 2
        err = one_line_error(capsys)
        assert f"another chef-genius train (pid {holder.pid}) is writing this run folder" in err
        assert not (run / "checkpoints").exists() and not (run / "config.yaml").exists()
    finally:
        holder.kill()
        holder.wait()
    assert main(train_args(run, small_data, "--max-steps", "1")) == 0  # the lock died with its process
    lock = RunLock(run)
    lock.acquire()  # and training released it
    lock.release()
    assert (run / LOCK_FILE).is_file()


# ----------------------------- E. generate / evaluate / merge on checkpoints and interrupted runs
def test_generate_from_a_checkpoint_folder(finished, capsys):
    checkpoint = ckpt.list_checkpoints(finished / "checkpoints")[-1]
    assert main(["generate", str(checkpoint), "soup", "--max-new-tokens", "8"]) == 0
    captured = capsys.readouterr()
    # stderr holds only the recipe's checks: no note about which weights or tokenizer were used
    assert captured.out.startswith("# ") and captured.err.startswith("chef-genius: soup: ")
    assert captured.err.count("\n") == 1 and "cookable" in captured.err


def test_generate_evaluate_merge_an_interrupted_run(run_copy, small_data, tmp_path, capsys):  # noqa: F811
    shutil.rmtree(run_copy / "final")
    assert main(["generate", str(run_copy), "soup", "--max-new-tokens", "8"]) == 0
    err = capsys.readouterr().err
    assert f"has no final/ (the run did not finish): using its best checkpoint step-{BEST_STEP:08d}" in err
    assert main(["merge", str(run_copy), "--out", str(tmp_path / "merged")]) == 0
    assert (tmp_path / "merged" / "model.safetensors").is_file()
    capsys.readouterr()
    assert main(["evaluate", str(run_copy), "--data", str(small_data), "--split", "val", "--max-examples", "2",
                 "--samples", "1", "--max-new-tokens", "8"]) == 0
    assert (run_copy / f"evaluation-val-step-{BEST_STEP:08d}.json").is_file()
    # Without its best checkpoint: the newest complete one.
    shutil.rmtree(run_copy / "checkpoints" / f"step-{BEST_STEP:08d}")
    assert main(["generate", str(run_copy), "soup", "--max-new-tokens", "8"]) == 0
    assert "using its newest complete checkpoint" in capsys.readouterr().err


def test_a_checkpoint_without_tokenizer_uses_the_runs(run_copy, capsys):
    checkpoint = ckpt.list_checkpoints(run_copy / "checkpoints")[-1]
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (checkpoint / name).unlink(missing_ok=True)
    ckpt.write_manifest(checkpoint)  # as a chef-genius that saved no tokenizer would have
    assert main(["generate", str(checkpoint), "soup", "--max-new-tokens", "8"]) == 0
    assert f"holds no tokenizer: using {run_copy / 'final'}'s" in capsys.readouterr().err


def test_a_damaged_checkpoint_and_empty_prompts_are_refused(run_copy, capsys):
    checkpoint = ckpt.list_checkpoints(run_copy / "checkpoints")[-1]
    (checkpoint / "adapter_model.safetensors").write_bytes(b"")
    assert main(["generate", str(checkpoint), "soup"]) == 2
    assert "incomplete or damaged" in one_line_error(capsys)
    assert main(["generate", str(run_copy), "   \t "]) == 2
    assert "the prompt is empty" in one_line_error(capsys)


# ------------------------------------------------------------------ the CLI error paths
def test_every_new_cli_error_is_one_line_with_exit_2_or_3(run_copy, small_data, tmp_path, capsys,  # noqa: F811
                                                           monkeypatch):
    """Each refusal built for issue 13, through the CLI: one line on stderr, no traceback, exit 2
    (bad input or usage) or 3 (training stopped)."""
    checkpoints = ckpt.list_checkpoints(run_copy / "checkpoints")
    damaged = checkpoints[-1]
    (damaged / "optimizer.pt").write_bytes(b"torn")
    empty = tmp_path / "empty"
    empty.mkdir()
    no_complete = tmp_path / "no-complete"
    shutil.copytree(run_copy, no_complete)
    shutil.rmtree(no_complete / "final")
    for folder in ckpt.list_checkpoints(no_complete / "checkpoints"):
        (folder / ckpt.MANIFEST).unlink()
    ill_typed = tmp_path / "ill.json"
    ill_typed.write_text(json.dumps([{"title": "A", "ingredients": [["x"]], "steps": [True]}]))
    cases = [
        (train_args(run_copy, small_data, "--resume", "auto", "--batch-size", "2"), "optim.batch_size 4 -> 2"),
        (train_args(no_complete, small_data, "--resume", "auto"), "no complete checkpoint"),
        (train_args(tmp_path / "new", small_data, "--resume", str(damaged)), "incomplete or damaged"),
        (train_args(tmp_path / "new", small_data, "--resume", str(empty)), "not a checkpoint folder"),
        (["generate", str(run_copy), "  "], "the prompt is empty"),
        (["generate", str(damaged), "soup"], "incomplete or damaged"),
        (["generate", str(no_complete), "soup"], "no complete checkpoint"),
        (["generate", str(empty), "soup"], "not a run folder"),
        (["generate", str(tmp_path / "absent"), "soup"], "no such run"),
        (["evaluate", str(damaged), "--data", str(small_data)], "incomplete or damaged"),
        (["merge", str(damaged), "--out", str(tmp_path / "merged")], "incomplete or damaged"),
        (["prepare", str(ill_typed), "--out", str(tmp_path / "prepared"), "--quiet", "--workers", "0"],
         "unparseable_cell 1"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        assert message in one_line_error(capsys), argv
    lock = RunLock(run_copy)
    lock.acquire()
    try:
        assert main(train_args(run_copy, small_data, "--resume", "auto")) == 2
        assert f"(pid {os.getpid()})" in one_line_error(capsys)
    finally:
        lock.release()

    def nan_loss(self, batch, eps):
        smoothed, nll, n = real_loss(self, batch, eps)
        return smoothed * float("nan"), nll, n

    real_loss = Run.loss
    monkeypatch.setattr(Run, "loss", nan_loss)
    assert main(train_args(tmp_path / "diverged", small_data, "--epochs", "6", "--batch-size", "2")) == 3
    assert "10 non-finite steps in a row" in one_line_error(capsys)
    # And as a real process: the refused resume's stderr is the one line.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, "-m", "chef_genius", *train_args(run_copy, small_data, "--resume", "auto",
                                                                           "--seed", "3")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith("chef-genius: error: cannot resume from") and done.stderr.count("\n") == 1
