"""The processes of a run: one, or several under ``torchrun`` / ``accelerate launch``.

`Ranks.start()` reads the launcher's environment, picks this process's device and joins the
process group; its methods are the few collectives the trainer needs, each a no-op for one
process, so the training code reads the same alone and distributed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from chef_genius.errors import UserError


@dataclass(frozen=True)
class Ranks:
    world: int
    rank: int
    device: torch.device

    @classmethod
    def start(cls) -> Ranks:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if torch.cuda.is_available():
            if local_rank >= torch.cuda.device_count():
                raise UserError(f"rank {rank} wants GPU {local_rank} but only {torch.cuda.device_count()} "
                                "are visible; start as many processes per node as GPUs")
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        else:
            device = torch.device("cpu")
        if world > 1 and not dist.is_initialized():
            # device_id binds NCCL to this rank's GPU (NCCL otherwise guesses it from the rank).
            if device.type == "cuda":
                dist.init_process_group("nccl", device_id=device)
            else:
                dist.init_process_group("gloo")
        return cls(world, rank, device)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce(self, value: torch.Tensor) -> torch.Tensor:
        """The sum over ranks, on this rank's device; alone, ``value`` itself, where it is (host
        counts stay on the host: reading them back would wait for the GPU)."""
        if self.world == 1:
            return value
        value = value.to(self.device)
        dist.all_reduce(value)
        return value

    def gather(self, value: Any) -> dict[int, Any]:
        """Every rank's ``value`` (picklable), by rank."""
        if self.world == 1:
            return {0: value}
        gathered: list = [None] * self.world
        dist.all_gather_object(gathered, value)
        return dict(enumerate(gathered))

    def barrier(self) -> None:
        if self.world > 1 and dist.is_initialized():
            dist.barrier()

    def print(self, message: str) -> None:
        if self.is_main:
            print(message, flush=True)

    def stop(self) -> None:
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()
