"""What every benchmark script records and where: the machine in words, and the JSON result
under benchmarks/results/."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> str:
    """Processor, cores this process may use, and RAM, e.g. 'x86_64, 2 cores, 24 GiB RAM'."""
    import psutil

    memory = round(psutil.virtual_memory().total / 2**30)
    return f"{platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} cores, {memory} GiB RAM"


def save_result(name: str, result: dict) -> Path:
    """Write ``result`` to benchmarks/results/NAME.json and return the path."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path
