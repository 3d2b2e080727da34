"""Generation speed: `transformers.generate` against chef-genius' engine (`chef_genius.generation`).

The same held-out prompts (a prepared dataset's test split, as `evaluate` draws them; without
``--data``, the bundled sample prepared with ``chef-genius prepare --sample``), the same presets
and batch sizes, one model: generated tokens/s, recipes/s, p50/p95 latency per recipe (from the
start of the run to the moment the recipe is complete: a recipe waits for its batch on
Transformers' path, for its own row on the engine's), time to the first token at batch 1, peak GPU
memory. Results are merged into benchmarks/results/generation.json, one entry per measurement,
and printed as a table.

    python benchmarks/generation.py --tiny --device cpu --threads 2 --batches 1 16 --label cpu-tiny
    python benchmarks/generation.py --random-smollm2 --device cpu --threads 2 --batches 1 --batches-per-run 1 \
        --label cpu-2-cores   # one 400-token recipe of the 135M shape
    python benchmarks/generation.py --model SmolLM2-135M-Instruct.Q4_1.gguf --device cpu --threads 2 --batches 1 \
        --batches-per-run 1 --decodings greedy --engines chef-genius --ignore-stops --label cpu-real
    python benchmarks/generation.py --model SmolLM2-135M-Instruct.Q4_1.gguf --data D --label h200
    python benchmarks/generation.py --model /tmp/flan-t5-large --data D --label h200   # make_model.py

A measurement runs min(--examples, batch x --batches-per-run) prompts; every engine and preset
first runs once, untimed, on two prompts (CUDA context, kernels). benchmarks/gpu_generation.sh runs
it on the device machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "generation.json"
TINY_TEXTS = ["Title: Soup || Ingredients: 1 cup water | 2 carrots || Steps: Boil the water. | Add the carrots.",
              "Create a recipe: tomato soup with basil, onion and garlic"] * 40


def load_model(args, work: Path):
    """(model, tokenizer, family, name) for --tiny, --random-smollm2 or --model (a run, model folder
    or GGUF file); float32 on the CPU."""
    from chef_genius.inference import load_run
    from chef_genius.model.loading import gguf_folder

    sys.path.insert(0, str(ROOT))
    if args.tiny:
        from tests.harness.tiny_causal import write_tiny_gguf

        path, name = write_tiny_gguf(work / "tiny-llama.gguf", TINY_TEXTS), "tiny-llama (tests harness, random)"
    elif args.random_smollm2:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from serve_load import random_smollm2

        path, name = random_smollm2(work / "smollm2"), "SmolLM2-135M shape (random weights)"
    else:
        path, name = Path(args.model), Path(args.model).name
    folder = gguf_folder(path) if path.suffix == ".gguf" else path
    loaded = load_run(folder, device=args.device)
    model = loaded.model.float() if args.device == "cpu" else loaded.model
    return model, loaded.tokenizer, loaded.family, name


def held_out_prompts(data: Path | None, n: int, seed: int, work: Path) -> list[str]:
    """``n`` prompts as `evaluate` writes them, from the test split (else val) of ``data``."""
    from chef_genius.augment import canonical_prompt
    from chef_genius.config_schema import SEED_TEMPLATES
    from chef_genius.dataset.collate import load_split
    from chef_genius.evaluation import held_out_rows, requested_names

    if data is None:
        data = work / "sample"
        subprocess.run([sys.executable, "-m", "chef_genius", "prepare", "--sample", "--out", str(data), "--quiet"],
                       check=True)
    table = load_split(data, "test")
    if len(table) == 0:
        table = load_split(data, "val")
    recipes = [table.recipe(i) for i in held_out_rows(len(table), n, seed)]
    prompts = [canonical_prompt(SEED_TEMPLATES, r.title, requested_names(r)) for r in recipes]
    return (prompts * (n // max(1, len(prompts)) + 1))[:n]  # a small split is reused


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_once(model, tokenizer, family, prompts, engine, decoding, batch, max_new, device,
             ignore_stops=False) -> tuple[list[int], list[float], list[str]]:
    """(generated tokens, completion time from the start, text) per recipe; ``ignore_stops``: the
    engine's rows end only at the token limit (a real model then writes exactly ``max_new`` tokens)."""
    from chef_genius.generation import EngineOptions, generate_ids
    from chef_genius.inference import DECODING, NEUTRAL, generate_details

    start = time.perf_counter()
    if engine == "transformers":
        tokens, done, texts = [], [], []
        for first in range(0, len(prompts), batch):
            rows = generate_details(model, tokenizer, prompts[first:first + batch], family, decoding, max_new,
                                    batch_size=batch, engine="transformers")
            _sync(device)
            tokens += [g.tokens + g.stopped for [g] in rows]
            done += [time.perf_counter() - start] * len(rows)
            texts += [g.text for [g] in rows]
        return tokens, done, texts
    finished = [0.0] * len(prompts)

    def on_done(index: int) -> None:
        finished[index] = time.perf_counter() - start

    with torch.no_grad(), torch.compiler.set_stance("force_eager"):
        torch.manual_seed(0)
        sources = family.encode_sources(tokenizer, prompts, 512)
        stops = [] if ignore_stops else family.stop_ids(tokenizer)
        decoded = generate_ids(model, sources, family, {**NEUTRAL, **DECODING[decoding]}, stops,
                               tokenizer.pad_token_id, max_new, batch, on_done=on_done,
                               options=EngineOptions(grouped=engine != "chef-genius-sdpa"))
        texts = tokenizer.batch_decode([ids for ids, _ in decoded], skip_special_tokens=True,
                                       clean_up_tokenization_spaces=False)
    _sync(device)
    return [len(ids) for ids, _ in decoded], finished, texts


def measure(model, tokenizer, family, name, prompts, engine, decoding, batch, args) -> tuple[dict, list[str]]:
    """One measurement's entry, and the recipes written."""
    cuda = args.device.startswith("cuda")
    run_once(model, tokenizer, family, prompts[:2], engine, decoding, min(batch, 2), 8, args.device)  # warm-up
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    tokens, done, texts = run_once(model, tokenizer, family, prompts, engine, decoding, batch, args.max_new_tokens,
                                   args.device, args.ignore_stops)
    seconds = time.perf_counter() - start
    entry = {"label": args.label, "engine": engine, "model": name, "batch": batch, "decoding": decoding,
             "recipes": len(prompts), "max_new_tokens": args.max_new_tokens, "generated_tokens": sum(tokens),
             "seconds": round(seconds, 3), "tokens_per_second": round(sum(tokens) / seconds, 1),
             "recipes_per_second": round(len(prompts) / seconds, 3),
             "latency_p50_s": round(statistics.median(done), 3),
             "latency_p95_s": round(sorted(done)[min(len(done) - 1, int(0.95 * len(done)))], 3),
             "peak_gpu_memory_gb": round(torch.cuda.max_memory_allocated() / 2**30, 3) if cuda else None}
    if args.ignore_stops:
        entry["ignore_stops"] = True
    if batch == 1:
        starts = []
        for _ in range(3):
            begin = time.perf_counter()
            run_once(model, tokenizer, family, prompts[:1], engine, decoding, 1, 1, args.device)
            starts.append(time.perf_counter() - begin)
        entry["first_token_ms"] = round(1000 * statistics.median(starts), 1)
    return entry, texts


def table(entries: list[dict]) -> str:
    head = f"{'engine':<12} {'decoding':<8} {'batch':>5} {'recipes':>7} {'tok/s':>10} {'recipes/s':>9} " \
           f"{'p50 s':>7} {'p95 s':>7} {'1st ms':>7} {'GPU GB':>7} {'same':>5}"
    lines = [head]
    for e in entries:
        gpu = "-" if e["peak_gpu_memory_gb"] is None else f"{e['peak_gpu_memory_gb']:.2f}"
        lines.append(f"{e['engine']:<12} {e['decoding']:<8} {e['batch']:>5} {e['recipes']:>7} "
                     f"{e['tokens_per_second']:>10.1f} {e['recipes_per_second']:>9.3f} {e['latency_p50_s']:>7.2f} "
                     f"{e['latency_p95_s']:>7.2f} {e.get('first_token_ms', '-'):>7} {gpu:>7} "
                     f"{e.get('same_as_transformers', '-'):>5}")
    return "\n".join(lines)


def save(entries: list[dict], path: Path) -> None:
    """Merge into ``path``: an entry replaces the one of the same label, model, engine, preset and batch."""
    key = ("label", "model", "engine", "decoding", "batch")
    old = json.loads(path.read_text()) if path.is_file() else []
    fresh = {tuple(e[k] for k in key) for e in entries}
    kept = [e for e in old if tuple(e.get(k) for k in key) not in fresh]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(kept + entries, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", help="a run, model folder or GGUF file")
    which.add_argument("--tiny", action="store_true", help="the tests' tiny random Llama (CPU)")
    which.add_argument("--random-smollm2", action="store_true", help="SmolLM2-135M's shape, random weights")
    parser.add_argument("--data", type=Path, help="a prepared dataset (default: the bundled sample)")
    parser.add_argument("--examples", type=int, default=500, help="held-out prompts at most per measurement")
    parser.add_argument("--batches-per-run", type=int, default=4, help="prompts per measurement: batch x this")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16, 64, 256])
    parser.add_argument("--decodings", nargs="+", default=["greedy", "careful"])
    parser.add_argument("--engines", nargs="+", default=["transformers", "chef-genius"],
                        help="transformers, chef-genius, chef-genius-sdpa (the engine with the model's own attention)")
    parser.add_argument("--max-new-tokens", type=int, default=400)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    parser.add_argument("--dtype", choices=("auto", "bfloat16", "float32", "int8-dynamic"), default="auto",
                        help="cast the model (auto: as loaded; a GGUF loads as float32); int8-dynamic: "
                             "torch's dynamic int8 quantization of every Linear (CPU, lossy)")
    parser.add_argument("--ignore-stops", action="store_true",
                        help="the engine ends rows only at --max-new-tokens (a real model's full-length recipe)")
    parser.add_argument("--label", required=True, help="names this machine and setting in the results")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.ignore_stops and "transformers" in args.engines:
        parser.error("--ignore-stops is for the engine only (--engines chef-genius ...)")
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        model, tokenizer, family, name = load_model(args, Path(tmp))
        if args.dtype == "int8-dynamic":
            model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
        elif args.dtype != "auto":
            model = model.to(getattr(torch, args.dtype))
        prompts = held_out_prompts(args.data, args.examples, 0, Path(tmp))
    info = {"device": args.device, "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda")
            else platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
            "dtype": args.dtype if args.dtype == "int8-dynamic" else str(next(model.parameters()).dtype).removeprefix(
                "torch."), "torch": torch.__version__,
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d")}
    entries = []
    for decoding in args.decodings:
        for batch in args.batches:
            chosen = prompts[:min(args.examples, batch * args.batches_per_run)]
            written = {}
            for engine in args.engines:
                entry, written[engine] = measure(model, tokenizer, family, name, chosen, engine, decoding, batch, args)
                if engine != "transformers" and "transformers" in written and decoding in ("greedy", "guarded"):
                    # Greedy recipes should be Transformers' own: the share that are, character for character.
                    same = sum(a == b for a, b in zip(written["transformers"], written[engine], strict=True))
                    entry["same_as_transformers"] = round(same / len(chosen), 4)
                entries.append({**entry, **info})
                print(table(entries[-1:]).splitlines()[1], flush=True)
                save(entries[-1:], args.out)  # kept even if a later measurement is cut off
    print(f"\n{name} on {info['device_name']} ({info['device']}, {info['threads']} threads, {info['dtype']})")
    print(table(entries))


if __name__ == "__main__":
    main()
