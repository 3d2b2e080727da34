"""Where the engine's decode time goes (issue 23's "the profile that shows why"), on one GPU.

Runs the engine (`chef_genius.generation.generate_ids`) over held-out prompts at one batch size and
preset, in variants (the model's dtype, CUDA graphs on or off, the fused Llama step), and prints tokens/s of each; then
profiles the default variant with torch.profiler and prints the top operations by CUDA time and the
engine's own ranges (prefill, decode step, finished-row check). Writes the tables and numbers to
--out (JSON).

    python benchmarks/profile_generation.py --model SmolLM2-135M-Instruct.Q4_1.gguf --data D --batch 64
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
# label: (dtype, CUDA graphs, fused: the lean Llama step inside the graph, EngineOptions.fused;
# "compiled": that step's layers compiled, EngineOptions.compiled)
VARIANTS = {"fp32-graphs": (torch.float32, True, False), "bf16-graphs": (torch.bfloat16, True, False),
            "fp32-eager": (torch.float32, False, False), "fp32-graphs-fused": (torch.float32, True, True),
            "bf16-graphs-fused": (torch.bfloat16, True, True),
            "fp32-graphs-compiled": (torch.float32, True, "compiled"),
            "bf16-graphs-compiled": (torch.bfloat16, True, "compiled")}


def run(model, tokenizer, family, prompts, decoding, batch, max_new, graphs=True, fused=False) -> tuple[int, float]:
    from chef_genius.generation import EngineOptions, generate_ids
    from chef_genius.inference import DECODING, NEUTRAL

    torch.manual_seed(0)
    sources = family.encode_sources(tokenizer, prompts, 512)
    torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.no_grad():
        out = generate_ids(model, sources, family, {**NEUTRAL, **DECODING[decoding]}, family.stop_ids(tokenizer),
                           tokenizer.pad_token_id, max_new, batch,
                           options=EngineOptions(graphs=graphs, fused=bool(fused), compiled=fused == "compiled"))
    torch.cuda.synchronize()
    return sum(len(ids) for ids, _ in out), time.perf_counter() - start


def main() -> None:
    from generation import held_out_prompts, load_model

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", help="a run, model folder or GGUF file")
    which.add_argument("--random-smollm2", action="store_true", help="SmolLM2-135M's shape, random weights")
    parser.add_argument("--data", type=Path)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--examples", type=int, default=128)
    parser.add_argument("--decoding", default="careful")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--variants", nargs="+", choices=tuple(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--profile-dtype", choices=("float32", "bfloat16"), default="float32",
                        help="the dtype of the profiled run (graphs on)")
    parser.add_argument("--profile-variant", choices=tuple(VARIANTS),
                        help="profile this variant (its dtype) instead of plain graphs at --profile-dtype")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "generation_profile.json")
    args = parser.parse_args()
    args.tiny = False
    args.device = "cuda"
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        model, tokenizer, family, name = load_model(args, Path(tmp))
        prompts = held_out_prompts(args.data, args.examples, 0, Path(tmp))
    variants = {}
    for label in args.variants:
        dtype, graphs, fused = VARIANTS[label]
        model = model.to(dtype)
        # Warm-up; a compiled step compiles for each batch and cache size: the measured run's own.
        warm = (prompts, args.batch, args.max_new_tokens) if fused == "compiled" else (prompts[:2], 2, 8)
        _, warmup = run(model, tokenizer, family, warm[0], args.decoding, warm[1], warm[2], graphs, fused)
        tokens, seconds = run(model, tokenizer, family, prompts, args.decoding, args.batch, args.max_new_tokens,
                              graphs, fused)
        variants[label] = {"tokens": tokens, "seconds": round(seconds, 3), "warmup_seconds": round(warmup, 1),
                           "tokens_per_second": round(tokens / seconds, 1)}
        print(f"{label:<18} {tokens:>7} tokens {seconds:>7.2f} s {tokens / seconds:>9.1f} tok/s", flush=True)
    dtype, graphs, fused = VARIANTS[args.profile_variant] if args.profile_variant else \
        (getattr(torch, args.profile_dtype), True, False)
    model = model.to(dtype)
    from torch.profiler import ProfilerActivity, profile

    run(model, tokenizer, family, prompts[:args.batch], args.decoding, args.batch, 96, graphs, fused)  # compiled
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        run(model, tokenizer, family, prompts[:args.batch], args.decoding, args.batch, 96, graphs, fused)
    by_cuda = prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=25)
    by_cpu = prof.key_averages().table(sort_by="cpu_time_total", row_limit=25)
    print(by_cuda)
    print(by_cpu)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"model": name, "batch": args.batch, "decoding": args.decoding,
                                    "profiled_dtype": str(dtype).removeprefix("torch."),
                                    "profiled_variant": args.profile_variant,
                                    "examples": len(prompts), "max_new_tokens": args.max_new_tokens,
                                    "device_name": torch.cuda.get_device_name(), "variants": variants,
                                    "top_by_cuda_time": by_cuda, "top_by_cpu_time": by_cpu}, indent=1) + "\n")


if __name__ == "__main__":
    main()
