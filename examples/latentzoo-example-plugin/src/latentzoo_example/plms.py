"""Pseudo linear multi-step (PLMS) sampler for denoiser priors.

Liu et al. 2022, "Pseudo Numerical Methods for Diffusion Models on Manifolds" (PNDM), as
used by CompVis latent diffusion. Every step is the DDIM transfer (the eta = 0 update,
which keeps x on the data manifold's noise level), but the eps it transfers with is a
linear multi-step combination of the recent predictions: the Adams-Bashforth weights
(55, -59, 37, -9) / 24 once four are known, lower orders while they build up, and for the
first step a pseudo improved Euler step (the average of eps here and at the DDIM guess of
the next point). That is one prior evaluation per step, plus one.

Written against latentzoo's public API only: the scheduler's ``levels`` are sigmas of the
prior's training schedule, and ``latentzoo.core.contract.denoising.Denoiser`` turns the prior into
(x0, eps) at any level (prediction type, class labels, the null class and guidance included).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch

from latentzoo.core.contract.denoising import Denoiser, check_sigmas
from latentzoo.core.contract.errors import LatentzooError
from latentzoo.core.contract.interfaces import Progress, Sampler

# Adams-Bashforth weights for the newest eps first, by how many predictions are combined.
ADAMS_BASHFORTH: dict[int, tuple[float, ...]] = {
    1: (1.0,),
    2: (3 / 2, -1 / 2),
    3: (23 / 12, -16 / 12, 5 / 12),
    4: (55 / 24, -59 / 24, 37 / 24, -9 / 24),
}


def transfer(x: torch.Tensor, eps: torch.Tensor, alpha_bar: float, alpha_bar_next: float) -> torch.Tensor:
    """Move x_t to the next level along eps: sqrt(a') x0 + sqrt(1 - a') eps with x0 from eps (PNDM's transfer part)."""
    x0 = (x - math.sqrt(1.0 - alpha_bar) * eps) / math.sqrt(alpha_bar)
    return math.sqrt(alpha_bar_next) * x0 + math.sqrt(1.0 - alpha_bar_next) * eps


class PLMSSampler(Sampler):
    """PLMS of ``order`` 1 to 4 (1 is DDIM at eta = 0); deterministic."""

    drives: ClassVar[tuple[str, ...]] = ("denoiser",)
    levels: ClassVar[str | None] = "sigma"

    def __init__(self, *, order: int = 4) -> None:
        self.order = self._check_order(order)

    @staticmethod
    def _check_order(order: int) -> int:
        if order not in ADAMS_BASHFORTH:
            raise LatentzooError(f"PLMS order must be 1, 2, 3 or 4, not {order}")
        return order

    @torch.inference_mode()
    def sample(
        self,
        prior: Any,
        noise: torch.Tensor,
        *,
        levels: list[float] | None,
        generator: torch.Generator,
        progress: Progress | None = None,
        class_labels: torch.Tensor | None = None,
        guidance: float | None = None,
        order: int | None = None,
        conditioning: dict[str, torch.Tensor] | None = None,
        null_conditioning: dict[str, torch.Tensor] | None = None,
        **_: Any,
    ) -> torch.Tensor:
        sigmas = check_sigmas(levels, "sampler plms")
        order = self.order if order is None else self._check_order(order)
        model = Denoiser(  # text conditioning (a conditioner's tokens) passes through to the prior, guided like class labels
            prior,
            class_labels=class_labels,
            guidance=1.0 if guidance is None else guidance,
            batch_size=noise.shape[0],
            conditioning=conditioning,
            null_conditioning=null_conditioning,
        )
        abar = [model.schedule.alpha_bar(s) for s in sigmas]  # the variance-preserving chain x_t = sqrt(a) x0 + sqrt(1 - a) eps
        n = len(sigmas) - 1
        history: list[torch.Tensor] = []  # previous eps, oldest first, at most order - 1
        x = noise.clone()
        for i in range(n):
            a, a_next = abar[i], abar[i + 1]
            _, eps = model.predict(x, sigmas[i])
            if not history and order > 1 and sigmas[i + 1] > 0:
                guess = transfer(x, eps, a, a_next)
                eps_prime = (eps + model.predict(guess, sigmas[i + 1])[1]) / 2
            else:
                recent = [eps, *reversed(history)]
                eps_prime = sum(w * e for w, e in zip(ADAMS_BASHFORTH[len(recent)], recent, strict=True))
            x = transfer(x, eps_prime, a, a_next)
            if order > 1:
                history = [*history, eps][-(order - 1) :]
            if progress:
                progress(i + 1, n)
        return x
