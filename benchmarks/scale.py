"""Scale benchmark (issue 14): a RecipeNLG-sized corpus through prepare, the plan view and the
set-up of a run, with the token cache cold (built) and warm (reused).

Builds a RecipeNLG-layout CSV of --rows rows (a sample's rows repeated with numbered titles, as
`prepare_speed.py` does; ../shared/data/recipenlg_sample_1k.csv when it is there, else the
repository's tests/data/recipenlg_layout.csv), then measures, each in a child process:

- ``chef-genius prepare``: wall time and peak RSS;
- ``chef-genius train --plan --epochs 1`` (a model folder's tokenizer): wall time and peak RSS;
- a one-step run, twice: the token cache deleted first (cold, it is built) and then kept (warm,
  it is reused): wall time, peak RSS, and the run's own timings (run_summary.json "setup"):
  data, model loading, examples (token cache, validation prompts and the plan's sizing, which
  builds the epochs with a token budget; before 2026-12-04's runs the sizing counted under
  schedule), schedule, and the first
  optimizer step (where torch.compile's work happens when it is on), with the resident memory
  after each part (its "rss_mib"; the data side is the memory after epoch 0 is built less what
  loading the model added: weights mapped lazily show up at the first step);
- with --ranks N > 1, the warm run again under torchrun with N processes (one per GPU), which
  map the one cache: the largest rank's peak RSS and rank 0's timings.

Peak RSS is the largest process's (getrusage, through a small wrapper per command) and, sampled
every 0.2 s with psutil, the sum over the command's process tree (workers included; shared pages
counted in each process, so an upper bound). The model folder is made by
`make_model.py` (random weights, FLAN-T5 shapes, tokenizer trained on the sample) unless --model
gives one. Prints a table and writes benchmarks/results/scale.json, one entry per row count
(a later run of the same count replaces its entry only).

    python benchmarks/scale.py --rows 300000                                                # 2-core CPU box
    python benchmarks/scale.py --rows 2231142 --workers 16 --ranks 2 --work /data/scale    # the GPU machine
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_io import RESULTS, machine, save_result  # noqa: E402
from prepare_speed import build_corpus  # noqa: E402

SAMPLES = (ROOT.parent / "shared" / "data" / "recipenlg_sample_1k.csv",
           ROOT / "tests" / "data" / "recipenlg_layout.csv")


# Runs the command given as its arguments and prints the largest RSS among its processes (the
# children's getrusage, KiB on Linux): one wrapper per command, so each peak is its own.
WRAPPER = ("import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]); "
           "print('SCALE-RSS-KIB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, flush=True); "
           "sys.exit(code)")


def measured(command: list[str], env: dict | None = None) -> dict:
    """Run ``command``; its wall time and peak RSS (the largest process, and the sum over its
    process tree sampled every 0.2 s)."""
    import psutil

    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-c", WRAPPER, *command], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    tree_peak = [0]

    def sample() -> None:
        parent = psutil.Process(child.pid)
        while child.poll() is None:
            try:
                processes = [parent, *parent.children(recursive=True)]
                tree_peak[0] = max(tree_peak[0], sum(p.memory_info().rss for p in processes))
            except psutil.Error:
                pass
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output = child.communicate()[0]
    seconds = time.perf_counter() - started
    sampler.join()
    if child.returncode != 0:
        sys.exit(f"failed ({child.returncode}): {' '.join(command)}\n{output[-3000:]}")
    output, rss = output.rsplit("SCALE-RSS-KIB", 1)
    return {"seconds": round(seconds, 2), "peak_rss_mib": round(int(rss.split()[0]) / 1024),
            "peak_rss_mib_tree": round(tree_peak[0] / 2**20), "output_tail": output[-600:]}


def chef(*args: str) -> list[str]:
    return [sys.executable, "-m", "chef_genius", *args]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "_work" / "scale")
    parser.add_argument("--workers", type=int, default=None, help="prepare's processes (default: all cores)")
    parser.add_argument("--sample", type=Path, default=next((p for p in SAMPLES if p.is_file()), SAMPLES[-1]))
    parser.add_argument("--arch", default="flan-t5-base", help="make_model.py architecture")
    parser.add_argument("--model", type=Path, help="an existing model folder (default: made in --work)")
    parser.add_argument("--batch-size", type=int, default=2, help="the one-step runs' batch size")
    parser.add_argument("--skip-runs", action="store_true", help="prepare and plan only")
    parser.add_argument("--ranks", type=int, default=1, help="also the warm run under torchrun with this many "
                                                             "processes (GPUs)")
    args = parser.parse_args()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    corpus = work / f"recipenlg_{args.rows}.csv"
    if not corpus.exists():
        build_corpus(args.rows, corpus, args.sample)
    data = work / "data"
    workers = [] if args.workers is None else ["--workers", str(args.workers)]
    results: dict = {"prepare": measured(chef("prepare", str(corpus), "--out", str(data), "--quiet", "--overwrite",
                                              *workers), env)}
    report = json.loads((data / "data_report.json").read_text())
    print("prepare", {k: v for k, v in results["prepare"].items() if k != "output_tail"}, flush=True)
    model = args.model or work / args.arch
    if not (model / "config.json").exists():
        subprocess.run([sys.executable, str(ROOT / "benchmarks" / "make_model.py"), "--arch", args.arch, "--corpus",
                        str(args.sample), "--out", str(model)], check=True, env=env)
    results["plan"] = measured(chef("train", "--model", str(model), "--data", str(data), "--plan", "--epochs", "1"),
                               env)
    if not args.skip_runs:
        shutil.rmtree(data / "token-cache", ignore_errors=True)  # the benchmark's own dataset: cold start
        runs = [("cold", chef), ("warm", chef)]
        if args.ranks > 1:
            runs.append((f"warm_{args.ranks}_ranks", lambda *a: [sys.executable, "-m", "torch.distributed.run",
                                                              "--standalone", "--nproc_per_node", str(args.ranks),
                                                              "-m", "chef_genius", *a]))
        for name, launcher in runs:
            run = work / f"run-{name}"
            shutil.rmtree(run, ignore_errors=True)
            results[f"setup_{name}"] = measured(launcher(
                "train", "--model", str(model), "--data", str(data), "--output-dir", str(run), "--epochs", "1",
                "--set", "optim.max_steps=1", "--set", f"optim.batch_size={args.batch_size}",
                "--set", "optim.gradient_accumulation_steps=1", "--set", "eval.generate_samples=false",
                "--set", "eval.max_eval_batches=1", "--report-to", "jsonl"), env)
            results[f"setup_{name}"]["timings"] = json.loads((run / "run_summary.json").read_text())["setup"]
            print(name, {k: v for k, v in results[f"setup_{name}"].items() if k != "output_tail"}, flush=True)
    cache = data / "token-cache"
    result = {
        "rows": args.rows, "train_recipes": report["splits"]["train"], "val_recipes": report["splits"]["val"],
        "sample": str(args.sample.name), "model": f"{args.arch} shape ({model})",
        "token_cache_mib": round(sum(f.stat().st_size for f in cache.rglob("*") if f.is_file()) / 2**20)
        if cache.exists() else None,
        "machine": machine(),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "command": "python benchmarks/scale.py " + " ".join(sys.argv[1:]),
        **{k: {key: v for key, v in r.items() if key != "output_tail"} for k, r in results.items()},
    }
    print(f"{'step':<14} {'seconds':>8} {'peak MiB (largest)':>19} {'peak MiB (tree)':>16}  timings")
    for name, r in results.items():
        print(f"{name:<14} {r['seconds']:>8} {r['peak_rss_mib']:>19,} "
              f"{r['peak_rss_mib_tree']:>16,}  {r.get('timings', '')}")
    # one entry per row count: the 2-core 300k run and the GPU machine's 2.2M run live side by side
    previous = json.loads((RESULTS / "scale.json").read_text()) if (RESULTS / "scale.json").exists() else {}
    if "rows" in previous:  # the first layout: one run at the top level
        previous = {f"rows_{previous['rows']}": previous}
    save_result("scale", {**previous, f"rows_{args.rows}": result})


if __name__ == "__main__":
    main()
