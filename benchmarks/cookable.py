"""How often does the cookable verdict fail real recipes? Each check's false-fail rate on real
held-out recipes (the verdict's goal: >= 95 % of real recipes pass).

    python benchmarks/cookable.py --data PREPARED [--split test] [--heldout PREPARED2] [--max 3000]

Each real recipe is checked against its own canonical request (its title and food names, as
`evaluate` asks a model), so the request checks measure the request builder too. Writes
benchmarks/results/cookable_real.json and prints one row per check.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

from chef_genius.cookable import CHECKS, check_cookable
from chef_genius.dataset.collate import load_split
from chef_genius.evaluation import held_out_rows, requested_names

RESULTS = Path(__file__).resolve().parent / "results" / "cookable_real.json"


def measure(data: Path, split: str, limit: int) -> dict:
    table = load_split(data, split)
    rows = held_out_rows(len(table), limit, seed=0)
    fails: Counter[str] = Counter()
    examples: dict[str, list[str]] = {}
    passed = 0
    for i in rows:
        recipe = table.recipe(i)
        verdict = check_cookable(recipe, requested_names(recipe))
        passed += verdict.cookable
        for name, why in verdict.failed.items():
            fails[name] += 1
            examples.setdefault(name, [])
            if len(examples[name]) < 3:
                examples[name].append(f"{recipe.title}: {why}"[:240])
    n = len(rows)
    return {"data": str(data), "split": split, "n": n, "pass_rate": passed / n,
            "false_fail": {name: fails[name] / n for name in CHECKS}, "examples": examples}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--heldout", type=Path, help="a second prepared dataset (a source held out of training)")
    parser.add_argument("--max", type=int, default=3000)
    args = parser.parse_args()
    started = time.perf_counter()
    sets = {"test split": measure(args.data, args.split, args.max)}
    if args.heldout:
        sets["held-out source"] = measure(args.heldout, "test", args.max)
    print(f"{'check':<22}" + "".join(f"{name:>18}" for name in sets))
    for check in CHECKS:
        print(f"{check:<22}" + "".join(f"{s['false_fail'][check]:>18.2%}" for s in sets.values()))
    print(f"{'passes (cookable)':<22}" + "".join(f"{s['pass_rate']:>18.2%}" for s in sets.values()))
    print(f"{'recipes':<22}" + "".join(f"{s['n']:>18}" for s in sets.values()))
    RESULTS.write_text(json.dumps({"sets": sets, "seconds": time.perf_counter() - started}, indent=2,
                                  ensure_ascii=False) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
