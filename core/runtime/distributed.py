"""Process groups for data-parallel training: one process per device, launched by torchrun.

``latentzoo train`` reads the environment torchrun sets (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``); without it, training is one process and
every helper here is a no-op. The backend follows the device: NCCL on CUDA, gloo on CPU.

Model code may call :func:`all_reduce_sum`, :func:`all_gather_cat` and :func:`broadcast`
unconditionally (the VQ codebook does, so that every rank restarts the same dead codes).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from ..contract.errors import LatentzooError

CPU = torch.device("cpu")


@dataclass(frozen=True)
class World:
    """Where this process sits: its rank among ``size`` processes and its device."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device: torch.device = CPU
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def close(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` is the process's CUDA device when there is one, else the CPU; ``cuda`` is this
    process's GPU (cuda:LOCAL_RANK); ``cuda:N`` and ``mps`` as given. Checked as ``sample --device``
    is (core.runtime.devices.check_device): a device that is not there is refused in one line."""
    from .devices import check_device

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if not isinstance(name, str) or name == "":
        raise LatentzooError(f"--device must be auto, cpu, cuda, cuda:N or mps, not {name!r}")
    try:
        check_device(name)
    except LatentzooError as exc:
        if str(exc).startswith("--device must be"):
            raise LatentzooError(f"--device must be auto, cpu, cuda, cuda:N or mps, not {name!r}") from exc
        raise
    if name == "cuda":
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device(name)


def init_world(device: str = "auto", timeout_s: float = 1800.0) -> World:
    """Join the process group torchrun describes (or stay a single process)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if size == 1:
        return World(device=dev)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if not dist.is_initialized():
        try:
            dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
        except (RuntimeError, ValueError) as exc:
            raise LatentzooError(f"cannot join the {backend} process group (rank {rank} of {size}): {exc}") from exc
    return World(rank=rank, size=size, local_rank=local_rank, device=dev, backend=backend)


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over ranks, in place (identity on one process)."""
    if active():
        dist.all_reduce(tensor)
    return tensor


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    if active():
        dist.all_reduce(tensor)
        tensor /= dist.get_world_size()
    return tensor


def all_gather_cat(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate equally shaped tensors of all ranks along dim 0, in rank order."""
    if not active():
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def broadcast(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Rank ``src``'s values on every rank, in place."""
    if active():
        dist.broadcast(tensor, src)
    return tensor
