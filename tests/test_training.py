"""The training engine on tiny models, on CPU: LoRA, overfitting, noise cadence, exact resume,
causal models, bad steps, sinks and CLI errors."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from chef_genius.cli import main
from chef_genius.config import build_config
from chef_genius.errors import UserError
from chef_genius.families import CAUSAL, SEQ2SEQ
from chef_genius.model.ranks import Ranks
from chef_genius.prepare import PrepareOptions, prepare
from chef_genius.sample import sample_path
from chef_genius.training import trainer as trainer_module
from chef_genius.training.run import Run, build_run, start_state
from chef_genius.training.run_plan import RunPlan
from chef_genius.training.trainer import TrainingStopped, optimizer_step, run_training, train


@pytest.fixture(scope="module")
def small_data(tmp_path_factory) -> Path:
    """60 bundled recipes, prepared with a 20 % validation split."""
    folder = tmp_path_factory.mktemp("data")
    recipes = json.loads(sample_path().read_text(encoding="utf-8"))[:60]
    source = folder / "recipes.json"
    source.write_text(json.dumps(recipes))
    prepare([source], folder / "prepared", PrepareOptions(val_fraction=0.2, test_fraction=0.0, progress=False,
                                                          workers=0))
    return folder / "prepared"


# Every improvement on, as flags (some are off by default since the ablation study).
ALL_ON_FLAGS = ("--set", "data.curriculum=true", "--augmentation-prob", "0.3", "--label-smoothing", "0.1",
                "--set", "gradient_noise.enabled=true")


def small_config(out: Path, data: Path, **overrides):
    settings = {
        "output_dir": str(out), "data.path": str(data), "data.num_workers": 0,
        "model.max_target_tokens": 64, "model.max_source_tokens": 32,
        "optim.epochs": 2, "optim.batch_size": 8, "optim.gradient_accumulation_steps": 1,
        "eval.eval_steps": 1000, "checkpoint.save_steps": 1000, "logging.report_to": ["jsonl"],
        "logging.log_every": 1,
        # Every improvement on (some are off by default since the ablation study), so that the
        # tests built on this config exercise each one.
        "data.curriculum": True, "data.augmentation_prob": 0.3, "gradient_noise.enabled": True,
        "optim.label_smoothing": 0.1,
    }
    settings.update(overrides)
    return build_config(None, settings)


def built(config) -> tuple[Run, object]:
    """The run and the state it starts from, as `run_training` makes them (its folder's lock is
    held until the test's process ends)."""
    run = build_run(config, Ranks.start())
    return run, start_state(run)


def metrics_of(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_lora_trainable_count_is_exact(tmp_path, small_data):
    run, _ = built(small_config(tmp_path / "run", small_data, **{"lora.r": 4, "lora.target_modules": ["q", "v"]}))
    trainable = sum(p.numel() for p in run.model.trainable)
    # 6 attention blocks (2 encoder self, 2 decoder self, 2 cross) x (q, v) x (A: r x 64 + B: 64 x r)
    assert trainable == 6 * 2 * (4 * 64 + 64 * 4)
    assert all("lora_" in name for name, p in run.model.forward.named_parameters() if p.requires_grad)


def test_full_fine_tuning_trains_everything(tmp_path, small_data):
    run, _ = built(small_config(tmp_path / "run", small_data, **{"lora.enabled": False}))
    assert all(p.requires_grad for p in run.model.forward.parameters())


def test_overfitting_one_batch_lowers_the_loss(tmp_path, small_data):
    run, state = built(small_config(tmp_path / "run", small_data, **{
        "gradient_noise.enabled": False, "optim.learning_rate": 1e-2, "schedule.cosine": False,
        "schedule.warmup_steps": 0, "lora.dropout": 0.0}))
    run.model.saved.get_base_model().config.dropout_rate = 0.0  # memorizing: no dropout
    for module in run.model.saved.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    run = dataclasses.replace(run, schedule=dataclasses.replace(run.schedule, total_steps=10_000))
    batch = trainer_module.Collator(run.plan.epoch_data(0).examples, run.pad_id, SEQ2SEQ)(list(range(8)))
    losses = [optimizer_step(run, state, [batch])["train/loss"] for _ in range(40)]
    assert losses[-1] < 0.6 * losses[0]


@pytest.mark.parametrize("enabled", [True, False])
def test_noise_is_added_once_per_optimizer_step_with_accumulation_4(tmp_path, small_data, monkeypatch, enabled):
    calls = []
    real = trainer_module.add_gradient_noise

    def counting(params, step, *args, **kwargs):
        calls.append(step)
        return real(params, step, *args, **kwargs)

    monkeypatch.setattr(trainer_module, "add_gradient_noise", counting)
    config = small_config(tmp_path / "run", small_data, **{
        "optim.gradient_accumulation_steps": 4, "optim.batch_size": 2, "gradient_noise.enabled": enabled})
    run, state = built(config)
    micro_batches = [len(run.plan.batches(epoch)) for epoch in range(2)]
    result = train(run, state)
    assert result.steps == sum(math.ceil(n / 4) for n in micro_batches) < sum(micro_batches)
    steps = [m for m in metrics_of(tmp_path / "run") if "train/loss" in m]
    assert len(steps) == result.steps
    if enabled:
        assert calls == list(range(result.steps))  # once per optimizer step, never per micro-batch
        assert all(m["train/noise_to_grad_ratio"] > 0 for m in steps)
    else:
        assert calls == []
        assert all(m["train/noise_to_grad_ratio"] == 0 for m in steps)


class _Crash(Exception):
    """Stands for a process dying in the middle of training."""


def test_resume_gives_the_same_losses_and_weights(tmp_path, small_data, monkeypatch):
    """Stopped mid-epoch (curriculum, templates, augmentation and noise all on) and resumed: the
    same losses, learning rates and final adapter as an uninterrupted run."""
    overrides = {"checkpoint.save_steps": 3, "optim.batch_size": 2, "optim.gradient_accumulation_steps": 2,
                 "optim.epochs": 3}
    uninterrupted = tmp_path / "whole"
    run_training(small_config(uninterrupted, small_data, **overrides))
    total = json.loads((uninterrupted / "run_summary.json").read_text())["steps"]
    crash_at = 3 * (total // 6) + 1  # one step past a checkpoint, inside the run
    assert 3 < crash_at < total

    interrupted = tmp_path / "parts"
    real_step = trainer_module.optimizer_step

    def crash(run, state, micro_batches, stop_request=None):
        if state.step == crash_at:
            raise _Crash()
        return real_step(run, state, micro_batches, stop_request)

    monkeypatch.setattr(trainer_module, "optimizer_step", crash)
    with pytest.raises(_Crash):
        run_training(small_config(interrupted, small_data, **overrides))
    monkeypatch.setattr(trainer_module, "optimizer_step", real_step)
    assert sorted(p.name for p in (interrupted / "checkpoints").glob("step-*"))[-1] == f"step-{crash_at - 1:08d}"
    run_training(small_config(interrupted, small_data, **overrides, **{"checkpoint.resume": "auto"}))

    def logged(run):
        return [(m["step"], m.get("train/loss"), m.get("train/learning_rate"), m.get("curriculum/selected_examples"))
                for m in metrics_of(run) if "val_loss" not in m]

    assert logged(interrupted) == logged(uninterrupted)  # no step lost, none logged twice
    whole = load_file(str(uninterrupted / "final" / "adapter_model.safetensors"))
    parts = load_file(str(interrupted / "final" / "adapter_model.safetensors"))
    assert whole.keys() == parts.keys()
    for name in whole:
        torch.testing.assert_close(parts[name], whole[name], rtol=0, atol=0)


def test_run_folder_contents_and_metric_names(tmp_path, small_data):
    run = tmp_path / "run"
    result = run_training(small_config(run, small_data, **{"eval.eval_steps": 4, "checkpoint.save_steps": 4}))
    assert (run / "config.yaml").exists() and (run / "run_summary.json").exists()
    setup = json.loads((run / "run_summary.json").read_text())["setup"]  # seconds and memory of each part
    assert {"data", "model", "examples", "schedule", "epoch_0_build", "epoch_0_plan", "first_step"} <= setup.keys()
    if sys.platform.startswith("linux"):  # resident memory after each part, from /proc
        rss = setup["rss_mib"]
        assert {"data", "model", "examples", "schedule", "epoch_0_build", "first_step"} <= rss.keys()
        assert all(isinstance(v, int) and 50 < v < 20_000 for v in rss.values())
        # The model loads after the data side's tables; in a long test process the garbage collector
        # may hand back a little in between (881 MiB after 901 MiB was seen in the whole suite).
        assert rss["model"] >= 0.9 * rss["data"]
    assert (run / "final" / "adapter_model.safetensors").exists()
    assert (run / "final" / "adapter_config.json").exists() and (run / "final" / "README.md").exists()
    from peft import PeftModel
    from transformers import AutoModelForSeq2SeqLM

    reloaded = PeftModel.from_pretrained(AutoModelForSeq2SeqLM.from_pretrained(run / "base_model"), run / "final")
    assert sum(p.numel() for n, p in reloaded.named_parameters() if "lora_" in n) > 0
    names = set().union(*(m.keys() for m in metrics_of(run)))
    assert {"train/loss", "train/nll", "train/learning_rate", "train/tokens_per_second", "train/grad_norm",
            "train/noise_to_grad_ratio", "val_loss", "val_perplexity"} <= names
    vals = [m for m in metrics_of(run) if "val_loss" in m]
    assert all(m["val_perplexity"] == pytest.approx(math.exp(m["val_loss"])) for m in vals)
    assert result.best_val_loss == min(m["val_loss"] for m in vals)
    kept = sorted(p.name for p in (run / "checkpoints").glob("step-*"))
    assert f"step-{result.steps:08d}" in kept and len(kept) <= 3  # last 2 plus the best


def test_label_smoothing_is_in_the_training_loss_not_the_nll(tmp_path, small_data):
    run = tmp_path / "run"
    run_training(small_config(run, small_data, **{"optim.epochs": 1, "optim.label_smoothing": 0.2}))
    first = [m for m in metrics_of(run) if "train/loss" in m][0]
    assert first["train/loss"] != pytest.approx(first["train/nll"], rel=1e-3)


def test_causal_model_trains_with_the_prompt_masked(tmp_path, small_data):
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    from tests.harness.byte_level import train_byte_level_tokenizer

    texts = [r["title"] + " " + " ".join(r["steps"]) for r in json.loads(sample_path().read_text())[:100]]
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=train_byte_level_tokenizer(texts, 600),
                                        eos_token="<|endoftext|>", pad_token="<pad>")
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=256,
                                       eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
    folder = tmp_path / "gpt2"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    run, state = built(small_config(tmp_path / "run", small_data, **{"model.name": str(folder)}))
    assert run.family is CAUSAL
    batch = trainer_module.Collator(run.plan.epoch_data(0).examples, run.pad_id, CAUSAL)([0, 1])
    prompt_length = len(run.plan.epoch_data(0).examples.source(0))
    assert (batch["labels"][0, :prompt_length] == -100).all()
    recipe_start = slice(prompt_length, prompt_length + 3)
    assert (batch["labels"][0, recipe_start] == batch["input_ids"][0, recipe_start]).all()
    result = train(run, state)
    assert result.steps > 0 and math.isfinite(result.best_val_loss)
    assert (tmp_path / "run" / "final" / "adapter_config.json").exists()


def test_non_finite_losses_are_skipped_then_stop_training(tmp_path, small_data, monkeypatch):
    real_loss = Run.loss

    def nan_loss(self, batch, eps):
        smoothed, nll, n = real_loss(self, batch, eps)
        return smoothed * float("nan"), nll, n

    monkeypatch.setattr(Run, "loss", nan_loss)
    run, state = built(small_config(tmp_path / "run", small_data, **{"optim.batch_size": 2, "optim.epochs": 3}))
    before = {n: p.detach().clone() for n, p in run.model.forward.named_parameters() if p.requires_grad}
    with pytest.raises(TrainingStopped, match="10 non-finite steps in a row"):
        train(run, state)
    assert state.skipped_steps == 10 and state.step == 0
    for name, param in run.model.forward.named_parameters():
        if param.requires_grad:
            torch.testing.assert_close(param.detach(), before[name])  # no update was applied


def test_cli_errors_are_one_line_with_exit_code_2(tmp_path, capsys, small_data):
    assert main(["train", "--data", str(tmp_path / "nowhere"), "--output-dir", str(tmp_path / "r1")]) == 2
    assert "not a prepared dataset" in capsys.readouterr().err
    assert main(["train", "--data", str(small_data), "--model", str(tmp_path / "no-model"),
                 "--output-dir", str(tmp_path / "r2")]) == 2
    err = capsys.readouterr().err
    assert "cannot load model" in err and err.count("\n") == 1


def test_existing_checkpoints_need_resume(tmp_path, small_data):
    config = small_config(tmp_path / "run", small_data, **{"optim.epochs": 1})
    run_training(config)
    assert main(["train", "--data", str(small_data), "--output-dir", str(tmp_path / "run")]) == 2


def test_wandb_offline_sink_needs_no_key(tmp_path, small_data, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    run = tmp_path / "run"
    run_training(small_config(run, small_data, **{"optim.epochs": 1, "logging.report_to": ["jsonl", "wandb"]}))
    assert list((run / "wandb").glob("offline-run-*"))


def test_ddp_on_cpu_with_two_processes(tmp_path, small_data):
    """torchrun with 2 ranks (gloo): each rank trains on its share, the run is saved once."""
    import os
    import shutil
    import subprocess
    import sys

    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    if torchrun is None:
        pytest.skip("torchrun not installed")
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}  # CPU ranks, even on a GPU box
    command = [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "chef_genius", "train",
               "--data", str(small_data), "--output-dir", str(run), "--epochs", "1", "--batch-size", "4",
               "--report-to", "jsonl", "--set", "model.max_target_tokens=64", "--set", "model.max_source_tokens=32",
               "--set", "data.num_workers=0",
               "--set", "logging.log_every=1", *ALL_ON_FLAGS]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("trained ") == 1  # only rank 0 reports
    summary = json.loads((run / "run_summary.json").read_text())
    single, _ = built(small_config(tmp_path / "single", small_data, **{"optim.epochs": 1, "optim.batch_size": 4}))
    assert summary["steps"] == len(single.plan.batches(0)) // 2  # half the batches per rank
    # The logged token counts are those of both ranks' batches (the throughput of the whole run);
    # one epoch: each rank's batches follow the curriculum stages by step.
    lengths = single.plan.epoch_data(0).examples.lengths()
    plans = [RunPlan(single.plan.builder, single.config, rank, 2) for rank in (0, 1)]
    expected = sum(int(lengths[i]) for plan in plans for batch in plan.batches(0) for i in batch)
    logged = [m["train/tokens_per_step"] for m in metrics_of(run) if "train/tokens_per_step" in m]
    assert len(logged) == summary["steps"] and sum(logged) == expected
    last = sorted((run / "checkpoints").glob("step-*"))[-1]
    assert (last / "rng-rank0.safetensors").exists() and (last / "rng-rank1.safetensors").exists()


def test_regional_compile_marks_each_repeated_block_only(tmp_path, small_data):  # noqa: F811
    from chef_genius.model.loading import compile_blocks

    run, _ = built(small_config(tmp_path / "run", small_data))
    model = run.model.saved
    assert compile_blocks(model) == 4  # 2 encoder + 2 decoder T5Blocks; their mixed sublayer lists are left
    blocks = [m for m in model.modules() if type(m).__name__ == "T5Block"]
    assert len(blocks) == 4 and all(getattr(b, "_compiled_call_impl", None) is not None for b in blocks)


def _torchrun(run: Path, data: Path, *extra: str) -> None:
    import os
    import shutil
    import subprocess
    import sys

    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    if torchrun is None:
        pytest.skip("torchrun not installed")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}  # CPU ranks, even on a GPU box
    command = [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "chef_genius", "train",
               "--data", str(data), "--output-dir", str(run), "--batch-size", "4", "--disable-lora",
               "--report-to", "jsonl", "--set", "model.max_target_tokens=48", "--set", "data.num_workers=0",
               "--set", "checkpoint.save_steps=3", "--set", "eval.generate_samples=false", *ALL_ON_FLAGS, *extra]
    result = subprocess.run(command, capture_output=True, text=True, timeout=400, env=env)
    assert result.returncode == 0, result.stderr[-2000:]


def test_fsdp_trains_like_ddp_and_resumes(tmp_path, small_data):
    """Full fine-tuning sharded over 2 CPU ranks (gloo) ends with the weights of the same run
    under DDP (gradient noise on, accumulation 2), writes checkpoints in the unsharded layout,
    and resumes from them."""
    ddp, fsdp = tmp_path / "ddp", tmp_path / "fsdp"
    common = ("--epochs", "1", "--gradient-accumulation-steps", "2")
    _torchrun(ddp, small_data, *common)
    _torchrun(fsdp, small_data, *common, "--fsdp")
    a, b = load_file(str(ddp / "final" / "model.safetensors")), load_file(str(fsdp / "final" / "model.safetensors"))
    assert a.keys() == b.keys() and len(a) > 10
    for name in a:
        # atol 1 % of one Adam step (lr 1e-2): on a near-zero gradient element Adam's first step
        # g / (|g| + 1e-8) turns a rounding difference in the reduction into ~1e-4 of the step.
        torch.testing.assert_close(b[name], a[name], rtol=1e-4, atol=1e-4, msg=name)
    first = json.loads((fsdp / "run_summary.json").read_text())["steps"]
    _torchrun(fsdp, small_data, "--epochs", "2", "--gradient-accumulation-steps", "2", "--fsdp", "--resume", "auto",
              "--resume-changed")  # more epochs: another schedule
    assert json.loads((fsdp / "run_summary.json").read_text())["steps"] == 2 * first
    steps = [m["step"] for m in metrics_of(fsdp) if "train/loss" in m]
    assert steps == sorted(set(steps))  # no step logged twice across the resume


def test_fsdp_refuses_lora(tmp_path, small_data, capsys):
    with pytest.raises(UserError, match="--disable-lora"):
        small_config(tmp_path / "run", small_data, **{"model.fsdp": True})
    assert main(["train", "--fsdp", "--data", str(small_data), "--output-dir", str(tmp_path / "cli")]) == 2
    assert capsys.readouterr().err.count("\n") == 1  # one line, before any model is loaded
    assert not (tmp_path / "cli").exists()


def test_the_run_is_one_frozen_value_of_its_parts(tmp_path, small_data):
    """`build_run` returns every part at once (no half-built object); training changes the state,
    never the run."""
    run, state = built(small_config(tmp_path / "run", small_data, **{"optim.epochs": 1}))
    names = {f.name for f in dataclasses.fields(run)}
    assert {"splits", "model", "family", "optimizer", "schedule", "plan", "checkpoints", "tracker"} <= names
    assert all(getattr(run, name) is not None for name in names - {"graphed", "resume_from", "decoder_start_id"})
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.schedule = None
    before = dataclasses.astuple(run.schedule)
    result = train(run, state)
    assert state.step == result.steps > 0 and dataclasses.astuple(run.schedule) == before
    run.lock.release()
