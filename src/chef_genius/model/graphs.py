"""Forward + backward of a micro-batch captured once per batch shape in a CUDA graph, then
replayed.

Eager PyTorch launches every kernel from Python: FLAN-T5-large with LoRA issues about 9,000
kernels per micro-batch, and at about 50 us of host time each the GPU idles most of the step
(benchmarks/profile_step.py). A replayed graph launches them all at once. The collator rounds
batch shapes up (`Collator` multiples), so a run needs a few dozen graphs; all of them share one
memory pool, so memory is that of the largest shape, not their sum.

The captured work is exactly the eager step's: the model family's `loss_sums` and ``backward`` of the
smoothed sum times a scale that is a device tensor set before each replay. Gradients accumulate
in place into persistent ``.grad`` buffers, as they do eagerly, so accumulation over
micro-batches, clipping, gradient noise and the optimizer are unchanged; the optimizer must
zero gradients in place (``set_to_none=False``).

Requirements, checked by the caller: one process (no DDP hooks), no activation checkpointing,
and a step that reads nothing back to the host (T5 with `speed.shared_bias_attention`;
tests/test_speed.py checks it). A shape whose capture fails falls back to eager with a warning.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

# Eager runs on a side stream before the first capture (cuBLAS, allocator); one before each later
# shape (capturing without one failed on the H100). Their cached blocks are released before each
# capture, or they would sit beside the shared graph pool.
WARMUP_RUNS = 2


@dataclass
class _Captured:
    graph: torch.cuda.CUDAGraph
    inputs: dict[str, torch.Tensor]
    scale: torch.Tensor
    outputs: tuple[torch.Tensor, ...]


class GraphedSteps:
    """Run ``loss_fn(batch) -> (smoothed, nll, count)`` and its backward, graph-replayed by shape.

    Args:
        loss_fn: the differentiable loss of one batch (device tensors in, device tensors out).
        params: the trainable parameters; their ``.grad`` become persistent buffers.
        autocast: a factory for the compute autocast context.
    """

    def __init__(self, loss_fn: Callable, params: list[torch.nn.Parameter], autocast: Callable):
        self.loss_fn = loss_fn
        self.params = params
        self.autocast = autocast
        self.graphs: dict[tuple, _Captured | None] = {}
        self.pool = torch.cuda.graph_pool_handle()
        # One side stream for every warm-up: the allocator caches blocks per stream, so a new
        # stream per capture would keep a step's worth of memory per shape.
        self.side = torch.cuda.Stream()
        self.capture_seconds = 0.0
        self.failed: list[str] = []
        for param in params:
            if param.grad is None:
                param.grad = torch.zeros_like(param)

    def __call__(self, batch: dict[str, torch.Tensor], scale: float) -> tuple[torch.Tensor, ...]:
        key = tuple((name, tuple(t.shape), t.dtype) for name, t in sorted(batch.items()))
        if key not in self.graphs:
            self.graphs[key] = self._capture(batch)
        captured = self.graphs[key]
        if captured is None:  # capture failed for this shape: the eager step
            with self.autocast():
                smoothed, nll, count = self.loss_fn(batch)
                (smoothed * scale).backward()
            return smoothed.detach(), nll.detach(), count
        for name, tensor in batch.items():
            captured.inputs[name].copy_(tensor, non_blocking=True)
        captured.scale.fill_(scale)
        captured.graph.replay()
        return tuple(t.clone() for t in captured.outputs)

    def _capture(self, batch: dict[str, torch.Tensor]) -> _Captured | None:
        started = time.perf_counter()
        inputs = {name: tensor.clone() for name, tensor in batch.items()}
        scale = torch.zeros((), device=self.params[0].device)  # scale 0: warm-up runs add no gradient
        saved = [p.grad.clone() for p in self.params]
        buffers = [p.grad.data_ptr() for p in self.params]
        try:
            side = self.side
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(WARMUP_RUNS if not self.graphs else 1):
                    self._forward_backward(inputs, scale)
            torch.cuda.current_stream().wait_stream(side)
            torch.cuda.synchronize()
            torch.cuda.empty_cache()  # the warm-up's cached blocks would sit beside the graph pool
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self.pool):
                outputs = self._forward_backward(inputs, scale)
            if [p.grad.data_ptr() for p in self.params] != buffers:
                raise RuntimeError("backward replaced the gradient buffers instead of adding into them")
        except RuntimeError as error:
            self.failed.append(f"{[tuple(t.shape) for t in batch.values()]}: {str(error).splitlines()[0]}")
            torch.cuda.synchronize()
            return None
        finally:
            for param, grad in zip(self.params, saved, strict=True):
                param.grad.copy_(grad)  # warm-up and capture leave the gradients as they were
            self.capture_seconds += time.perf_counter() - started
        return _Captured(graph, inputs, scale, outputs)

    def _forward_backward(self, inputs: dict[str, torch.Tensor], scale: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # Autocast's weight-cast cache would keep tensors from the capture alive: off.
        with self.autocast(cache_enabled=False):
            smoothed, nll, count = self.loss_fn(inputs)
            (smoothed * scale).backward()
        return smoothed.detach(), nll.detach(), count


def graphs_unsupported_reason(world: int, device: torch.device, gradient_checkpointing: bool,
                              compile_blocks: bool, token_budget: bool = False) -> str | None:
    """Why CUDA graphs cannot (or should not) be used in this run, or None when they can.

    ``compile_blocks``: Transformers blocks compiled regionally (compiled fast-forward layers are
    plain Triton and cuBLAS launches, capturable: pass False for them)."""
    if device.type != "cuda":
        return "not on a GPU"
    if world > 1:
        return "several processes (DDP and FSDP reduce gradients during backward)"
    if gradient_checkpointing:
        return "activation checkpointing is on"
    if compile_blocks:
        return "compiled blocks are on"
    if token_budget:
        # Measured on an H100: budgeted batches are large enough to hide launch cost, and the
        # pool of one graph per batch shape ran out of memory at a 32k-token budget.
        return "a token budget (--max-tokens) makes batches large; graphs pay off for fixed batch sizes"
    return None
