"""DDPM and DDIM samplers for denoiser priors, on any NoiseScheduler.

The per-step coefficients are computed once, in float64 on the host, before the loop;
the loop itself does no host synchronisation.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch

from latentzoo.core.errors import LatentzooError
from latentzoo.core.interfaces import Progress, Sampler

from .schedulers import NoiseScheduler


def split_prediction(output: torch.Tensor, x_t: torch.Tensor, alpha_bar: float, prediction_type: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(x0, eps) from a model output, using x_t = sqrt(a) x0 + sqrt(1 - a) eps (Ho et al. 2020, eq. 4).

    v-prediction: v = sqrt(a) eps - sqrt(1 - a) x0 (Salimans & Ho 2022, sec. 4).
    """
    sa, sb = math.sqrt(alpha_bar), math.sqrt(1.0 - alpha_bar)
    if prediction_type == "epsilon":
        return (x_t - sb * output) / sa, output
    if prediction_type == "v_prediction":
        return sa * x_t - sb * output, sa * output + sb * x_t
    if prediction_type == "sample":
        return output, (x_t - sa * output) / sb
    raise LatentzooError(f"unknown prediction_type {prediction_type!r}")


def dynamic_threshold(x0: torch.Tensor, ratio: float, max_value: float) -> torch.Tensor:
    """Clamp to the ``ratio`` quantile s of |x0| per sample and divide by s (Saharia et al. 2022, sec. 2.3)."""
    s = torch.quantile(x0.abs().flatten(1), ratio, dim=1).clamp(min=1.0, max=max_value)
    s = s.view(-1, *([1] * (x0.ndim - 1)))
    return torch.maximum(torch.minimum(x0, s), -s) / s


class DenoiserSampler(Sampler):
    """Shared by DDPM and DDIM: options, the denoiser call with guidance, x0 post-processing."""

    drives: ClassVar[tuple[str, ...]] = ("denoiser",)

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

    def predict(
        self,
        prior: Any,
        x: torch.Tensor,
        t: torch.Tensor,
        alpha_bar: float,
        class_labels: torch.Tensor | None,
        guidance: float,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(x0, eps) at one step; classifier-free guidance when guidance != 1 (Ho & Salimans 2022, eq. 6)."""
        if class_labels is not None and guidance != 1.0:
            null = torch.full_like(class_labels, prior.num_classes - 1)
            both = prior(torch.cat([x, x]), t, torch.cat([class_labels, null]))
            cond, uncond = both.chunk(2)
            output = uncond + guidance * (cond - uncond)
        else:
            output = prior(x, t, class_labels)
        x0, eps = split_prediction(output, x, alpha_bar, prior.prediction_type)
        if self.thresholding:
            x0 = dynamic_threshold(x0, self.dynamic_thresholding_ratio, self.sample_max_value)
        elif self.clip_sample:
            x0 = x0.clamp(-self.clip_sample_range, self.clip_sample_range)
        return x0, eps

    @staticmethod
    def check(prior: Any, scheduler: Any) -> NoiseScheduler:
        if not isinstance(scheduler, NoiseScheduler):
            raise LatentzooError("DDPM and DDIM samplers need a diffusion noise scheduler (linear, scaled-linear, cosine)")
        if scheduler.num_train_timesteps != prior.num_train_timesteps:
            raise LatentzooError(
                f"the scheduler has {scheduler.num_train_timesteps} training timesteps but the prior was trained with "
                f"{prior.num_train_timesteps}; set num_train_timesteps to match"
            )
        return scheduler

    @staticmethod
    def conditioning(class_labels: torch.Tensor | None, guidance: float, prior: Any, batch: int) -> tuple[torch.Tensor | None, float]:
        """Labels for the prior and the guidance scale to apply.

        Without class labels a conditional prior gets the null class, and guidance is
        dropped: guiding the null class towards itself would double every model call.
        """
        if class_labels is None:
            null = torch.full((batch,), prior.num_classes - 1, dtype=torch.long) if prior.num_classes else None
            return null, 1.0
        return class_labels, guidance


class DDIMSampler(DenoiserSampler):
    """DDIM (Song et al. 2021, eq. 12): deterministic at eta = 0, DDPM-like at eta = 1."""

    def __init__(self, *, eta: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.eta = eta

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
        eta: float | None = None,
        class_labels: torch.Tensor | None = None,
        guidance: float = 1.0,
        **_: Any,
    ) -> torch.Tensor:
        sched = self.check(prior, scheduler)
        eta = self.eta if eta is None else eta
        if eta < 0:
            raise LatentzooError(f"eta must be >= 0, not {eta}")
        labels, guidance = self.conditioning(class_labels, guidance, prior, noise.shape[0])
        plan = []
        for t, t_prev in sched.pairs(steps):
            a, a_prev = sched.alpha_bar(t), sched.alpha_bar(t_prev)
            sigma = eta * math.sqrt((1 - a_prev) / (1 - a) * (1 - a / a_prev))
            plan.append((torch.tensor(t), a, math.sqrt(a_prev), math.sqrt(max(0.0, 1 - a_prev - sigma**2)), sigma))
        x = noise.clone()
        z = torch.empty_like(x) if eta > 0 else None
        for i, (t, a, c_x0, c_eps, sigma) in enumerate(plan):
            x0, eps = self.predict(prior, x, t, a, labels, guidance)
            x = torch.add(x0.mul_(c_x0), eps, alpha=c_eps)
            if z is not None and sigma > 0:
                x.add_(z.normal_(generator=generator), alpha=sigma)
            if progress:
                progress(i + 1, len(plan))
        return x

    @torch.inference_mode()
    def invert(
        self,
        prior: Any,
        scheduler: Any,
        latents: torch.Tensor,
        *,
        steps: int,
        class_labels: torch.Tensor | None = None,
        progress: Progress | None = None,
    ) -> torch.Tensor:
        """DDIM inversion: run eq. 12 (eta = 0) backwards, clean latents -> noise (Song et al. 2021, sec. 4.3).

        Uses eps evaluated at the current point for the next, noisier timestep, the usual
        first-order approximation; exact as steps grow.
        """
        sched = self.check(prior, scheduler)
        labels, _ = self.conditioning(class_labels, 1.0, prior, latents.shape[0])
        pairs = list(reversed(sched.pairs(steps)))  # (t, t_prev) from the clean end upwards
        x = latents.clone()
        for i, (t, t_prev) in enumerate(pairs):
            a_prev, a = sched.alpha_bar(t_prev), sched.alpha_bar(t)
            _, eps = self.predict(prior, x, torch.tensor(t), a, labels, 1.0)
            x0 = (x - math.sqrt(1 - a_prev) * eps) / math.sqrt(a_prev)
            x = math.sqrt(a) * x0 + math.sqrt(1 - a) * eps
            if progress:
                progress(i + 1, len(pairs))
        return x


class DDPMSampler(DenoiserSampler):
    """Ancestral sampling from the posterior q(x_prev | x_t, x0) (Ho et al. 2020, eq. 6-7).

    ``variance_type``: ``fixed_small`` (posterior variance beta~_t) or ``fixed_large`` (beta_t).
    With fewer steps than training timesteps, beta_t is the step's 1 - a_t / a_prev.
    """

    def __init__(self, *, variance_type: str = "fixed_small", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if variance_type not in ("fixed_small", "fixed_large"):
            raise LatentzooError(f"variance_type must be fixed_small or fixed_large, not {variance_type!r}")
        self.variance_type = variance_type

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
        guidance: float = 1.0,
        **_: Any,
    ) -> torch.Tensor:
        sched = self.check(prior, scheduler)
        labels, guidance = self.conditioning(class_labels, guidance, prior, noise.shape[0])
        plan = []
        for t, t_prev in sched.pairs(steps):
            a, a_prev = sched.alpha_bar(t), sched.alpha_bar(t_prev)
            beta = 1 - a / a_prev
            c_x0 = math.sqrt(a_prev) * beta / (1 - a)
            c_xt = math.sqrt(1 - beta) * (1 - a_prev) / (1 - a)
            var = beta if self.variance_type == "fixed_large" else max(beta * (1 - a_prev) / (1 - a), 1e-20)
            std = math.sqrt(var) if t_prev >= 0 else 0.0  # no noise on the final step
            plan.append((torch.tensor(t), a, c_x0, c_xt, std))
        x = noise.clone()
        z = torch.empty_like(x)
        for i, (t, a, c_x0, c_xt, std) in enumerate(plan):
            x0, _ = self.predict(prior, x, t, a, labels, guidance)
            x = torch.add(x0.mul_(c_x0), x, alpha=c_xt)
            if std > 0:
                x.add_(z.normal_(generator=generator), alpha=std)
            if progress:
                progress(i + 1, len(plan))
        return x
