"""Per-index seeds: sample i's randomness comes from (seed, i) alone (scheme ``per-index/1``).

Every random draw of a sample (its initial noise, the ancestral / SDE noise of each step,
its drawn class or caption, its re-ranking candidates, a stochastic decoder's noise) comes
from a ``torch.Generator`` of its own, seeded with 63 bits of
``sha256("latentzoo-sample:{seed}:{i}")`` (candidate c > 0 of output i: ``...:{i}:{c}``).
A batch is the rows of such generators (``RowGenerators``), and a sampler draws a batch
of noise row by row through the helpers here (``randn``, ``randn_like``, ``randint``,
``multinomial``) instead of ``torch.randn(..., generator=g)``. So sample i's pixels do not
depend on ``--batch-size``, on ``-n`` (``-n 6`` is the first 6 of ``-n 12``), on how the
indices are split among ranks, or on a server's batching: bit-identical where the batch
shapes match; otherwise kernels may round differently for another batch shape (measured
in tests/test_seeding.py: at most one grey level, and rarely).

``RowGenerators`` is itself a ``torch.Generator`` (seeded from row 0's key), so a sampler
that still draws from it directly keeps working; such a draw depends on the batch.
The helpers accept a plain ``torch.Generator`` too and then draw as torch does.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch

SEEDING = "per-index/1"
MAX_SEED = 2**63 - 1


def index_seed(seed: int, index: int, candidate: int = 0, stream: str = "sample") -> int:
    """63 bits of sha256 of (stream, seed, index[, candidate]): the seed of one sample's generator."""
    key = f"latentzoo-{stream}:{seed}:{index}" + (f":{candidate}" if candidate else "")
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") & MAX_SEED


class RowGenerators(torch.Generator):
    """One generator per batch row (row r of every draw comes from ``rows[r]``); see the module doc."""

    def __new__(cls, seeds: Sequence[int]) -> RowGenerators:
        return super().__new__(cls)  # torch.Generator.__new__ takes a device, not the seeds

    def __init__(self, seeds: Sequence[int]) -> None:
        super().__init__()
        if not seeds:
            raise ValueError("RowGenerators needs at least one row")
        self.manual_seed(int(seeds[0]))
        self.seeds = [int(s) for s in seeds]
        self.rows = [torch.Generator().manual_seed(s) for s in self.seeds]

    @classmethod
    def for_samples(cls, seed: int, keys: Sequence[tuple[int, int]], stream: str = "sample") -> RowGenerators:
        """Rows for (index, candidate) keys of sampling run ``seed``."""
        return cls([index_seed(seed, i, c, stream) for i, c in keys])

    def __len__(self) -> int:
        return len(self.rows)

    def select(self, rows: Sequence[int]) -> RowGenerators:
        """The generators of ``rows`` (shared, not copied: drawing from either advances both)."""
        out = RowGenerators([self.seeds[r] for r in rows])
        out.rows = [self.rows[r] for r in rows]
        return out


def _per_row(generator: torch.Generator | None, n: int) -> list[torch.Generator] | None:
    if isinstance(generator, RowGenerators):
        if len(generator) != n:
            raise ValueError(f"a draw of {n} rows from {len(generator)} per-sample generators")
        return generator.rows
    return None


def randn(
    shape: Sequence[int], generator: torch.Generator | None, *, dtype: torch.dtype = torch.float32, device: torch.device | None = None
) -> torch.Tensor:
    """Standard normal of ``shape``; with ``RowGenerators``, row r (``shape[0]`` rows) from generator r."""
    rows = _per_row(generator, shape[0])
    if rows is None:
        return torch.randn(tuple(shape), generator=generator, dtype=dtype).to(device)
    out = torch.empty(tuple(shape), dtype=dtype)
    for r, g in enumerate(rows):
        out[r] = torch.randn(tuple(shape[1:]), generator=g, dtype=dtype)
    return out.to(device)


def randn_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """``torch.randn_like(x)`` drawn from ``generator`` (row by row for ``RowGenerators``), on x's device."""
    return randn(x.shape, generator, dtype=x.dtype, device=x.device)


def randint(high: int, n: int, generator: torch.Generator | None) -> torch.Tensor:
    """n integers uniform in [0, high) (a LongTensor); with ``RowGenerators``, entry r from generator r."""
    rows = _per_row(generator, n)
    if rows is None:
        return torch.randint(0, high, (n,), generator=generator)
    return torch.cat([torch.randint(0, high, (1,), generator=g) for g in rows])


def multinomial(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One draw per row of ``probs`` (n, K) -> (n,); with ``RowGenerators``, row r from generator r."""
    rows = _per_row(generator, probs.shape[0])
    if rows is None:
        return torch.multinomial(probs, 1, generator=generator)[:, 0]
    return torch.cat([torch.multinomial(probs[r : r + 1], 1, generator=g)[:, 0] for r, g in enumerate(rows)])


def row_seeds(generator: torch.Generator | None, n: int) -> list[int] | int:
    """A fresh 62-bit seed per row (``RowGenerators``) or one for the batch: for a sampler's own keyed stream (a Brownian tree)."""
    rows = _per_row(generator, n)
    if rows is None:
        return int(torch.randint(0, 2**62, (), generator=generator))
    return [int(torch.randint(0, 2**62, (), generator=g)) for g in rows]


__all__ = ["SEEDING", "RowGenerators", "index_seed", "multinomial", "randint", "randn", "randn_like", "row_seeds"]
