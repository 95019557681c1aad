"""Pseudo linear multi-step (PLMS) sampler for denoiser priors.

Liu et al. 2022, "Pseudo Numerical Methods for Diffusion Models on Manifolds" (PNDM), as
used by CompVis latent diffusion. Every step is the DDIM transfer (the eta = 0 update,
which keeps x on the data manifold's noise level), but the eps it transfers with is a
linear multi-step combination of the recent predictions: the Adams-Bashforth weights
(55, -59, 37, -9) / 24 once four are known, lower orders while they build up, and for the
first step a pseudo improved Euler step (the average of eps here and at the DDIM guess of
the next point). That is one prior evaluation per step, plus one.

Written against latentzoo's public interfaces only: the prior is called as
``prior(x_t, t, class_labels)`` and states ``prediction_type``; the scheduler gives
``alphas_cumprod`` and ``timesteps(n)``.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch

from latentzoo.core.errors import LatentzooError
from latentzoo.core.interfaces import Progress, Sampler

# Adams-Bashforth weights for the newest eps first, by how many predictions are combined.
ADAMS_BASHFORTH: dict[int, tuple[float, ...]] = {
    1: (1.0,),
    2: (3 / 2, -1 / 2),
    3: (23 / 12, -16 / 12, 5 / 12),
    4: (55 / 24, -59 / 24, 37 / 24, -9 / 24),
}


def predict_epsilon(
    prior: Any, x: torch.Tensor, t: int, alpha_bar: float, class_labels: torch.Tensor | None, guidance: float
) -> torch.Tensor:
    """The prior's output as eps; classifier-free guidance when guidance != 1 (Ho & Salimans 2022, eq. 6)."""
    t_ = torch.tensor(t)
    if class_labels is not None and guidance != 1.0:
        null = torch.full_like(class_labels, prior.num_classes - 1)
        cond, uncond = prior(torch.cat([x, x]), t_, torch.cat([class_labels, null])).chunk(2)
        out = uncond + guidance * (cond - uncond)
    else:
        out = prior(x, t_, class_labels)
    sa, sb = math.sqrt(alpha_bar), math.sqrt(1.0 - alpha_bar)
    if prior.prediction_type == "epsilon":  # x_t = sqrt(a) x0 + sqrt(1 - a) eps
        return out
    if prior.prediction_type == "v_prediction":  # v = sqrt(a) eps - sqrt(1 - a) x0 (Salimans & Ho 2022)
        return sa * out + sb * x
    if prior.prediction_type == "sample":
        return (x - sa * out) / sb
    raise LatentzooError(f"unknown prediction_type {prior.prediction_type!r}; PLMS handles epsilon, v_prediction and sample")


def transfer(x: torch.Tensor, eps: torch.Tensor, alpha_bar: float, alpha_bar_next: float) -> torch.Tensor:
    """Move x_t to the next timestep along eps: sqrt(a') x0 + sqrt(1 - a') eps with x0 from eps (PNDM's transfer part)."""
    x0 = (x - math.sqrt(1.0 - alpha_bar) * eps) / math.sqrt(alpha_bar)
    return math.sqrt(alpha_bar_next) * x0 + math.sqrt(1.0 - alpha_bar_next) * eps


class PLMSSampler(Sampler):
    """PLMS of ``order`` 1 to 4 (1 is DDIM at eta = 0); deterministic."""

    drives: ClassVar[tuple[str, ...]] = ("denoiser",)

    def __init__(self, *, order: int = 4) -> None:
        if order not in ADAMS_BASHFORTH:
            raise LatentzooError(f"PLMS order must be 1, 2, 3 or 4, not {order}")
        self.order = order

    @torch.inference_mode()
    def sample(
        self,
        prior: Any,
        scheduler: Any,
        noise: torch.Tensor,
        *,
        steps: int,
        generator: torch.Generator,
        progress: Progress | None = None,
        class_labels: torch.Tensor | None = None,
        guidance: float | None = None,
        **_: Any,
    ) -> torch.Tensor:
        if scheduler is None:
            raise LatentzooError("the PLMS sampler needs a scheduler; pass --scheduler (see `latentzoo list --role scheduler`)")
        if scheduler.num_train_timesteps != prior.num_train_timesteps:
            raise LatentzooError(
                f"the scheduler has {scheduler.num_train_timesteps} training timesteps but the prior "
                f"{prior.num_train_timesteps}; choose a matching scheduler"
            )
        if getattr(prior, "num_classes", None) and class_labels is None:
            class_labels = torch.full((noise.shape[0],), prior.num_classes - 1, dtype=torch.long)  # the null class
        scale = 1.0 if guidance is None else guidance
        alphas = scheduler.alphas_cumprod
        ts = scheduler.timesteps(steps)

        def alpha_bar(t: int) -> float:  # t = -1 is the clean end of the chain
            return 1.0 if t < 0 else float(alphas[t])

        history: list[torch.Tensor] = []  # previous eps, oldest first, at most order - 1
        x = noise.clone()
        for i, (t, t_next) in enumerate(zip(ts, [*ts[1:], -1], strict=True)):
            a, a_next = alpha_bar(t), alpha_bar(t_next)
            eps = predict_epsilon(prior, x, t, a, class_labels, scale)
            if not history and self.order > 1 and t_next >= 0:
                guess = transfer(x, eps, a, a_next)
                eps_prime = (eps + predict_epsilon(prior, guess, t_next, a_next, class_labels, scale)) / 2
            else:
                recent = [eps, *reversed(history)]
                eps_prime = sum(w * e for w, e in zip(ADAMS_BASHFORTH[len(recent)], recent, strict=True))
            x = transfer(x, eps_prime, a, a_next)
            if self.order > 1:
                history = [*history, eps][-(self.order - 1) :]
            if progress:
                progress(i + 1, len(ts))
        return x
