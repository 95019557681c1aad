"""The probability-flow ODE solvers of the first sigma samplers (k-diffusion style): Euler, Heun, DPM-Solver++(2M).

The sampler components over them are ``samplers.EulerSampler`` / ``HeunSampler`` /
``DPMSolverPP2MSampler`` (registered under their first names, ``diffusion.euler`` ..., which
converted registries name); the other solvers are in ``solvers.py``.

Each algorithm is one function over (model, x, sigmas) where ``model(x, sigma)`` is a
denoiser D(x; sigma) ~ E[x0 | x] in the variance-exploding parametrisation x = x0 + sigma eps
(Karras et al. 2022, eq. 1-3), and ``sigmas`` is the scheduler's decreasing list of Python
floats ending at 0. ``latentzoo.core.contract.denoising.Denoiser`` turns any denoiser prior (epsilon, v
or sample prediction, trained on a discrete schedule) into such a D, so every sampler runs on
every sigma scheduler without retraining.

The samplers start from x_T = noise * sqrt(sigma_0^2 + 1), not noise * sigma_0: for
unit-variance (scaled) latents x0 + sigma eps has exactly that variance, and it is the point
DDIM starts from (x_t = noise in the variance-preserving form, divided by sqrt(abar_t)).
Euler on the schedule's own timesteps (the leading / trailing / linspace schedulers) is therefore DDIM at eta = 0 (Song et al. 2021, eq. 14),
step for step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from latentzoo.core.contract.denoising import Denoiser, to_d
from latentzoo.core.contract.interfaces import Progress


def sample_euler(model: Denoiser, x: torch.Tensor, sigmas: Sequence[float], progress: Progress | None = None) -> torch.Tensor:
    """Euler's method on the probability-flow ODE (Karras et al. 2022, algorithm 2 with S_churn = 0).

    One model evaluation per step; the last step, to sigma = 0, returns D(x; sigma) itself.
    """
    n = len(sigmas) - 1
    for i in range(n):
        d = to_d(x, sigmas[i], model(x, sigmas[i]))
        x = x + d * (sigmas[i + 1] - sigmas[i])  # x_{i+1} = x_i + (sigma_{i+1} - sigma_i) d_i
        if progress:
            progress(i + 1, n)
    return x


def sample_heun(model: Denoiser, x: torch.Tensor, sigmas: Sequence[float], progress: Progress | None = None) -> torch.Tensor:
    """Heun's 2nd-order method on the probability-flow ODE (Karras et al. 2022, algorithm 1).

    Two model evaluations per step except the last, which is an Euler step to sigma = 0:
    2 * steps - 1 in all.
    """
    n = len(sigmas) - 1
    for i in range(n):
        d = to_d(x, sigmas[i], model(x, sigmas[i]))
        dt = sigmas[i + 1] - sigmas[i]
        x_next = x + d * dt  # algorithm 1, line 4: Euler predictor
        if sigmas[i + 1] != 0:  # lines 5-7: trapezoidal correction with the slope at the predicted point
            d_next = to_d(x_next, sigmas[i + 1], model(x_next, sigmas[i + 1]))
            x_next = x + (d + d_next) * (dt / 2)
        x = x_next
        if progress:
            progress(i + 1, n)
    return x


def sample_dpmpp_2m(model: Denoiser, x: torch.Tensor, sigmas: Sequence[float], progress: Progress | None = None) -> torch.Tensor:
    """DPM-Solver++(2M), multistep 2nd order in the data prediction (Lu et al. 2022, "DPM-Solver++", algorithm 2).

    In the VE form (alpha = 1), with lambda = -log sigma and h_i = lambda_{i+1} - lambda_i:
    x_{i+1} = (sigma_{i+1} / sigma_i) x_i - (e^{-h_i} - 1) D_i, where D_i is the model's x0 at the
    first step and at the final step to sigma = 0 (first order), otherwise
    (1 + 1 / (2 r_i)) x0_i - 1 / (2 r_i) x0_{i-1} with r_i = h_{i-1} / h_i. One model evaluation per step.
    """
    n = len(sigmas) - 1
    old: torch.Tensor | None = None
    for i in range(n):
        s, s_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, s)
        if s_next == 0:  # h = inf: x_{i+1} = D_i
            x = denoised
        else:
            h = math.log(s / s_next)
            d = denoised
            if old is not None:
                r = math.log(sigmas[i - 1] / s) / h
                d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old
            x = (s_next / s) * x - math.expm1(-h) * d
        old = denoised
        if progress:
            progress(i + 1, n)
    return x
