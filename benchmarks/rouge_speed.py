"""ROUGE in `evaluate`: rouge-score's own scorer against `reference_metrics.rouge` (ROUGE-L's longest
common subsequence from rapidfuzz; the protocol asking for ROUGE-2 only), on recipe-sized texts.

    python benchmarks/rouge_speed.py --pairs 500 --label "this sandbox, 2 shared cores"

Pairs: each bundled Wikibooks recipe's text against the next one's, repeated to ``--words`` words
a side (a 512-token recipe is about 350 words), the worst case `evaluate_speed.py` measured on the
GPU. Both give the same F-measures (checked here on every pair and in tests/test_evaluation.py).
Results: a table, and benchmarks/results/rouge_speed.json (entries keyed by label).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=500)
    parser.add_argument("--words", type=int, default=350)
    parser.add_argument("--label", required=True)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "rouge_speed.json")
    args = parser.parse_args()

    from rouge_score import rouge_scorer

    from chef_genius.reference_metrics import rouge

    data = json.loads((ROOT / "src" / "chef_genius" / "data" / "wikibooks_sample.json").read_text(encoding="utf-8"))
    texts = [" ".join([v["title"], *(v["ingredients"] or []), *(v["steps"] or [])]) for v in data]

    def sized(text: str) -> str:
        words = text.split()
        return " ".join((words * (args.words // max(len(words), 1) + 1))[:args.words])

    pairs = [(sized(texts[i % len(texts)]), sized(texts[(i + 1) % len(texts)])) for i in range(args.pairs)]
    timings = {}
    start = time.perf_counter()
    scorer = rouge_scorer.RougeScorer(["rougeL", "rouge2"])
    before = [scorer.score(r, h) for h, r in pairs]
    timings["rouge-score, rougeL + rouge2 (before)"] = time.perf_counter() - start
    start = time.perf_counter()
    after_l = [rouge(h, r, ("rougeL",))["rougeL"] for h, r in pairs]
    timings["rouge(), rougeL (evaluate)"] = time.perf_counter() - start
    start = time.perf_counter()
    after_2 = [rouge(h, r, ("rouge2",))["rouge2"] for h, r in pairs]
    timings["rouge(), rouge2 (the protocol)"] = time.perf_counter() - start
    assert all(abs(b["rougeL"].fmeasure - a) < 1e-12 for b, a in zip(before, after_l, strict=True))
    assert all(abs(b["rouge2"].fmeasure - a) < 1e-12 for b, a in zip(before, after_2, strict=True))
    print(f"{args.pairs} pairs of {args.words} words a side ({args.label})")
    for name, seconds in timings.items():
        print(f"{name:<40} {seconds:>8.2f} s")
    entry = {"label": args.label, "pairs": args.pairs, "words": args.words,
             "seconds": {k: round(v, 3) for k, v in timings.items()}, "same_scores": True}
    old = json.loads(args.out.read_text()) if args.out.is_file() else []
    kept = [e for e in old if e.get("label") != args.label]
    args.out.write_text(json.dumps(kept + [entry], indent=1) + "\n")


if __name__ == "__main__":
    main()
