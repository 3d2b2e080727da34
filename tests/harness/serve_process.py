"""`chef-genius serve` as a separate process on a free port, for tests and the load benchmark."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_URL = re.compile(r"at (http://\S+?)/ ")


class ServerProcess:
    def __init__(self, proc: subprocess.Popen, url: str, lines: list[str]):
        self.proc, self.url, self.lines = proc, url, lines


def serve_env(extra: dict | None = None) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), *sys.path]), "OMP_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "CUDA_VISIBLE_DEVICES": ""}
    env.pop("CHEF_GENIUS_API_KEY", None)
    env.update(extra or {})
    return env


@contextlib.contextmanager
def running_server(model: Path, *args: str, env: dict | None = None,
                   start_timeout: float = 180) -> Iterator[ServerProcess]:
    """Start the server on port 0 (the OS picks a free port), wait for its address line, stop it after."""
    proc = subprocess.Popen([sys.executable, "-m", "chef_genius", "serve", str(model), "--port", "0", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=serve_env(env))
    lines: list[str] = []
    found = threading.Event()
    url: list[str] = []

    def read() -> None:
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            match = _URL.search(line)
            if match and not url:
                url.append(match.group(1))
                found.set()
        found.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        deadline = time.monotonic() + start_timeout
        while not found.wait(0.2):
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not start in time:\n" + "\n".join(lines))
        if not url:
            raise RuntimeError(f"the server exited with {proc.wait()}:\n" + "\n".join(lines))
        yield ServerProcess(proc, url[0], lines)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def post(server, path: str, body, headers: dict | None = None, **kwargs):
    """POST ``body`` (a bytes body as it is, anything else as JSON) to the running ``server``."""
    import httpx

    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(server.url + path, content=content, timeout=120,
                      headers={"Content-Type": "application/json", **(headers or {})}, **kwargs)


def sse_events(response) -> list:
    """The server-sent events of a streamed answer: JSON objects, then "[DONE]"."""
    events = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            data = line[len("data: "):]
            events.append(data if data == "[DONE]" else json.loads(data))
    return events
