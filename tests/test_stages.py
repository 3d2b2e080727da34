"""Curriculum stages by optimizer step (issue 14, item 3): a run with fewer epochs than stages
still goes easy -> medium -> all, with the rising quality threshold; runs with enough epochs keep
their epoch stages and exactly the batches they had before."""

from __future__ import annotations

import hashlib
import json
import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from chef_genius.checkpoints.folder import write_manifest
from chef_genius.cli import main
from chef_genius.config_schema import CurriculumStage, DataConfig
from chef_genius.curriculum import (
    EpochSelection,
    Segment,
    run_segments,
    stage_thresholds,
    stages_by_step,
    unseen_classes,
)
from chef_genius.dataset.epochs import EpochBuilder, segment_batches
from chef_genius.errors import UserError
from chef_genius.training import trainer as trainer_module
from chef_genius.training.parts import plan_only
from chef_genius.training.run_plan import RunPlan
from chef_genius.training.trainer import run_training
from tests.harness.kill_resume import run as kill_and_resume
from tests.test_training import built, metrics_of, small_config, small_data  # noqa: F401 - fixture


def test_one_epoch_is_cut_into_the_three_stages_by_step():
    assert run_segments([100], 100, DataConfig(curriculum=True)) == [
        Segment(0, 0, "easy", 0.5, 0, 30), Segment(0, 1, "medium", 0.625, 30, 60), Segment(0, 2, "all", 0.75, 60, 100)]


def test_without_the_curriculum_one_epoch_still_raises_the_threshold_by_step():
    assert run_segments([100], 100, DataConfig(curriculum=False)) == [
        Segment(0, 0, "all", 0.5, 0, 30), Segment(0, 1, "all", 0.625, 30, 60), Segment(0, 2, "all", 0.75, 60, 100)]


def test_two_epochs_split_the_medium_stage_at_the_epoch_boundary():
    assert run_segments([50, 50], 100, DataConfig(curriculum=True)) == [
        Segment(0, 0, "easy", 0.5, 0, 30), Segment(0, 1, "medium", 0.625, 30, 50),
        Segment(1, 1, "medium", 0.625, 50, 60), Segment(1, 2, "all", 0.75, 60, 100)]


def test_max_steps_moves_the_stages_and_the_last_one_always_trains():
    # --max-steps 50 of a 100-step epoch: the stages span the 50 steps; the rest stays 'all'.
    assert [(s.level, s.first_step, s.end_step) for s in run_segments([100], 50, DataConfig(curriculum=True))] == [
        ("easy", 0, 15), ("medium", 15, 30), ("all", 30, 100)]
    assert [(s.level, s.first_step, s.end_step) for s in run_segments([10], 3, DataConfig(curriculum=True))] == [
        ("easy", 0, 1), ("medium", 1, 2), ("all", 2, 10)]
    assert [(s.level, s.first_step) for s in run_segments([10], 1, DataConfig(curriculum=True))] == [("all", 0)]


def test_stages_go_by_step_only_when_epochs_never_reach_the_last_stage():
    data = DataConfig(curriculum=True)
    assert [stages_by_step(epochs, epochs, data) for epochs in range(1, 7)] == [True, True, False, False, False,
                                                                                 False]
    # --max-steps ending in the first or second of three epochs: 'all' (epoch 2) is never started.
    assert stages_by_step(3, 1, data) and stages_by_step(3, 2, data) and not stages_by_step(3, 3, data)
    assert not stages_by_step(1, 1, DataConfig(curriculum=False, progressive_quality=False))
    # The curriculum off, the threshold on: by step when by epoch it never reaches q_end.
    threshold_only = DataConfig(curriculum=False)
    assert [stages_by_step(epochs, epochs, threshold_only) for epochs in (1, 2, 3)] == [True, False, False]
    assert stages_by_step(3, 2, threshold_only) and not stages_by_step(3, 3, threshold_only)
    assert not stages_by_step(1, 1, DataConfig(curriculum=False, quality_start=0.5, quality_end=0.5))
    late = DataConfig(curriculum=True, curriculum_stages=[CurriculumStage(0.3, "easy"), CurriculumStage(0.9, "medium"),
                                         CurriculumStage(1.0, "all")])
    assert stages_by_step(6, 6, late)  # epoch 5 (progress 0.83) would still be medium


def test_stage_thresholds_rise_from_start_to_where_the_last_stage_starts():
    assert stage_thresholds(DataConfig(curriculum=True)) == [0.5, 0.625, 0.75]  # those of a three-epoch run
    assert stage_thresholds(DataConfig(curriculum=True, quality_start=0.4, quality_end=0.8)) == [0.4, 0.6, 0.8]
    two = DataConfig(curriculum=True, curriculum_stages=[CurriculumStage(0.5, "medium"), CurriculumStage(1.0, "all")])
    assert stage_thresholds(two) == [0.5, 0.75]
    assert stage_thresholds(DataConfig(curriculum=True, progressive_quality=False)) == [0.0, 0.0, 0.0]


def test_the_last_stage_must_be_all_and_start_before_the_end(tmp_path, capsys):
    with pytest.raises(UserError, match="end with an 'all' stage"):
        DataConfig(curriculum=True, curriculum_stages=[CurriculumStage(0.5, "easy"), CurriculumStage(1.0, "medium")])
    with pytest.raises(UserError, match="starts before 1.0"):
        DataConfig(curriculum=True, curriculum_stages=[CurriculumStage(1.0, "medium"), CurriculumStage(1.5, "all")])
    stages = '[{"until": 0.5, "level": "easy"}, {"until": 1.0, "level": "medium"}]'
    assert main(["train", "--plan", "--set", "data.curriculum=true", "--set", f"data.curriculum_stages={stages}",
                 "--output-dir", str(tmp_path / "never")]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_a_class_that_no_threshold_admits_is_warned_about():
    difficulty = np.array([0, 0, 1, 2, 2], dtype=np.int8)
    strict = [EpochSelection(0, "easy", 0.5, np.array([0, 1])), EpochSelection(0, "all", 0.75, np.array([0, 1, 2]))]
    message = unseen_classes(difficulty, strict)
    assert message.startswith("the hard (2) recipes of the training split are never trained on")
    assert "up to 0.75" in message
    assert unseen_classes(difficulty, strict + [EpochSelection(0, "all", 0.5, np.array([0, 3]))]) is None


def test_a_run_whose_thresholds_exclude_the_hard_recipes_is_warned_about(tmp_path, small_data):  # noqa: F811
    # The 5 hard recipes of the training split have quality 0.65 to 0.87; 'all' at >= 0.90 holds 2 others.
    config = small_config(tmp_path / "run", small_data, **{
        "optim.epochs": 1, "optim.batch_size": 2, "data.quality_end": 0.9})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        planned = plan_only(config, tmp_path / "scratch")
    assert [row["examples"] for row in planned.rows()] == [15, 23, 2]
    assert any(str(w.message).startswith("the hard (5) recipes of the training split are never trained on")
               for w in caught)


def test_segment_batches_fill_each_share_from_its_own_selection():
    rows = np.arange(0, 80, 2)  # the pool: 40 recipes, table rows 0, 2, ..., 78
    lengths = np.random.default_rng(0).integers(20, 200, size=40)
    small = EpochSelection(0, "easy", 0.5, rows[:5])  # 5 recipes: 3 batches of 2 per pass
    large = EpochSelection(0, "all", 0.75, rows[10:40])
    plan = segment_batches(lengths, rows, [(small, 7), (large, 4)], seed=3, epoch=0, batch_size=2, max_tokens=None)
    assert len(plan) == 11
    easy, rest = plan[:7], plan[7:]
    assert {p for b in easy for p in b} == set(range(5))  # every one of them, over three passes
    assert all(10 <= p < 40 for b in rest for p in b) and all(len(b) == 2 for b in rest)
    assert plan == segment_batches(lengths, rows, [(small, 7), (large, 4)], 3, 0, 2, None)
    # Two ranks: each gets every share; together they cover the pass without overlap.
    ranks = [segment_batches(lengths, rows, [(large, 4)], 3, 0, 2, None, rank, 2) for rank in (0, 1)]
    assert [len(r) for r in ranks] == [4, 4]
    assert not {p for b in ranks[0] for p in b} & {p for b in ranks[1] for p in b}
    with pytest.raises(ValueError, match="outside the epoch's pool"):
        segment_batches(lengths, rows, [(EpochSelection(0, "all", 0.5, np.array([1])), 1)], 3, 0, 2, None)


def _digest(planned: RunPlan, epochs: int) -> str:
    plans = [[[int(planned.epoch_data(e).examples.index[p]) for p in batch] for batch in planned.batches(e)]
             for e in range(epochs)]
    return hashlib.sha256(json.dumps(plans).encode()).hexdigest()[:16]


@pytest.mark.parametrize(("epochs", "max_tokens", "steps", "digest"), [
    (3, None, [8, 15, 9], "44e9c680eda6b298"), (4, 300, [5, 4, 9, 6], "85461a88903871f3")])
def test_runs_with_enough_epochs_keep_their_batches(tmp_path, small_data, epochs, max_tokens, steps, digest):  # noqa: F811
    """The same batches (table rows, in order) as before stages by step existed (commit b7903af)."""
    config = small_config(tmp_path / "run", small_data, **{
        "optim.epochs": epochs, "optim.batch_size": 2, "optim.max_tokens": max_tokens})
    planned = plan_only(config, tmp_path / "scratch", examples=True)
    assert not planned.by_step
    assert planned.steps_per_epoch == steps and _digest(planned, epochs) == digest


def test_one_epoch_reaches_every_recipe_class(tmp_path, small_data):  # noqa: F811
    run = tmp_path / "run"
    settings = {"optim.epochs": 1, "optim.batch_size": 2, "optim.gradient_accumulation_steps": 2}
    result = run_training(small_config(run, small_data, **settings))
    assert result.steps == 11
    logged = [m for m in metrics_of(run) if "curriculum/difficulty_level" in m]
    # Logged where each stage starts: easy for steps 1-3, medium 4-7, all 8-11.
    assert [(m["step"], m["curriculum/difficulty_level"], m["curriculum/quality_threshold"],
             m["curriculum/selected_examples"]) for m in logged] == [(0, 0, 0.5, 15), (3, 1, 0.625, 30),
                                                                      (7, 2, 0.75, 17)]
    config = small_config(tmp_path / "plan", small_data, **settings)
    planned = plan_only(config, tmp_path / "scratch", examples=True)
    examples, difficulty = planned.epoch_data(0).examples, planned.builder.table.difficulty
    classes = [{int(difficulty[examples.index[p]]) for p in batch} for batch in planned.batches(0)]
    assert len(classes) == 22 and set().union(*classes) == {0, 1, 2}  # hard ones too
    assert set().union(*classes[:6]) == {0} and 2 in set().union(*classes[14:])  # easy first, hard at the end


def test_one_epoch_with_the_defaults_trains_the_rising_threshold(tmp_path, small_data):  # noqa: F811
    """Today's defaults (curriculum off, progressive threshold on): one epoch over every recipe
    at quality >= 0.50, whose last 40 % of steps draw only from those >= 0.75."""
    settings = {"optim.epochs": 1, "optim.batch_size": 2, "optim.gradient_accumulation_steps": 2,
                "data.curriculum": False}
    config = small_config(tmp_path / "plan", small_data, **settings)
    planned = plan_only(config, tmp_path / "scratch", examples=True)
    assert planned.by_step
    assert [(s.level, s.threshold) for s in planned.segments] == [("all", 0.5), ("all", 0.625),
                                                                          ("all", 0.75)]
    assert planned.describe().startswith("quality threshold by optimizer step (1 epoch, 11 optimizer steps "
                                                  "in all): quality >= 0.5 steps 1-3, quality >= 0.625 steps 4-7")
    config = small_config(tmp_path / "plan2", small_data, **settings, **{"optim.max_steps": 5})
    stopped = plan_only(config, tmp_path / "scratch2")
    assert stopped.describe().startswith(
        "quality threshold by optimizer step (5 of the 11 optimizer steps planned over 1 epoch: --max-steps stops "
        "training in epoch 0): ")
    examples, quality = planned.epoch_data(0).examples, planned.builder.table.quality
    batches = planned.batches(0)
    last = planned.segments[-1]
    tail = batches[last.first_step * 2:]  # two batches per optimizer step
    assert tail and all(quality[examples.index[p]] >= 0.75 - 1e-6 for batch in tail for p in batch)
    assert min(quality[examples.index[p]] for batch in batches for p in batch) < 0.625  # the start trains wider


def test_plan_shows_the_stages_by_step(tmp_path, small_data, capsys):  # noqa: F811
    assert main(["train", "--data", str(small_data), "--plan", "--set", "data.curriculum=true", "--epochs", "1",
                 "--batch-size", "2",
                 "--output-dir", str(tmp_path / "never")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("--model tiny: ")  # the tiny model's own settings, said first
    lines = lines[1:]
    assert lines[0] == ("curriculum stages by optimizer step (1 epoch, 22 optimizer steps in all): easy steps 1-7, "
                        "medium steps 8-13, all steps 14-22")
    assert [line.split() for line in lines[2:5]] == [["0", "1-7", "easy", "0.500", "15", "7"],
                                                     ["0", "8-13", "medium", "0.625", "30", "6"],
                                                     ["0", "14-22", "all", "0.750", "17", "9"]]
    assert lines[-1].startswith("total 22 optimizer steps")
    # Six epochs cut by --max-steps in the first: stages by step over the 20 steps that train.
    assert main(["train", "--data", str(small_data), "--plan", "--set", "data.curriculum=true", "--epochs", "6",
                 "--batch-size", "2",
                 "--max-steps", "20", "--output-dir", str(tmp_path / "never")]) == 0
    out = capsys.readouterr().out
    assert "easy steps 1-6, medium steps 7-12, all steps 13-20" in out
    assert "(20 of the " in out
    assert " optimizer steps planned over 6 epochs: --max-steps stops training in epoch 0)" in out
    assert "--max-steps 20: training stops in epoch 0, after 20 of its 22 steps" in out


@pytest.mark.parametrize(("settings", "at_setup"), [
    ({"optim.epochs": 6, "optim.max_steps": 3}, []),  # --max-steps makes it by step: counted, not built
    ({"optim.epochs": 1}, []),
    ({"optim.epochs": 2, "optim.max_tokens": 300}, [1, 0])])  # built to count; epoch 0 kept for the loop
def test_setup_builds_each_epoch_once(tmp_path, small_data, monkeypatch, settings, at_setup):  # noqa: F811
    """The schedule's step counts need no epoch built without a token budget; with one, the
    epoch built to count is the one the loop trains on (no epoch built twice)."""
    epochs_built = []
    original = EpochBuilder.build
    monkeypatch.setattr(EpochBuilder, "build", lambda self, epoch, selection=None: (
        epochs_built.append(epoch), original(self, epoch, selection))[1])
    run, _ = built(small_config(tmp_path / "run", small_data, **{"optim.batch_size": 2, **settings}))
    assert run.plan.by_step and epochs_built == at_setup
    run.plan.epoch_data(0)
    assert epochs_built == (at_setup or [0])
    run.lock.release()


def test_every_rank_gets_each_segments_share(tmp_path, small_data):  # noqa: F811
    config = small_config(tmp_path / "run", small_data, **{"optim.epochs": 2, "optim.batch_size": 2})
    planned = plan_only(config, tmp_path / "scratch", examples=True)
    plans = [RunPlan(planned.builder, planned.config, rank, 2) for rank in (0, 1)]
    # 44 recipes: 22 batches, 11 per rank and epoch; the stages at steps 7 and 13 of the 22.
    assert plans[0].segments == plans[1].segments and plans[0].steps_per_epoch == [11, 11]
    assert [(s.level, s.first_step, s.end_step) for s in plans[0].segments] == [
        ("easy", 0, 7), ("medium", 7, 11), ("medium", 11, 13), ("all", 13, 22)]
    difficulty = planned.builder.table.difficulty
    for epoch in (0, 1):
        examples = plans[0].epoch_data(epoch).examples
        ranks = [plan.batches(epoch) for plan in plans]
        assert [len(batches) for batches in ranks] == [11, 11]
        first = {int(difficulty[examples.index[p]]) for batches in ranks for b in batches[:2] for p in b}
        assert first == ({0} if epoch == 0 else {0, 1})  # easy, then medium (easy included)


class _Crash(Exception):
    """Stands for a process dying in the middle of training."""


def test_resume_across_stage_boundaries_is_exact(tmp_path, small_data, monkeypatch):  # noqa: F811
    """One epoch (stages at steps 1-3, 4-7, 8-11) stopped twice and resumed: from a checkpoint on
    a stage boundary (step 3) and from one inside the medium stage (step 6); the same losses,
    curriculum records and final adapter as an uninterrupted run."""
    overrides = {"optim.epochs": 1, "optim.batch_size": 2, "optim.gradient_accumulation_steps": 2,
                 "checkpoint.save_steps": 3}
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    run_training(small_config(whole, small_data, **overrides))
    real_step = trainer_module.optimizer_step
    for crash_at in (4, 8):
        def crash(run, state, micro_batches, stop_request=None, crash_at=crash_at):
            if state.step == crash_at:
                raise _Crash()
            return real_step(run, state, micro_batches, stop_request)

        monkeypatch.setattr(trainer_module, "optimizer_step", crash)
        with pytest.raises(_Crash):
            run_training(small_config(parts, small_data, **overrides, **{"checkpoint.resume": "auto"}))
    monkeypatch.setattr(trainer_module, "optimizer_step", real_step)
    assert sorted(p.name for p in (parts / "checkpoints").glob("step-*"))[-1] == "step-00000006"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_training(small_config(parts, small_data, **overrides, **{"checkpoint.resume": "auto"}))

    def logged(run):
        return [(m["step"], m.get("train/loss"), m.get("train/learning_rate"), m.get("curriculum/difficulty_level"))
                for m in metrics_of(run) if "val_loss" not in m]

    assert logged(parts) == logged(whole)
    assert [m[3] for m in logged(whole) if m[3] is not None] == [0, 1, 2]
    a = load_file(str(whole / "final" / "adapter_model.safetensors"))
    b = load_file(str(parts / "final" / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=0)


def test_sigkill_and_resume_with_stages_by_step(tmp_path, small_data):  # noqa: F811
    """The kill/resume harness on one epoch (22 steps; stages at 1-7, 8-13, 14-22)."""
    result = kill_and_resume(small_data, tmp_path, kills=1, seed=1, epochs=1)
    # Killed once step 5 is logged (plus up to 0.1 s): the resumed run crosses the stage boundaries.
    assert result["steps"] == 22 and [kill["after_step"] for kill in result["kills"]] == [5]
    assert result["temporary_folders_left"] == []


def test_a_run_checkpointed_before_threshold_by_step_resumes_by_epoch(tmp_path, small_data):  # noqa: F811
    """Its batches continue as planned: a one-epoch run from before the setting raised its
    threshold by epoch (stayed at 0.50), so it resumes so; a run from after it keeps by step."""
    settings = {"optim.epochs": 1, "optim.batch_size": 2, "data.curriculum": False, "checkpoint.save_steps": 3,
                "optim.max_steps": 3}
    run = tmp_path / "run"
    run_training(small_config(run, small_data, **settings))
    resumed, _ = built(small_config(run, small_data, **{**settings, "checkpoint.resume": "auto"}))
    assert resumed.plan.by_step and resumed.config.data.threshold_by_step
    resumed.lock.release()
    # The same checkpoint as an older chef-genius wrote it: no threshold_by_step in its fingerprints.
    for path in [*run.glob("checkpoints/step-*/trainer_state.json"), run / "fingerprint.json"]:
        saved = json.loads(path.read_text())
        fingerprint = saved.get("fingerprint", saved)
        del fingerprint["config"]["data"]["threshold_by_step"]
        path.write_text(json.dumps(saved))
        if path.name == "trainer_state.json":
            write_manifest(path.parent)  # the edited checkpoint stays complete
    old, old_state = built(small_config(run, small_data, **{**settings, "checkpoint.resume": "auto"}))
    assert not old.plan.by_step and not old.config.data.threshold_by_step
    assert old_state.step == 3
    old.lock.release()
