"""Annealed Gaussian gradient noise (Neelakantan et al. 2015, "Adding Gradient Noise Improves
Learning for Very Deep Networks").

Once per optimizer step t, after gradient accumulation and before clipping, every trainable
gradient gets N(0, sigma_t^2) noise with sigma_t^2 = eta / (1 + t)^gamma. The noise is drawn on
the device by a seeded generator: drawing it on the host cost full fine-tuning of SmolLM2-135M on
an H200 about 0.8 s a step (30k instead of 180k tokens/s).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from chef_genius.model.sharding import noise_like


def noise_std(step: int, eta: float, gamma: float) -> float:
    """sigma_t = sqrt(eta / (1 + t)^gamma)."""
    return math.sqrt(eta / (1 + step) ** gamma)


@torch.no_grad()
def add_gradient_noise(params: Iterable[torch.nn.Parameter], step: int, eta: float, gamma: float,
                       generator: torch.Generator | None = None) -> float:
    """Add noise to each parameter's gradient in place.

    Args:
        params: trainable parameters (those without a gradient are skipped).
        step: optimizer step t.
        eta, gamma: the schedule's constants.
        generator: RNG for the noise, on the gradients' device (seeded once per run, its state
            saved in checkpoints): noise is drawn where it is added, with no host random numbers
            or copies. None draws from the global RNG of the gradients' device.

    Returns:
        The ratio of the noise norm to the gradient norm before noise (0 if the gradient is 0).
    """
    std = noise_std(step, eta, gamma)
    parts = []  # per tensor: squared norms of its gradient and of its noise, kept on the device
    sharded = False
    for param in params:
        if param.grad is None:
            continue
        # Drawn in the full shape on every rank, so a sharded run adds the same noise as any other.
        device = generator.device if generator is not None else param.grad.device
        noise = torch.randn(param.grad.shape, generator=generator, dtype=torch.float32, device=device)
        noise = noise.to(param.grad.device, param.grad.dtype).mul_(std)
        grad, noise = param.grad, noise_like(param.grad, noise)
        local_grad, local_noise = grad, noise
        if hasattr(grad, "to_local"):  # a DTensor shard (FSDP): this rank's part only
            sharded, local_grad, local_noise = True, grad.to_local(), noise.to_local()
        parts.append(torch.stack([local_grad.float().pow(2).sum(), local_noise.float().pow(2).sum()]))
        grad.add_(noise)
    if not parts:
        return 0.0
    sums = torch.stack(parts).sum(0)
    if sharded:  # each rank summed its own shards
        torch.distributed.all_reduce(sums)
    grad_sq, noise_sq = sums.tolist()  # one read back to the host per step
    return math.sqrt(noise_sq / grad_sq) if grad_sq > 0 else 0.0
