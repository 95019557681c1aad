"""Multistep consistency sampling (LCM; Luo et al. 2023, "Latent Consistency Models", alg. 1).

A consistency function maps any point of a probability-flow trajectory to its origin. LCM
parameterises it from a denoiser's x0 estimate with the boundary condition of Song et al. 2023
("Consistency Models", eq. 7):

    f(x, t) = c_skip(t) x + c_out(t) D(x; sigma(t)),
    c_skip(t) = sigma_data^2 / ((s t)^2 + sigma_data^2),  c_out(t) = s t / sqrt((s t)^2 + sigma_data^2),

with sigma_data = 0.5 and the timestep scaled by s = 10 (LCM's released code and diffusers'
``LCMScheduler``; ComfyUI's ``ModelSamplingDiscrete`` "lcm" type), so f(x, 0) = x and f ~ D
from a few training timesteps up. ``x`` is in the sigma form x = x0 + sigma eps, as ComfyUI's
``sample_lcm`` and every sampler here walk it.

Multistep sampling: predict x0 = f(x, t_i), then re-noise it to the next level,
x = x0 + sigma_{i+1} z with fresh z ~ N(0, I) (drawn per sample from the request's seeding),
and repeat; the last step returns x0. One model evaluation per step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from latentzoo.core.contract.interfaces import Progress

from .solvers import Model, Noise, tick

SIGMA_DATA = 0.5  # Song et al. 2023, sec. 5; LCM keeps it
TIMESTEP_SCALING = 10.0  # LCM: c_skip ~ 0 after a few training timesteps


def boundary_scalings(t: float, sigma_data: float = SIGMA_DATA, timestep_scaling: float = TIMESTEP_SCALING) -> tuple[float, float]:
    """(c_skip, c_out) at training timestep t (Song et al. 2023, eq. 7, with LCM's timestep scaling)."""
    s = t * timestep_scaling
    return sigma_data**2 / (s * s + sigma_data**2), s / math.sqrt(s * s + sigma_data**2)


def consistency(model: Model, x: torch.Tensor, sigma: float, t: float) -> torch.Tensor:
    """f(x, t) = c_skip x + c_out D(x; sigma): the consistency function of a denoiser at its level."""
    c_skip, c_out = boundary_scalings(t)
    denoised = model(x, sigma)
    return denoised if c_skip == 0.0 else c_skip * x + c_out * denoised


def sample_lcm(
    model: Model,
    x: torch.Tensor,
    sigmas: Sequence[float],
    *,
    noise: Noise,
    timestep: Callable[[float], float],
    progress: Progress | None = None,
) -> torch.Tensor:
    """LCM's multistep consistency sampling (Luo et al. 2023, alg. 1) on a sigma schedule.

    ``timestep(sigma)`` is the prior's fractional training timestep of a level (the boundary
    condition's t); ``noise(sigma, sigma_next)`` a standard normal tensor shaped like x.
    """
    n = len(sigmas) - 1
    for i in range(n):
        s, s_next = sigmas[i], sigmas[i + 1]
        x = consistency(model, x, s, timestep(s))
        if s_next > 0:  # re-noise the estimate to the next level: x_{t_{i+1}} = x0 + sigma_{i+1} z
            x = x + noise(s, s_next) * s_next
        tick(progress, i + 1, n)
    return x
