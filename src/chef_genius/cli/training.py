"""`train`: the config from --config, flags and --set; --print-config, --plan, or the training run."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from chef_genius.cli.environment import _quiet_libraries
from chef_genius.errors import UserError

EXIT_TRAINING_STOPPED = 3

TINY_NOTE = """Note: the `tiny` model starts from random weights and trains for a minute on the CPU: the
recipes above show every part of chef-genius working, not a recipe model. For a real one, see
docs/quality.md: SmolLM2-135M-Instruct fine-tuned with
  chef-genius train --model SmolLM2-135M-Instruct.Q4_1.gguf --data prepared/"""


def _train(args: argparse.Namespace) -> int:
    import yaml

    from chef_genius.config import FLAGS, build_config
    from chef_genius.config_help import commented_yaml

    overrides = {key: getattr(args, key) for key, _ in FLAGS.values() if getattr(args, key) is not None}
    for assignment in args.set:
        key, sep, value = assignment.partition("=")
        if not sep or not key:
            raise UserError(f"--set: '{assignment}' is not KEY=VALUE")
        try:
            overrides[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise UserError(f"--set {key}: cannot read value '{value}'") from None
    config = build_config(args.config, overrides)
    if args.print_config:
        print(commented_yaml(config), end="")
        return 0
    if config.model.name == "tiny":
        from chef_genius.config import tiny_settings

        applied = tiny_settings(config)
        if applied:
            print(f"--model tiny: a small random T5 for a quick CPU run, with its own settings (flags, --set and "
                  f"--config override them): {' '.join(applied)}", flush=True)
    _quiet_libraries()
    if args.plan:
        return _print_plan(config)
    from chef_genius.errors import TrainingStopped
    from chef_genius.training.interrupt import TrainingInterrupted
    from chef_genius.training.trainer import run_training

    try:
        result = run_training(config)
    except TrainingInterrupted as error:
        if os.environ.get("RANK", "0") == "0":
            print(f"chef-genius: {error}", file=sys.stderr)
        return 128 + error.signal_number  # the shell's code for a signal: 130 Ctrl-C, 143 SIGTERM
    except TrainingStopped as error:
        print(f"chef-genius: training stopped: {error}", file=sys.stderr)
        return EXIT_TRAINING_STOPPED
    if os.environ.get("RANK", "0") != "0":
        return 0
    from chef_genius.report import write_report

    write_report(config.output_dir)
    if config.model.name == "tiny" and result.last_samples:
        print(result.last_samples + "\n\n" + TINY_NOTE)
    print(f"trained {result.steps} steps in {result.seconds:.0f} s; best val_loss "
          f"{result.best_val_loss if result.best_val_loss is None else round(result.best_val_loss, 4)}"
          f"{' (stopped early)' if result.stopped_early else ''}\nadapter/model: {result.final_dir} (weights of "
          f"{result.final_weights})\n"
          f"best checkpoint: {result.best_checkpoint}\nreport: {Path(config.output_dir) / 'report.html'}")
    return 0


def _print_plan(config) -> int:
    import tempfile

    from chef_genius.training.parts import plan_only

    with tempfile.TemporaryDirectory() as scratch:
        plan = plan_only(config, Path(scratch))
    rows = plan.rows()
    if plan.by_step:
        print(plan.describe())
    print(f"{'epoch':>5}  {'steps':<13} {'difficulty':<10} {'quality >=':>10} {'examples':>9} {'optimizer steps':>15}")
    for row in rows:
        note = "  (relaxed from {} >= {:.2f})".format(*row["relaxed_from"]) if row["relaxed_from"] else ""
        steps = f"{row['first_step']:,}-{row['last_step']:,}"
        print(f"{row['epoch']:>5}  {steps:<13} {row['difficulty']:<10} {row['quality_threshold']:>10.3f} "
              f"{row['examples']:>9,} {row['optimizer_steps']:>15,}{note}")
    o = config.optim
    per_step = (f"{o.max_tokens:,} tokens" if o.max_tokens else
                f"{o.batch_size} {'pairs' if config.preference.pairs is not None else 'examples'}")
    planned = sum(plan.steps_per_epoch)
    print(f"total {planned:,} optimizer steps ({per_step} x {o.gradient_accumulation_steps} accumulation per step)")
    if o.max_steps is not None and o.max_steps < planned:
        done, epoch = 0, 0
        while done + plan.steps_per_epoch[epoch] < o.max_steps:
            done, epoch = done + plan.steps_per_epoch[epoch], epoch + 1
        print(f"--max-steps {o.max_steps:,}: training stops in epoch {epoch}, after {o.max_steps - done:,} of its "
              f"{plan.steps_per_epoch[epoch]:,} steps")
    return 0
