"""Ten uncurated recipes of an arm, as docs/quality.md shows them: the first N prompts by row of a
candidates file (`quality.py pick`'s output), each with the automatic verdict and, where a blind
reading rated the same recipe, its first reader's rating.

    python benchmarks/uncurated.py CANDIDATES.jsonl [--reading benchmarks/readings/FOLDER ...] [--n 10]

Prints Markdown; nothing is chosen or edited (the rows come in order, whatever they read like).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cook_reading import _read_jsonl, _verdicts, read  # noqa: E402


def one_line(text: str) -> str:
    """Title | ingredients; ... | 1. step 2. step (the layout of docs/quality.md's examples)."""
    from chef_genius.recipe import parse_recipe_text

    recipe = parse_recipe_text(text).recipe
    steps = " ".join(f"{n}. {step}" for n, step in enumerate(recipe.steps, 1))
    return f"{recipe.title} | {'; '.join(recipe.ingredients)} | {steps}"


def ratings_by_text(readings: list[Path]) -> dict[str, dict]:
    """Reader 1's rating of every recipe text those readings hold."""
    rated = {}
    for folder in readings:
        key, ratings = read(folder)
        for entry in key["entries"]:
            if entry["i"] in ratings:
                rated.setdefault(entry["text"], ratings[entry["i"]])
    return rated


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("candidates", type=Path)
    parser.add_argument("--reading", type=Path, action="append", default=[])
    parser.add_argument("--n", type=int, default=10)
    args = parser.parse_args()
    rated = ratings_by_text(args.reading)
    for entry in sorted(_read_jsonl(args.candidates), key=lambda e: e["row"])[:args.n]:
        _, cookable, failed = _verdicts(entry)
        verdict = "cookable" if cookable else "not cookable: " + ", ".join(failed)
        rating = rated.get(entry["text"])
        if rating is not None:
            verdict += (f"; reader: {'cookable' if rating['cookable'] else 'not cookable'}, {rating['score']}/5, "
                        f"\"{rating['reason']}\"")
        print(f"**{entry['request']}** (verdict: {verdict})\n\n> {one_line(entry['text'])}\n")


if __name__ == "__main__":
    main()
