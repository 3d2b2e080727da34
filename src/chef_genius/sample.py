"""The bundled offline sample: 400 Wikibooks Cookbook recipes (CC BY-SA 4.0, see
data/ATTRIBUTION.md)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def sample_path() -> Path:
    """Path of the bundled sample (a JSON list of recipe objects)."""
    return Path(str(resources.files("chef_genius") / "data" / "wikibooks_sample.json"))
