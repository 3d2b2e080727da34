"""Benchmark `chef-genius prepare` on RecipeNLG rows at scale.

Replicates ../shared/data/recipenlg_sample_1k.csv to --rows rows (each copy's titles get a
suffix so deduplication keeps them), runs `prepare` in a child process, and reports rows/s end
to end and the child's peak resident memory. Prints a table; writes JSON to benchmarks/results/.

    python benchmarks/prepare_speed.py --rows 500000
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

from bench_io import machine, save_result

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT.parent / "shared" / "data" / "recipenlg_sample_1k.csv"


def build_corpus(rows: int, path: Path, sample: Path = SAMPLE) -> None:
    """``rows`` RecipeNLG-layout rows: ``sample``'s rows repeated, each copy's titles numbered."""
    with open(sample, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        sample = list(reader)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for i in range(rows):
            row = list(sample[i % len(sample)])
            row[0] = str(i)
            row[1] = f"{row[1]} {i // len(sample)}"
            writer.writerow(row)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "_work")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    corpus = args.work / f"recipenlg_{args.rows}.csv"
    if not corpus.exists():
        build_corpus(args.rows, corpus)
    out = args.work / "prepared"
    command = [sys.executable, "-m", "chef_genius", "prepare", str(corpus), "--out", str(out), "--quiet"]
    started = time.perf_counter()
    subprocess.run(command, check=True)
    seconds = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    report = json.loads((out / "data_report.json").read_text())
    result = {
        "rows": report["rows_read"],
        "kept": report["kept"],
        "seconds_end_to_end": round(seconds, 2),
        "rows_per_second": round(report["rows_read"] / seconds),
        "peak_rss_mib": round(peak_mib),
        "corpus_mib": round(corpus.stat().st_size / 2**20),
        "machine": machine(),
        "python": platform.python_version(),
        "command": " ".join(["python", "benchmarks/prepare_speed.py", "--rows", str(args.rows)]),
    }
    print(f"{'rows':>10} {'kept':>10} {'seconds':>8} {'rows/s':>8} {'peak MiB':>9} {'corpus MiB':>11}")
    print(f"{result['rows']:>10,} {result['kept']:>10,} {result['seconds_end_to_end']:>8} "
          f"{result['rows_per_second']:>8,} {result['peak_rss_mib']:>9,} {result['corpus_mib']:>11,}")
    save_result("prepare_speed", result)


if __name__ == "__main__":
    main()
