"""Weight layouts for decoding on the CPU: column-major Linear weights where that reads faster.

A decode step multiplies one token's vector by every weight matrix (a matrix-vector product), so
on the CPU its time is that of reading the weights. With PyTorch's MKL, `F.linear(x, W)` on a
row-major ``W`` (out, in) (PyTorch's layout) takes MKL's transposed GEMV, which ran at 7-10 GB/s on
this project's 2-core EPYC sandbox whatever the thread count; the same product with ``W`` stored
column-major (``W.t()`` contiguous, so that ``x @ W.t()`` is a plain row-major GEMM) ran at
14-19 GB/s for the wide matrices: SmolLM2-135M's lm_head (49152 x 576) 11.4 -> 5.8 ms, its MLP's
gate and up 399 -> 246 us each, attention's q and o 193 -> 155 us; narrow ones (out < in: k, v,
the MLP's down) were as fast or faster row-major (docs/generation.md, CPU).

`column_major_linears(model)` gives the wide Linear weights (``out_features >= in_features``) a
column-major copy of the same values for the block (``weight.data``: the Parameter objects stay,
so tied weights, optimizers and adapters see the same parameters) and puts the original tensors
back after. Values are unchanged; only the order in which MKL sums a dot product may differ (as
between two batch sizes), so logits can differ in their last bits from row-major float32.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


def _wide_linears(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The distinct 2-D CPU float weights of ``model``'s Linear layers with out >= in features."""
    seen: set[int] = set()
    chosen = []
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if not isinstance(module, torch.nn.Linear) or not isinstance(weight, torch.nn.Parameter):
            continue
        if weight.dim() != 2 or weight.device.type != "cpu" or not weight.is_floating_point():
            continue
        if weight.shape[0] < weight.shape[1] or id(weight) in seen or not weight.is_contiguous():
            continue
        seen.add(id(weight))
        chosen.append(weight)
    return chosen


@contextmanager
def column_major_linears(model: torch.nn.Module, enabled: bool = True) -> Iterator[int]:
    """Within the block, ``model``'s wide CPU Linear weights are column-major (see the module's
    docstring); yields how many were changed (0 when not ``enabled`` or nothing is on the CPU).
    The original tensors are kept and restored, so the block holds a second copy of those weights."""
    if not enabled:
        yield 0
        return
    changed: list[tuple[torch.nn.Parameter, torch.Tensor]] = []
    try:  # a copy that fails half-way (out of memory) still puts back the ones made
        # Ordinary tensors even inside inference_mode: a training loop that samples keeps using them.
        with torch.inference_mode(False), torch.no_grad():
            for weight in _wide_linears(model):
                changed.append((weight, weight.data))
                weight.data = weight.data.t().contiguous().t()
        yield len(changed)
    finally:
        with torch.inference_mode(False), torch.no_grad():
            for weight, original in changed:
                weight.data = original
