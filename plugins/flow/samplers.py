"""Samplers of a ``flow`` prior: integrate the flow ODE dx/dt = v(x, t) from t = 1 to t = 0.

For x_t = (1 - t) x0 + t eps the prior's velocity is v = eps - x0 = dx_t/dt (rectified
flow, Liu et al. 2022; flow matching, Lipman et al. 2023). Sampling starts at the noise
(t = 1) and walks the scheduler's decreasing times down to t = 0. Both solvers are
deterministic: the same noise and times give identical bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import pairwise
from typing import Any, ClassVar

import torch

from latentzoo.core.contract.errors import LatentzooError
from latentzoo.core.contract.interfaces import Progress, Sampler

Velocity = Callable[[torch.Tensor, float], torch.Tensor]


def euler(model: Velocity, x: torch.Tensor, ts: Sequence[float], progress: Progress | None = None) -> torch.Tensor:
    """Euler's method x_{i+1} = x_i + (t_{i+1} - t_i) v(x_i, t_i), one evaluation per step.

    First order: the global error falls linearly with the step. This is the sampler of
    rectified flow (Liu et al. 2022, "Flow Straight and Fast", eq. 1 discretised) and of
    SD3 (Esser et al. 2024).
    """
    n = len(ts) - 1
    for i in range(n):
        x = x + (ts[i + 1] - ts[i]) * model(x, ts[i])
        if progress:
            progress(i + 1, n)
    return x


def heun(model: Velocity, x: torch.Tensor, ts: Sequence[float], progress: Progress | None = None) -> torch.Tensor:
    """Heun's method (explicit trapezoid): an Euler predictor, then the mean of the slopes at
    both ends (Karras et al. 2022, "Elucidating the Design Space...", alg. 1, applied to the
    flow ODE). Second order: the global error falls with the square of the step.

    The step that ends at t = 0 is a plain Euler step, as in Karras et al. alg. 1: it saves an
    evaluation at t = 0, where the velocity of a model trained on t in (0, 1) is least
    reliable. So ``n`` steps cost ``2 n - 1`` evaluations.
    """
    n = len(ts) - 1
    for i in range(n):
        t, t_next = ts[i], ts[i + 1]
        v = model(x, t)
        x_euler = x + (t_next - t) * v
        if t_next == 0:
            x = x_euler
        else:
            x = x + (t_next - t) * 0.5 * (v + model(x_euler, t_next))
        if progress:
            progress(i + 1, n)
    return x


def check_levels(levels: Any) -> list[float]:
    """Times from the scheduler: strictly decreasing, in [0, 1], ending at 0."""
    if levels is None or len(levels) < 2:
        raise LatentzooError("a flow sampler needs a flow scheduler's times (e.g. --scheduler flow-shift)")
    ts = [float(t) for t in levels]
    if not all(0.0 <= t <= 1.0 for t in ts) or any(b >= a for a, b in pairwise(ts)) or ts[-1] != 0.0:
        raise LatentzooError(f"flow times must decrease strictly within [0, 1] and end at 0, got {ts[:3]}...{ts[-2:]}")
    return ts


class FlowSampler(Sampler):
    """Shared by the flow solvers: the prior as a velocity function of (x, float t)."""

    drives: ClassVar[tuple[str, ...]] = ("flow",)
    levels: ClassVar[str | None] = "flow"
    solver: ClassVar[Callable[..., torch.Tensor]]

    def __init__(self) -> None:
        pass

    @torch.inference_mode()
    def sample(
        self,
        prior: Any,
        noise: torch.Tensor,
        *,
        levels: list[float] | None,
        generator: torch.Generator,
        progress: Progress | None = None,
        **_: Any,
    ) -> torch.Tensor:
        ts = check_levels(levels)

        def velocity(x: torch.Tensor, t: float) -> torch.Tensor:
            return prior(x, torch.full((x.shape[0],), t, dtype=x.dtype))

        return type(self).solver(velocity, noise.clone(), ts, progress)


class FlowEulerSampler(FlowSampler):
    """Euler on the flow ODE (see ``euler``)."""

    solver = staticmethod(euler)


class FlowHeunSampler(FlowSampler):
    """Heun on the flow ODE (see ``heun``)."""

    solver = staticmethod(heun)
