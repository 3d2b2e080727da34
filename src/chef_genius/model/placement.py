"""From a loaded model to what training runs through: LoRA, the speed levers, the device, FSDP
shards or DDP, the fast T5 forward and compilation, in that order.

`place_model` returns a `PlacedModel`: the model that is saved (PEFT or Hugging Face, possibly
sharded), the module the loss runs through (`fast_t5.FastT5`, a DDP wrapper, or the model), and
the trainable parameters the optimizer gets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from chef_genius.config_schema import TrainConfig
from chef_genius.model import fast_t5, sharding, speed
from chef_genius.model.loading import LoadedModel, apply_lora, compile_blocks, parameter_counts


@dataclass
class PlacedModel:
    saved: torch.nn.Module  # what checkpoints and the final folder hold
    forward: torch.nn.Module  # what the training and validation loss run through
    trainable: list[torch.nn.Parameter]
    sharded: bool  # FSDP: parameters are DTensor shards
    fast: bool  # the loss runs through `fast_t5.FastT5`


def place_model(loaded: LoadedModel, config: TrainConfig, device: torch.device, world: int, bf16: bool,
                say: Callable[[str], None]) -> PlacedModel:
    """Prepare ``loaded`` for training on ``device`` among ``world`` processes; ``say`` prints
    what was applied (rank 0)."""
    lora = config.lora.enabled
    model = apply_lora(loaded, config.lora) if lora else loaded.model
    _apply_speed_levers(model, config, lora and bf16, say)
    if config.model.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    model.to(device)
    sharded = _shard(model, config, world, say)
    compile_on = config.model.compile_blocks and device.type == "cuda" and not sharded
    # Sharded blocks gather their weights in their own forward hooks: the Transformers forward.
    forward = model if sharded else _fast_forward(model, config, compile_on, say)
    if compile_on and forward is model:
        say(f"compiled {compile_blocks(model)} transformer blocks (torch.compile, dynamic shapes)")
    trainable, total = parameter_counts(model)
    say(f"model {config.model.name}: {total:,} parameters, {trainable:,} trainable "
        f"({100 * trainable / total:.3f} %){' with LoRA' if lora else ''}")
    params = [p for p in model.parameters() if p.requires_grad]
    # Training mode from here on (Transformers loads models in eval mode): dropout is part of the
    # training step, also for callers of `trainer.optimizer_step` that never call `train`.
    forward.train()
    fast = isinstance(forward, fast_t5.FastT5)
    if world > 1 and not sharded:
        forward = torch.nn.parallel.DistributedDataParallel(
            forward, device_ids=[device.index] if device.type == "cuda" else None)
    return PlacedModel(model, forward, params, sharded, fast)


def _shard(model: torch.nn.Module, config: TrainConfig, world: int, say: Callable[[str], None]) -> bool:
    """FSDP when asked for and there are several processes; True when the model is sharded."""
    if not config.model.fsdp:
        return False
    if world == 1:
        say("FSDP off: one process (start several with torchrun or accelerate launch)")
        return False
    say(f"FSDP: {sharding.shard(model)} units sharded over {world} processes")
    return True


def _fast_forward(model: torch.nn.Module, config: TrainConfig, compile_layers: bool,
                  say: Callable[[str], None]) -> torch.nn.Module:
    """`fast_t5.FastT5` around a T5-family model when enabled, else the model itself
    (generation always uses the model)."""
    if not config.model.fast_forward:
        return model
    reason = fast_t5.unsupported_reason(model)
    if reason is not None:
        if reason != "not a T5-family encoder-decoder":
            say(f"speed: Transformers' forward ({reason})")
        return model
    say("speed: fast T5 forward" + (" with compiled layers" if compile_layers else ""))
    return fast_t5.FastT5(model, compile_layers=compile_layers)


def _apply_speed_levers(model: torch.nn.Module, config: TrainConfig, bf16_lora: bool,
                        say: Callable[[str], None]) -> None:
    m = config.model
    applied = []
    if m.fused_norm and (count := speed.fuse_norms(model)):
        applied.append(f"fused RMS norm x{count}")
    if m.shared_bias_attention and (count := speed.shared_bias_attention(model)):
        applied.append(f"shared-bias SDPA attention x{count}")
    if bf16_lora and not config.lora.fp32_inputs:
        applied.append(f"bf16 LoRA inputs x{speed.lora_inputs_in_compute_dtype(model)}")
    if applied:
        say("speed: " + ", ".join(applied))
