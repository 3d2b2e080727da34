"""The decode step's attention for grouped-query models, without copying keys and values.

Transformers' SDPA path repeats a grouped-query model's keys and values to every query head
(``repeat_kv``) before attending whenever a mask is given, which the engine always gives: on an
H200 at batch 64 that copy and the float32 memory-efficient kernel over the whole cache took 41 % of
a decode step (benchmarks/results/generation_profile.json). Here a one-token query is grouped by
its key/value head instead, so each layer reads its cache once, with two batched matmuls.
Prefill (more than one query token) stays on Transformers' SDPA.

`grouped_attention_for(model)` switches a model to it for the engine's run and back after.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from chef_genius.generation.state import base_model

NAME = "chef_genius_grouped"


def grouped_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Transformers' attention-function signature: query (batch, heads, q, dim), key and value
    (batch, kv heads, length, dim), an additive mask (batch, 1, q, length); returns the output
    (batch, q, heads, dim) and no weights."""
    if query.shape[2] != 1:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                      **kwargs)
    batch, heads, _, dim = query.shape
    kv_heads, length = key.shape[1], key.shape[2]
    scale = scaling if scaling is not None else dim ** -0.5
    # Head h = kv * group + j, as repeat_kv lays them out.
    scores = torch.matmul(query.reshape(batch, kv_heads, heads // kv_heads, dim), key.transpose(-1, -2)) * scale
    if attention_mask is not None:
        scores = scores + attention_mask[:, :, -1:, :length]
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(value.dtype)
    out = torch.matmul(probs, value)
    return out.reshape(batch, heads, 1, dim).transpose(1, 2).contiguous(), None


def _register() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(NAME, grouped_attention)


@contextmanager
def grouped_attention_for(model: torch.nn.Module) -> Iterator[None]:
    """Decode ``model`` (a causal Transformers model, PEFT-wrapped or not) with `grouped_attention`
    inside the block; its own attention is restored after."""
    _register()
    base = base_model(model)
    config = base.config
    before = config._attn_implementation
    config._attn_implementation = NAME
    try:
        yield
    finally:
        config._attn_implementation = before
