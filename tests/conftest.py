"""Shared fixtures: data paths and tokenizers trained in memory.

The tests read the Wikibooks-derived files in tests/data/ (CC BY-SA 4.0, see its ATTRIBUTION.md),
so `make test` needs nothing beside the checkout. The few tests about the real RecipeNLG sample
in ../shared/data (not shippable) are marked `needs_shared` and skipped where it is absent.
"""

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
TEST_DATA = ROOT / "tests" / "data"  # built by tests/data/make_test_data.py
RECIPENLG = TEST_DATA / "recipenlg_layout.csv"  # Wikibooks recipes in RecipeNLG's full_dataset.csv layout
JUNK = TEST_DATA / "junk_rows.csv"  # the same layout, noisy on purpose
WIKIBOOKS = TEST_DATA / "wikibooks_recipes.json"  # the Wikibooks dump's layout

# The real files in ../shared/data beside the checkout; CHEF_GENIUS_SHARED_DATA points elsewhere.
SHARED_DATA = Path(os.environ.get("CHEF_GENIUS_SHARED_DATA", ROOT.parent / "shared" / "data"))
SHARED_RECIPENLG = SHARED_DATA / "recipenlg_sample_1k.csv"
SHARED_WIKIBOOKS = SHARED_DATA / "wikibooks_recipes_en.json"
needs_shared = pytest.mark.skipif(not SHARED_RECIPENLG.is_file(),
                                  reason=f"needs the real RecipeNLG sample at {SHARED_RECIPENLG}")

# Characters the round-trip property draws from: what recipes are written in.
RECIPE_ALPHABET = (
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    " .,;:!?'\"()-/&%°#*+=[]_$@~^<>{}\\`éèêàçñüöäîôœ½¼¾⅓⅔⅛–—’“”…"
)


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
    from tests.harness.byte_level import train_byte_level_tokenizer

    return train_byte_level_tokenizer(_corpus(), vocab_size=1500)
