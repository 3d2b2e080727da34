"""A server's prefills replayed as CUDA graphs: a newcomer's first token without a kernel launch a layer.

A prefill through the model's forward launches a few hundred kernels (about 25 a layer). At a
server's sizes (a few prompts of a few dozen tokens) launching them, not running them, takes the
time, and the host holds the worker the whole while: on an H100 with SmolLM2-135M's shape one
prefill of 16 rows took 27 ms of host time in float32 and 57 ms in bfloat16 for 5-8 ms of device
time, and twice that inside a busy server (`benchmarks/serve_turns.py --profile-admit`); each
wave of newcomers waited for it before its first token.

`PrefillGraph` captures one prefill shape and replays it: static inputs copied in, one launch,
then each layer's keys and values copied into the rows' slots of the decoder's cache (60 copies
for SmolLM2, a fraction of a millisecond). So a graph does not depend on the cache (its size, its
tensors): a decoder captures each shape once, and a server can capture the usual ones before its
first request (`SlotDecoder.warm_prefills`). Shapes come in buckets (`prefill_shape`): rows
rounded up to a power of two, the width up to a multiple of `WIDTH_STEP`. A bucket's extra rows
repeat the last real row and are dropped after the replay; a wider bucket only left-pads the
prompts more, which the mask hides and the position ids skip, as in any left-padded prefill group.
Above `MAX_GRAPH_TOKENS` tokens a prefill is long enough for its kernels to take the time, and
runs eagerly.

The graphs of a decoder share one memory pool: they never run at once, and each replay's outputs
are read (on the same stream) before the next replay.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

WIDTH_STEP = 32  # prompt widths are rounded up to a multiple of this
MAX_GRAPH_TOKENS = 8192  # rows x width above which a prefill runs eagerly (its kernels dominate)
WARM_WIDTHS = (32, 64)  # the widths a server captures before its first request: a chat prompt's


def prefill_shape(lengths: list[int], bucketed: bool) -> tuple[int, int, bool]:
    """(rows, width, graphed) of a prefill of prompts of ``lengths``: the exact shape, or with
    ``bucketed`` the bucket's (rows a power of two, width a multiple of `WIDTH_STEP`) when it holds
    at most `MAX_GRAPH_TOKENS` tokens."""
    rows, width = len(lengths), max(lengths)
    if bucketed:
        rounded_rows, rounded_width = 1 << (rows - 1).bit_length(), -(-width // WIDTH_STEP) * WIDTH_STEP
        if rounded_rows * rounded_width <= MAX_GRAPH_TOKENS:
            return rounded_rows, rounded_width, True
    return rows, width, False


class ScratchCache:
    """The cache a captured prefill runs on: each layer's keys and values kept as they come (the
    graph's outputs, copied into the decoder's cache after a replay); a prefill attends only to
    itself."""

    def __init__(self):
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []

    def update(self, keys: torch.Tensor, values: torch.Tensor, layer: int, *args, **kwargs):
        del self.keys[layer:], self.values[layer:]  # a warm-up run before the capture left its own
        self.keys.append(keys)
        self.values.append(values)
        return keys, values


class PrefillGraph:
    """One prefill shape, ``rows`` x ``width``, captured: called with (ids, mask, positions) of
    that shape, it returns the last token's logits and every layer's keys and values.

    ``forward(ids, mask, positions, cache)``: the model's prefill pass on a `ScratchCache`;
    ``pool``: the memory pool the graphs of one decoder share. Capturing runs the forward twice on
    a side stream first (on placeholder inputs), then records it."""

    def __init__(self, forward: Callable[..., torch.Tensor], rows: int, width: int, dtype: torch.dtype,
                 device: torch.device, pool, warmups: int = 2):
        columns = torch.arange(width, device=device)
        causal = columns[None, :] <= columns[:, None]
        self.inputs = (torch.zeros((rows, width), dtype=torch.long, device=device),
                       torch.zeros((rows, 1, width, width), dtype=dtype, device=device).masked_fill(
                           ~causal, torch.finfo(dtype).min),
                       columns.repeat(rows, 1))
        self.cache = ScratchCache()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(warmups):
                forward(*self.inputs, self.cache)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=pool):
            self.logits = forward(*self.inputs, self.cache)

    def __call__(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor) \
            -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        for static, value in zip(self.inputs, (ids, mask, positions), strict=True):
            static.copy_(value)
        self.graph.replay()
        return self.logits, self.cache.keys, self.cache.values
