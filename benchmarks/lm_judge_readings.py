"""The shipped LM judge (`chef_genius.lm_judge`, src/chef_genius/data/lm_judge.json) against every
blind reading as it stands, without refitting: how often the verdict, the LM judge and both agree
with the reader's cookable, per reading and per source.

benchmarks/train_lm_judge.py fits the judge and measures it on the readings made before it; this
script measures the same shipped weights on the readings made since (a model the judge never saw:
no read recipe and none of their samples was fitted on), and on the earlier ones again (the
verdict's figures equal train_lm_judge.py's; the LM judge's move by up to a point, its bfloat16
reading done in other batches).

    python benchmarks/lm_judge_readings.py --judge-model SmolLM2-135M-Instruct.Q4_1.gguf

About 2.5 recipes a second on 2 CPU cores (2,284 recipes: 15 min). Results:
benchmarks/results/lm_judge_readings.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
RESULTS = HERE / "results" / "lm_judge_readings.json"


def agreement(rows: list[dict], key: str) -> float:
    return sum(r[key] == r["reader"] for r in rows) / len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--judge-model", required=True, help="the untuned SmolLM2-135M-Instruct (GGUF or folder)")
    parser.add_argument("--readings", nargs="*", help="reading folder names (default: every rated reading)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    from cook_reading import read
    from tqdm import tqdm

    from chef_genius.cookable import check_cookable, request_foods
    from chef_genius.lm_judge import JudgeReader
    from chef_genius.recipe import parse_recipe_text

    folders = [f for f in sorted((HERE / "readings").glob("*/")) if (f / "ratings.json").exists()
               and (not args.readings or f.name in args.readings)]
    if not folders:
        raise SystemExit("lm_judge_readings: no rated reading matches --readings")
    reader = JudgeReader.load(args.judge_model, device=args.device)
    rows: list[dict] = []
    for folder in folders:
        key, ratings = read(folder)
        entries = key["entries"]
        recipes = [parse_recipe_text(e["text"]).recipe for e in entries]
        scored = []
        with tqdm(total=len(entries), desc=folder.name, unit="recipe") as bar:
            for start in range(0, len(entries), 32):
                chunk = slice(start, start + 32)
                scored += reader.score([e["request"] for e in entries[chunk]], recipes[chunk])
                bar.update(len(recipes[chunk]))
        for e, recipe, (p, passes) in zip(entries, recipes, scored, strict=True):
            verdict = check_cookable(recipe, request_foods(e["request"]), e.get("stopped", True)).cookable
            rows.append({"reading": folder.name, "source": e["source"], "reader": bool(ratings[e["i"]]["cookable"]),
                         "verdict": bool(verdict), "lm": bool(passes), "both": bool(verdict and passes),
                         "p_real": round(float(p), 4)})
    readings = []
    for folder in folders:
        here = [r for r in rows if r["reading"] == folder.name]
        readings.append({"reading": folder.name, "n": len(here),
                         **{f"agreement_{k}": agreement(here, k) for k in ("verdict", "lm", "both")}})
    per_source = {}
    for source in sorted({(r["reading"], r["source"]) for r in rows}):
        here = [r for r in rows if (r["reading"], r["source"]) == source]
        per_source[f"{source[0]}:{source[1]}"] = {"n": len(here), **{k: sum(r[k] for r in here) / len(here)
                                                                     for k in ("reader", "verdict", "lm", "both")}}
    overall = {"n": len(rows), **{f"agreement_{k}": agreement(rows, k) for k in ("verdict", "lm", "both")}}
    args.out.write_text(json.dumps({"command": " ".join(sys.argv), "judge": reader.judge.model,
                                    "fingerprint": reader.judge.fingerprint, "overall": overall,
                                    "readings": readings, "per_source": per_source}, indent=1) + "\n",
                        encoding="utf-8")
    print(f"{'reading':<40} {'n':>5} {'verdict':>8} {'LM':>7} {'both':>7}")
    for r in readings + [{"reading": "all", **overall}]:
        print(f"{r['reading']:<40} {r['n']:>5} {r['agreement_verdict']:>8.1%} {r['agreement_lm']:>7.1%} "
              f"{r['agreement_both']:>7.1%}")
    print(f"\n{'source (reading:arm)':<60} {'n':>4} {'reader':>7} {'verdict':>8} {'LM':>6} {'both':>6}")
    for name, s in per_source.items():
        print(f"{name:<60} {s['n']:>4} {s['reader']:>7.0%} {s['verdict']:>8.0%} {s['lm']:>6.0%} {s['both']:>6.0%}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
