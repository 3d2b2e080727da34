"""Annealed Gaussian gradient noise (Neelakantan et al. 2015, "Adding Gradient Noise Improves
Learning for Very Deep Networks").

Once per optimizer step t, after gradient accumulation and before clipping, every trainable
gradient gets N(0, sigma_t^2) noise with sigma_t^2 = eta / (1 + t)^gamma.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch


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
        generator: RNG for the noise (a CPU generator keeps it reproducible on any device).

    Returns:
        The ratio of the noise norm to the gradient norm before noise (0 if the gradient is 0).
    """
    std = noise_std(step, eta, gamma)
    grad_sq = noise_sq = 0.0
    for param in params:
        if param.grad is None:
            continue
        noise = torch.randn(param.grad.shape, generator=generator, dtype=torch.float32)
        noise = noise.to(param.grad.device, param.grad.dtype).mul_(std)
        grad_sq += float(param.grad.float().pow(2).sum())
        noise_sq += float(noise.float().pow(2).sum())
        param.grad.add_(noise)
    return math.sqrt(noise_sq / grad_sq) if grad_sq > 0 else 0.0
