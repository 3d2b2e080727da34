"""Blind cook's readings: the ground truth for recipe quality (../shared/COOK_READING.md).

    # 1. the file a reader sees, and the key they never see
    python benchmarks/cook_reading.py build --out benchmarks/readings/NAME \
        --arm full=gen/full.jsonl --arm lora=gen/lora.jsonl --per-arm 50 \
        --real PREPARED --real-split test --real-n 20 [--seed 0]
    # 2. a reader (a helper given only reading.md and instructions.md) writes ratings.json
    # 3. join the ratings with the key: per source, cookable / matches / mean score and the
    #    automatic verdicts beside them (and, where a second reader wrote ratings-2.json, how much
    #    the readers agree); updates benchmarks/results/cook_reading.json
    python benchmarks/cook_reading.py join benchmarks/readings/NAME

A generation file (`benchmarks/quality.py generate` writes them) is JSON Lines, one recipe a line:
``{"row": test-split row, "request": "...", "foods": [...], "text": "...", "stopped": true}``.
Every arm is read on the same prompts: the rows common to all arms, a fixed random subset of them.
Real recipes are drawn from other rows of the same split. `join` recomputes the automatic
verdicts from the texts kept in the key, so a changed verdict can be scored on old readings
(`join --all` re-scores every reading under benchmarks/readings/).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent
READINGS = HERE / "readings"
RESULTS = HERE / "results" / "cook_reading.json"
INSTRUCTIONS = """You are an experienced home cook and recipe editor. Read FILE: N recipes, each answering a
request ("Create a recipe: TITLE with FOODS"). Some were written by people, some by a machine;
you are not told which, and you should not guess or try to find out (do not search for them;
use no other files). Judge each one strictly as a cook who would actually make it tonight.
For each recipe give:
- cookable: yes / no. "yes" only if following the ingredient list and steps as written would
  produce the dish named in its title (or a reasonable version of it), with plausible
  quantities and no step that is impossible, contradictory, or uses something not listed in a
  way that matters. Minor sloppiness (a garnish not listed, a duplicated pinch of salt) is fine;
  absurd amounts (1/4 cup salt for a sandwich), non-food "ingredients" with amounts, steps that
  discard the main ingredient, a dish that is not what the title says, or unfinished text = no.
- matches request: yes / no (does it make what was asked, using the requested foods?)
- one-line reason (most serious problem, or "fine").
- a 1-5 score (5 = would publish as is, 3 = cookable with fixes, 1 = nonsense).
Write your table as a JSON list of {"i": N, "cookable": true/false, "matches": true/false,
"score": 1-5, "reason": "..."} for all N. Be strict and consistent; do not be charitable to
sloppy text.
"""


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def render(request: str, text: str) -> str:
    """One recipe in the reading's single layout: the request, then title, ingredients, steps."""
    from chef_genius.recipe import parse_recipe_text

    recipe = parse_recipe_text(text).recipe
    lines = [f"Request: {request}", "", f"Title: {recipe.title or '(none)'}", "Ingredients:"]
    lines += [f"- {item}" for item in recipe.ingredients] or ["(none)"]
    lines.append("Steps:")
    lines += [f"{n}. {step}" for n, step in enumerate(recipe.steps, 1)] or ["(none)"]
    return "\n".join(lines)


def build(args) -> None:
    from chef_genius.augment import canonical_prompt
    from chef_genius.config_schema import SEED_TEMPLATES
    from chef_genius.dataset.collate import load_split
    from chef_genius.evaluation import requested_names
    from chef_genius.recipe import serialize

    out: Path = args.out
    if out.exists() and any(out.iterdir()):
        sys.exit(f"{out} exists and is not empty: a reading is never overwritten; choose a new name")
    arms = {}
    for spec in args.arm:
        name, _, path = spec.partition("=")
        arms[name] = {row["row"]: row for row in _read_jsonl(Path(path))}
    rng = random.Random(args.seed)
    common = sorted(set.intersection(*(set(rows) for rows in arms.values()))) if arms else []
    if len(common) < args.per_arm:
        sys.exit(f"only {len(common)} prompts are common to every arm; --per-arm {args.per_arm} needs more")
    chosen = sorted(rng.sample(common, args.per_arm))
    entries = [{"source": name, "row": row, "request": rows[row]["request"], "foods": rows[row]["foods"],
                "text": rows[row]["text"], "stopped": rows[row].get("stopped", True)}
               for name, rows in arms.items() for row in chosen]
    if args.real_n:
        table = load_split(args.real, args.real_split)
        others = [i for i in range(len(table)) if i not in set(chosen)]
        for row in sorted(rng.sample(others, args.real_n)):
            recipe = table.recipe(row)
            foods = requested_names(recipe)
            request = canonical_prompt(SEED_TEMPLATES, recipe.title, foods)
            entries.append({"source": "real", "row": row, "request": request, "foods": foods,
                            "text": serialize(recipe), "stopped": True})
    rng.shuffle(entries)
    out.mkdir(parents=True, exist_ok=True)
    body = [f"# {len(entries)} recipes\n"]
    for number, entry in enumerate(entries, 1):
        entry["i"] = number
        body += [f"## Recipe {number}\n", render(entry["request"], entry["text"]), ""]
    (out / "reading.md").write_text("\n".join(body), encoding="utf-8")
    (out / "instructions.md").write_text(INSTRUCTIONS.replace("FILE", "reading.md").replace("N recipes",
                                                                                          f"{len(entries)} recipes"))
    (out / "key.json").write_text(json.dumps({"made": str(date.today()), "seed": args.seed, "arms": args.arm,
                                              "real": str(args.real) if args.real_n else None,
                                              "entries": entries}, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {out}/reading.md ({len(entries)} recipes: {args.per_arm} x {len(arms)} arms + {args.real_n} real) "
          f"and {out}/key.json")


def _verdicts(entry: dict) -> tuple[bool, bool, dict]:
    from chef_genius.cookable import check_cookable
    from chef_genius.recipe import parse_recipe_text
    from chef_genius.usability import check

    recipe = parse_recipe_text(entry["text"]).recipe
    verdict = check_cookable(recipe, entry["foods"], entry["stopped"])
    return check(recipe, entry["stopped"]).usable, verdict.cookable, verdict.failed


# Words of a reader's reason, by the fault they name (a rough tally: a reason may name several).
REASONS = {
    "not the requested dish, or its main food missing": ("no ", "not a", "instead", "missing", "title"),
    "quantities": ("cup", "amount", "quantit", "tablespoon", "teaspoon"),
    "listed but never used": ("never used", "unused", "not used"),
    "used but not listed": ("not listed", "unlisted", "never listed"),
    "contradictory steps": ("contradict", "reuse", "already"),
    "unfinished": ("unfinished", "cut off", "truncat", "ends"),
    "repetition": ("repeat", "loop", "duplicate"),
}


def sign_test(a: int, b: int) -> float:
    """Two-sided exact sign test of a against b discordant pairs."""
    from math import comb

    n = a + b
    return min(1.0, sum(comb(n, k) for k in range(n + 1) if comb(n, k) <= comb(n, a)) / 2 ** n) if n else 1.0


def paired(entries: list[dict], ratings: dict) -> list[dict]:
    """Each pair of model arms on their common prompts: how often one alone was cookable (or
    matched), and the sign test's p."""
    arms: dict[str, dict[int, dict]] = {}
    for e in entries:
        if e["source"] != "real":
            arms.setdefault(e["source"], {})[e["row"]] = ratings[e["i"]]
    out = []
    names = sorted(arms)
    for i, first in enumerate(names):
        for second in names[i + 1:]:
            rows = sorted(set(arms[first]) & set(arms[second]))
            row = {"arms": [first, second], "prompts": len(rows)}
            for field in ("cookable", "matches"):
                a = sum(bool(arms[first][r][field]) and not arms[second][r][field] for r in rows)
                b = sum(bool(arms[second][r][field]) and not arms[first][r][field] for r in rows)
                row[field] = {"first_only": a, "second_only": b, "sign_test_p": round(sign_test(a, b), 4)}
            out.append(row)
    return out


def reason_tally(entries: list[dict], ratings: dict) -> dict[str, int]:
    """How many model recipes the reader rejected, and how many of their reasons name each fault."""
    reasons = [ratings[e["i"]]["reason"].lower() for e in entries
               if e["source"] != "real" and not ratings[e["i"]]["cookable"]]
    return {"rejected": len(reasons), **{fault: sum(any(w in r for w in words) for r in reasons)
                                         for fault, words in REASONS.items()}}


def read(folder: Path) -> tuple[dict, dict[int, dict]]:
    """A reading's key and its first reader's ratings by recipe number (every recipe rated)."""
    key = json.loads((folder / "key.json").read_text(encoding="utf-8"))
    ratings = {r["i"]: r for r in json.loads((folder / "ratings.json").read_text(encoding="utf-8"))}
    missing = [e["i"] for e in key["entries"] if e["i"] not in ratings]
    if missing:
        sys.exit(f"{folder}/ratings.json has no rating for recipes {missing[:10]}")
    return key, ratings


def score(folder: Path) -> dict:
    """Per source: the reader's rates and the automatic verdicts beside them."""
    key, ratings = read(folder)
    by_source: dict[str, list[tuple[dict, dict, tuple]]] = {}
    for entry in key["entries"]:
        by_source.setdefault(entry["source"], []).append((entry, ratings[entry["i"]], _verdicts(entry)))
    readings = []
    for source, rows in by_source.items():
        n = len(rows)
        agree = sum(bool(r["cookable"]) == v[1] for _, r, v in rows)
        readings.append({
            "source": source, "reading": folder.name, "made": key["made"], "n": n,
            "cookable": sum(bool(r["cookable"]) for _, r, _ in rows) / n,
            "matches": sum(bool(r["matches"]) for _, r, _ in rows) / n,
            "mean_score": sum(float(r["score"]) for _, r, _ in rows) / n,
            "auto_usable": sum(v[0] for _, _, v in rows) / n,
            "auto_cookable": sum(v[1] for _, _, v in rows) / n,
            "agreement": agree / n,
            "false_passes": sum(v[1] and not r["cookable"] for _, r, v in rows),
            "false_fails": sum(bool(r["cookable"]) and not v[1] for _, r, v in rows),
        })
    total = sum(len(rows) for rows in by_source.values())
    second = folder / "ratings-2.json"  # a second reader of the same file: how much readers disagree
    readers = None
    if second.is_file():
        other = {r["i"]: r for r in json.loads(second.read_text(encoding="utf-8"))}
        both = [i for i in ratings if i in other]
        readers = {"n": len(both),
                   "cookable_agreement": sum(bool(ratings[i]["cookable"]) == bool(other[i]["cookable"])
                                             for i in both) / max(len(both), 1),
                   "matches_agreement": sum(bool(ratings[i]["matches"]) == bool(other[i]["matches"])
                                            for i in both) / max(len(both), 1),
                   "cookable_by_source": {source: sum(bool(other[e["i"]]["cookable"]) for e, _, _ in rows) / len(rows)
                                          for source, rows in by_source.items()}}
        readers["paired"] = paired(key["entries"], other)
    agreement = sum(r["agreement"] * r["n"] for r in readings) / total
    usable_agreement = sum(bool(r["cookable"]) == v[0] for rows in by_source.values() for _, r, v in rows) / total
    return {"reading": folder.name, "n": total, "agreement": agreement, "usable_agreement": usable_agreement,
            "second_reader": readers, "paired": paired(key["entries"], ratings),
            "reasons": reason_tally(key["entries"], ratings), "readings": readings}


def join(args) -> None:
    folders = sorted(p for p in READINGS.iterdir() if (p / "ratings.json").is_file()) if args.all else [args.folder]
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {"readings": []}
    # every (source, reading) row so far ("all"; "readings" keeps only the newest of each source)
    latest = {(r["source"], r["reading"]): r for r in results.get("all", results.get("readings", []))}
    summaries = {}
    for folder in folders:
        summary = score(folder)
        (folder / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
        summaries[folder.name] = {k: summary[k] for k in ("n", "agreement", "usable_agreement", "second_reader")}
        for row in summary["readings"]:
            latest[(row["source"], row["reading"])] = row
        print(f"{folder.name}: {summary['n']} recipes, cookable verdict agrees with the reader on "
              f"{summary['agreement']:.1%} (usable: {summary['usable_agreement']:.1%})")
        print(f"  {'source':<24}{'n':>4}{'cookable':>10}{'matches':>9}{'score':>7}{'auto_cookable':>15}"
              f"{'usable':>8}{'agree':>7}{'false+':>7}{'false-':>7}")
        if summary["second_reader"]:
            second = summary["second_reader"]
            print(f"  a second reader agrees with the first on cookable for {second['cookable_agreement']:.1%} and on "
                  f"matches for {second['matches_agreement']:.1%} of {second['n']} recipes; their cookable rates: "
                  + ", ".join(f"{k} {v:.0%}" for k, v in second["cookable_by_source"].items()))
        for r in summary["readings"]:
            print(f"  {r['source']:<24}{r['n']:>4}{r['cookable']:>10.0%}{r['matches']:>9.0%}{r['mean_score']:>7.2f}"
                  f"{r['auto_cookable']:>15.0%}{r['auto_usable']:>8.0%}{r['agreement']:>7.0%}{r['false_passes']:>7}"
                  f"{r['false_fails']:>7}")
        pairs = [("reader 1", summary["paired"])]
        if summary["second_reader"]:
            pairs.append(("reader 2", summary["second_reader"]["paired"]))
        for reader, rows in pairs:
            for row in rows:
                c, m = row["cookable"], row["matches"]
                first, second = row["arms"]
                print(f"  {reader}, paired on {row['prompts']} prompts, {first} alone / {second} alone: "
                      f"cookable {c['first_only']} / {c['second_only']} (sign test p {c['sign_test_p']:.2f}), "
                      f"matches {m['first_only']} / {m['second_only']} (p {m['sign_test_p']:.2f})")
        tally = summary["reasons"]
        print(f"  reader 1's reasons for the {tally['rejected']} model recipes rejected, by keyword: "
              + ", ".join(f"{k} {v}" for k, v in tally.items() if k != "rejected"))
    # The latest reading of each source (readings are named so that later ones sort later).
    newest: dict[str, dict] = {}
    for (source, _reading), row in sorted(latest.items(), key=lambda kv: (kv[1]["made"], kv[0][1])):
        newest[source] = row
    all_sums = results.get("summaries", {})
    all_sums.update(summaries)
    total = sum(v["n"] for v in all_sums.values())
    print(f"over every reading ({len(all_sums)}, {total} recipes): the cookable verdict agrees with the reader on "
          f"{sum(v['agreement'] * v['n'] for v in all_sums.values()) / total:.1%}")
    RESULTS.write_text(json.dumps({"readings": list(newest.values()), "all": list(latest.values()),
                                   "summaries": all_sums}, indent=1) + "\n")
    print(f"wrote {RESULTS}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="stage", required=True)
    b = commands.add_parser("build")
    b.add_argument("--out", type=Path, required=True)
    b.add_argument("--arm", action="append", default=[], help="NAME=generations.jsonl (repeat)")
    b.add_argument("--per-arm", type=int, default=50)
    b.add_argument("--real", type=Path, help="prepared dataset whose recipes are the real ones")
    b.add_argument("--real-split", default="test")
    b.add_argument("--real-n", type=int, default=20)
    b.add_argument("--seed", type=int, default=0)
    j = commands.add_parser("join")
    j.add_argument("folder", type=Path, nargs="?")
    j.add_argument("--all", action="store_true", help="re-score every reading under benchmarks/readings/")
    args = parser.parse_args()
    if args.stage == "join" and not args.all and args.folder is None:
        parser.error("join needs a reading folder or --all")
    {"build": build, "join": join}[args.stage](args)


if __name__ == "__main__":
    main()
