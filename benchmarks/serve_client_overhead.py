"""How much of a load test's time is its client's: N GETs of /v1/models at once against `chef-genius serve`
(the tests' tiny model; nothing is generated), through httpx's AsyncClient, aiohttp, and bare asyncio
sockets (one keep-alive connection a request, HTTP/1.1 by hand: the floor). Three rounds each after a
warm-up; p50 and max per round. benchmarks/serve_load.py uses the client this shows to cost least.

    python benchmarks/serve_client_overhead.py [--requests 64]   # -> benchmarks/results/serve_client_overhead.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[1]


async def _rounds(one, requests: int, rounds: int = 3) -> list[dict]:
    await one()
    out = []
    for _ in range(rounds):
        times = await asyncio.gather(*(one() for _ in range(requests)))
        out.append({"p50_ms": round(statistics.median(times) * 1000, 1), "max_ms": round(max(times) * 1000, 1)})
    return out


async def _httpx(url: str, requests: int) -> list[dict]:
    import httpx

    limits = httpx.Limits(max_connections=requests + 4, max_keepalive_connections=requests + 4)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        async def one() -> float:
            began = time.monotonic()
            (await client.get(url + "/v1/models")).raise_for_status()
            return time.monotonic() - began
        return await _rounds(one, requests)


async def _aiohttp(url: str, requests: int) -> list[dict]:
    import aiohttp

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=requests + 4)) as session:
        async def one() -> float:
            began = time.monotonic()
            async with session.get(url + "/v1/models") as response:
                response.raise_for_status()
                await response.read()
            return time.monotonic() - began
        return await _rounds(one, requests)


async def _sockets(url: str, requests: int) -> list[dict]:
    where = urlparse(url)
    idle = [await asyncio.open_connection(where.hostname, where.port) for _ in range(requests + 1)]

    async def one() -> float:
        reader, writer = idle.pop()
        began = time.monotonic()
        writer.write(f"GET /v1/models HTTP/1.1\r\nHost: {where.hostname}\r\n\r\n".encode())
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
        assert head.startswith("http/1.1 200"), head
        length = int(head.split("content-length:")[1].split("\r\n")[0])
        await reader.readexactly(length)
        elapsed = time.monotonic() - began
        idle.append((reader, writer))
        return elapsed

    try:
        return await _rounds(one, requests)
    finally:
        for _, writer in idle:
            writer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "serve_client_overhead.json")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from tests.harness.serve_process import running_server
    from tests.harness.tiny_server_model import build_tiny_recipe_model

    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        model = build_tiny_recipe_model(Path(scratch) / "tiny-recipes")
        with running_server(model) as server:
            for name, run in (("httpx", _httpx), ("aiohttp", _aiohttp), ("sockets", _sockets)):
                results[name] = asyncio.run(run(server.url, args.requests))
    summary = {"requests": args.requests, "endpoint": "GET /v1/models", "rounds": results,
               "machine": f"{platform.machine()}, {platform.processor() or platform.system()}",
               "date": time.strftime("%Y-%m-%d")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{args.requests} GETs at once      round 1 p50/max ms   round 2            round 3")
    for name, rounds in results.items():
        print(f"{name:<22}" + "".join(f"{r['p50_ms']:>8.1f} / {r['max_ms']:<8.1f}" for r in rounds))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
