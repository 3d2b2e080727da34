"""Build the test data in tests/data/ from the Wikibooks Cookbook dump (CC BY-SA 4.0).

    python tests/data/make_test_data.py [--wikibooks PATH] [--out FOLDER]

Reads only ``wikibooks_recipes_en.json`` (default: ../shared/data/ beside the checkout, or
$CHEF_GENIUS_SHARED_DATA). Nothing from RecipeNLG or openrecipes is read or copied: their terms
forbid shipping them. The output is the same bytes on every run (stable hashes, a seeded RNG):

    wikibooks_recipes.json  WIKIBOOKS_COUNT recipes in the Wikibooks layout (a JSON object keyed
                            "Cookbook:<title>", each value with title, category, servings, time,
                            difficulty, ingredients, steps), in the dump's order
    recipenlg_layout.csv    RECIPENLG_COUNT other Wikibooks recipes in the RecipeNLG
                            full_dataset.csv layout (unnamed index column, title, ingredients,
                            directions, link, source, NER; lists as JSON), plus OVERLAP recipes
                            that are also in wikibooks_recipes.json (cross-source duplicates)
    junk_rows.csv           JUNK_COUNT further Wikibooks recipes in the same layout, made noisy
                            the way real RecipeNLG junk is: SHOUTING, joke steps ("CHOW!!!!"),
                            repeated punctuation, duplicated steps, broken NER
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import random
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DEFAULT_SOURCE = Path(os.environ.get("CHEF_GENIUS_SHARED_DATA", ROOT.parent / "shared" / "data")) \
    / "wikibooks_recipes_en.json"

WIKIBOOKS_COUNT = 250
RECIPENLG_COUNT = 250
OVERLAP = 10
JUNK_COUNT = 10
# Recipes the reader tests look up by key; always in wikibooks_recipes.json.
REQUIRED = ("Cookbook:'Out of Salad Dressing' Salad Dressing", "Cookbook:20-Minute Beef Stroganoff")

UNITS = {
    "cup", "cups", "c", "tablespoon", "tablespoons", "tbsp", "tbs", "teaspoon", "teaspoons", "tsp",
    "g", "kg", "mg", "ml", "l", "dl", "cl", "litre", "litres", "liter", "liters", "oz", "ounce",
    "ounces", "lb", "lbs", "pound", "pounds", "pinch", "dash", "clove", "cloves", "can", "cans",
    "package", "packages", "pkg", "jar", "slice", "slices", "stick", "sticks", "piece", "pieces",
    "handful", "bunch", "sprig", "sprigs", "quart", "quarts", "pint", "pints", "head", "heads",
    "large", "medium", "small", "whole", "fresh", "freshly", "chopped", "diced", "minced", "sliced",
    "grated", "ground", "finely", "roughly", "of", "to", "or", "and", "about", "approximately",
    "a", "an", "few", "some", "cm", "inch", "inches", "x", "ea",
}
QUANTITY = re.compile(r"^[\d½¼¾⅓⅔⅛⅜⅝⅞/.,\-–]+$")


def _stable(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=8).hexdigest()


def _eligible(value: dict) -> bool:
    ingredients, steps = value.get("ingredients") or [], value.get("steps") or []
    return bool(value.get("title")) and 3 <= len(ingredients) <= 14 and 2 <= len(steps) <= 12


def ner_of(ingredient: str) -> str | None:
    """A simple food word for an ingredient line: quantities, units and notes dropped."""
    text = re.sub(r"\([^)]*\)", " ", ingredient.lower()).split(",")[0].split(";")[0]
    words = [w.strip(".:*") for w in text.split()]
    words = [w for w in words if w and not QUANTITY.match(w) and w not in UNITS]
    return " ".join(words[:3]) or None


def recipenlg_row(index: int, value: dict, source: str = "Wikibooks") -> list:
    ingredients, steps = list(value["ingredients"]), list(value["steps"])
    ner = list(dict.fromkeys(n for n in map(ner_of, ingredients) if n))
    link = "en.wikibooks.org/wiki/Cookbook:" + value["title"].replace(" ", "_")
    return [index, value["title"], _json(ingredients), _json(steps), link, source, _json(ner)]


def _json(items: list) -> str:
    return json.dumps(items, ensure_ascii=True)  # RecipeNLG escapes non-ASCII (\u00b0)


JOKE_STEPS = ["Enjoy!!!!!!!!!!", "Don't peek!!!!!!!!!!!", "No peeking!!!!!!!!!!", "Serve and CHOW DOWN!!!!!!!!",
              "Eat it all before anyone else gets home :-)", "Thats it, your done!!! :D"]
NOT_FOOD = ["Santa", "Filling", "Crust", "Uncle Ben", "Mrs. Dash", "Topping", "Sauce"]


def junk_row(index: int, value: dict, rng: random.Random, kinds: tuple[str, ...]) -> list:
    """A Wikibooks recipe in the RecipeNLG layout with the noise of real junk rows."""
    row = recipenlg_row(index, value)
    title, steps, ner = value["title"], list(value["steps"]), json.loads(row[6])
    for kind in kinds:
        if kind == "shout_title":
            title = title.upper() + "!" * rng.randint(8, 16)
        elif kind == "best_ever":
            title = f"The Best {title} Ever" + "!" * rng.randint(8, 16)
        elif kind == "one_joke_step":
            steps = ["Mix together and CHOW" + "!" * rng.randint(15, 22)]
        elif kind == "joke_step":
            steps.append(rng.choice(JOKE_STEPS))
        elif kind == "shout_steps":
            steps = [s.upper() if i % 2 == 0 else s for i, s in enumerate(steps)]
        elif kind == "repeat_steps":
            steps = steps + steps[: max(1, len(steps) // 2)]
        elif kind == "broken_ner":
            ner = [n for n in ner if rng.random() < 0.6] + rng.sample(NOT_FOOD, 2) + ner[:2]
    row[1], row[3], row[6] = title, _json(steps), _json(ner)
    return row


JUNK_KINDS = [("one_joke_step", "broken_ner"), ("joke_step",), ("joke_step", "broken_ner"), ("best_ever",),
              ("shout_title",), ("shout_steps", "joke_step"), ("repeat_steps",), ("broken_ner",),
              ("best_ever", "joke_step"), ("shout_title", "repeat_steps", "broken_ner")]


def _csv(rows: list[list]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["", "title", "ingredients", "directions", "link", "source", "NER"])
    writer.writerows(rows)
    return out.getvalue()


def build(source: Path) -> dict[str, str]:
    """The test data files' names and texts."""
    data = json.loads(source.read_text(encoding="utf-8"))
    keys = [k for k, v in data.items() if _eligible(v)]
    ranked = sorted((k for k in keys if k not in REQUIRED), key=_stable)
    wikibooks = set(REQUIRED) | set(ranked[: WIKIBOOKS_COUNT - len(REQUIRED)])
    rest = ranked[WIKIBOOKS_COUNT - len(REQUIRED):]
    nlg_keys, junk_keys = rest[:RECIPENLG_COUNT], rest[RECIPENLG_COUNT:RECIPENLG_COUNT + JUNK_COUNT]
    overlap = sorted(wikibooks - set(REQUIRED), key=_stable)[:OVERLAP]
    in_dump_order = [k for k in data if k in wikibooks]  # the Wikibooks layout, the dump's order
    wikibooks_text = "{\n" + ",\n".join(f"{json.dumps(k, ensure_ascii=False)}: "
                                        f"{json.dumps(data[k], ensure_ascii=False)}" for k in in_dump_order) + "\n}\n"
    nlg_rows = [recipenlg_row(i, data[k]) for i, k in enumerate(nlg_keys + overlap)]
    rng = random.Random(13)
    junk_rows = [junk_row(300_000 + 7919 * i, data[k], rng, kinds)
                 for i, (k, kinds) in enumerate(zip(junk_keys, JUNK_KINDS, strict=True))]
    return {"wikibooks_recipes.json": wikibooks_text, "recipenlg_layout.csv": _csv(nlg_rows),
            "junk_rows.csv": _csv(junk_rows)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--wikibooks", type=Path, default=DEFAULT_SOURCE, help="wikibooks_recipes_en.json")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in build(args.wikibooks).items():
        (args.out / name).write_text(text, encoding="utf-8")
        print(f"wrote {args.out / name} ({len(text.encode()):,} bytes)")


if __name__ == "__main__":
    main()
