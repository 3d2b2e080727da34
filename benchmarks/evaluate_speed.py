"""How long `chef-genius evaluate` takes once the model is loaded: N held-out recipes, one decoding
(no protocol), then with the Chef Transformer protocol's 3 samples per input.

    python benchmarks/evaluate_speed.py --model SmolLM2-135M-Instruct.Q4_1.gguf --data D --label h200
    python benchmarks/evaluate_speed.py --random-smollm2 --data D --label h200-random   # worst case:
        # random weights never end a recipe, so every row writes --max-new-tokens tokens

Each measurement is `chef_genius.evaluation.evaluate_loaded` as `evaluate` runs it (the loss pass,
the recipes, the recipe metrics, ROUGE-L and BLEU; with ``--protocol``, the protocol's samples and
COSIM), timed from after the model is on the device; a warm-up on 4 recipes runs first (CUDA
context and kernels; its seconds are reported too). Results: a table, and entries merged into
benchmarks/results/evaluate_speed.json (keyed by label, model, examples and protocol).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "evaluate_speed.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", help="a run, model folder or GGUF file")
    which.add_argument("--random-smollm2", action="store_true", help="SmolLM2-135M's shape, random weights")
    parser.add_argument("--data", type=Path, required=True, help="a prepared dataset (its test split)")
    parser.add_argument("--examples", type=int, default=500)
    parser.add_argument("--decoding", default="careful")
    parser.add_argument("--max-new-tokens", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--engine", choices=("chef-genius", "transformers"), default="chef-genius")
    parser.add_argument("--protocols", type=int, nargs="+", default=[0, 500],
                        help="Chef Transformer protocol inputs per measurement (0: none)")
    parser.add_argument("--label", required=True)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    from chef_genius.config_schema import SEED_TEMPLATES
    from chef_genius.dataset.collate import load_split
    from chef_genius.evaluation import evaluate_loaded, held_out_rows
    from chef_genius.inference import load_run
    from chef_genius.model.loading import gguf_folder

    work = Path(tempfile.mkdtemp(prefix="evaluate-speed-"))
    if args.random_smollm2:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        sys.path.insert(0, str(ROOT))
        from serve_load import random_smollm2

        path, name = random_smollm2(work / "smollm2"), "SmolLM2-135M shape (random weights)"
    else:
        path, name = Path(args.model), Path(args.model).name
    loaded = load_run(gguf_folder(path) if path.suffix == ".gguf" else path)
    device = next(loaded.model.parameters()).device
    table = load_split(args.data, "test")
    recipes = [table.recipe(i) for i in held_out_rows(len(table), args.examples, seed=0)]

    def timed(examples: list, protocol: int) -> tuple[float, dict]:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = evaluate_loaded(loaded.model, loaded.tokenizer, loaded.family, examples, SEED_TEMPLATES,
                                 args.decoding, args.max_new_tokens, samples_per_input=3, protocol_examples=protocol,
                                 batch_size=args.batch_size, keep_samples=0, split="test", engine=args.engine)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start, result

    warmup, _ = timed(recipes[:4], 4)
    entries = []
    for protocol in args.protocols:
        seconds, result = timed(recipes, protocol)
        entry = {"label": args.label, "model": name, "engine": args.engine, "decoding": args.decoding,
                 "examples": len(recipes), "protocol_examples": protocol, "samples_per_input": 3 if protocol else 0,
                 "batch_size": args.batch_size, "max_new_tokens": args.max_new_tokens, "seconds": round(seconds, 2),
                 "warmup_seconds": round(warmup, 2), "usable_rate": result.get("recipe/usable_rate"),
                 "stopped_rate": result.get("recipe/stopped_rate"),
                 "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                 "dtype": str(next(loaded.model.parameters()).dtype).removeprefix("torch.")}
        entries.append(entry)
        print(f"{name}: {len(recipes)} recipes, protocol {protocol} x 3: {seconds:.1f} s "
              f"(warm-up {warmup:.1f} s; stopped {entry['stopped_rate']})", flush=True)
    print(f"{'protocol':>8} {'examples':>8} {'seconds':>8}")
    for e in entries:
        print(f"{e['protocol_examples']:>8} {e['examples']:>8} {e['seconds']:>8.1f}")
    key = ("label", "model", "examples", "protocol_examples")
    old = json.loads(args.out.read_text()) if args.out.is_file() else []
    fresh = {tuple(e[k] for k in key) for e in entries}
    kept = [e for e in old if tuple(e.get(k) for k in key) not in fresh]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(kept + entries, indent=1) + "\n")


if __name__ == "__main__":
    main()
