"""Fit the LM judge (`chef_genius.lm_judge`, src/chef_genius/data/lm_judge.json) and measure it
against every blind reading.

    python benchmarks/train_lm_judge.py --judge-model SmolLM2-135M-Instruct.gguf --data PREPARED \
        --heldout HELDOUT --generated full=gen-full-val-plain.jsonl ... --cache W/lm_judge_features.pt

What it reads (`lm_judge.read_recipes`, the slow part: ~6,500 recipes in ~40 min on 2 CPU cores;
``--cache`` keeps the features for a later run):
- real validation recipes of PREPARED (2,000, seeded): 1,200 to fit, 800 to set the threshold (95.5 %
  of them pass the judge);
- each ``--generated`` file's first two candidates per prompt (validation prompts only: `quality.py
  generate --set val`), labelled generated;
- 400 real recipes of HELDOUT's test split (its false fails) and every read recipe of
  benchmarks/readings (the agreement).

The shipped weights are fitted on every model's samples. Two measures of agreement with the
readers (cookable): fitted on every model (as shipped; a reading's prompts are never fitted on), and
fitted without the samples of the models that reading read (`ARM_MODELS`): the judge on a model it
has never seen, as it will meet the next one. One setting (C = 0.05, balanced classes), not tuned on
the readings. Needs scikit-learn. Results: benchmarks/results/lm_judge.json.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import random
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
OUT = HERE.parent / "src" / "chef_genius" / "data" / "lm_judge.json"
RESULTS = HERE / "results" / "lm_judge.json"
REAL_PASS = 0.955
C = 0.05
# Each arm read so far -> the model whose validation samples stand for it (--generated names).
ARM_MODELS = {"full-1ep": "full", "full-1ep-best4": "full", "full-1ep-heldout": "full",
              "full-1ep-best2-heldout": "full", "full-2ep": "full2", "full-2ep-best4": "full2", "full2r-1": "full2r",
              "dpo2-1": "dpo2", "dpo2-best4": "dpo2", "dpok1-1": "dpok1", "dpok1-lp4": "dpok1", "gemma-1": "gemma",
              "gemma-best4": "gemma", "gemma2-1": "gemma2", "gemma2-best4": "gemma2",
              "gemma2-lm4": "gemma2"}


def gather(args) -> list[dict]:
    """Every recipe to read: kind (read, gen, realval, realheld), group, source, label, request, text."""
    from cook_reading import read

    from chef_genius.augment import canonical_prompt
    from chef_genius.config_schema import SEED_TEMPLATES
    from chef_genius.dataset.collate import load_split
    from chef_genius.evaluation import requested_names
    from chef_genius.recipe import serialize

    items = []
    for folder in sorted((HERE / "readings").glob("*/")):
        if not (folder / "ratings.json").exists():
            continue
        key, ratings = read(folder)
        for e in key["entries"]:
            items.append({"kind": "read", "group": folder.name, "source": e["source"], "request": e["request"],
                          "label": int(bool(ratings[e["i"]]["cookable"])), "text": e["text"],
                          "stopped": e.get("stopped", True)})
    for spec in args.generated:
        name, _, path = spec.partition("=")
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as lines:
            for line in lines:
                row = json.loads(line)
                for candidate in row["candidates"][:2]:
                    items.append({"kind": "gen", "group": name, "source": name, "label": 0, "request": row["request"],
                                  "text": candidate["text"], "stopped": candidate.get("stopped", True)})
    rng = random.Random(8)
    for path, split, n, kind in ((args.data, "val", 2000, "realval"), (args.heldout, "test", 400, "realheld")):
        table = load_split(path, split)
        for row in sorted(rng.sample(range(len(table)), n)):
            recipe = table.recipe(row)
            request = canonical_prompt(SEED_TEMPLATES, recipe.title, requested_names(recipe))
            items.append({"kind": kind, "group": split, "source": "real", "label": 1, "request": request,
                          "text": serialize(recipe), "stopped": True})
    return items


def features(args, items: list[dict]) -> tuple[torch.Tensor, str, str]:
    """(features, the model's fingerprint, its description), from the cache when it matches."""
    from tqdm import tqdm

    from chef_genius.inference import load_run
    from chef_genius.lm_judge import fingerprint, read_recipes
    from chef_genius.recipe import parse_recipe_text

    digest = hashlib.sha256(json.dumps([(i["request"], i["text"]) for i in items]).encode()).hexdigest()
    if args.cache and args.cache.is_file():
        cached = torch.load(args.cache, weights_only=True)
        if cached["items"] == digest:
            return cached["features"], cached["fingerprint"], args.name
    loaded = load_run(args.judge_model, device=args.device)
    model, tokenizer = loaded.model, loaded.tokenizer
    mark = fingerprint(model)
    model.to(torch.bfloat16)
    recipes = [parse_recipe_text(i["text"]).recipe for i in items]
    with tqdm(total=len(items), desc="reading recipes", unit="recipe") as bar:
        x = read_recipes(model, tokenizer, [i["request"] for i in items], recipes, progress=bar.update)
    if args.cache:
        torch.save({"items": digest, "features": x, "fingerprint": mark}, args.cache)
    return x, mark, args.name


def fit(x, y):
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x)
    model = LogisticRegression(C=C, max_iter=3000, class_weight="balanced").fit(scaler.transform(x), y)
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    return scaler.mean_, scale, model.coef_[0], float(model.intercept_[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--judge-model", required=True, help="the untuned SmolLM2-135M-Instruct (GGUF or folder)")
    parser.add_argument("--data", type=Path, required=True, help="the training sites, prepared")
    parser.add_argument("--heldout", type=Path, required=True, help="the held-out sites, prepared")
    parser.add_argument("--generated", action="append", default=[], help="NAME=FILE: val candidates of a model")
    parser.add_argument("--name", default="SmolLM2-135M-Instruct", help="the judge model, in words")
    parser.add_argument("--cache", type=Path, help="features file to reuse (torch.save; written when missing)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    import numpy as np

    from chef_genius.cookable import check_cookable, request_foods
    from chef_genius.lm_judge import LMJudge
    from chef_genius.recipe import parse_recipe_text

    items = gather(args)
    x, mark, description = features(args, items)
    x = x.double().numpy()
    kind = np.array([i["kind"] for i in items])
    group = np.array([i["group"] for i in items])
    source = np.array([i["source"] for i in items])
    label = np.array([i["label"] for i in items])
    real_val = np.flatnonzero(kind == "realval")
    np.random.default_rng(0).shuffle(real_val)
    real_fit, real_threshold = real_val[:1200], real_val[1200:]
    shipped = np.array([check_cookable(parse_recipe_text(i["text"]).recipe, request_foods(i["request"]),
                                       i["stopped"]).cookable for i in items])

    def judge_without(models: set[str]) -> tuple[LMJudge, np.ndarray]:
        generated = np.flatnonzero((kind == "gen") & ~np.isin(group, sorted(models)))
        rows = np.concatenate([real_fit, generated])
        y = np.concatenate([np.ones(len(real_fit)), np.zeros(len(generated))])
        mean, scale, coef, intercept = fit(x[rows], y)
        z = ((x - mean) / scale) @ coef + intercept
        p = 1 / (1 + np.exp(-z))
        threshold = float(np.quantile(p[real_threshold], 1 - REAL_PASS))
        return LMJudge(coef.tolist(), intercept, mean.tolist(), scale.tolist(), threshold, mark, description), \
            p >= threshold

    shipped_judge, passes_all = judge_without(set())
    args.out.write_text(json.dumps(shipped_judge.to_dict()) + "\n", encoding="utf-8")
    read_rows = kind == "read"
    readings, sources = [], {}
    for reading in sorted(set(group[read_rows])):
        here = read_rows & (group == reading)
        models = {ARM_MODELS[s] for s in set(source[here]) if s != "real"}
        _, passes_out = judge_without(models)
        reader = label[here].astype(bool)
        entry = {"reading": reading, "n": int(here.sum()), "models_left_out": sorted(models),
                 "agreement_verdict": float((shipped[here] == reader).mean())}
        for name, passes in (("all", passes_all), ("left_out", passes_out)):
            entry[f"agreement_lm_{name}"] = float((passes[here] == reader).mean())
            entry[f"agreement_verdict_and_lm_{name}"] = float(((shipped & passes)[here] == reader).mean())
        readings.append(entry)
        for s in set(source[here]):
            rows = here & (source == s)
            tally = sources.setdefault(s, np.zeros(5))
            tally += [rows.sum(), label[rows].sum(), shipped[rows].sum(), (shipped & passes_all)[rows].sum(),
                      (shipped & passes_out)[rows].sum()]
    total = sum(r["n"] for r in readings)
    overall = {k: sum(r[k] * r["n"] for r in readings) / total for k in readings[0] if k.startswith("agreement")}
    per_source = {s: {"n": int(t[0]), "reader": t[1] / t[0], "verdict": t[2] / t[0], "verdict_and_lm_all": t[3] / t[0],
                      "verdict_and_lm_left_out": t[4] / t[0]} for s, t in sorted(sources.items())}
    held = kind == "realheld"
    result = {"command": " ".join(sys.argv), "model": description, "fingerprint": mark, "C": C,
              "real_pass_target": REAL_PASS,
              "fitted_on": {"real": len(real_fit), "generated": int((kind == "gen").sum())},
              "real_heldout_pass": {"lm": float(passes_all[held].mean()),
                                    "verdict_and_lm": float((shipped & passes_all)[held].mean()),
                                    "verdict": float(shipped[held].mean()), "n": int(held.sum())},
              "read_recipes": total, "overall": overall, "readings": readings, "per_source": per_source}
    RESULTS.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"{total} read recipes; agreement with the reader's cookable (verdict / verdict + LM judge fitted on "
          f"every model / on the others only):")
    for r in readings:
        print(f"  {r['reading']:<38} {r['n']:>4}  {r['agreement_verdict']:6.1%}  "
              f"{r['agreement_verdict_and_lm_all']:6.1%}  {r['agreement_verdict_and_lm_left_out']:6.1%}")
    print(f"  {'all':<38} {total:>4}  {overall['agreement_verdict']:6.1%}  "
          f"{overall['agreement_verdict_and_lm_all']:6.1%}  {overall['agreement_verdict_and_lm_left_out']:6.1%}")
    print("cookable by source (reader / verdict / verdict + LM judge, every model / left out):")
    for s, v in per_source.items():
        print(f"  {s:<24} {v['n']:>4}  {v['reader']:6.1%}  {v['verdict']:6.1%}  {v['verdict_and_lm_all']:6.1%}  "
              f"{v['verdict_and_lm_left_out']:6.1%}")
    h = result["real_heldout_pass"]
    print(f"real held-out recipes passing: LM judge {h['lm']:.1%}, verdict {h['verdict']:.1%}, both "
          f"{h['verdict_and_lm']:.1%} (of {h['n']})\nwrote {args.out} and {RESULTS}")


if __name__ == "__main__":
    main()
