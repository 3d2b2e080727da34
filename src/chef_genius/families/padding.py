"""Rows of token ids padded into a batch tensor: training batches (widths rounded up to a
multiple), prompts for generation (on the left or the right)."""

from __future__ import annotations

import numpy as np
import torch

PAD_MULTIPLE = 8  # tensor-core friendly widths


def round_up(n: int, multiple: int = PAD_MULTIPLE) -> int:
    return -(-n // multiple) * multiple


def padded(rows: list[np.ndarray], value: int, multiple: int = PAD_MULTIPLE) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids [rows, width], attention mask: 1 over each row's own tokens), ``value`` behind them."""
    width = round_up(max(max(len(r) for r in rows), 1), multiple)
    out = np.full((len(rows), width), value, dtype=np.int64)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, :len(row)] = row
        mask[i, :len(row)] = 1
    return torch.from_numpy(out), mask


def padded_prompts(rows: list[list[int]], pad_id: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts for ``generate``: (ids, attention mask), padded on the left (``left``) or the right."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        span = slice(width - len(row), width) if left else slice(0, len(row))
        ids[i, span] = torch.tensor(row)
        mask[i, span] = 1
    return ids, mask


def cache_of(out):
    """The KV cache a forward returned (``cache`` in newer Transformers, else ``past_key_values``)."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values
