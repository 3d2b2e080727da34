"""A server's prefills replayed as CUDA graphs: a newcomer's first token without a kernel launch a layer.

A prefill through the model's forward launches a few hundred kernels (about 25 a layer). At a
server's sizes (a few prompts of a few dozen tokens) launching them, not running them, takes the
time, and the host holds the worker the whole while: on an H100 with SmolLM2-135M's shape one
prefill of 16 rows returned after 19-57 ms (float32, bfloat16; machines vary) for 4-9 ms of device
time, and took twice that inside a busy server (`benchmarks/serve_turns.py --profile-admit`); each
wave of newcomers waited for it before its first token. Replayed, the same admission returned after
6-7 ms.

`PrefillGraph` captures one prefill shape and replays it: the ids and each row's first column
copied in, one launch (the positions and the mask are made inside), then each layer's keys and
values copied into the rows' slots of the decoder's cache (60 copies for SmolLM2, a fraction of a
millisecond). So a graph does not depend on the cache (its size, its tensors): a decoder captures
each shape once, and a server captures the usual ones before its first request
(`SlotDecoder.warm_prefills`). Shapes come in buckets (`prefill_shape`): rows rounded up to a
power of two, the width up to a multiple of `WIDTH_STEP`. A bucket's extra rows repeat the last
real row and are dropped after the replay; a wider bucket only left-pads the prompts more, which
the mask hides and the position ids skip, as in any left-padded prefill group. Prefills wider than
`MAX_GRAPH_WIDTH` or of more than `MAX_GRAPH_TOKENS` tokens run eagerly: their kernels take the
time, and the graphs a server keeps stay few (46 at most with 64 slots) and small (their logits; the keys and
values of all of them share one `PrefillBuffer`).

The graphs of a decoder share one memory pool and one buffer: they never run at once, and each
replay's outputs are read (on the same stream) before the next replay.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

WIDTH_STEP = 32  # prompt widths are rounded up to a multiple of this
MAX_GRAPH_TOKENS = 4096  # rows x width above which a prefill runs eagerly (its kernels dominate)
MAX_GRAPH_WIDTH = 256  # wider prompts run eagerly too: each width is one more set of graphs
WARM_WIDTHS = (32, 64)  # the widths a server captures before its first request: a chat prompt's


def prefill_shape(lengths: list[int], bucketed: bool) -> tuple[int, int, bool]:
    """(rows, width, graphed) of a prefill of prompts of ``lengths``: the exact shape, or with
    ``bucketed`` the bucket's (rows a power of two, width a multiple of `WIDTH_STEP`) when it is at
    most `MAX_GRAPH_WIDTH` wide and holds at most `MAX_GRAPH_TOKENS` tokens."""
    rows, width = len(lengths), max(lengths)
    if bucketed:
        rounded_rows, rounded_width = 1 << (rows - 1).bit_length(), -(-width // WIDTH_STEP) * WIDTH_STEP
        if rounded_width <= MAX_GRAPH_WIDTH and rounded_rows * rounded_width <= MAX_GRAPH_TOKENS:
            return rounded_rows, rounded_width, True
    return rows, width, False


class PrefillBuffer:
    """Where the captured prefills of one decoder leave their keys and values: per layer, room for
    `MAX_GRAPH_TOKENS` tokens, allocated at the first capture's warm-up. A replay's keys and values
    are copied into the decoder's cache before the next replay overwrites them, so one buffer
    serves every graph (else each kept its own: 189 MB for a 64 x 64 bucket of SmolLM2 in float32)."""

    def __init__(self):
        self.room: list[list[torch.Tensor | None]] = []  # layer -> [keys, values], flat

    def hold(self, tensor: torch.Tensor, layer: int, which: int) -> torch.Tensor:
        """``tensor`` (rows, kv heads, width, head dim) copied into its place: the copy, a view."""
        while len(self.room) <= layer:
            self.room.append([None, None])
        room = self.room[layer][which]
        if room is None:
            room = tensor.new_empty(MAX_GRAPH_TOKENS * tensor.shape[1] * tensor.shape[3])
            self.room[layer][which] = room
        view = room[:tensor.numel()].view(tensor.shape)
        view.copy_(tensor)
        return view


class ScratchCache:
    """The cache a captured prefill runs on: each layer's keys and values copied into the
    decoder's `PrefillBuffer` (the graph's outputs, copied into the decoder's cache after a replay);
    a prefill attends only to itself."""

    def __init__(self, buffer: PrefillBuffer):
        self.buffer = buffer
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []

    def update(self, keys: torch.Tensor, values: torch.Tensor, layer: int, *args, **kwargs):
        if layer == 0:  # a new pass (a warm-up run came before the capture)
            self.keys, self.values = [], []
        if layer != len(self.keys):
            raise RuntimeError(f"a captured prefill needs each layer's cache update once, in order (got layer {layer} "
                               f"after {len(self.keys)})")
        self.keys.append(self.buffer.hold(keys, layer, 0))
        self.values.append(self.buffer.hold(values, layer, 1))
        return keys, values


class PrefillGraph:
    """One prefill shape, ``rows`` x ``width``, captured: called with the left-padded ids and each
    row's first real column (``starts``), it returns the last token's logits and every layer's keys
    and values (views of ``buffer``, valid until the next replay).

    ``forward(ids, starts, cache)``: the model's prefill pass on a `ScratchCache` (positions and
    mask made from ``starts`` inside the graph); ``pool``: the memory pool the graphs of one decoder
    share. Capturing runs the forward twice on a side stream first (on placeholder inputs), then
    records it."""

    def __init__(self, forward: Callable[..., torch.Tensor], rows: int, width: int, device: torch.device, pool,
                 buffer: PrefillBuffer, warmups: int = 2):
        self.inputs = (torch.zeros((rows, width), dtype=torch.long, device=device),
                       torch.zeros(rows, dtype=torch.long, device=device))
        self.cache = ScratchCache(buffer)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(warmups):
                forward(*self.inputs, self.cache)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=pool):
            self.logits = forward(*self.inputs, self.cache)

    def __call__(self, ids: torch.Tensor, starts: torch.Tensor) \
            -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        for static, value in zip(self.inputs, (ids, starts), strict=True):
            static.copy_(value)
        self.graph.replay()
        return self.logits, self.cache.keys, self.cache.values
