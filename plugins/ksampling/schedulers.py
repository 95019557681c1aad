"""ComfyUI's sigma schedulers, on the prior's own training schedule (``prior.noise_schedule``).

Each ``schedule(prior, steps)`` returns ``steps`` strictly decreasing sigmas then 0.0, as
ComfyUI's ``comfy/samplers.py`` computes them from a discrete model's sigmas (its
``ModelSamplingDiscrete``: sigma_t = sqrt((1 - abar_t) / abar_t) for t = 0 .. T-1, and
sigma(t) for fractional t interpolated linearly in log sigma, which ``NoiseSchedule.sigma``
also does). One steps rule for all: 1 <= steps <= num_train_timesteps.

Where ComfyUI returns another number of levels than ``steps`` (``ddim_uniform`` when T is not
a multiple of steps, ``beta`` when rounding repeats a timestep) this module keeps ``steps``
levels and says how in the class docstring. Karras and exponential are ``levels.py``'s
``karras`` / ``exponential`` entries (the same formulas); the prior's schedule and the steps
rule are ``levels.SigmaScheduler``'s, shared by every sigma scheduler.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, ClassVar

from latentzoo.core.contract.denoising import NoiseSchedule, prior_name
from latentzoo.core.contract.errors import LatentzooError
from latentzoo.core.contract.interfaces import Prior

from .levels import SigmaScheduler

# Align Your Steps (Sabour, Fidler & Kreis 2024, "Align Your Steps: Optimizing Sampling Schedules
# in Diffusion Models"): the published 10-step sigmas (11 levels, last sigma_min) for Stable
# Diffusion 1.5 and SDXL, as on the project page and in ComfyUI's nodes_align_your_steps.py.
AYS_SIGMAS: dict[str, tuple[float, ...]] = {
    "SD1": (14.6146412293, 6.4745760956, 3.8636745985, 2.6946151520, 1.8841921177, 1.3943805092,
            0.9642583904, 0.6523686016, 0.3977456272, 0.1515232662, 0.0291671582),
    "SDXL": (14.6146412293, 6.3184485287, 3.7681790315, 2.1811480769, 1.3405244945, 0.8620721141,
             0.5550693289, 0.3798540708, 0.2332364134, 0.1114188177, 0.0291671582),
}  # fmt: skip


class KScheduler(SigmaScheduler):
    """Shared by ComfyUI's schedulers: ``sigmas(schedule, steps)``, and a check that the result is ``steps`` decreasing sigmas then 0."""

    name: ClassVar[str] = "scheduler"

    def sigmas(self, schedule: NoiseSchedule, steps: int, **options: Any) -> list[float]:
        raise NotImplementedError

    def schedule(self, prior: Prior, steps: int, **options: Any) -> list[float]:
        levels = self.sigmas(self.noise_schedule(prior, steps), steps, **options)
        head = levels[:-1]
        if len(head) != steps or levels[-1] != 0.0 or any(not (b < a) for a, b in itertools.pairwise(head)) or head[-1] <= 0:
            raise LatentzooError(
                f"scheduler {self.name} cannot place {steps} distinct sigmas on prior {prior_name(prior)}'s schedule; use fewer steps"
            )
        return levels


def timestep_sigmas(schedule: NoiseSchedule, timesteps: list[float]) -> list[float]:
    return [schedule.sigma(t) for t in timesteps] + [0.0]


class NormalScheduler(KScheduler):
    """ComfyUI's ``normal``: timesteps uniform from T-1 to 0 (both ends included), sigma(t) log-interpolated, then 0."""

    name = "normal"

    def sigmas(self, schedule: NoiseSchedule, steps: int, **_: Any) -> list[float]:
        T = schedule.num_train_timesteps
        if steps == 1:
            return [schedule.sigma_max, 0.0]
        return timestep_sigmas(schedule, [(T - 1) * (1 - i / (steps - 1)) for i in range(steps)])


class SGMUniformScheduler(KScheduler):
    """ComfyUI's ``sgm_uniform`` (Stability's generative-models): steps + 1 uniform timesteps from T-1 to 0, the last dropped, then 0."""

    name = "sgm_uniform"

    def sigmas(self, schedule: NoiseSchedule, steps: int, **_: Any) -> list[float]:
        T = schedule.num_train_timesteps
        return timestep_sigmas(schedule, [(T - 1) * (1 - i / steps) for i in range(steps)])


class SimpleScheduler(KScheduler):
    """ComfyUI's ``simple``: every (T / steps)-th training sigma counted down from sigma_{T-1}, then 0."""

    name = "simple"

    def sigmas(self, schedule: NoiseSchedule, steps: int, **_: Any) -> list[float]:
        T = schedule.num_train_timesteps
        ss = T / steps  # ComfyUI's float stride, multiplied as it does (i * ss, not i * T / steps)
        return [schedule.sigmas[T - 1 - int(i * ss)] for i in range(steps)] + [0.0]


class DDIMUniformScheduler(KScheduler):
    """ComfyUI's ``ddim_uniform``: training sigmas at t = 1, 1 + c, 1 + 2c, ... (c = T // steps), reversed, then 0.

    ComfyUI walks t up to T - 1 and so returns more than ``steps`` levels when T is not a
    multiple of ``steps`` (7 steps of 1000: 8 levels); here the first ``steps`` of those
    timesteps are kept (identical to ComfyUI whenever its count is ``steps``).
    """

    name = "ddim_uniform"

    def sigmas(self, schedule: NoiseSchedule, steps: int, **_: Any) -> list[float]:
        c = max(schedule.num_train_timesteps // steps, 1)
        ts = [t for t in range(1, schedule.num_train_timesteps, c)][:steps]
        if len(ts) < steps:  # steps = T: DDIM's leading grid from 0
            ts = list(range(steps))
        return [schedule.sigmas[t] for t in reversed(ts)] + [0.0]


def betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b), by Lentz's continued fraction (Numerical Recipes, 3rd ed., sec. 6.4)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x > (a + 1) / (a + b + 2):  # the fraction converges fast below the mean; use the symmetry above it
        return 1.0 - betainc(b, a, 1.0 - x)
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1 / (d if abs(d) > tiny else tiny)
    f = d
    for m in range(1, 500):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)), -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1 + num * d
            d = 1 / (d if abs(d) > tiny else tiny)
            c = 1 + num / c
            c = c if abs(c) > tiny else tiny
            f *= c * d
        if abs(c * d - 1) < 1e-15:
            break
    return front * f / a


def beta_ppf(q: float, a: float, b: float) -> float:
    """The inverse of I_x(a, b) in x (the Beta(a, b) quantile), by bisection to double precision."""
    if q <= 0:
        return 0.0
    if q >= 1:
        return 1.0
    lo, hi = 0.0, 1.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if betainc(a, b, mid) < q:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-16:
            break
    return (lo + hi) / 2


class BetaScheduler(KScheduler):
    """ComfyUI's ``beta`` (Lee et al. 2024, "Beta Sampling is All You Need", arXiv:2407.12173).

    Timesteps t_i = rint(F^-1(1 - i/steps) (T - 1)) for the Beta(alpha, beta) quantile F^-1
    (alpha = beta = 0.6: dense at both ends), the training sigma at each, then 0. ComfyUI drops
    a timestep that rounding repeats (returning fewer levels); here, if rounding would repeat
    one, the unrounded fractional timesteps are used instead, so there are always ``steps`` levels.
    """

    name = "beta"

    def __init__(self, *, alpha: float = 0.6, beta: float = 0.6) -> None:
        self.alpha, self.beta = self.option("alpha", alpha), self.option("beta", beta)

    def sigmas(self, schedule: NoiseSchedule, steps: int, alpha: float | None = None, beta: float | None = None, **_: Any) -> list[float]:
        a = self.alpha if alpha is None else self.option("alpha", alpha)
        b = self.beta if beta is None else self.option("beta", beta)
        T1 = schedule.num_train_timesteps - 1
        ts = [beta_ppf(1 - i / steps, a, b) * T1 for i in range(steps)]
        rounded = [float(round(t)) for t in ts]  # numpy's rint: round half to even, as Python's round
        chosen = rounded if len(set(rounded)) == steps else ts
        return timestep_sigmas(schedule, chosen)


class LinearQuadraticScheduler(KScheduler):
    """ComfyUI's ``linear_quadratic`` (Genmo's Mochi 1 sampler): linear, then quadratic, in sigma / sigma_max.

    The first ``linear_steps`` (default steps // 2) levels fall linearly from 1 to
    1 - threshold_noise; the rest follow the quadratic that continues them to 0 at the end;
    everything is scaled by the schedule's sigma_max (ComfyUI multiplies by
    ``model_sampling.sigma_max`` too). Made for flow models: on a denoiser's sigma it spends
    half the steps at very high noise.
    """

    name = "linear_quadratic"

    def __init__(self, *, threshold_noise: float = 0.025, linear_steps: int | None = None) -> None:
        self.threshold_noise = self.option("threshold_noise", threshold_noise)
        self.linear_steps = linear_steps

    def sigmas(
        self, schedule: NoiseSchedule, steps: int, threshold_noise: float | None = None, linear_steps: int | None = None, **_: Any
    ) -> list[float]:
        if steps == 1:
            return [schedule.sigma_max, 0.0]
        tn = self.threshold_noise if threshold_noise is None else self.option("threshold_noise", threshold_noise)
        ls = linear_steps if linear_steps is not None else self.linear_steps
        ls = steps // 2 if ls is None else ls
        if isinstance(ls, bool) or not isinstance(ls, int) or not 1 <= ls < steps:
            raise LatentzooError(f"linear_steps must be an integer from 1 to steps - 1 ({steps - 1}), not {ls!r}")
        linear = [i * tn / ls for i in range(ls)]
        diff = ls - tn * steps
        q_steps = steps - ls
        q_coef = diff / (ls * q_steps**2)
        l_coef = tn / ls - 2 * diff / q_steps**2
        const = q_coef * ls**2
        quadratic = [q_coef * i**2 + l_coef * i + const for i in range(ls, steps)]
        return [(1.0 - v) * schedule.sigma_max for v in [*linear, *quadratic]] + [0.0]


class KLOptimalScheduler(KScheduler):
    """ComfyUI's ``kl_optimal`` (Sabour et al. 2024, AYS, sec. 3 / app.: the KL-optimal schedule of an ideal Gaussian denoiser).

    sigma_i = tan((1 - i/(n-1)) atan(sigma_max) + i/(n-1) atan(sigma_min)): uniform in atan(sigma), then 0.
    """

    name = "kl_optimal"

    def sigmas(self, schedule: NoiseSchedule, steps: int, **_: Any) -> list[float]:
        if steps == 1:
            return [schedule.sigma_max, 0.0]
        lo, hi = math.atan(schedule.sigma_min), math.atan(schedule.sigma_max)
        return [math.tan(i / (steps - 1) * lo + (1 - i / (steps - 1)) * hi) for i in range(steps)] + [0.0]


def polyexponential_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float) -> list[float]:
    """k-diffusion's get_sigmas_polyexponential: log sigma = log sigma_min + (1 - i/(n-1))^rho log(sigma_max / sigma_min), then 0."""
    if n == 1:
        return [sigma_max, 0.0]
    lo, span = math.log(sigma_min), math.log(sigma_max / sigma_min)
    return [math.exp((1 - i / (n - 1)) ** rho * span + lo) for i in range(n)] + [0.0]


class PolyExponentialScheduler(KScheduler):
    """k-diffusion's ``polyexponential``: a polynomial ramp in log sigma (rho = 1 is ``exponential``; larger rho, denser near sigma_min)."""

    name = "polyexponential"

    def __init__(self, *, rho: float = 1.0) -> None:
        self.rho = self.option("rho", rho)

    def sigmas(self, schedule: NoiseSchedule, steps: int, rho: float | None = None, **_: Any) -> list[float]:
        r = self.rho if rho is None else self.option("rho", rho)
        return polyexponential_sigmas(steps, schedule.sigma_min, schedule.sigma_max, r)


def loglinear_interp(levels: tuple[float, ...], n: int) -> list[float]:
    """n points interpolated linearly in log sigma over an evenly indexed decreasing table (ComfyUI's loglinear_interp)."""
    k = len(levels) - 1
    out = []
    for i in range(n):
        pos = i * k / (n - 1) if n > 1 else 0.0
        lo = min(int(pos), k - 1)
        w = pos - lo
        out.append(math.exp((1 - w) * math.log(levels[lo]) + w * math.log(levels[lo + 1])))
    return out


class AlignYourStepsScheduler(KScheduler):
    """Align Your Steps (Sabour, Fidler & Kreis 2024): the paper's optimised 10-step sigmas for ``model`` (SD1 or SDXL).

    For 10 steps the table's first 10 levels, then 0; for other step counts the 11-level table
    is interpolated linearly in log sigma over an even index to steps + 1 levels and the last
    replaced by 0, as ComfyUI's AlignYourStepsScheduler. The tables are absolute sigmas of
    Stable Diffusion's schedule (scaled_linear 0.00085..0.012, T = 1000: sigma 0.029..14.6); on
    another schedule they are used as they are (the prior's t(sigma) clamps to its range).
    """

    name = "align_your_steps"

    def __init__(self, *, model: str = "SD1") -> None:
        self.model = self.option("model", model)

    def sigmas(self, schedule: NoiseSchedule, steps: int, model: str | None = None, **_: Any) -> list[float]:
        table = AYS_SIGMAS[self.model if model is None else self.option("model", model)]
        levels = list(table) if steps + 1 == len(table) else loglinear_interp(table, steps + 1)
        return [*levels[:-1], 0.0]
