"""Fully sharded data parallelism (FSDP2, ``torch.distributed.fsdp.fully_shard``) for full
fine-tuning of models too large for one GPU.

Each repeated transformer block is one FSDP unit (its parameters are gathered just before it
runs and freed after), the rest of the model (embeddings, final norms, LM head) is the root
unit. Parameters, gradients and AdamW state live as 1/world shards (DTensors). Checkpoints stay
in the Hugging Face layout of an unsharded run: the full state is gathered to rank 0 (on CPU)
and written as safetensors, so a sharded run's checkpoint loads anywhere and vice versa.

torch's distributed-checkpoint helpers do the gathering and scattering; what is here is the
choice of units and the few places where a sharded tensor needs a global view.
"""

from __future__ import annotations

import contextlib

import torch
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.tensor import DTensor, Replicate

from chef_genius.model.loading import repeated_blocks

FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def shard(model: torch.nn.Module) -> int:
    """Make every block of each stack of identical blocks an FSDP unit, then the whole model;
    returns the number of units."""
    from torch.distributed.fsdp import fully_shard

    blocks = repeated_blocks(model)
    for block in blocks:
        fully_shard(block)
    fully_shard(model)
    return len(blocks) + 1


@contextlib.contextmanager
def no_gradient_sync(model: torch.nn.Module):
    """For a micro-batch before the step's last: its gradients accumulate locally (unsharded)
    and are reduce-scattered with the last one's."""
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


def full(value: torch.Tensor) -> torch.Tensor:
    """The global tensor behind a DTensor (a clipped-norm result, say); others unchanged."""
    return value.full_tensor() if isinstance(value, DTensor) else value


def full_model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer, gathered on rank 0's CPU (empty on other ranks), each tied
    weight once under its first name, as an unsharded model saves it. Collective."""
    state = get_model_state_dict(model, options=FULL)
    names = {name for name, _ in model.named_parameters()} | {name for name, _ in model.named_buffers()}
    return {name: tensor for name, tensor in state.items() if name in names}


def full_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """The optimizer state keyed by parameter name, gathered on rank 0's CPU. Collective."""
    return get_optimizer_state_dict(model, optimizer, options=FULL)


def load_full_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, weights: dict[str, torch.Tensor],
                    optimizer_state: dict) -> list[str]:
    """Scatter full (unsharded) weights and optimizer state into the shards. Collective.

    Returns the parameter names the weights lacked (none in a checkpoint of this model: tied
    copies such as ``encoder.embed_tokens`` are one parameter here)."""
    missing = sorted({name for name, _ in model.named_parameters()} - set(weights))
    set_model_state_dict(model, weights, options=StateDictOptions(full_state_dict=True, strict=False))
    set_optimizer_state_dict(model, optimizer, optimizer_state, options=StateDictOptions(full_state_dict=True))
    return missing


def noise_like(grad: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """This rank's part of a full-shape noise tensor drawn alike on every rank."""
    if isinstance(grad, DTensor):
        return DTensor.from_local(noise, grad.device_mesh, [Replicate()],
                                  run_check=False).redistribute(grad.device_mesh, grad.placements)
    return noise
