"""Data streams of a run: stateless per-step batches and noise (a pure function of seed, step
and draw), micro-batches of a rank's share, phases, and dataset helpers (encode, normalise,
held-out split).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..contract.errors import LatentzooError

if TYPE_CHECKING:
    from .run import Run


def stream_seed(seed: int, step: int, stream: int) -> int:
    """A 63-bit seed for one (run seed, step, stream) triple (splitmix64-style mixing)."""
    x = (seed * 0x9E3779B97F4A7C15 + step * 0xBF58476D1CE4E5B9 + stream * 0x94D049BB133111EB) & (2**64 - 1)
    x ^= x >> 31
    x = (x * 0xBF58476D1CE4E5B9) & (2**64 - 1)
    return (x ^ (x >> 29)) & (2**63 - 1)


def batches(n: int, batch_size: int, seed: int, start_step: int) -> Iterator[torch.Tensor]:
    """Global index batches for steps start_step, start_step+1, ...; epoch e is permutation(seed, e).

    A pure function of (seed, step), so resuming at any step sees the same batches.
    """
    if n < batch_size:
        raise LatentzooError(f"the dataset has {n} images, fewer than --batch-size {batch_size}; lower --batch-size")
    per_epoch = n // batch_size
    step = start_step
    while True:
        epoch, j = divmod(step, per_epoch)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        while j < per_epoch:
            yield order[j * batch_size : (j + 1) * batch_size]
            j += 1
            step += 1


class StepBatches:
    """Batch sampler of one rank: for each step, its share of the global batch, as
    ``grad_accum`` micro-batches (the distributed sampler: shares of ranks are disjoint)."""

    def __init__(self, n: int, run: Run, start: int) -> None:
        self.n, self.options, self.start = n, run.options, start
        self.rank, self.share, self.micro = run.world.rank, run.share, run.micro

    def __len__(self) -> int:
        return (self.options.steps - self.start) * self.options.grad_accum

    def __iter__(self) -> Iterator[list[int]]:
        stream = batches(self.n, self.options.batch_size, self.options.seed, self.start)
        for _ in range(self.start, self.options.steps):
            share = next(stream)[self.rank * self.share : (self.rank + 1) * self.share]
            for k in range(self.options.grad_accum):
                yield share[k * self.micro : (k + 1) * self.micro].tolist()


def _whole_batch(batch: Any) -> Any:
    """collate_fn: datasets return whole batches from ``__getitems__``."""
    return batch


def _seed_worker(base: int, worker_id: int) -> None:
    """Deterministic per-rank, per-worker seeds for any randomness inside a dataset."""
    import random

    import numpy as np

    seed = stream_seed(base, 0, worker_id)
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


@dataclass
class MicroBatch:
    """One rank's micro-batch of one step, with stateless per-sample random draws."""

    data: torch.Tensor
    labels: torch.Tensor | None
    step: int
    positions: slice  # where these samples sit in the global batch
    global_size: int
    seed: int
    cache: dict[str, Any] = field(default_factory=dict)
    _draws: int = 0

    def __len__(self) -> int:
        return len(self.data)

    def _global(self, draw: Callable[[torch.Generator], torch.Tensor]) -> torch.Tensor:
        self._draws += 1
        generator = torch.Generator().manual_seed(stream_seed(self.seed, self.step, self._draws))
        return draw(generator)[self.positions].to(self.data.device)

    def randn(self, *shape: int) -> torch.Tensor:
        """Standard normal noise (len, *shape): sample j's noise depends on (seed, step, global position)."""
        return self._global(lambda g: torch.randn((self.global_size, *shape), generator=g))

    def rand(self, *shape: int) -> torch.Tensor:
        return self._global(lambda g: torch.rand((self.global_size, *shape), generator=g))

    def randint(self, high: int, *shape: int) -> torch.Tensor:
        return self._global(lambda g: torch.randint(0, high, (self.global_size, *shape), generator=g))


@dataclass
class Phase:
    """One optimizer's part of a step: the loss of a micro-batch, backpropagated and
    accumulated over the step's micro-batches, then clipped and applied."""

    name: str
    optimizer: torch.optim.Optimizer
    module: nn.Module  # what the optimizer trains, as wrapped by Run.wrap
    loss: Callable[[MicroBatch], tuple[torch.Tensor, dict[str, Any]]]  # loss and what to log (detached tensors or floats)
    clip: float | None = None
    when: Callable[[int], bool] | None = None


@torch.inference_mode()
def encode_dataset(encoder: Any, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """A frozen encoder's latents of a whole image set, in batches (a latent prior is trained on these)."""
    return torch.cat([encoder.encode(images[i : i + batch]) for i in range(0, len(images), batch)])


def normalise_latents(latents: torch.Tensor) -> tuple[torch.Tensor, float, float]:
    """(latents - shift) * scaling_factor with shift = mean and scaling_factor = 1 / std, both measured.

    The prior's latent-space contract states them (Rombach et al. 2022, sec. 4.3.2 rescales by the
    measured std); they are never defaulted from another model.
    """
    shift = float(latents.mean())
    scaling_factor = float(1.0 / (latents - shift).std())
    return (latents - shift) * scaling_factor, shift, scaling_factor


def held_out_split(data_name: str, size: int, channels: int):
    """The held-out split of a named dataset; a folder has none, so all of it."""
    from ..runtime.data import load_dataset

    try:
        return load_dataset(data_name, split="test", size=size, channels=channels)
    except LatentzooError:
        return load_dataset(data_name, size=size, channels=channels)
