"""Where a first token's time goes inside `chef-genius serve`'s engine.

The serving engine (`serve.engine.Engine` on the slot loop) runs in this process, without HTTP:
``--requests`` chat requests are submitted over ``--spread`` seconds (as a server's event loop
hands them over, one by one), after a warm-up request and ``--warmup-rounds`` whole rounds. Every
turn of the measured round is timed: the prefill of the requests admitted (`SlotLoop._prefill`),
the read that waits for the device (`SlotDecoder.read`), the launch of the next steps (`advance`)
and the streaming of the text (`SlotLoop._collect`). It prints the turns and each request's
queued / first-text medians, and writes them as JSON.

    python benchmarks/serve_turns.py --variants fp32-compiled bf16-compiled --out $OUT/turns.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {"fp32-plain": ("float32", False, False), "fp32-fused": ("float32", True, False),
            "fp32-compiled": ("float32", True, True), "bf16-fused": ("bfloat16", True, False),
            "bf16-compiled": ("bfloat16", True, True)}


def instrument(log: list) -> None:
    """Wrap the slot loop's four parts so that each call appends (part, began, ended, rows)."""
    from chef_genius.generation.slots import SlotDecoder
    from chef_genius.serve.slots import SlotLoop

    def wrap(owner, name: str, rows=lambda args: None) -> None:
        original = getattr(owner, name)

        def timed(self, *args, **kwargs):
            began = time.perf_counter()
            try:
                return original(self, *args, **kwargs)
            finally:
                log.append((name.strip("_"), began, time.perf_counter(), rows(args)))

        setattr(owner, name, timed)

    wrap(SlotLoop, "_prefill", rows=lambda args: sum(t.request.rows for t in args[0]))
    wrap(SlotDecoder, "read")
    wrap(SlotDecoder, "advance")
    wrap(SlotLoop, "_collect")


async def one_round(engine, prompts: list[list[int]], settings: dict, max_tokens: int, spread: float) -> list[dict]:
    from chef_genius.serve.pieces import GenerationRequest

    async def consume(ticket_pieces, record):
        async for piece in ticket_pieces:
            if piece.text and record["first_out"] is None:
                record["first_out"] = time.perf_counter()

    tasks, records = [], []
    for index, prompt in enumerate(prompts):
        record = {"submitted": time.perf_counter(), "first_out": None}
        pieces = engine.submit(GenerationRequest([prompt], max_tokens, settings, seed=index))
        records.append(record)
        tasks.append(asyncio.create_task(consume(pieces, record)))
        if spread:
            await asyncio.sleep(spread / len(prompts))
    await asyncio.gather(*tasks)
    return records


def run_variant(loaded, name: str, args, log: list, prefill_graphs: bool = True) -> dict:
    import torch

    from benchmarks.serve_load import TITLES
    from chef_genius.serve.engine import Engine
    from chef_genius.serve.prompts import decoding_settings

    dtype, fused, compiled = VARIANTS[name]
    loaded.model.to(getattr(torch, dtype))
    tokenizer = loaded.tokenizer
    asks = [f"Create a recipe: {TITLES[i % len(TITLES)]}" for i in range(args.requests)]
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": ask}], add_generation_prompt=True,
                                             tokenize=False) for ask in asks]
    prompts = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    _, settings = decoding_settings(None, "careful", temperature=args.temperature)
    engine = Engine(loaded.model, tokenizer, loaded.family, max_rows=max(64, args.requests),
                    max_new_tokens=max(args.max_tokens, 256), fused_step=fused, compiled_step=compiled,
                    check_every=args.stream_every, prefill_graphs=prefill_graphs)
    try:
        asyncio.run(one_round(engine, prompts[:1], settings, args.max_tokens, 0))
        for _ in range(args.warmup_rounds):
            asyncio.run(one_round(engine, prompts, settings, args.max_tokens, args.spread))
        log.clear()
        began = time.perf_counter()
        tokens = engine.generated_tokens
        records = asyncio.run(one_round(engine, prompts, settings, args.max_tokens, args.spread))
        wall = time.perf_counter() - began
        tokens = engine.generated_tokens - tokens
    finally:
        engine.close()
    turns = [{"part": part, "at_ms": round(1e3 * (a - began), 2), "ms": round(1e3 * (b - a), 2), "rows": rows}
             for part, a, b, rows in log]
    firsts = [r["first_out"] - r["submitted"] for r in records if r["first_out"] is not None]
    if not firsts:
        sys.exit(f"{name}: no request wrote any text")
    return {"variant": name, "dtype": dtype, "fused": fused, "compiled": compiled, "prefill_graphs": prefill_graphs,
            "warmed": engine.warmed, "requests": args.requests,
            "spread_s": args.spread, "first_text_p50_s": statistics.median(firsts),
            "first_text_max_s": max(firsts), "tokens_per_s": tokens / wall, "wall_s": wall,
            "prefills": sum(t["part"] == "prefill" for t in turns),
            "prefill_ms": [t["ms"] for t in turns if t["part"] == "prefill"],
            "turns": turns[:args.show * 4]}


def profile_admit(loaded, name: str, rows: int = 16, prefill_graphs: bool = True) -> dict:
    """One admission of ``rows`` prompts into a fresh `SlotDecoder` (after one untimed), under
    torch.profiler: its wall time and the operators that took the most host and device time."""
    import torch

    from chef_genius.generation.slots import SlotDecoder
    from chef_genius.serve.prompts import decoding_settings

    dtype, fused, compiled = VARIANTS[name]
    loaded.model.to(getattr(torch, dtype))
    _, settings = decoding_settings(None, "careful", temperature=0.8)
    stops = loaded.family.stop_ids(loaded.tokenizer)
    decoder = SlotDecoder(loaded.model, stops, loaded.tokenizer.pad_token_id, 64, 256, graphs=True,
                          window=7, fused=fused, compiled=compiled, prefill_graphs=None if prefill_graphs else False)
    prompts = [[100 + (i * 7 + j) % 1000 for j in range(28 + i % 5)] for i in range(3 * rows)]

    def admit(first: int) -> tuple[float, float]:
        slots = list(range(first, first + rows))
        torch.cuda.synchronize()
        began = time.perf_counter()
        decoder.admit(slots, [prompts[s] for s in slots], [256] * rows, [settings] * rows, slots, busy=bool(first))
        returned = time.perf_counter() - began
        torch.cuda.synchronize()
        return returned, time.perf_counter() - began

    with torch.inference_mode():
        admit(0)
        plain = admit(rows)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                                torch.profiler.ProfilerActivity.CUDA]) as prof:
            admit(2 * rows)
    table = prof.key_averages()
    host = sum(event.self_cpu_time_total for event in table) / 1e3
    device = sum(event.self_device_time_total for event in table) / 1e3
    print(f"\n{name}{'' if prefill_graphs else ', eager prefill'}: admit of {rows} rows returned after "
          f"{1e3 * plain[0]:.1f} ms, done on the device after {1e3 * plain[1]:.1f} ms; under the profiler "
          f"{host:.1f} ms of host time, {device:.1f} ms of device time")
    print(table.table(sort_by="cpu_time_total", row_limit=25, max_name_column_width=60))
    print(table.table(sort_by="self_device_time_total", row_limit=12, max_name_column_width=60))
    return {"variant": name, "prefill_graphs": prefill_graphs, "rows": rows, "returned_ms": 1e3 * plain[0],
            "done_ms": 1e3 * plain[1], "profiled_host_ms": host, "profiled_device_ms": device}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=["fp32-fused", "bf16-compiled"],
                        help="float32 variants first: the model is converted in place")
    parser.add_argument("--model", type=Path, help="a model folder (default: SmolLM2-135M's shape, random weights)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--spread", type=float, default=0.03, help="seconds over which the requests are submitted")
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--stream-every", type=int, default=4)
    parser.add_argument("--warmup-rounds", type=int, default=1)
    parser.add_argument("--show", type=int, default=12, help="turns printed (and kept) per variant")
    parser.add_argument("--compare-eager", action="store_true",
                        help="run each variant twice: prefills as CUDA graphs (the default), then eager")
    parser.add_argument("--profile-admit", action="store_true",
                        help="also profile one admission of 16 rows per variant (a fresh decoder, no engine)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "serve_turns.json")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from benchmarks.serve_load import random_smollm2
    from chef_genius.inference import load_run

    log: list = []
    instrument(log)
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        model = args.model or random_smollm2(Path(scratch) / "random-smollm2-135m")
        loaded = load_run(model, device=args.device)
        for name in args.variants:
            for graphs in (True, False) if args.compare_eager else (True,):
                result = run_variant(loaded, name, args, log, prefill_graphs=graphs)
                results.append(result)
                label = name + ("" if graphs else ", eager prefill")
                print(f"\n{label}: first text p50 {result['first_text_p50_s']:.3f} s (max "
                      f"{result['first_text_max_s']:.3f}), {result['tokens_per_s']:.0f} tokens/s, {result['prefills']} "
                      f"prefills ({', '.join(f'{ms:.0f}' for ms in result['prefill_ms'][:12])} ms); prefill shapes "
                      f"captured at start (count, s): {result['warmed']}")
                print(f"{'part':>9} {'at ms':>8} {'ms':>7} {'rows':>5}")
                for turn in result["turns"]:
                    print(f"{turn['part']:>9} {turn['at_ms']:>8.1f} {turn['ms']:>7.2f} {turn['rows'] or '':>5}")
                if args.profile_admit:
                    result["admit_profile"] = profile_admit(loaded, name, prefill_graphs=graphs)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"device": args.device, "results": results}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
