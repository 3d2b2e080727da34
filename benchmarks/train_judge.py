"""Train the cookable verdict's learned judge (src/chef_genius/data/judge.json): a logistic
regression over `chef_genius.judge.FEATURES` and the recipe's words (`chef_genius.judge.words`)
telling real recipes from a fine-tuned model's samples, on the validation split only. Its
threshold is set on other real validation recipes, never fitted on, so that --real-pass of them
pass the whole verdict (the hard rules and the judge).

    python benchmarks/train_judge.py --data PREPARED --generated gen-full-val-plain.jsonl [...]

Generated files are `benchmarks/quality.py generate` outputs on the validation prompts (every
candidate is used). Needs scikit-learn (`pip install -e '.[bench]'`; the package applies the weights
with plain arithmetic). Writes the judge and benchmarks/results/judge.json.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np

from chef_genius.cookable import check_cookable
from chef_genius.dataset.collate import load_split
from chef_genius.evaluation import held_out_rows, requested_names
from chef_genius.foods import food_table
from chef_genius.judge import FEATURES, Judge, features, words
from chef_genius.recipe import parse_recipe_text

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE.parent / "src" / "chef_genius" / "data" / "judge.json"
RESULTS = HERE / "results" / "judge.json"
SOFT = ("unlisted_foods", "unused_ingredients", "step_amounts", "title_foods")


def _design(rows, counts, columns: dict[str, int]):
    from scipy.sparse import csr_matrix, hstack

    data, cols, ptr = [], [], [0]
    for _, _, present in rows:
        found = sorted(columns[w] for w in present if w in columns)
        cols += found
        data += [1.0] * len(found)
        ptr.append(len(cols))
    return hstack([csr_matrix(counts), csr_matrix((data, cols, ptr), shape=(len(rows), len(columns)))]).tocsr()


def main() -> None:
    from sklearn.linear_model import LogisticRegression

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--generated", type=Path, nargs="+", required=True)
    parser.add_argument("--real", type=int, default=3000, help="real validation recipes to fit on")
    parser.add_argument("--calibration", type=int, default=2000,
                        help="other real validation recipes, never fitted on, that set the threshold")
    parser.add_argument("--real-pass", type=float, default=0.955, help="share of real recipes the verdict passes")
    parser.add_argument("--words", type=int, default=3000,
                        help="word features kept (largest weights; 0: the counts alone)")
    parser.add_argument("--min-recipes", type=int, default=5, help="recipes a word feature must appear in")
    parser.add_argument("--c", type=float, default=0.1, help="inverse regularization strength")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    table, foods = load_split(args.data, "val"), food_table()
    chosen = held_out_rows(len(table), args.real + args.calibration, seed=1)
    np.random.default_rng(2).shuffle(chosen)
    real = [table.recipe(i) for i in chosen[: args.real]]
    calibration = [table.recipe(i) for i in chosen[args.real:]]
    rows = [([features(r, requested_names(r), foods)[k] for k in FEATURES], 1, words(r)) for r in real]
    generated = 0
    for path in args.generated:
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            for candidate in row["candidates"]:
                recipe = parse_recipe_text(candidate["text"]).recipe
                rows.append(([features(recipe, row["foods"], foods)[k] for k in FEATURES], 0, words(recipe)))
                generated += 1
    x = np.array([r[0] for r in rows], dtype=float)
    y = np.array([r[1] for r in rows])
    mean, scale = x.mean(0), x.std(0) + 1e-9
    counts = (x - mean) / scale
    seen = Counter(w for r in rows for w in r[2]) if args.words else Counter()
    columns = {w: i for i, w in enumerate(sorted(w for w, n in seen.items() if n >= args.min_recipes))}
    model = LogisticRegression(class_weight="balanced", C=args.c, max_iter=3000).fit(_design(rows, counts, columns), y)
    if columns:  # keep the largest word weights, then refit on them: the shipped model is the one measured
        names = sorted(columns, key=columns.get)
        word_w = model.coef_[0][len(FEATURES):]
        columns = {names[i]: j for j, i in enumerate(np.argsort(-np.abs(word_w))[: args.words])}
        model = LogisticRegression(class_weight="balanced", C=args.c, max_iter=3000).fit(
            _design(rows, counts, columns), y)
    probability = model.predict_proba(_design(rows, counts, columns))[:, 1]
    coef = model.coef_[0]
    judge = Judge({k: float(w) for k, w in zip(FEATURES, coef[: len(FEATURES)], strict=True)},
                  float(model.intercept_[0]), {k: float(m) for k, m in zip(FEATURES, mean, strict=True)},
                  {k: float(s) for k, s in zip(FEATURES, scale, strict=True)}, 0.0,
                  {w: round(float(coef[len(FEATURES) + i]), 5) for w, i in columns.items()})
    # The threshold: --real-pass of the calibration recipes pass the whole verdict; the hard
    # rules' own failures count against that share.
    cal_p = np.array([judge.score(r, requested_names(r), foods)[0] for r in calibration])
    rules_ok = np.array([all(k in SOFT for k in check_cookable(r, requested_names(r), use_judge=False).failed)
                         for r in calibration])
    ranked = np.sort(cal_p[rules_ok])
    cut = max(0, min(len(ranked) - 1, int(round(len(ranked) - args.real_pass * len(calibration)))))
    threshold = float(ranked[cut])
    judge = Judge(judge.weights, judge.bias, judge.mean, judge.scale, threshold, judge.word_weights)
    args.out.write_text(judge.to_json() + "\n")
    real_p, gen_p = probability[: len(real)], probability[len(real):]
    ranked_words = sorted(judge.word_weights, key=judge.word_weights.get)
    summary = {"real": len(real), "calibration": len(calibration), "generated": generated, "threshold": threshold,
               "fit_real_pass_judge": float((real_p >= threshold).mean()),
               "calibration_pass_judge": float((cal_p >= threshold).mean()),
               "calibration_pass_verdict": float(((cal_p >= threshold) & rules_ok).mean()),
               "fit_generated_pass_judge": float((gen_p >= threshold).mean()),
               "weights": judge.weights, "words": len(judge.word_weights), "c": args.c,
               "files": [p.name for p in args.generated],
               "words_most_real": ranked_words[-15:], "words_most_generated": ranked_words[:15]}
    RESULTS.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{len(real)} real and {generated} generated fitted, {len(calibration)} real calibrating; threshold "
          f"{threshold:.3f}: calibration pass (judge) {summary['calibration_pass_judge']:.3f}, (rules + judge) "
          f"{summary['calibration_pass_verdict']:.3f}; fitted generated pass {summary['fit_generated_pass_judge']:.3f}")
    for name, weight in sorted(judge.weights.items(), key=lambda kv: kv[1]):
        print(f"  {name:<22}{weight:+.3f}")
    if judge.word_weights:
        print("  words most 'generated':", ", ".join(summary["words_most_generated"]))
        print("  words most 'real':", ", ".join(summary["words_most_real"]))
    print(f"wrote {args.out} and {RESULTS}")


if __name__ == "__main__":
    main()
