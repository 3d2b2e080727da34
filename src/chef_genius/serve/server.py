"""Start `chef-genius serve`: check the address and the key, bind, load the model once, serve.

Safe by default: it binds 127.0.0.1; any address that is not loopback needs an API key (``--api-key``
or CHEF_GENIUS_API_KEY), else it refuses to start. The port is bound before the model loads, so a
port in use is one line at once (port 0 picks a free one; the line it prints says which).
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
from pathlib import Path

from chef_genius.errors import UserError

KEY_VARIABLE = "CHEF_GENIUS_API_KEY"


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name other than localhost may resolve anywhere
        return False


def check_options(args) -> str | None:
    """The API key (None for none); `UserError` for options that cannot serve."""
    key = args.api_key if args.api_key is not None else os.environ.get(KEY_VARIABLE)
    key = key.strip() if key else None
    if not is_loopback(args.host) and not key:
        raise UserError(f"serve: --host {args.host} is not a loopback address: give an API key (--api-key KEY or "
                        f"{KEY_VARIABLE}) to serve beyond this machine")
    if key is not None and len(key) < 8:
        raise UserError("serve: the API key is shorter than 8 characters")
    if not 0 <= args.port <= 65535:
        raise UserError(f"serve: --port {args.port} is not a port (0-65535; 0 picks a free one)")
    for name in ("max_tokens", "max_tokens_cap", "max_batch", "max_queue", "stream_every"):
        if getattr(args, name) <= 0:
            raise UserError(f"serve: --{name.replace('_', '-')} must be positive")
    if args.max_tokens > args.max_tokens_cap:
        raise UserError(f"serve: --max-tokens {args.max_tokens} is over --max-tokens-cap {args.max_tokens_cap}")
    if not args.timeout > 0:
        raise UserError("serve: --timeout must be positive")
    trace = getattr(args, "trace", None)
    if trace is not None and (trace.is_dir() or not trace.parent.is_dir()):
        raise UserError(f"serve: --trace {trace}: give a file in an existing folder (lines are appended to it)")
    return key


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as error:
        sock.close()
        raise UserError(f"serve: cannot listen on {host}:{port}: {error.strerror or error}") from None
    sock.listen(2048)
    return sock


def switch_interval() -> float | None:
    """``CHEF_GENIUS_SWITCH_INTERVAL``: seconds between the GIL's hand-overs (`sys.setswitchinterval`;
    Python's default is 0.005). The engine's thread and the event loop share one interpreter: a
    thread waiting for the GIL waits up to this long while the other runs Python. None: unset."""
    value = os.environ.get("CHEF_GENIUS_SWITCH_INTERVAL")
    if value is None or value == "":
        return None
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds <= 1:
        raise UserError(f"serve: CHEF_GENIUS_SWITCH_INTERVAL={value!r} is not a number of seconds in (0, 1]")
    return seconds


def model_source(run: Path) -> tuple[Path, str]:
    """What to load for RUN (a GGUF file is converted once to a model folder, as `train --model`
    does) and the model's name in the API (the run folder's, or the file's stem)."""
    path = Path(os.path.abspath(run))
    if path.suffix.lower() == ".gguf":
        from chef_genius.model.loading import gguf_folder

        return gguf_folder(path), path.stem
    return path, path.parent.name if path.name == "final" else path.name


def serve(args, templates_for, references_for=None) -> int:
    """The CLI's handler; ``templates_for(run, folder)`` gives the templates the run trained with,
    ``references_for(run, folder)`` its reference recipes (None: trained without)."""
    key = check_options(args)
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError as error:
        raise UserError(f"serve needs {error.name}: pip install 'chef-genius[serve]'") from None
    from chef_genius.inference import load_run  # torch: the `train` extras (the CLI says so when absent)
    from chef_genius.serve.app import ServeConfig, create_app
    from chef_genius.serve.engine import Engine
    from chef_genius.serve.prompts import Limits

    interval = switch_interval()
    sock = bind(args.host, args.port)
    try:
        source, name = model_source(args.run)
        loaded = load_run(source, device=args.device)
        if getattr(args, "dtype", "float32") == "bfloat16":  # a GGUF or a run loads in float32
            import torch

            loaded.model.to(torch.bfloat16)
        engine = Engine(loaded.model, loaded.tokenizer, loaded.family, max_rows=args.max_batch,
                        max_queue=args.max_queue, timeout=args.timeout, engine=args.engine,
                        max_new_tokens=args.max_tokens_cap, trace=args.trace, check_every=args.stream_every,
                        fused_step=getattr(args, "fused_step", True),
                        compiled_step=getattr(args, "compile_step", False))
        if interval is not None:
            sys.setswitchinterval(interval)
        limit = loaded.family.new_token_budget(loaded.model, 0, 4096)  # a causal model's positions
        limits = Limits(max_prompt_tokens=min(1024, max(1, limit - 1)), max_tokens=args.max_tokens,
                        max_tokens_cap=args.max_tokens_cap)
        config = ServeConfig(name, templates_for(source, loaded.folder), args.decoding, key, limits=limits,
                             references=references_for(source, loaded.folder) if references_for else None)
        app = create_app(engine, loaded.tokenizer, loaded.family, config)
        host, port = sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        print(f"chef-genius: serving {config.model_id} ({loaded.folder}) on {engine.device} at http://{shown}:{port}/ "
              f"(engine {engine.kind}, decoding {args.decoding}, batch {args.max_batch}, queue {args.max_queue}"
              f"{', API key required' if key else ''})", flush=True)
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                               timeout_graceful_shutdown=5))
        server.run(sockets=[sock])
        engine.close()
    finally:
        sock.close()
    print("chef-genius: server stopped", file=sys.stderr)
    return 0
