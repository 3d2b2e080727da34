"""The Hugging Face hub, asked before a model is loaded: whether it answers, and a hub id that cannot
load (offline, not cached) failing at once, in one line."""

from __future__ import annotations

import os
from pathlib import Path

from chef_genius.errors import UserError


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub (or $HF_ENDPOINT) answers a TCP connection within ``timeout``."""
    import socket
    from urllib.parse import urlparse

    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    try:
        socket.create_connection((endpoint.hostname or "huggingface.co",
                                  endpoint.port or (80 if endpoint.scheme == "http" else 443)), timeout=timeout).close()
    except OSError:
        return False
    return True


def check_hub_model(name: str) -> None:
    """Fail fast on a hub id that cannot load: not in the local Hugging Face cache while offline
    (HF_HUB_OFFLINE, or the hub unreachable), where transformers would retry for most of a minute
    before saying so. Local folders pass unchecked.

    Raises:
        UserError: the model is neither cached nor downloadable.
    """
    if Path(name).expanduser().exists():
        return
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # transformers brings it; without it, transformers' own error follows
        return
    try:
        cached = try_to_load_from_cache(name, "config.json")
    except ValueError:  # not a valid hub id: transformers says why
        return
    if isinstance(cached, str):
        return
    if _offline():
        raise UserError(f"cannot load model '{name}': not in the local Hugging Face cache and HF_HUB_OFFLINE is "
                        "set; check the name (a hub id such as google/flan-t5-base, a model folder or a .gguf "
                        "file), or download it online first")
    if not hub_reachable():
        raise UserError(f"cannot load model '{name}': not in the local Hugging Face cache, and the hub cannot be "
                        "reached (offline?); check the name (a hub id such as google/flan-t5-base, a model folder "
                        "or a .gguf file), or download it online first")
