"""Does the LM judge read better with more of what the frozen model sees? A probe of two feature sets
beside the shipped ones (`chef_genius.lm_judge.read_recipes`), fitted and measured exactly as
benchmarks/train_lm_judge.py does (real validation recipes against models' validation samples; the
agreement with every blind reading, also with the reading's own models left out of the fit):

- ``tails``: the low end of the recipe tokens' log-probabilities given the request (minimum, 5th and
  25th percentiles, median): one impossible line ("1/2 cup vanilla extract") hides in a mean;
- ``pmi``: how much the request explains the recipe: each recipe token's log-probability given the
  request minus given nothing, averaged over the ingredients part and over the steps part, and the
  recipe's mean log-probability alone. The readers' first reason to reject is "not the dish asked for".

Three steps, the slow one on a GPU when there is one:

    python benchmarks/lm_judge_probe.py items --data PREPARED --heldout HELDOUT \
        --generated full=... (train_lm_judge.py's --generated) --out W/items.jsonl.gz
    python benchmarks/lm_judge_probe.py read --judge-model SmolLM2.gguf --items W/items.jsonl.gz --out W/feat
    python benchmarks/lm_judge_probe.py fit --items W/items.jsonl.gz --features W/feat

`read` writes the features in parts of at most 4,000 rows (float16). Results:
benchmarks/results/lm_judge_probe.json. Needs scikit-learn for `fit`.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
RESULTS = HERE / "results" / "lm_judge_probe.json"
PART_ROWS = 4000
TAILS = 4  # min, q05, q25, median
PMI = 4    # mean log-prob alone, PMI over all, over the ingredients part, over the steps part


def items_command(args) -> None:
    import train_lm_judge

    if args.out.exists():
        raise SystemExit(f"lm_judge_probe: {args.out} exists; choose another --out (nothing is overwritten)")
    items = train_lm_judge.gather(args)
    with gzip.open(args.out, "wt", encoding="utf-8") as out:
        for item in items:
            out.write(json.dumps(item) + "\n")
    print(f"wrote {len(items)} items to {args.out}")


def load_items(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        return [json.loads(line) for line in lines]


@torch.inference_mode()
def read_probe(model, tokenizer, items: list[dict], batch_size: int, progress=None) -> torch.Tensor:
    """Per item: the shipped features (hidden-state means, mean and spread of the log-probs given the
    request), then TAILS, then PMI (see the module's doc)."""
    from chef_genius.lm_judge import MAX_RECIPE_TOKENS, layers_read, render, token_logprobs
    from chef_genius.recipe import parse_recipe_text

    device = next(model.parameters()).device
    encoded = []
    for item in items:
        recipe = parse_recipe_text(item["text"]).recipe
        text = render(recipe)
        head = tokenizer(item["request"] + "\n\n").input_ids
        body = tokenizer(text).input_ids[:MAX_RECIPE_TOKENS] or [tokenizer.eos_token_id or 0]
        split = len(tokenizer(text.split("\nSteps:")[0]).input_ids)
        encoded.append((head, body, min(max(split, 2), len(body))))
    layers = layers_read(model)
    out = torch.zeros(len(items), len(layers) * model.config.hidden_size + 2 + TAILS + PMI)
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]) + len(encoded[i][1]))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    q = torch.tensor([0.05, 0.25, 0.5])
    for start in range(0, len(order), batch_size):
        index = order[start:start + batch_size]
        cond, states = token_logprobs(model, [encoded[i][0] + encoded[i][1] for i in index], pad, device, True)
        alone, _ = token_logprobs(model, [encoded[i][1] for i in index], pad, device, False)
        for j, i in enumerate(index):
            h, b, split = len(encoded[i][0]), len(encoded[i][1]), encoded[i][2]
            means = [states[layer][j, h:h + b].float().mean(0) for layer in layers]
            given = cond[j, h - 1:h + b - 1].cpu()
            spread = given.std() if b > 1 else given.new_zeros(())
            tails = torch.cat([given.min()[None], torch.quantile(given, q)])
            # body token t >= 1: given the request (given[t]) against given the body's start alone (alone[t - 1])
            plain = alone[j, :b - 1].cpu() if b > 1 else given.new_zeros(1)
            gain = given[1:] - plain[:b - 1] if b > 1 else given.new_zeros(1)
            parts = [gain[:split - 1], gain[split - 1:]]
            pmi = torch.stack([plain.mean(), gain.mean(), *(p.mean() if len(p) else p.new_zeros(()) for p in parts)])
            out[i] = torch.cat([*(m.cpu() for m in means), given.mean()[None], spread[None], tails, pmi])
        if progress is not None:
            progress(len(index))
    return out


def read_command(args) -> None:
    from tqdm import tqdm

    from chef_genius.inference import load_run
    from chef_genius.lm_judge import fingerprint

    if args.out.exists() and any(args.out.iterdir()):
        raise SystemExit(f"lm_judge_probe: {args.out} is not empty; choose another --out (nothing is overwritten)")
    items = load_items(args.items)
    loaded = load_run(args.judge_model, device=args.device)
    mark = fingerprint(loaded.model)
    loaded.model.to(torch.bfloat16)
    with tqdm(total=len(items), desc="reading recipes", unit="recipe") as bar:
        x = read_probe(loaded.model, loaded.tokenizer, items, args.batch_size, bar.update)
    args.out.mkdir(parents=True, exist_ok=True)
    for part, start in enumerate(range(0, len(x), PART_ROWS)):
        torch.save({"rows": start, "features": x[start:start + PART_ROWS].half(), "fingerprint": mark},
                   args.out / f"part{part}.pt")
    print(f"read {len(items)} recipes: {x.shape[1]} features each, in {args.out}")


def load_features(folder: Path) -> torch.Tensor:
    parts = [torch.load(p, weights_only=True) for p in sorted(folder.glob("part*.pt"))]
    parts.sort(key=lambda p: p["rows"])
    return torch.cat([p["features"] for p in parts]).double()


def fit_command(args) -> None:
    import numpy as np
    import train_lm_judge

    from chef_genius.cookable import check_cookable, request_foods
    from chef_genius.recipe import parse_recipe_text

    items = load_items(args.items)
    x = load_features(args.features).numpy()
    if len(x) != len(items):
        raise SystemExit(f"lm_judge_probe: {len(x)} feature rows for {len(items)} items")
    base = x.shape[1] - TAILS - PMI
    variants = {"shipped": np.arange(base), "tails": np.arange(base + TAILS),
                "pmi": np.r_[np.arange(base), np.arange(base + TAILS, base + TAILS + PMI)],
                "tails+pmi": np.arange(x.shape[1])}
    kind = np.array([i["kind"] for i in items])
    group = np.array([i["group"] for i in items])
    source = np.array([i["source"] for i in items])
    label = np.array([i["label"] for i in items]).astype(bool)
    real_val = np.flatnonzero(kind == "realval")
    np.random.default_rng(0).shuffle(real_val)
    real_fit, real_threshold = real_val[:1200], real_val[1200:]
    verdict = np.array([check_cookable(parse_recipe_text(i["text"]).recipe, request_foods(i["request"]),
                                       i["stopped"]).cookable for i in items])
    models = {**train_lm_judge.ARM_MODELS, "rag-1": "rag", "rag-best4": "rag"}

    def passes(columns, left_out: set[str]) -> np.ndarray:
        generated = np.flatnonzero((kind == "gen") & ~np.isin(group, sorted(left_out)))
        rows = np.concatenate([real_fit, generated])
        y = np.concatenate([np.ones(len(real_fit)), np.zeros(len(generated))])
        mean, scale, coef, intercept = train_lm_judge.fit(x[np.ix_(rows, columns)], y)
        p = 1 / (1 + np.exp(-(((x[:, columns] - mean) / scale) @ coef + intercept)))
        return p >= np.quantile(p[real_threshold], 1 - train_lm_judge.REAL_PASS)

    read = kind == "read"
    readings = sorted(set(group[read]))
    result = {"command": " ".join(sys.argv), "n_read": int(read.sum()), "variants": {}}
    for name, columns in variants.items():
        everyone = passes(columns, set())
        left = np.zeros(len(items), dtype=bool)
        for reading in readings:
            here = read & (group == reading)
            left[here] = passes(columns, {models[s] for s in set(source[here]) if s in models})[here]
        entry = {"real_heldout_pass": float((verdict & everyone)[kind == "realheld"].mean()), "readings": {}}
        for reading in readings + ["all"]:
            here = read & ((group == reading) if reading != "all" else True)
            entry["readings"][reading] = {"n": int(here.sum()),
                                          "verdict": float((verdict[here] == label[here]).mean()),
                                          "both_all": float(((verdict & everyone)[here] == label[here]).mean()),
                                          "both_left_out": float(((verdict & left)[here] == label[here]).mean())}
        result["variants"][name] = entry
    RESULTS.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    names = list(variants)
    print("agreement with reader 1's cookable, verdict + LM judge fitted on every model / the reading's models "
          "left out")
    print(f"{'reading':<38} {'n':>5} {'verdict':>8} " + " ".join(f"{n:>17}" for n in names))
    for reading in readings + ["all"]:
        r = [result["variants"][n]["readings"][reading] for n in names]
        print(f"{reading:<38} {r[0]['n']:>5} {r[0]['verdict']:>8.1%} " +
              " ".join(f"{v['both_all']:>8.1%} {v['both_left_out']:>8.1%}" for v in r))
    print("real held-out recipes passing (verdict + LM judge): " +
          ", ".join(f"{n} {result['variants'][n]['real_heldout_pass']:.1%}" for n in names))
    print(f"wrote {RESULTS}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    items = sub.add_parser("items", help="gather the recipes to read (train_lm_judge.py's set)")
    items.add_argument("--data", type=Path, required=True)
    items.add_argument("--heldout", type=Path, required=True)
    items.add_argument("--generated", action="append", default=[])
    items.add_argument("--out", type=Path, required=True)
    reading = sub.add_parser("read", help="the features, with the judge model")
    reading.add_argument("--judge-model", required=True)
    reading.add_argument("--items", type=Path, required=True)
    reading.add_argument("--out", type=Path, required=True)
    reading.add_argument("--batch-size", type=int, default=8)
    reading.add_argument("--device", default=None)
    fitting = sub.add_parser("fit", help="fit each feature set and measure it on the readings")
    fitting.add_argument("--items", type=Path, required=True)
    fitting.add_argument("--features", type=Path, required=True)
    args = parser.parse_args()
    {"items": items_command, "read": read_command, "fit": fit_command}[args.command](args)


if __name__ == "__main__":
    main()
