"""Metric sinks behind one small interface: console, JSONL (always), W&B, TensorBoard.

Every sink receives the same metric names (DESIGN.md section 4). A W&B API key is only ever read
from the environment by wandb itself; nothing here takes or stores one.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Protocol

from chef_genius.errors import UserError


class MetricSink(Protocol):
    def log(self, metrics: dict[str, float], step: int) -> None: ...

    def close(self) -> None: ...


class JsonlSink:
    """Appends one JSON object per log call to ``metrics.jsonl``.

    A fresh run starts the file anew. A resumed run keeps the records up to the checkpoint's step
    (dropping later ones and a torn last line) and skips a record whose step and metric names
    are already there, so a run killed and resumed any number of times logs each step once.
    """

    def __init__(self, path: Path, resume_step: int | None = None):
        self.path = path
        self.seen: set[tuple[int, frozenset]] = set()
        if resume_step is None:
            path.unlink(missing_ok=True)
        elif path.exists():
            self._truncate_after(resume_step)
        self.handle = open(path, "a", encoding="utf-8")  # noqa: SIM115 - open for the run's lifetime

    def _truncate_after(self, step: int) -> None:
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            record = _parse(line)
            if record is not None and record["step"] <= step:
                kept.append(line)
                self.seen.add(_identity(record))
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        os.replace(tmp, self.path)

    def log(self, metrics: dict[str, float], step: int) -> None:
        record = {"step": step, **metrics}
        identity = _identity(record)
        if identity in self.seen:
            return
        self.seen.add(identity)
        self.handle.write(json.dumps(record) + "\n")
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()


def _identity(record: dict) -> tuple[int, frozenset]:
    return record["step"], frozenset(k for k in record if k != "step")


def _parse(line: str) -> dict | None:
    try:
        record = json.loads(line)
        int(record["step"])
        return record
    except (ValueError, KeyError, TypeError):
        return None  # a torn last line from a crash


class ConsoleSink:
    """Prints evaluation results; training progress is shown by the progress bar."""

    def log(self, metrics: dict[str, float], step: int) -> None:
        if "val_loss" in metrics:
            print(f"step {step}: val_loss {metrics['val_loss']:.4f}  val_perplexity {metrics['val_perplexity']:.2f}",
                  flush=True)

    def close(self) -> None:
        """Nothing to flush: printing is unbuffered."""


class WandbSink:
    """Weights & Biases; ``WANDB_MODE=offline`` works with no key and no terminal."""

    def __init__(self, project: str, name: str, config: dict, folder: Path):
        try:
            import wandb
        except ImportError:
            raise UserError("--report-to wandb needs the 'wandb' package (pip install wandb)") from None
        os.environ.setdefault("WANDB_SILENT", "true")
        if not os.environ.get("WANDB_API_KEY") and os.environ.get("WANDB_MODE") is None:
            os.environ["WANDB_MODE"] = "offline"  # no key: never prompt, never hang
        self.run = wandb.init(project=project, name=name, config=config, dir=str(folder), resume="allow")

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def close(self) -> None:
        self.run.finish()


class TensorBoardSink:
    def __init__(self, folder: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UserError("--report-to tensorboard needs the 'tensorboard' package") from None
        self.writer = SummaryWriter(str(folder))

    def log(self, metrics: dict[str, float], step: int) -> None:
        for name, value in metrics.items():
            self.writer.add_scalar(name, value, step)

    def close(self) -> None:
        self.writer.close()


class Tracker:
    """Fans each log call out to every sink."""

    def __init__(self, sinks: list[MetricSink]):
        self.sinks = sinks

    def log(self, metrics: dict[str, float], step: int) -> None:
        for sink in self.sinks:
            sink.log(metrics, step)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


def build_tracker(report_to: list[str], run_dir: Path, run_name: str, project: str, config: dict,
                  resume_step: int | None) -> Tracker:
    sinks: list[MetricSink] = [JsonlSink(run_dir / "metrics.jsonl", resume_step)]
    if "console" in report_to:
        sinks.append(ConsoleSink())
    if "wandb" in report_to:
        sinks.append(WandbSink(project, run_name, config, run_dir))
    if "tensorboard" in report_to:
        sinks.append(TensorBoardSink(run_dir / "tensorboard"))
    return Tracker(sinks)


def system_metrics() -> dict[str, float]:
    """GPU memory (percent of the card, peak since the last call) and utilization, when on GPU."""
    import torch

    if not torch.cuda.is_available():
        return {}
    total = torch.cuda.get_device_properties(0).total_memory
    peak = torch.cuda.max_memory_allocated()
    metrics = {"system/gpu_memory_percent": 100.0 * peak / total, "system/gpu_memory_peak_gib": peak / 2**30}
    with contextlib.suppress(Exception):  # needs NVML (nvidia-ml-py); absent on some machines
        metrics["system/gpu_utilization"] = float(torch.cuda.utilization())
    return metrics


class MetricWindow:
    """Averages of training metrics since the last log, and the token rate."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.steps = 0
        self.last = {}

    def add(self, metrics: dict[str, float]) -> None:
        self.steps += 1
        self.last = metrics
        for key, value in metrics.items():
            self.sums[key] = self.sums.get(key, 0.0) + value

    def flush(self) -> dict[str, float]:
        seconds = self.sums.get("train/seconds", 0.0)
        out = {k: v / self.steps for k, v in self.sums.items() if k not in ("train/tokens", "train/seconds")}
        out["train/learning_rate"] = self.last["train/learning_rate"]
        out["train/epoch"] = self.last["train/epoch"]
        # Tokens (prompt + target, real ones, all ranks): per step, and per second of step time.
        out["train/tokens_per_step"] = self.sums.get("train/tokens", 0.0) / self.steps
        out["train/tokens_per_second"] = self.sums.get("train/tokens", 0.0) / seconds if seconds > 0 else 0.0
        self.sums, self.steps = {}, 0
        return out
