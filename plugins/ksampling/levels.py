"""Sigma schedulers: which noise levels of a denoiser's training schedule a sampler visits.

``SigmaScheduler`` is the base of every sigma scheduler (these and ComfyUI's, in
``schedulers.py``): the prior's ``noise_schedule`` and the one steps rule.

A scheduler owns no beta schedule: the prior does (``prior.noise_schedule``, a
``latentzoo.core.contract.denoising.NoiseSchedule``). ``schedule(prior, steps)`` returns ``steps``
strictly decreasing sigmas between the schedule's sigma_min and sigma_max, then 0.0.

* ``TimestepScheduler``: the schedule's own sigma_t at ``leading`` / ``trailing`` /
  ``linspace`` timestep spacing (Lin et al. 2024, "Common Diffusion Noise Schedules and
  Sample Steps are Flawed", table 2), plus ``steps_offset``. DDIM on these levels is
  diffusers' DDIMScheduler loop; each step goes to the next element of the actual sequence
  (or to 0), never to ``t - T // n``, which is wrong for trailing and linspace spacing.
* ``KarrasScheduler``: Karras et al. 2022, eq. 5 (``rho``).
* ``SigmoidScheduler``: an S-curve in log sigma (the normalised logistic curve of Chen 2023,
  "On the Importance of Noise Scheduling for Diffusion Models", sec. 2, start -3, end 3).
* ``ExponentialScheduler``: uniform in log sigma (k-diffusion's get_sigmas_exponential).

One steps rule for all: 1 <= steps <= num_train_timesteps of the prior's schedule.

Zero terminal SNR: the ramps (karras, sigmoid, exponential) run from at most RAMP_SIGMA_MAX = 80
(Karras et al. 2022, sec. 5). Where the schedule's sigma_max is larger (linear, cosine, and
every zero-terminal-SNR schedule, whose abar_{T-1} ~ 0 gives sigma ~ 4e3 .. 2e4), the levels
are [sigma_max, ramp from 80, 0]: sampling still starts at the true terminal noise level and
its first step is in effect an x0-prediction, instead of spending half the ramp above 80.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from latentzoo.core.contract.denoising import NoiseSchedule, prior_name
from latentzoo.core.contract.errors import LatentzooError
from latentzoo.core.contract.interfaces import Prior, Scheduler
from latentzoo.core.contract.options import Option, OptionError

SPACINGS = ("leading", "trailing", "linspace")
RAMP_SIGMA_MAX = 80.0  # Karras et al. 2022, sec. 5: sigma_max = 80 suffices in practice
SIGMOID_START, SIGMOID_END = -3.0, 3.0  # Chen 2023, sigmoid schedule defaults


def spaced_timesteps(num_train_timesteps: int, steps: int, spacing: str, steps_offset: int = 0) -> list[int]:
    """``steps`` distinct training timesteps, decreasing, at the given spacing."""
    T = num_train_timesteps
    if spacing == "leading":
        ratio = T // steps
        ts = [i * ratio + steps_offset for i in range(steps)]
    elif spacing == "trailing":
        ratio = T / steps
        ts = [round(T - i * ratio) - 1 for i in range(steps)][::-1]
    elif spacing == "linspace":
        ts = [round(i * (T - 1) / max(1, steps - 1)) for i in range(steps)] if steps > 1 else [T - 1]
    else:
        raise LatentzooError(f"unknown spacing {spacing!r}; use one of {', '.join(SPACINGS)}")
    return sorted((min(t, T - 1) for t in ts), reverse=True)


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


def exponential_sigmas(n: int, sigma_min: float, sigma_max: float) -> list[float]:
    """log sigma uniform from sigma_max to sigma_min (k-diffusion's get_sigmas_exponential), then 0."""
    if n == 1:
        return [sigma_max, 0.0]
    lo, hi = math.log(sigma_min), math.log(sigma_max)
    return [math.exp(hi + i / (n - 1) * (lo - hi)) for i in range(n)] + [0.0]


class SigmaScheduler(Scheduler):
    """Shared by every sigma scheduler: the prior's schedule and the one steps rule."""

    levels: ClassVar[str] = "sigma"
    name: ClassVar[str]

    def noise_schedule(self, prior: Prior, steps: int) -> NoiseSchedule:
        schedule = getattr(prior, "noise_schedule", None)
        if not isinstance(schedule, NoiseSchedule):
            raise LatentzooError(f"scheduler {self.name} picks sigmas of a denoiser's noise_schedule; prior {prior_name(prior)} has none")
        T = schedule.num_train_timesteps
        if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= T:
            raise LatentzooError(f"scheduler {self.name} takes 1 to {T} steps (the prior's training timesteps), not {steps}")
        return schedule

    def option(self, name: str, value: Any) -> Any:
        """A declared option's value (this family's declarations), checked by the one option checker, ``core.contract.options``."""
        from . import ALL_SCHEDULERS

        decl = next(o for o in ALL_SCHEDULERS[self.name][2] if o["name"] == name)
        try:
            return Option.from_declaration(decl, f"scheduler {self.name}").check(value)
        except OptionError as exc:
            raise OptionError(f"scheduler {self.name}: option {name} {exc}") from None


class TimestepScheduler(SigmaScheduler):
    """The schedule's own sigmas at ``leading`` / ``trailing`` / ``linspace`` timestep spacing."""

    name = "timesteps"

    def __init__(self, *, spacing: str = "leading", steps_offset: int = 0) -> None:
        if spacing not in SPACINGS:
            raise LatentzooError(f"unknown spacing {spacing!r}; use one of {', '.join(SPACINGS)}")
        self.spacing, self.steps_offset = spacing, steps_offset
        self.name = spacing  # type: ignore[misc]  # errors name the spacing, which is the registry entry's name

    def timesteps(self, prior: Prior, steps: int, *, spacing: str | None = None, steps_offset: int | None = None) -> list[int]:
        schedule = self.noise_schedule(prior, steps)
        offset = self.steps_offset if steps_offset is None else steps_offset
        return spaced_timesteps(schedule.num_train_timesteps, steps, spacing or self.spacing, offset)

    def schedule(self, prior: Prior, steps: int, **options: Any) -> list[float]:
        ts = self.timesteps(prior, steps, **options)
        return [prior.noise_schedule.sigmas[t] for t in ts] + [0.0]


class RampScheduler(SigmaScheduler):
    """A continuous ramp between sigma_min and min(sigma_max, 80), with sigma_max first where it is larger."""

    def ramp(self, n: int, sigma_min: float, sigma_max: float, **options: Any) -> list[float]:
        raise NotImplementedError

    def schedule(self, prior: Prior, steps: int, **options: Any) -> list[float]:
        ns = self.noise_schedule(prior, steps)
        top = ns.sigma_max
        head = [top] if top > RAMP_SIGMA_MAX and steps > 1 else []  # see the module doc: zero terminal SNR
        hi = min(top, RAMP_SIGMA_MAX) if head else top
        return head + self.ramp(steps - len(head), ns.sigma_min, hi, **options)


class KarrasScheduler(RampScheduler):
    """Karras et al. 2022, eq. 5; ``rho`` = 7 in the paper."""

    name = "karras"

    def __init__(self, *, rho: float = 7.0) -> None:
        self.rho = self.option("rho", rho)

    def ramp(self, n: int, sigma_min: float, sigma_max: float, *, rho: float | None = None, **_: Any) -> list[float]:
        return karras_sigmas(n, sigma_min, sigma_max, self.rho if rho is None else self.option("rho", rho))


class SigmoidScheduler(RampScheduler):
    """An S-curve in log sigma, dense near sigma_min and sigma_max (Chen 2023)."""

    name = "sigmoid"

    def ramp(self, n: int, sigma_min: float, sigma_max: float, **_: Any) -> list[float]:
        return sigmoid_sigmas(n, sigma_min, sigma_max)


class ExponentialScheduler(RampScheduler):
    """Uniform in log sigma."""

    name = "exponential"

    def ramp(self, n: int, sigma_min: float, sigma_max: float, **_: Any) -> list[float]:
        return exponential_sigmas(n, sigma_min, sigma_max)
