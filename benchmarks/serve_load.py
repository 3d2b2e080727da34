"""Load on `chef-genius serve`: N requests at once, streamed, against a server this script starts.

Each request is a streamed chat completion ("Create a recipe: TITLE", the run's own first template
is not needed: the chat endpoint takes the user's words); the script records its latency (sent ->
last byte), its time to first token (sent -> first piece of text) and its generated tokens (the
server's usage count). It reports p50/p95 of both, requests answered, and generated tokens per
second over the wall time of the whole load. Results go to benchmarks/results/serve_load.json.

    python benchmarks/serve_load.py --tiny                      # CPU: the tests' tiny recipe model
    python benchmarks/serve_load.py --model RUN --requests 64 --max-tokens 256   # e.g. SmolLM2-135M on a GPU
    python benchmarks/serve_load.py --tiny --server-arg=--engine=transformers   # the Transformers path

``--tiny`` builds the tests' tiny Llama (tests/harness/tiny_server_model.py, a checkout is needed);
``--random-smollm2`` a Llama of SmolLM2-135M's published shape with random weights and a 49,152-token
vocabulary trained on the bundled recipes (for machines that cannot reach the model hub: speed
does not depend on the weights, but random weights rarely end a recipe, so every request writes
``--max-tokens`` tokens). benchmarks/gpu_serve.sh runs it on the device machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TITLES = ["Tomato Pasta", "Lemon Chicken", "Bean Stew", "Garlic Bread", "Apple Pie", "Fish Curry", "Rice Salad",
          "Beef Soup"]


SMOLLM2_135M = {"hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
                "num_key_value_heads": 3, "max_position_embeddings": 8192, "rope_theta": 100000.0,
                "rms_norm_eps": 1e-5, "tie_word_embeddings": True, "vocab_size": 49152}  # its config.json


def random_smollm2(out: Path) -> Path:
    """SmolLM2-135M's shape, random weights, a ChatML tokenizer of its vocabulary size (bf16)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from chef_genius.recipe import Recipe, serialize
    from tests.harness.tiny_causal import CHAT_TEMPLATE, _byte_level

    data = json.loads((ROOT / "tests" / "data" / "wikibooks_recipes.json").read_text(encoding="utf-8"))
    texts = [serialize(Recipe(v["title"], v["ingredients"] or [], v["steps"] or [])) for v in data.values()]
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=_byte_level(texts, SMOLLM2_135M["vocab_size"]),
                                        eos_token="<|endoftext|>", pad_token="<pad>",
                                        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
                                        chat_template=CHAT_TEMPLATE)
    # A corpus this small learns fewer merges: filler tokens bring the vocabulary to the model's size.
    tokenizer.add_tokens([f"\u27e8{i}\u27e9" for i in range(len(tokenizer), SMOLLM2_135M["vocab_size"])])
    torch.manual_seed(0)
    config = LlamaConfig(**SMOLLM2_135M, bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _median(values: list) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))]


async def _one(client, url: str, index: int, max_tokens: int, temperature: float) -> dict:
    body = {"model": "x", "messages": [{"role": "user", "content": f"Create a recipe: {TITLES[index % len(TITLES)]}"}],
            "max_tokens": max_tokens, "temperature": temperature, "seed": index, "stream": True,
            "stream_options": {"include_usage": True}}
    start = time.monotonic()  # the server's trace uses this clock too (one for the whole host)
    first, tokens, status = None, 0, None
    async with client.post(url + "/v1/chat/completions", json=body) as response:
        status = response.status
        headers = time.monotonic() - start  # the handler has submitted the request and returned
        async for raw in response.content:  # server-sent events, a line at a time
            line = raw.decode("utf-8").rstrip("\r\n")
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if event.get("usage"):
                tokens = event["usage"]["completion_tokens"]
            if first is None and event.get("choices") and event["choices"][0]["delta"].get("content"):
                first = time.monotonic() - start
    return {"seed": index, "sent_at": start, "status": status, "latency": time.monotonic() - start, "ttft": first,
            "tokens": tokens, "headers": headers}


def split_first_token(results: list[dict], served: list[dict]) -> dict:
    """Where each request's time to a first token went, joined to the server's trace by seed (one
    monotonic clock): sent -> its handler began (connection, HTTP parsing, the server's event loop),
    the handler (body read, checked, encoded), the engine (queued, prefilled, decoded: first text
    handed over), the event loop taking that text, and the rest (written, sent, read by this client).
    Medians over the requests found in both; the five add up to each request's own TTFT."""
    by_seed = {t.get("seed"): t for t in served if t.get("submitted_at") is not None}
    parts: dict[str, list[float]] = {"to_handler_s": [], "handler_s": [], "engine_s": [], "event_loop_s": [],
                                     "to_client_s": []}
    for result in results:
        line = by_seed.get(result["seed"])
        if line is None or result["ttft"] is None or \
                None in (line["handler_s"], line["first_text_s"], line["first_out_s"]):
            continue
        received = line["submitted_at"] - line["handler_s"]
        first_out = line["submitted_at"] + line["first_out_s"]
        parts["to_handler_s"].append(received - result["sent_at"])
        parts["handler_s"].append(line["handler_s"])
        parts["engine_s"].append(line["first_text_s"])
        parts["event_loop_s"].append(line["first_out_s"] - line["first_text_s"])
        parts["to_client_s"].append(result["sent_at"] + result["ttft"] - first_out)
    split = {f"{name[:-2]}_p50_s": _median(values) for name, values in parts.items()}
    split["joined"] = len(parts["handler_s"])
    return split


async def _lag(samples: list[float], stop: asyncio.Event, every: float = 0.002) -> None:
    """This client's own event-loop lag: how late a 2 ms sleep wakes (a busy client delays what it measures)."""
    while not stop.is_set():
        began = time.monotonic()
        await asyncio.sleep(every)
        samples.append(time.monotonic() - began - every)


async def _load(url: str, requests: int, max_tokens: int, temperature: float,
                warmup_tokens: int, warmup_rounds: int = 0) -> tuple[list[dict], float, list[float]]:
    # aiohttp, not httpx: 64 GETs of /v1/models at once took 61-235 ms (p50) through httpx's AsyncClient,
    # 24-55 ms through aiohttp and 10-48 ms through bare sockets, on 2 cores (serve_client_overhead.py):
    # a client's own overhead would be counted as the server's time to a first token.
    import aiohttp

    connector = aiohttp.TCPConnector(limit=requests + 4)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=600)) as client:
        # warm-up, not counted: by default of the measured size, so that the server has captured its
        # decode step for that cache size (a first capture stalls every row; --warmup-tokens 8 shows it)
        await _one(client, url, 0, warmup_tokens, temperature)

        def one_round():
            return asyncio.gather(*(_one(client, url, i, max_tokens, temperature) for i in range(requests)))

        for _ in range(warmup_rounds):  # whole rounds first, not counted: a server's steady state
            await one_round()
        lags, stop = [], asyncio.Event()
        probe = asyncio.create_task(_lag(lags, stop))
        start = time.perf_counter()
        results = await one_round()
        wall = time.perf_counter() - start
        stop.set()
        await probe
        return list(results), wall, lags


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, help="run, adapter or model folder to serve")
    parser.add_argument("--tiny", action="store_true", help="serve the tests' tiny recipe model (CPU)")
    parser.add_argument("--random-smollm2", action="store_true", help="serve SmolLM2-135M's shape, random weights")
    parser.add_argument("--requests", type=int, default=64, help="requests sent at once")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--warmup-tokens", type=int, help="the warm-up request's max_tokens (default: --max-tokens)")
    parser.add_argument("--warmup-rounds", type=int, default=0,
                        help="whole rounds of the load sent (and not counted) before the measured one")
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--server-arg", action="append", default=[], help="more `serve` options, e.g. --device=cuda")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "serve_load.json")
    args = parser.parse_args()
    if (args.model is not None) + args.tiny + args.random_smollm2 != 1:
        parser.error("give one of --model RUN, --tiny, --random-smollm2")
    sys.path.insert(0, str(ROOT))
    import httpx

    from tests.harness.serve_process import running_server

    with tempfile.TemporaryDirectory() as scratch:
        model = args.model
        if args.tiny:
            from tests.harness.tiny_server_model import build_tiny_recipe_model

            model = build_tiny_recipe_model(Path(scratch) / "tiny-recipes")
        if args.random_smollm2:
            model = random_smollm2(Path(scratch) / "random-smollm2-135m")
        gpu = any("cuda" in a for a in args.server_arg)  # the harness hides GPUs unless asked
        env = {"CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES", "0")} if gpu else None
        trace = Path(scratch) / "trace.jsonl"  # the server's own timings (serve --trace)
        with running_server(model, "--max-batch", str(max(64, args.requests)), "--trace", str(trace),
                            *args.server_arg, env=env) as server:
            health = httpx.get(server.url + "/health").json()
            results, wall, lags = asyncio.run(_load(server.url, args.requests, args.max_tokens, args.temperature,
                                         args.warmup_tokens or args.max_tokens, args.warmup_rounds))
            server_tail = [line for line in server.lines if "DEBUG" not in line][-40:]
        # The measured requests: submitted once the measured round began (the warm-up request and rounds
        # came before; one monotonic clock for the host), whatever order their trace lines were written in.
        began = min(r["sent_at"] for r in results)
        lines = trace.read_text().splitlines() if trace.is_file() else []
        served = [t for t in map(json.loads, lines) if t.get("submitted_at", began) >= began]
    firsts = [t["first_text_s"] for t in served if t["first_text_s"] is not None]
    answered = [r for r in results if r["status"] == 200 and r["ttft"] is not None]
    latencies, ttfts = [r["latency"] for r in answered], [r["ttft"] for r in answered]
    tokens = sum(r["tokens"] for r in answered)
    if not answered:  # nothing to time: say what the server answered and what it printed
        statuses = sorted({str(r["status"]) for r in results})
        sys.exit("no request was answered (HTTP " + ", ".join(statuses) + "); the server's last lines:\n"
                 + "\n".join(server_tail))
    summary = {
        "model": ("tiny (tests/harness/tiny_server_model.py)" if args.tiny else
                  "SmolLM2-135M's shape, random weights" if args.random_smollm2 else str(args.model)),
        "device": health["device"], "engine": health.get("engine", "transformers"), "requests": args.requests,
        "answered": len(answered),
        "max_tokens": args.max_tokens, "warmup_tokens": args.warmup_tokens or args.max_tokens,
        "warmup_rounds": args.warmup_rounds,
        "temperature": args.temperature,
        "latency_p50_s": statistics.median(latencies), "latency_p95_s": _percentile(latencies, 0.95),
        "ttft_p50_s": statistics.median(ttfts), "ttft_p95_s": _percentile(ttfts, 0.95),
        "generated_tokens": tokens, "wall_s": wall, "tokens_per_s": tokens / wall,
        "machine": f"{platform.machine()}, {platform.processor() or platform.system()}",
        # Inside the server (submission of the request to the engine -> its rows start decoding ->
        # its first text handed to the event loop): the rest of the client's time to a first token
        # is HTTP, parsing, the prompt's template and tokens, and streaming.
        "server_queued_p50_s": _median([t["queued_s"] for t in served]),
        "server_first_text_p50_s": _median([t["first_text_s"] for t in served]),
        "server_first_text_p95_s": _percentile(firsts, 0.95) if firsts else None,
        # before submission (the handler: body read, checked, encoded) and after (first text taken by
        # the event loop): with the client's TTFT, where a first token's time goes
        "headers_p50_s": _median([r["headers"] for r in answered]),
        "server_handler_p50_s": _median([t["handler_s"] for t in served if t.get("handler_s") is not None]),
        "server_first_out_p50_s": _median([t["first_out_s"] for t in served if t.get("first_out_s") is not None]),
        # the client's TTFT split by stage (the trace joined by seed), and this client's own loop lag
        "ttft_split": split_first_token(results, served),
        "client_loop_lag_p50_s": _median(lags), "client_loop_lag_max_s": max(lags, default=None),
        "switch_interval_s": os.environ.get("CHEF_GENIUS_SWITCH_INTERVAL"),
        "server_args": args.server_arg,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"engine {summary['engine']} on {summary['device']}")
    print(f"{'requests':>9} {'answered':>9} {'p50 s':>7} {'p95 s':>7} {'TTFT p50':>9} {'TTFT p95':>9} "
          f"{'tokens':>7} {'tokens/s':>9}")
    print(f"{args.requests:>9} {len(answered):>9} {summary['latency_p50_s']:>7.2f} {summary['latency_p95_s']:>7.2f} "
          f"{summary['ttft_p50_s']:>9.3f} {summary['ttft_p95_s']:>9.3f} {tokens:>7} {summary['tokens_per_s']:>9.0f}")
    print(f"inside the server: queued p50 {summary['server_queued_p50_s']} s, first text p50 "
          f"{summary['server_first_text_p50_s']} s (p95 {summary['server_first_text_p95_s']} s), taken by the event "
          f"loop p50 {summary['server_first_out_p50_s']} s; handler before submission p50 "
          f"{summary['server_handler_p50_s']} s; the client had the response's headers at p50 "
          f"{summary['headers_p50_s']} s")
    split = summary["ttft_split"]
    print("TTFT p50 by stage (s): " + ", ".join(f"{k[:-6]} {v:.4f}" for k, v in split.items()
                                                  if k != "joined" and v is not None)
          + f" ({split['joined']} joined); this client's loop lag p50 {summary['client_loop_lag_p50_s']:.4f} s,"
          f" max {summary['client_loop_lag_max_s']:.4f} s")
    print(f"on {health['device']}; wrote {args.out}")
    if len(answered) < args.requests:
        sys.exit(f"{args.requests - len(answered)} requests were not answered")


if __name__ == "__main__":
    main()
