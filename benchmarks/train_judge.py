"""Train the cookable verdict's learned judge (src/chef_genius/data/judge.json): a logistic
regression over `chef_genius.judge.FEATURES` telling real recipes from a fine-tuned model's
samples, on the validation split only; its threshold passes --real-pass of the real validation
recipes that the hard rules pass.

    python benchmarks/train_judge.py --data PREPARED --generated gen-full-val-plain.jsonl [...]

Generated files are `benchmarks/quality.py generate` outputs on the validation prompts (every
candidate is used). Needs scikit-learn (a benchmark dependency; the package applies the weights
with plain arithmetic). Writes the judge and benchmarks/results/judge.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from chef_genius.cookable import check_cookable
from chef_genius.evaluation import held_out_rows, requested_names
from chef_genius.foods import food_table
from chef_genius.judge import FEATURES, Judge, features
from chef_genius.recipe import parse_recipe_text
from chef_genius.training.data import load_split

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE.parent / "src" / "chef_genius" / "data" / "judge.json"
RESULTS = HERE / "results" / "judge.json"


def main() -> None:
    from sklearn.linear_model import LogisticRegression

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--generated", type=Path, nargs="+", required=True)
    parser.add_argument("--real", type=int, default=3000, help="real validation recipes")
    parser.add_argument("--real-pass", type=float, default=0.955, help="share of real recipes the verdict passes")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    table, foods = load_split(args.data, "val"), food_table()
    real = [table.recipe(i) for i in held_out_rows(len(table), args.real, seed=1)]
    rows = [([features(r, requested_names(r), foods)[k] for k in FEATURES], 1) for r in real]
    hard_pass = [check_cookable(r, requested_names(r), use_judge=False) for r in real]
    generated = 0
    for path in args.generated:
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            for candidate in row["candidates"]:
                recipe = parse_recipe_text(candidate["text"]).recipe
                rows.append(([features(recipe, row["foods"], foods)[k] for k in FEATURES], 0))
                generated += 1
    x = np.array([r[0] for r in rows], dtype=float)
    y = np.array([r[1] for r in rows])
    mean, scale = x.mean(0), x.std(0) + 1e-9
    model = LogisticRegression(class_weight="balanced", C=1.0, max_iter=2000).fit((x - mean) / scale, y)
    probability = model.predict_proba((x - mean) / scale)[:, 1]
    # The threshold: --real-pass of all real recipes pass the whole verdict (the hard rules and the
    # judge); the hard rules' own failures count against that share.
    real_p = probability[: len(real)]
    rules_ok = np.array(["judge" not in v.failed and all(k in ("unlisted_foods", "unused_ingredients", "step_amounts",
                                                               "title_foods") for k in v.failed) for v in hard_pass])
    candidates = np.sort(real_p[rules_ok])
    keep = args.real_pass * len(real)
    index = max(0, min(len(candidates) - 1, int(round(len(candidates) - keep))))
    threshold = float(candidates[index])
    judge = Judge({k: float(w) for k, w in zip(FEATURES, model.coef_[0], strict=True)}, float(model.intercept_[0]),
                  {k: float(m) for k, m in zip(FEATURES, mean, strict=True)},
                  {k: float(s) for k, s in zip(FEATURES, scale, strict=True)}, threshold)
    args.out.write_text(judge.to_json() + "\n")
    gen_p = probability[len(real):]
    summary = {"real": len(real), "generated": generated, "threshold": threshold,
               "real_pass_judge": float((real_p >= threshold).mean()),
               "real_pass_verdict": float(((real_p >= threshold) & rules_ok).mean()),
               "generated_pass_judge": float((gen_p >= threshold).mean()),
               "weights": judge.weights, "files": [p.name for p in args.generated]}
    RESULTS.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{len(real)} real, {generated} generated; threshold {threshold:.3f}: real pass (judge) "
          f"{summary['real_pass_judge']:.3f}, (rules + judge) {summary['real_pass_verdict']:.3f}, generated pass "
          f"{summary['generated_pass_judge']:.3f}")
    for name, weight in sorted(judge.weights.items(), key=lambda kv: kv[1]):
        print(f"  {name:<22}{weight:+.3f}")
    print(f"wrote {args.out} and {RESULTS}")


if __name__ == "__main__":
    main()
