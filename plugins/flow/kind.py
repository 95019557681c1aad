"""The ``flow`` kind's conformance check (``latentzoo check``): which way does the prior's time run?

The convention (declared in this family's ``latentzoo_kinds``): x_t = (1 - t) x0 + t eps, so
noise is at t = 1, and the prior returns the velocity v = dx_t/dt = eps - x0 (rectified flow,
Liu et al. 2022; flow matching, Lipman et al. 2023). A prior trained the other way (noise at
t = 0, v = x0 - eps, as some flow codebases write it) or with the opposite sign composes with
this kind's samplers and samples noise; this check catches both on real latents.
"""

from __future__ import annotations

from typing import Any

import torch

from latentzoo.core.runtime.conformance import Reading

TIMES = (0.2, 0.35, 0.5, 0.65, 0.8)


def _path(x0: torch.Tensor, eps: torch.Tensor, t: float, noise_at: int) -> torch.Tensor:
    return (1 - t) * x0 + t * eps if noise_at == 1 else t * x0 + (1 - t) * eps


def check(
    prior: Any, x0: torch.Tensor, convention: dict[str, Any], *, generator: torch.Generator, conditioning: Any = None, **_: Any
) -> list[Reading]:
    """Relative errors of v(x_t, t) against the declared velocity, then time reversed, then the sign flipped."""
    noise_at = int(convention["noise_at"])
    sign = 1.0 if convention["velocity"] == "eps - x0" else -1.0
    readings = {  # (noise end, sign of eps - x0) -> label, fix
        (noise_at, sign): (f"noise at t = {noise_at}, v = {convention['velocity']}", ""),
        (1 - noise_at, -sign): (
            f"noise at t = {1 - noise_at}, v = {'x0 - eps' if sign > 0 else 'eps - x0'}",
            "its time runs backwards: call it at 1 - t and negate its output, or declare another kind",
        ),
        (noise_at, -sign): (
            f"noise at t = {noise_at}, v = {'x0 - eps' if sign > 0 else 'eps - x0'}",
            "its velocity has the opposite sign: negate its output, or declare another kind",
        ),
    }
    err = dict.fromkeys(readings, 0.0)
    norm = dict.fromkeys(readings, 0.0)
    for t in TIMES:
        eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
        time = torch.full((x0.shape[0],), t, dtype=x0.dtype)
        outs = {end: prior(_path(x0, eps, t, end), time).float() for end in (0, 1)}  # one call per end of time
        for key in readings:
            end, s = key
            out, target = outs[end], s * (eps - x0)
            err[key] += float((out - target).pow(2).sum())
            norm[key] += float(target.pow(2).sum())
    return [Reading(label, err[k] / norm[k], fix) for k, (label, fix) in readings.items()]
