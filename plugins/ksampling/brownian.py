"""A seeded Brownian tree: W(t) on [t0, t1] that any sequence of queries sees consistently.

The SDE samplers need noise increments W(s) - W(t) that agree however the interval is cut
(a step may be split into sub-steps; two step counts see the same Brownian path), as
k-diffusion's ``BrownianTreeNoiseSampler`` does with torchsde's ``BrownianTree``. This is a
small implementation of the same idea (Gaines & Lyons 1997, "Variable step size control in
the numerical solution of stochastic differential equations"; Li et al. 2020, "Scalable
gradients for stochastic differential equations", sec. 4 on the virtual Brownian tree):

* W(t0) = 0 and W(t1) ~ N(0, (t1 - t0) I), drawn from the seed;
* every dyadic midpoint m of a node [a, b] is the Brownian bridge
  W(m) = (W(a) + W(b)) / 2 + sqrt((b - a) / 4) z_node (the conditional law of W(m) given
  W(a), W(b)), with z_node drawn from a generator seeded by (seed, node index);
* a query descends from the root to a node narrower than ``tol`` and interpolates linearly.

So W is a deterministic function of (seed, t): no state, the same on every call, and its
increments over disjoint intervals are independent Gaussians with variance the interval
length, up to the ``tol`` resolution. It is not bit-identical to torchsde's tree (another
random stream); it has the same law and the same semantics.
"""

from __future__ import annotations

import math

import torch

from latentzoo.core.runtime.seeding import randn_like

MASK64 = (1 << 64) - 1


def mix(seed: int, index: int) -> int:
    """A 63-bit seed for tree node ``index`` (splitmix64 finaliser of seed and index)."""
    z = (seed * 0x9E3779B97F4A7C15 + index * 0xBF58476D1CE4E5B9 + 0x94D049BB133111EB) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return (z ^ (z >> 31)) & ((1 << 63) - 1)


class BrownianTree:
    """W(t) for t in [t0, t1] (t0 < t1), shape ``shape``, from ``seed``; ``tol`` is the finest node width.

    ``seed`` a list (one per row of ``shape``): each row is its own tree, keyed by its own seed, so a
    sample's path does not depend on the batch it is drawn in (core.runtime.seeding)."""

    def __init__(
        self, t0: float, t1: float, shape: torch.Size, seed: int | list[int], *, tol: float = 1e-6, dtype=torch.float32, device=None
    ) -> None:
        if not t1 > t0:
            raise ValueError(f"BrownianTree needs t0 < t1, got {t0}, {t1}")
        self.t0, self.t1, self.shape, self.tol = float(t0), float(t1), torch.Size(shape), tol
        self.seed: int | list[int] = [int(s) for s in seed] if isinstance(seed, list) else int(seed)
        self.dtype, self.device = dtype, device
        self.w1 = self.normal(1) * math.sqrt(self.t1 - self.t0)

    def normal(self, index: int) -> torch.Tensor:
        if isinstance(self.seed, list):
            rows = [
                torch.randn(self.shape[1:], generator=torch.Generator().manual_seed(mix(s, index)), dtype=torch.float64) for s in self.seed
            ]
            return torch.stack(rows).to(dtype=self.dtype, device=self.device)
        g = torch.Generator().manual_seed(mix(self.seed, index))
        return torch.randn(self.shape, generator=g, dtype=torch.float64).to(dtype=self.dtype, device=self.device)

    def __call__(self, t: float) -> torch.Tensor:
        """W(t); t is clamped to [t0, t1]."""
        t = min(max(float(t), self.t0), self.t1)
        a, b, wa, wb, index = self.t0, self.t1, torch.zeros_like(self.w1), self.w1, 1
        while b - a > self.tol:
            if t == a:
                return wa
            if t == b:
                return wb
            m = (a + b) / 2
            wm = (wa + wb) / 2 + self.normal(2 * index) * math.sqrt((b - a) / 4)  # the Brownian bridge at the midpoint
            if t < m:
                b, wb, index = m, wm, 2 * index
            else:
                a, wa, index = m, wm, 2 * index + 1
        return wa + (wb - wa) * ((t - a) / (b - a))


class BrownianNoise:
    """k-diffusion's ``BrownianTreeNoiseSampler`` semantics: ``noise(sigma, sigma_next)`` is (W(s') - W(s)) / sqrt(|s' - s|).

    A standard normal tensor for each call, consistent across step counts: the tree runs in
    sigma over [sigma_min, sigma_max] of the levels, and the sign follows the direction.
    """

    def __init__(self, x: torch.Tensor, sigma_min: float, sigma_max: float, seed: int | list[int]) -> None:
        self.tree = BrownianTree(sigma_min, sigma_max, x.shape, seed, dtype=x.dtype, device=x.device)

    def __call__(self, sigma: float, sigma_next: float) -> torch.Tensor:
        lo, hi = sorted((float(sigma), float(sigma_next)))
        w = self.tree(hi) - self.tree(lo)
        sign = 1.0 if sigma_next >= sigma else -1.0  # k-diffusion: W(t1) - W(t0) for t0 = sigma, t1 = sigma_next
        return w * (sign / math.sqrt(hi - lo))


class GaussianNoise:
    """Fresh N(0, I) noise from ``generator`` on each call (the ancestral samplers' noise)."""

    def __init__(self, x: torch.Tensor, generator: torch.Generator) -> None:
        self.like, self.generator = x, generator

    def __call__(self, sigma: float, sigma_next: float) -> torch.Tensor:
        x = self.like
        return randn_like(x, self.generator)  # row by row for per-sample generators (core.runtime.seeding)
