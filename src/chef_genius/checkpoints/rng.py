"""The random generators' states a checkpoint keeps: Python's and NumPy's in trainer_state.json
(`TrainerState`), torch's CPU and CUDA generators and the gradient-noise generator as tensors
(``rng-rank{r}.safetensors``, one per rank)."""

from __future__ import annotations

import random

import numpy as np
import torch

from chef_genius.checkpoints.folder import TrainerState


def capture_host_rng(state: TrainerState) -> None:
    version, internal, gauss = random.getstate()
    state.python_rng = [version, list(internal), gauss]
    name, keys, position, has_gauss, cached = np.random.get_state()
    state.numpy_rng = [name, keys.tolist(), int(position), int(has_gauss), float(cached)]


def restore_host_rng(state: TrainerState) -> None:
    if state.python_rng:
        version, internal, gauss = state.python_rng
        random.setstate((version, tuple(internal), gauss))
    if state.numpy_rng:
        name, keys, position, has_gauss, cached = state.numpy_rng
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached))


def device_rng_tensors(noise_generator: torch.Generator) -> dict[str, torch.Tensor]:
    tensors = {"torch_cpu": torch.get_rng_state(), "noise": noise_generator.get_state()}
    if torch.cuda.is_available():
        tensors["torch_cuda"] = torch.cuda.get_rng_state()
    return tensors


def restore_device_rng(tensors: dict[str, torch.Tensor], noise_generator: torch.Generator) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    try:
        noise_generator.set_state(tensors["noise"])
    except RuntimeError:  # a checkpoint whose noise was drawn on another device (or by an older version)
        print("warning: the checkpoint's gradient-noise generator is for another device; its noise is reseeded",
              flush=True)
    if "torch_cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["torch_cuda"])
