"""Same learning: the seed's stack and chef-genius trained on the same batches, loss per step.

Both start from the same base model and LoRA initialisation (r16 on q, v, seed 0), see the same
48 examples at each optimizer step (our length-grouped plan, fed to the baseline in that order
through a sequential sampler), and use AdamW at 3e-4 with 20 warmup steps and linear decay over
``--steps``, label smoothing 0.1, clipping at 1.0, no weight decay, no gradient noise, canonical
prompts (no augmentation or template mixing), dropout as the model config says. The baseline is
Seq2SeqTrainer at 12 x 4 with padding to 256 / 512; ours is 12 x 4 length-grouped with CUDA graphs
and the speed levers. Writes per-step losses to JSON and a plot.

    python benchmarks/learning_curve.py --model /tmp/flan-t5-large --data /tmp/data --steps 200 --out curve.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

BATCH, ACCUMULATION = 12, 4  # 48 examples per optimizer step, micro-batches of 12 on both sides
LR, WARMUP = 3e-4, 20


def our_settings(model: str, data: str, steps: int) -> dict:
    return {"model.name": model, "data.path": data, "output_dir": "/tmp/curve-run", "data.curriculum": False,
            "data.progressive_quality": False, "data.augmentation_prob": 0.0, "data.mixed_templates": False,
            "logging.report_to": ["jsonl"], "data.num_workers": 4, "gradient_noise.enabled": False,
            "model.max_source_tokens": 256, "optim.batch_size": BATCH,
            "optim.gradient_accumulation_steps": ACCUMULATION,
            "optim.weight_decay": 0.0, "optim.learning_rate": LR, "schedule.cosine": False,
            "schedule.warmup_steps": WARMUP, "schedule.warmup_max_fraction": 1.0, "optim.epochs": 50}


def plan(run, steps: int) -> list[list[int]]:
    """``steps`` x ACCUMULATION micro-batches of table rows, epoch after epoch of our plan."""
    batches, epoch = [], 0
    while len(batches) < steps * ACCUMULATION:
        examples = run.plan.epoch_data(epoch).examples
        batches += [[int(examples.index[p]) for p in b] for b in run.plan.batches(epoch) if len(b) == BATCH]
        epoch += 1
    return batches[:steps * ACCUMULATION]


def run_ours(model: str, data: str, steps: int, rows_file: Path | None = None) -> dict:
    import torch

    from chef_genius.config import build_config
    from chef_genius.dataset.collate import PlannedBatches
    from chef_genius.model.ranks import Ranks
    from chef_genius.schedule import Schedule
    from chef_genius.training.run import build_run, start_state
    from chef_genius.training.trainer import batch_loader, collator, optimizer_step

    torch.manual_seed(0)
    run = build_run(build_config(None, our_settings(model, data, steps)), Ranks.start())
    state = start_state(run)
    run = dataclasses.replace(run, schedule=Schedule.build(LR, steps, WARMUP, 1.0, 1, 1, 0.0, cosine=False))
    rows = plan(run, steps)
    if rows_file is not None:  # the baseline starts as soon as it knows the batches
        rows_file.with_suffix(".partial").write_text(json.dumps(rows))
        rows_file.with_suffix(".partial").rename(rows_file)
    epoch0 = run.plan.epoch_data(0).examples  # no augmentation: every epoch tokenizes a row alike
    position = {int(row): p for p, row in enumerate(epoch0.index)}
    loader = batch_loader(run, PlannedBatches([[position[r] for r in b] for b in rows], collator(run, epoch0)))
    losses, started = [], time.perf_counter()
    for _ in range(steps):
        losses.append(optimizer_step(run, state, [next(loader) for _ in range(ACCUMULATION)])["train/loss"])
    return {"loss": losses, "seconds": time.perf_counter() - started, "rows": rows}


def run_baseline(model: str, data: str, steps: int, rows: list[list[int]]) -> dict:
    import torch
    from seed_stack import rows_dataset, seed_lora_model, seed_rows
    from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments, TrainerCallback

    dataset = rows_dataset(seed_rows(model, data, [r for b in rows for r in b]))
    torch.manual_seed(0)
    peft_model = seed_lora_model(model)
    losses: list[float] = []

    class Record(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    class InOrder(Seq2SeqTrainer):
        def _get_train_sampler(self, *args, **kwargs):
            return torch.utils.data.SequentialSampler(self.train_dataset)

    arguments = Seq2SeqTrainingArguments(output_dir="/tmp/curve-baseline", per_device_train_batch_size=12,
                                         gradient_accumulation_steps=4, bf16=True, max_steps=steps, learning_rate=LR,
                                         lr_scheduler_type="linear", warmup_steps=WARMUP, weight_decay=0.0,
                                         max_grad_norm=1.0, report_to=[], save_strategy="no", logging_steps=1,
                                         dataloader_num_workers=4, label_smoothing_factor=0.1, seed=0,
                                         remove_unused_columns=False)
    trainer = InOrder(model=peft_model, args=arguments, train_dataset=dataset, callbacks=[Record()])
    started = time.perf_counter()
    trainer.train()
    return {"loss": losses, "seconds": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--out", required=True)
    parser.add_argument("--part", choices=["ours", "baseline"], help="(internal) run one side")
    parser.add_argument("--rows", help="(internal) the batches file")
    args = parser.parse_args()
    if args.part == "ours":
        print("RESULT " + json.dumps(run_ours(args.model, args.data, args.steps, Path(args.rows))))
        return
    if args.part == "baseline":
        rows = json.loads(Path(args.rows).read_text())
        print("RESULT " + json.dumps(run_baseline(args.model, args.data, args.steps, rows)))
        return
    # Both sides run at once on the same GPU (losses do not depend on timing; seconds do, so they
    # are not a speed comparison): ours writes the batch plan, then the baseline starts on it.
    rows_file = Path(args.out).with_suffix(".rows.json")
    rows_file.unlink(missing_ok=True)
    common = [sys.executable, __file__, "--model", args.model, "--data", args.data, "--steps", str(args.steps),
              "--out", args.out, "--rows", str(rows_file)]
    procs = {"ours": subprocess.Popen([*common, "--part", "ours"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True)}
    while not rows_file.exists() and procs["ours"].poll() is None:
        time.sleep(1)
    if rows_file.exists():
        procs["baseline"] = subprocess.Popen([*common, "--part", "baseline"], stdout=subprocess.PIPE,
                                             stderr=subprocess.PIPE, text=True)
    result = {}
    for part in ("ours", "baseline"):
        if part not in procs:
            result[part] = {"error": "not started: ours wrote no batch plan"}
            continue
        stdout, stderr = procs[part].communicate()
        line = next((o for o in stdout.splitlines() if o.startswith("RESULT ")), None)
        if line is None:
            print(f"{part} failed: {stderr.strip()[-1500:]}", flush=True)
            result[part] = {"error": stderr.strip()[-1500:]}
            continue
        result[part] = json.loads(line[7:])
        result[part].pop("rows", None)
        losses = result[part]["loss"]
        print(f"{part}: {len(losses)} steps in {result[part]['seconds']:.0f} s, first loss {losses[0]:.3f}, "
              f"last-20 mean {sum(losses[-20:]) / 20:.3f}", flush=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    if all("error" not in result.get(part, {"error": 1}) for part in ("ours", "baseline")):
        try:
            plot(result, Path(args.out).with_suffix(".png"))
        except ImportError:
            print("matplotlib missing: no plot (run `plot` on the JSON elsewhere)")


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    for name, style in (("baseline", "-"), ("ours", "--")):
        axis.plot(range(1, len(result[name]["loss"]) + 1), result[name]["loss"], style, label=name)
    axis.set_xlabel(f"optimizer step ({BATCH * ACCUMULATION} examples)")
    axis.set_ylabel("training loss (label-smoothed)")
    axis.set_title("Same batches: Seq2SeqTrainer + PEFT vs chef-genius")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
