"""Crash safety: SIGKILL and resume (the harness), interrupted and failed checkpoint writes."""

from __future__ import annotations

import errno
import json

import pytest
import torch

from chef_genius.checkpoints import folder as ckpt
from chef_genius.training.evaluating import save
from chef_genius.training.trainer import TrainingStopped, opened_run, run_training, train
from tests.harness.kill_resume import run as kill_and_resume
from tests.test_training import built, small_config, small_data  # noqa: F401 - fixture


def test_sigkill_at_random_steps_then_resume_matches_an_uninterrupted_run(tmp_path, small_data):  # noqa: F811
    result = kill_and_resume(small_data, tmp_path, kills=3, seed=1)
    assert len(result["kills"]) >= 2
    assert result["temporary_folders_left"] == []


def test_a_leftover_temporary_checkpoint_is_never_used_and_is_cleaned(tmp_path, small_data):  # noqa: F811
    run = tmp_path / "run"
    run_training(small_config(run, small_data, **{"optim.epochs": 1, "checkpoint.save_steps": 2}))
    folder = run / "checkpoints"
    torn = folder / ".tmp-step-99999999"
    torn.mkdir()
    (torn / "trainer_state.json").write_text('{"step": 999')  # as a kill mid-write leaves it
    assert all(p.name.startswith("step-") for p in ckpt.list_checkpoints(folder))
    assert ckpt.find_resume_point(run, "auto").name != torn.name
    with opened_run(small_config(run, small_data, **{"optim.epochs": 2, "checkpoint.resume": "auto",
                                                     "checkpoint.resume_changed": True})) as (opened, state):
        train(opened, state)
    assert not torn.exists()


def test_a_full_disk_during_a_checkpoint_keeps_the_previous_one(tmp_path, small_data, monkeypatch):  # noqa: F811
    run = tmp_path / "run"
    real_save = torch.save
    calls = {"n": 0}

    def full_disk(obj, path, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] >= 2:  # the second checkpoint write fails
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(TrainingStopped, match="No space left on device.*step-00000002 is intact"), \
            opened_run(small_config(run, small_data, **{"checkpoint.save_steps": 2, "optim.batch_size": 2})) \
            as (opened, state):
        train(opened, state)
    monkeypatch.setattr(torch, "save", real_save)
    visible = ckpt.list_checkpoints(run / "checkpoints")
    assert [p.name for p in visible] == ["step-00000002"]
    assert not list((run / "checkpoints").glob(".tmp-*"))
    state = json.loads((visible[0] / "trainer_state.json").read_text())
    assert state["step"] == 2
    resumed = run_training(small_config(run, small_data, **{"checkpoint.save_steps": 2, "optim.batch_size": 2,
                                                            "checkpoint.resume": "auto"}))
    assert resumed.steps > 2


@pytest.fixture
def saved_once(tmp_path, small_data):  # noqa: F811
    """A run built, its step-0 checkpoint written: ((run, state), checkpoints folder, that checkpoint)."""
    run, state = built(small_config(tmp_path / "run", small_data, **{"optim.epochs": 1}))
    folder = tmp_path / "run" / "checkpoints"
    save(run, state)
    return (run, state), folder, ckpt.list_checkpoints(folder)[-1]


def test_a_kill_while_a_checkpoint_is_rewritten_never_shows_a_half_deleted_one(saved_once, monkeypatch):
    """The same step saved again (as a resumed run's end does): the old folder is moved aside
    whole before it is deleted, so a kill during the delete leaves only a temporary folder."""
    (run, state), folder, first = saved_once
    real_rmtree = ckpt.shutil.rmtree

    def killed_mid_delete(path, *args, **kwargs):
        path = ckpt.Path(path)
        if path.name.startswith(".tmp-old-") and path.exists():
            next(path.iterdir()).unlink()  # one file gone, then the process dies
            raise KeyboardInterrupt
        return real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(ckpt.shutil, "rmtree", killed_mid_delete)
    run.progress.saved_key = None  # the same state, written again
    with pytest.raises(KeyboardInterrupt):
        save(run, state)
    monkeypatch.setattr(ckpt.shutil, "rmtree", real_rmtree)
    assert [p.name for p in ckpt.list_checkpoints(folder)] == [first.name]
    assert ckpt.checkpoint_problem(first) is None  # complete, under its own name
    assert list(folder.glob(".tmp-old-*"))  # what the kill left, out of sight
    run.progress.saved_key = None
    save(run, state)  # the next save clears it
    assert not list(folder.glob(".tmp-*")) and ckpt.checkpoint_problem(first) is None


def test_a_kill_between_the_renames_of_a_rewrite_gives_the_checkpoint_back(saved_once, monkeypatch):
    """Killed after the old folder was moved aside and before the new one took its name: the
    complete old one is found again under its name (and pruning renames before deleting)."""
    (run, state), folder, first = saved_once
    real_replace = ckpt.os.replace

    def killed_between(source, target):
        if ckpt.Path(source).name.startswith(".tmp-step-"):  # the new folder's rename: the process dies
            raise KeyboardInterrupt
        return real_replace(source, target)

    monkeypatch.setattr(ckpt.os, "replace", killed_between)
    run.progress.saved_key = None
    with pytest.raises(KeyboardInterrupt):
        save(run, state)
    monkeypatch.setattr(ckpt.os, "replace", real_replace)
    assert not first.exists() and list(folder.glob(".tmp-old-*"))  # only the set-aside copy is left
    assert [p.name for p in ckpt.list_checkpoints(folder)] == [first.name]  # given back, complete
    assert ckpt.checkpoint_problem(first) is None and not list(folder.glob(".tmp-old-*"))
