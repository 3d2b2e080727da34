"""Crash-safety harness: SIGKILL `chef-genius train` at random moments, resume, compare.

Runs one uninterrupted training, then the same training killed with SIGKILL at random times
(checkpoints every step, so kills land in steps and in checkpoint writes alike) and resumed with
``--resume auto`` until it finishes. Checks after every kill that each visible checkpoint is
complete, and at the end that the final adapter is bit-identical to the uninterrupted run's and
that metrics.jsonl holds every step exactly once with the same values.

    python tests/harness/kill_resume.py --data PREPARED_DIR --work /tmp/kill --kills 5
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from chef_genius.checkpoints.folder import checkpoint_problem

CHECKPOINT_FILES = ("trainer_state.json", "optimizer.pt", "adapter_model.safetensors", "adapter_config.json",
                    "rng-rank0.safetensors", "tokenizer.json", "manifest.json")


def train_command(data: Path, out: Path, resume: bool, epochs: int = 3) -> list[str]:
    command = [sys.executable, "-m", "chef_genius", "train", "--data", str(data), "--output-dir", str(out),
               "--epochs", str(epochs), "--batch-size", "2", "--report-to", "jsonl", "--eval-steps", "4",
               "--set", "checkpoint.save_steps=1", "--set", "checkpoint.keep_last=2", "--set", "logging.log_every=1",
               "--set", "model.max_target_tokens=64", "--set", "data.num_workers=0",
               "--set", "eval.generate_samples=false",
               # every improvement on (some are off by default), so resume is checked with each of them
               "--set", "data.curriculum=true", "--augmentation-prob", "0.3", "--label-smoothing", "0.1",
               "--set", "gradient_noise.enabled=true"]
    return command + (["--resume", "auto"] if resume else [])


def environment() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "PYTHONWARNINGS": "ignore"}


def check_checkpoints(run: Path) -> int:
    """Every visible checkpoint is complete; returns the newest one's step (0 if none)."""
    visible = sorted((run / "checkpoints").glob("step-*")) if (run / "checkpoints").exists() else []
    for folder in visible:
        missing = [name for name in CHECKPOINT_FILES if not (folder / name).exists()]
        assert not missing, f"half-written checkpoint visible: {folder} lacks {missing}"
        json.loads((folder / "trainer_state.json").read_text())  # parses: not torn
        problem = checkpoint_problem(folder)
        assert problem is None, f"visible checkpoint {folder} does not match its manifest: {problem}"
    return int(visible[-1].name.split("-")[1]) if visible else 0


def metric_records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


TIMING_KEYS = ("train/tokens_per_second", "eval/loss_seconds", "eval/sample_seconds")


def check_metrics(run: Path, reference: Path) -> None:
    """Each step once; every value equal to the uninterrupted run's except wall-clock timings."""
    def untimed(records: list[dict]) -> list[dict]:
        return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records]

    records, expected = untimed(metric_records(run)), untimed(metric_records(reference))
    identities = [(r["step"], tuple(sorted(r))) for r in records]
    assert len(identities) == len(set(identities)), "a metrics record appears twice"
    train_steps = [r["step"] for r in records if "train/loss" in r]
    assert train_steps == list(range(1, len(train_steps) + 1)), "a training step is missing or repeated"
    assert records == expected, "metrics differ from the uninterrupted run"


def _trained_steps(run: Path) -> int:
    path = run / "metrics.jsonl"
    if not path.exists():
        return 0
    return sum(1 for line in path.read_text().splitlines() if '"train/loss"' in line)


def run(data: Path, work: Path, kills: int, seed: int, epochs: int = 3) -> dict:
    """Kill ``kills`` times, each at a random training step plus a random delay of up to one
    step (so it lands inside a step or a checkpoint write), resuming each time; then finish and
    compare with an uninterrupted run of ``epochs`` epochs (1 or 2: curriculum stages by step)."""
    from safetensors.torch import load_file

    rng = random.Random(seed)
    reference, killed = work / "reference", work / "killed"
    subprocess.run(train_command(data, reference, False, epochs), check=True, env=environment(), capture_output=True)
    steps = sum(1 for r in metric_records(reference) if "train/loss" in r)
    targets = sorted(rng.sample(range(1, steps), min(kills, steps - 1)))
    landed = []
    for attempt, target in enumerate(targets):
        process = subprocess.Popen(train_command(data, killed, attempt > 0, epochs), env=environment(),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while process.poll() is None and _trained_steps(killed) < target:
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.1))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait()
            landed.append({"after_step": target, "newest_checkpoint": check_checkpoints(killed)})
    final = subprocess.run(train_command(data, killed, True, epochs), env=environment(), capture_output=True, text=True)
    assert final.returncode == 0, final.stderr[-2000:]
    check_checkpoints(killed)
    check_metrics(killed, reference)
    whole = load_file(str(reference / "final" / "adapter_model.safetensors"))
    parts = load_file(str(killed / "final" / "adapter_model.safetensors"))
    assert whole.keys() == parts.keys() and all(bool((whole[k] == parts[k]).all()) for k in whole), \
        "final adapter differs from the uninterrupted run"
    assert landed, "no kill landed during training"
    leftovers = [p.name for p in (killed / "checkpoints").glob(".tmp-*")]
    return {"kills": landed, "steps": steps, "temporary_folders_left": leftovers}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="a prepared dataset folder")
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    print(json.dumps(run(args.data, args.work, args.kills, args.seed, args.epochs)))


if __name__ == "__main__":
    main()
