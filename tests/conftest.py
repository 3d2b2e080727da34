"""Shared fixtures: real data paths and tokenizers trained in memory."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

with contextlib.suppress(ImportError):  # the data tests need no torch
    import torch

    torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
# ../shared/data beside the checkout; CHEF_GENIUS_SHARED_DATA points elsewhere (the GPU machine).
SHARED_DATA = Path(os.environ.get("CHEF_GENIUS_SHARED_DATA", ROOT.parent / "shared" / "data"))
RECIPENLG = SHARED_DATA / "recipenlg_sample_1k.csv"
JUNK = SHARED_DATA / "recipenlg_junk_rows.csv"
WIKIBOOKS = SHARED_DATA / "wikibooks_recipes_en.json"

# Characters the round-trip property draws from: what recipes are written in.
RECIPE_ALPHABET = (
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    " .,;:!?'\"()-/&%°#*+=[]_$@~^<>{}\\`éèêàçñüöäîôœ½¼¾⅓⅔⅛–—’“”…"
)


def pytest_collection_modifyitems(config, items):
    if not SHARED_DATA.exists():
        pytest.exit(f"tests need the shared data folder at {SHARED_DATA}", returncode=2)


@pytest.fixture(scope="session")
def wikibooks() -> dict:
    return json.loads(WIKIBOOKS.read_text(encoding="utf-8"))


def _corpus() -> list[str]:
    from chef_genius.recipe import Recipe, serialize

    data = json.loads(WIKIBOOKS.read_text(encoding="utf-8"))
    texts = []
    for value in list(data.values())[:600]:
        recipe = Recipe(value["title"], value["ingredients"] or [], value["steps"] or [])
        texts.append(serialize(recipe))
    return texts + [RECIPE_ALPHABET]


@pytest.fixture(scope="session")
def t5_tokenizer():
    from chef_genius.tokenizer import train_t5_style_tokenizer

    return train_t5_style_tokenizer(_corpus(), vocab_size=1500, alphabet=RECIPE_ALPHABET)


@pytest.fixture(scope="session")
def byte_tokenizer():
    from chef_genius.tokenizer import train_byte_level_tokenizer

    return train_byte_level_tokenizer(_corpus(), vocab_size=1500)
