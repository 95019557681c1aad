"""Noise levels for sigma-driven samplers: a schedule's training sigmas and three sampling sequences.

A denoiser trained on a discrete schedule sees x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps.
Dividing by sqrt(abar_t) gives the variance-exploding form x = x0 + sigma_t eps with
sigma_t = sqrt((1 - abar_t) / abar_t) (Karras et al. 2022, "Elucidating the Design Space of
Diffusion-Based Generative Models", sec. 2 and table 1), so any sigma sequence between the
schedule's sigma_min = sigma_0 and sigma_max = sigma_{T-1} can drive the same model.

``sigma_schedule`` (an option of the euler / heun / dpmpp-2m samplers):

* ``timesteps``: the sigmas of the scheduler's own timesteps (its leading / trailing /
  linspace spacing), then 0; the sequence DDIM visits.
* ``karras``: Karras et al. 2022, eq. 5, rho = 7, between sigma_min and sigma_max, then 0.
* ``sigmoid``: an S-curve in log sigma (the normalised logistic curve of Chen 2023, "On the
  Importance of Noise Scheduling for Diffusion Models", sec. 2, start -3, end 3), dense at
  both ends of [sigma_min, sigma_max], then 0.

Zero terminal SNR: the ramps (karras, sigmoid) run from at most RAMP_SIGMA_MAX = 80 (Karras
et al. 2022, sec. 5). Where the schedule's sigma_max is larger (linear, cosine, and every
zero-terminal-SNR schedule, whose abar_{T-1} ~ 0 gives sigma ~ 4e3 .. 2e4), the sequence is
[sigma_max, ramp from 80, 0]: sampling still starts at the true terminal noise level and its
first step is in effect an x0-prediction (D(x; sigma_max) plus 80 / sigma_max of the noise),
instead of spending half of the rho = 7 ramp above sigma = 80. An infinite sigma (abar_t = 0
exactly; NoiseScheduler already clamps zero-SNR abar_{T-1} to a tiny positive value) is
replaced by twice the sigma before it, so the grid stays finite and increasing.
"""

from __future__ import annotations

import bisect
import itertools
import math
from dataclasses import dataclass
from typing import Any

from latentzoo.core.errors import LatentzooError

SIGMA_SCHEDULES = ("timesteps", "karras", "sigmoid")
RAMP_SIGMA_MAX = 80.0  # Karras et al. 2022, sec. 5: sigma_max = 80 suffices in practice
SIGMOID_START, SIGMOID_END = -3.0, 3.0  # Chen 2023, sigmoid schedule defaults


@dataclass(frozen=True)
class SigmaGrid:
    """log sigma_t for t = 0 .. T-1 (increasing) and the fractional timestep of any sigma.

    Between grid points t(sigma) and sigma(t) interpolate linearly in log sigma, as
    k-diffusion's DiscreteSchedule does; at sigma_t they return t exactly.
    """

    log_sigmas: tuple[float, ...]

    @classmethod
    def from_scheduler(cls, scheduler: Any) -> SigmaGrid:
        abar = [float(a) for a in scheduler.alphas_cumprod]
        if not abar or abar[0] >= 1 or abar[0] <= 0:
            raise LatentzooError("the scheduler's alphas_cumprod must lie in (0, 1); check its beta_start and beta_end")
        sigmas: list[float] = []
        for a in abar:  # sigma_t = sqrt((1 - abar_t) / abar_t); abar_t = 0 (sigma = inf) becomes twice the sigma before it
            sigmas.append(math.sqrt((1 - a) / a) if a > 0 else 2 * sigmas[-1])
        logs = tuple(math.log(s) for s in sigmas)
        if any(b <= a for a, b in itertools.pairwise(logs)):
            raise LatentzooError("the scheduler's alphas_cumprod must decrease strictly for sigma samplers; use a standard beta schedule")
        return cls(logs)

    @property
    def sigma_min(self) -> float:
        return math.exp(self.log_sigmas[0])

    @property
    def sigma_max(self) -> float:
        return math.exp(self.log_sigmas[-1])

    def timestep(self, sigma: float) -> float:
        """Fractional training timestep of ``sigma``, clamped to [0, T-1]."""
        logs, ls = self.log_sigmas, math.log(sigma)
        if ls <= logs[0]:
            return 0.0
        if ls >= logs[-1]:
            return float(len(logs) - 1)
        hi = bisect.bisect_left(logs, ls)  # logs[hi - 1] < ls <= logs[hi]
        if logs[hi] == ls:
            return float(hi)
        w = (ls - logs[hi - 1]) / (logs[hi] - logs[hi - 1])
        return hi - 1 + w

    def sigma(self, t: float) -> float:
        """sigma at a fractional training timestep (the inverse of ``timestep``)."""
        t = min(max(t, 0.0), len(self.log_sigmas) - 1.0)
        lo = min(int(t), len(self.log_sigmas) - 2)
        w = t - lo
        return math.exp((1 - w) * self.log_sigmas[lo] + w * self.log_sigmas[lo + 1])


def karras_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> list[float]:
    """Karras et al. 2022, eq. 5: sigma_i = (sigma_max^(1/rho) + i/(n-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho, then 0."""
    if n == 1:
        return [sigma_max, 0.0]
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return [(hi + i / (n - 1) * (lo - hi)) ** rho for i in range(n)] + [0.0]


def sigmoid_sigmas(n: int, sigma_min: float, sigma_max: float, start: float = SIGMOID_START, end: float = SIGMOID_END) -> list[float]:
    """log sigma_i = log sigma_min + S(u_i) log(sigma_max / sigma_min), u_i = 1 - i/(n-1), then 0.

    S(u) = (s(start + u (end - start)) - s(start)) / (s(end) - s(start)) with s the logistic
    function: Chen 2023's normalised sigmoid schedule, an S-curve from 0 to 1.
    """
    if n == 1:
        return [sigma_max, 0.0]

    def s(z: float) -> float:
        return 1 / (1 + math.exp(-z))

    lo, span = math.log(sigma_min), math.log(sigma_max / sigma_min)
    shape = [(s(start + (1 - i / (n - 1)) * (end - start)) - s(start)) / (s(end) - s(start)) for i in range(n)]
    return [math.exp(lo + f * span) for f in shape] + [0.0]


def sigma_sequence(scheduler: Any, steps: int, kind: str = "timesteps", rho: float = 7.0) -> list[float]:
    """``steps`` decreasing noise levels and a final 0: where a sigma sampler evaluates the model."""
    if kind not in SIGMA_SCHEDULES:
        raise LatentzooError(f"unknown sigma_schedule {kind!r}; use one of {', '.join(SIGMA_SCHEDULES)}")
    grid = SigmaGrid.from_scheduler(scheduler)
    if kind == "timesteps":
        return [math.exp(grid.log_sigmas[t]) for t in scheduler.timesteps(steps)] + [0.0]
    if steps < 1:
        raise LatentzooError(f"steps must be at least 1, not {steps}")
    top = grid.sigma_max
    head = [top] if top > RAMP_SIGMA_MAX and steps > 1 else []  # see the module doc: zero terminal SNR
    hi = min(top, RAMP_SIGMA_MAX) if head else top
    n = steps - len(head)
    ramp = karras_sigmas(n, grid.sigma_min, hi, rho) if kind == "karras" else sigmoid_sigmas(n, grid.sigma_min, hi)
    return head + ramp
