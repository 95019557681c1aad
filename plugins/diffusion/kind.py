"""The ``denoiser`` kind's conformance check (``latentzoo check``): which prediction type does the prior follow?

The convention (declared in this family's ``latentzoo_kinds``): the prior is called at
x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps (Ho et al. 2020, eq. 4) on the training
timestep t of its own ``noise_schedule``, and returns what its ``prediction_type`` names:
eps, v = sqrt(abar_t) eps - sqrt(1 - abar_t) x0 (Salimans & Ho 2022, sec. 4) or x0. The
check noises real latents at a few timesteps across the schedule and measures the relative
error of the output against each prediction type's target; the declared one must fit best.
"""

from __future__ import annotations

from typing import Any

import torch

from latentzoo.core.contract.denoising import Denoiser, training_target
from latentzoo.core.runtime.conformance import Reading

FRACTIONS = (0.2, 0.4, 0.6, 0.8)  # of the training timesteps: mid-range, where eps, v and x0 differ most


def check(
    prior: Any, x0: torch.Tensor, convention: dict[str, Any], *, generator: torch.Generator, conditioning: Any = None, **_: Any
) -> list[Reading]:
    """Relative errors ||output - target||^2 / ||target||^2 over the timesteps, for the declared prediction type first."""
    model = Denoiser(prior, batch_size=x0.shape[0], conditioning=conditioning)
    schedule = model.schedule
    types = list(convention["prediction_types"])
    declared = prior.prediction_type
    err = dict.fromkeys(types, 0.0)
    norm = dict.fromkeys(types, 0.0)
    for fraction in FRACTIONS:
        t = round(fraction * (schedule.num_train_timesteps - 1))
        ab = float(schedule.alphas_cumprod[t])
        eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
        x_t = ab**0.5 * x0 + (1 - ab) ** 0.5 * eps
        out = model.model_output(x_t, torch.tensor(float(t), dtype=torch.float64)).float()
        for p in types:
            target = training_target(p, x0, eps, ab**0.5, (1 - ab) ** 0.5)
            err[p] += float((out - target).pow(2).sum())
            norm[p] += float(target.pow(2).sum())
    order = [declared, *(p for p in types if p != declared)]
    return [
        Reading(f"prediction_type {p}", err[p] / norm[p], f"its config says prediction_type {declared}; set prediction_type: {p}")
        for p in order
    ]
