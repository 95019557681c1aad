"""DDPM and DDIM samplers for denoiser priors, walking a scheduler's sigma levels.

Both keep x in the prior's variance-preserving form x_t = sqrt(abar) x0 + sqrt(1 - abar) eps,
with abar = 1 / (1 + sigma^2) at each level (the schedule's stored alphas_cumprod[t] at its own
sigma_t), and call the prior through ``latentzoo.core.contract.denoising.Denoiser``. The per-step
coefficients are computed once, in float64 on the host, before the loop.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch

from latentzoo.core.contract.denoising import Denoiser, check_sigmas
from latentzoo.core.contract.errors import LatentzooError
from latentzoo.core.contract.interfaces import Progress, Sampler
from latentzoo.core.runtime.seeding import randn_like

X0_OPTIONS = ("clip_sample", "clip_sample_range", "thresholding", "dynamic_thresholding_ratio", "sample_max_value")


class DenoiserSampler(Sampler):
    """Shared by the denoiser samplers: x0 post-processing options and the Denoiser they build."""

    drives: ClassVar[tuple[str, ...]] = ("denoiser",)
    levels: ClassVar[str | None] = "sigma"
    name: ClassVar[str] = "denoiser sampler"

    def __init__(
        self,
        *,
        clip_sample: bool = False,
        clip_sample_range: float = 1.0,
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        sample_max_value: float = 1.0,
    ) -> None:
        self.clip_sample, self.clip_sample_range = clip_sample, clip_sample_range
        self.thresholding, self.dynamic_thresholding_ratio, self.sample_max_value = (
            thresholding,
            dynamic_thresholding_ratio,
            sample_max_value,
        )

    def denoiser(
        self, prior: Any, batch_size: int, class_labels: torch.Tensor | None = None, guidance: float | None = None, **options: Any
    ) -> Denoiser:
        """The prior as D(x; sigma), with this sampler's x0 options, overridden by any passed at sample time."""
        x0_options = {k: options[k] if options.get(k) is not None else getattr(self, k) for k in X0_OPTIONS}
        return Denoiser(
            prior,
            class_labels=class_labels,
            guidance=1.0 if guidance is None else guidance,
            batch_size=batch_size,
            conditioning=options.get("conditioning"),  # a conditioner's tokens (cross-attention priors)
            null_conditioning=options.get("null_conditioning"),
            **x0_options,
        )

    def sigmas(self, levels: list[float] | None) -> list[float]:
        return check_sigmas(levels, f"sampler {self.name}")

    @staticmethod
    def alpha_bars(denoiser: Denoiser, sigmas: list[float], set_alpha_to_one: bool) -> list[float]:
        """abar at each level; ``set_alpha_to_one`` false ends at the schedule's abar_0 rather than 1 (diffusers' option)."""
        abar = [denoiser.schedule.alpha_bar(s) for s in sigmas]
        if not set_alpha_to_one:
            abar[-1] = float(denoiser.schedule.alphas_cumprod[0])
        return abar


class DDIMSampler(DenoiserSampler):
    """DDIM (Song et al. 2021, eq. 12): deterministic at eta = 0, DDPM-like at eta = 1.

    ``set_alpha_to_one`` false ends at the schedule's sigma_min (abar_0) instead of 0, as
    diffusers' DDIMScheduler(set_alpha_to_one=False) does.
    """

    name = "ddim"

    def __init__(self, *, eta: float = 0.0, set_alpha_to_one: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.eta, self.set_alpha_to_one = self._check_eta(eta), set_alpha_to_one

    @staticmethod
    def _check_eta(eta: float) -> float:
        if not (math.isfinite(eta) and eta >= 0):
            raise LatentzooError(f"eta must be >= 0, not {eta}")
        return float(eta)

    @torch.inference_mode()
    def sample(
        self,
        prior: Any,
        noise: torch.Tensor,
        *,
        levels: list[float] | None,
        generator: torch.Generator,
        progress: Progress | None = None,
        eta: float | None = None,
        set_alpha_to_one: bool | None = None,
        **options: Any,
    ) -> torch.Tensor:
        sigmas = self.sigmas(levels)
        eta = self.eta if eta is None else self._check_eta(eta)
        denoiser = self.denoiser(prior, noise.shape[0], **options)
        abar = self.alpha_bars(denoiser, sigmas, self.set_alpha_to_one if set_alpha_to_one is None else set_alpha_to_one)
        plan = []
        for s, a, a_prev in zip(sigmas[:-1], abar[:-1], abar[1:], strict=True):
            # eq. 12: x_prev = sqrt(a_prev) x0 + sqrt(1 - a_prev - sigma_t^2) eps + sigma_t z, eq. 16 for sigma_t.
            # In sigma form (divide by sqrt(a_prev)): x0 + sqrt(s_prev^2 - ...) eps, the same computation.
            std = eta * math.sqrt((1 - a_prev) / (1 - a) * (1 - a / a_prev))
            plan.append((s, math.sqrt(a_prev), math.sqrt(max(0.0, 1 - a_prev - std**2)), std))
        x = noise.clone()  # x_T in the variance-preserving form
        for i, (s, c_x0, c_eps, std) in enumerate(plan):
            x0, eps = denoiser.predict(x, s)
            x = torch.add(x0.mul_(c_x0), eps, alpha=c_eps)
            if eta > 0 and std > 0:
                x.add_(randn_like(x, generator), alpha=std)  # each sample's noise from its own generator
            if progress:
                progress(i + 1, len(plan))
        return x

    @torch.inference_mode()
    def invert(
        self,
        prior: Any,
        latents: torch.Tensor,
        *,
        levels: list[float] | None,
        class_labels: torch.Tensor | None = None,
        progress: Progress | None = None,
        conditioning: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """DDIM inversion: run eq. 12 (eta = 0) backwards over ``levels``, clean latents -> noise (Song et al. 2021, sec. 4.3).

        Uses eps of the current point evaluated at the next, noisier level, the usual
        first-order approximation (as diffusers' DDIMInverseScheduler); exact as steps grow.
        ``conditioning``: a conditioner's output (the prompt's), unguided, for a cross-attention prior.
        """
        sigmas = self.sigmas(levels)
        denoiser = self.denoiser(prior, latents.shape[0], class_labels=class_labels, conditioning=conditioning)
        abar = self.alpha_bars(denoiser, sigmas, True)
        pairs = list(reversed(list(zip(sigmas[:-1], abar[:-1], sigmas[1:], abar[1:], strict=True))))  # from the clean end upwards
        x = latents.clone()
        for i, (s, a, _, a_prev) in enumerate(pairs):
            _, eps = denoiser.predict(x, s)  # the model at the next, noisier level, on the current point
            x0 = (x - math.sqrt(1 - a_prev) * eps) / math.sqrt(a_prev)
            x = math.sqrt(a) * x0 + math.sqrt(1 - a) * eps
            if progress:
                progress(i + 1, len(pairs))
        return x


class DDPMSampler(DenoiserSampler):
    """Ancestral sampling from the posterior q(x_prev | x_t, x0) (Ho et al. 2020, eq. 6-7).

    ``variance_type``: ``fixed_small`` (posterior variance beta~_t) or ``fixed_large`` (beta_t).
    With fewer steps than training timesteps, beta_t is the step's 1 - a_t / a_prev. The noise
    is drawn from the passed generator.
    """

    name = "ddpm"
    VARIANCE_TYPES = ("fixed_small", "fixed_large")

    def __init__(self, *, variance_type: str = "fixed_small", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.variance_type = self._check_variance(variance_type)

    @classmethod
    def _check_variance(cls, variance_type: str) -> str:
        if variance_type not in cls.VARIANCE_TYPES:
            raise LatentzooError(f"variance_type must be fixed_small or fixed_large, not {variance_type!r}")
        return variance_type

    @torch.inference_mode()
    def sample(
        self,
        prior: Any,
        noise: torch.Tensor,
        *,
        levels: list[float] | None,
        generator: torch.Generator,
        progress: Progress | None = None,
        variance_type: str | None = None,
        **options: Any,
    ) -> torch.Tensor:
        sigmas = self.sigmas(levels)
        variance_type = self.variance_type if variance_type is None else self._check_variance(variance_type)
        denoiser = self.denoiser(prior, noise.shape[0], **options)
        abar = [denoiser.schedule.alpha_bar(s) for s in sigmas]
        plan = []
        for s, s_prev, a, a_prev in zip(sigmas[:-1], sigmas[1:], abar[:-1], abar[1:], strict=True):
            beta = 1 - a / a_prev
            c_x0 = math.sqrt(a_prev) * beta / (1 - a)  # eq. 7: posterior mean coefficients
            c_xt = math.sqrt(1 - beta) * (1 - a_prev) / (1 - a)
            var = beta if variance_type == "fixed_large" else max(beta * (1 - a_prev) / (1 - a), 1e-20)
            std = math.sqrt(var) if s_prev > 0 else 0.0  # no noise on the final step
            plan.append((s, c_x0, c_xt, std))
        x = noise.clone()
        for i, (s, c_x0, c_xt, std) in enumerate(plan):
            x0, _ = denoiser.predict(x, s)
            x = torch.add(x0.mul_(c_x0), x, alpha=c_xt)
            if std > 0:
                x.add_(randn_like(x, generator), alpha=std)  # each sample's noise from its own generator
            if progress:
                progress(i + 1, len(plan))
        return x


# Adams-Bashforth weights, newest eps first, by how many predictions are combined (PNDM eq. 12).
ADAMS_BASHFORTH: dict[int, tuple[float, ...]] = {
    1: (1.0,),
    2: (3 / 2, -1 / 2),
    3: (23 / 12, -16 / 12, 5 / 12),
    4: (55 / 24, -59 / 24, 37 / 24, -9 / 24),
}


class PNDMSampler(DenoiserSampler):
    """PLMS, the pseudo linear multi-step method of PNDM (Liu et al. 2022, eq. 12), as diffusers'
    PNDMScheduler with ``skip_prk_steps`` (Stable Diffusion 1.x's default scheduler) runs it.

    Each step is the DDIM transfer (eta = 0) along a combination of eps predictions: the first
    is a pseudo improved-Euler step (the mean of eps here and at the DDIM guess of the next
    level), then Adams-Bashforth of order 2, 3 and 4 over the newest predictions, where the
    first step's eps (at x_T) counts as the oldest. One prior evaluation per step, plus one.
    Deterministic. ``set_alpha_to_one`` as for DDIM.
    """

    name = "pndm"

    def __init__(self, *, set_alpha_to_one: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.set_alpha_to_one = set_alpha_to_one

    @torch.inference_mode()
    def sample(
        self,
        prior: Any,
        noise: torch.Tensor,
        *,
        levels: list[float] | None,
        generator: torch.Generator,
        progress: Progress | None = None,
        set_alpha_to_one: bool | None = None,
        **options: Any,
    ) -> torch.Tensor:
        sigmas = self.sigmas(levels)
        denoiser = self.denoiser(prior, noise.shape[0], **options)
        abar = self.alpha_bars(denoiser, sigmas, self.set_alpha_to_one if set_alpha_to_one is None else set_alpha_to_one)

        def transfer(x: torch.Tensor, eps: torch.Tensor, i: int) -> torch.Tensor:
            # x_t -> x_next along eps: sqrt(a') x0 + sqrt(1 - a') eps, x0 = (x - sqrt(1 - a) eps) / sqrt(a)
            a, a_next = abar[i], abar[i + 1]
            x0 = (x - math.sqrt(1.0 - a) * eps) / math.sqrt(a)
            return math.sqrt(a_next) * x0 + math.sqrt(1.0 - a_next) * eps

        n = len(sigmas) - 1
        history: list[torch.Tensor] = []  # eps of earlier steps, newest first, at most 3
        x = noise.clone()
        for i in range(n):
            _, eps = denoiser.predict(x, sigmas[i])
            if i == 0 and n > 1:  # pseudo improved Euler: one extra evaluation at the DDIM guess
                guess = transfer(x, eps, i)
                eps_prime = (eps + denoiser.predict(guess, sigmas[i + 1])[1]) / 2
            else:
                recent = [eps, *history]
                eps_prime = sum(w * e for w, e in zip(ADAMS_BASHFORTH[len(recent)], recent, strict=True))
            x = transfer(x, eps_prime, i)
            history = [eps, *history][:3]
            if progress:
                progress(i + 1, n)
        return x
