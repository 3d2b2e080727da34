"""Build the food table the cookable verdict reads (src/chef_genius/data/foods.json) from the train
split of a prepared dataset: which words name foods, how often real recipes' steps name a food
they do not list, and the high percentiles of the amounts real recipes use.

    python benchmarks/food_table.py --data PREPARED [--out src/chef_genius/data/foods.json]

The shipped table was built from the quality run's preparation (openrecipes' allrecipes.com part,
the RecipeNLG sample and Wikibooks; `benchmarks/quality.py prepare`), train split only, so the
test split and the held-out sites stay unseen by it. It holds food words and numbers, no text.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from types import SimpleNamespace

import pyarrow.ipc as ipc

from chef_genius.foods import build_food_table

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src" / "chef_genius" / "data" / "foods.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="a prepared dataset (chef-genius prepare --out)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--min-listed", type=int, default=5, help="recipes a word must be listed in to count as food")
    args = parser.parse_args()
    started = time.perf_counter()
    # The columns as they are (prepare cleaned them): much faster than a Recipe per row.
    table = ipc.open_file(args.data / "train.arrow").read_all()
    columns = [table.column(name).to_pylist() for name in ("title", "ingredients", "steps")]
    rows = (SimpleNamespace(title=t, ingredients=i, steps=s) for t, i, s in zip(*columns, strict=True))
    foods = build_food_table(rows, min_listed=args.min_listed)
    args.out.write_text(foods.to_json() + "\n", encoding="utf-8")
    print(f"{foods.recipes} recipes -> {len(foods.listed)} food words, {len(foods.amounts)} foods with amounts "
          f"in {time.perf_counter() - started:.1f} s; wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
