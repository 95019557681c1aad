"""The public denoising API: a denoiser's training noise schedule, and D(x; sigma) of any denoiser prior.

Any plugin may import this module; it knows no family. Three pieces:

* ``NoiseSchedule``: the discrete variance-preserving schedule a denoiser was trained with,
  x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps for t = 0 .. T-1 (Ho et al. 2020, eq. 4), and
  its variance-exploding noise levels sigma_t = sqrt((1 - abar_t) / abar_t), so that
  x_t / sqrt(abar_t) = x0 + sigma_t eps (Karras et al. 2022, "Elucidating the Design Space
  of Diffusion-Based Generative Models", sec. 2 and table 1). A prior owns one
  (``DenoiserPrior.noise_schedule``); schedulers pick sigmas from it.
* ``split_prediction``: a model output (epsilon, v or x0) -> (x0, eps).
* ``Denoiser``: wraps a denoiser prior into D(x; sigma) ~ E[x0 | x0 + sigma eps], in the spirit
  of k-diffusion's ``DiscreteEpsDDPMDenoiser``: the prior sees c_in x = x / sqrt(sigma^2 + 1)
  at the fractional training timestep t(sigma). Classifier-free guidance, the null class,
  clipping / dynamic thresholding and the check that the model output is finite live here,
  once; every sampler (built-in or a plugin's) calls this.

Samplers share ``to_d`` (the probability-flow ODE's slope) and ``ancestral_step`` (k-diffusion's
``get_ancestral_step``), and check a scheduler's output with ``check_sigmas``.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from .errors import LatentzooError

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid")
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def make_betas(schedule: str, num_train_timesteps: int, beta_start: float, beta_end: float) -> torch.Tensor:
    """beta_t for t = 0..T-1 in float64."""
    T = num_train_timesteps
    if schedule == "linear":  # Ho et al. 2020, sec. 4
        return torch.linspace(beta_start, beta_end, T, dtype=torch.float64)
    if schedule == "scaled_linear":  # Rombach et al. 2022 (latent diffusion): linear in sqrt(beta)
        return torch.linspace(beta_start**0.5, beta_end**0.5, T, dtype=torch.float64) ** 2
    if schedule == "squaredcos_cap_v2":  # Nichol & Dhariwal 2021, eq. 17, betas capped at 0.999

        def alpha_bar(t: float) -> float:
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

        return torch.tensor([min(1 - alpha_bar((i + 1) / T) / alpha_bar(i / T), 0.999) for i in range(T)], dtype=torch.float64)
    if schedule == "sigmoid":  # GeoDiff (Xu et al. 2022), as diffusers: sigmoid(linspace(-6, 6, T)) scaled to [beta_start, beta_end]
        return torch.sigmoid(torch.linspace(-6, 6, T, dtype=torch.float64)) * (beta_end - beta_start) + beta_start
    raise LatentzooError(f"unknown beta_schedule {schedule!r}; use one of {', '.join(BETA_SCHEDULES)}")


def rescale_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """Shift and scale sqrt(alpha_bar) so the last step has SNR 0 (Lin et al. 2024, algorithm 1)."""
    sqrt_ab = torch.cumprod(1 - betas, 0).sqrt()
    first, last = sqrt_ab[0].clone(), sqrt_ab[-1].clone()
    sqrt_ab = (sqrt_ab - last) * first / (first - last)
    ab = sqrt_ab**2
    alphas = torch.cat([ab[:1], ab[1:] / ab[:-1]])
    return 1 - alphas


class NoiseSchedule:
    """alphas_cumprod over ``num_train_timesteps`` and the matching sigmas; t(sigma) and sigma(t).

    Between grid points ``timestep`` and ``sigma`` interpolate linearly in log sigma, as
    k-diffusion's DiscreteSchedule does; at sigma_t they return t exactly, and ``alpha_bar``
    returns the stored alphas_cumprod[t] exactly (so a sampler on the schedule's own levels
    does the same arithmetic as one indexing alphas_cumprod by timestep).
    """

    def __init__(self, alphas_cumprod: torch.Tensor, betas: torch.Tensor | None = None) -> None:
        abar = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
        values = [float(a) for a in abar]
        if not values or not all(0 <= a < 1 for a in values) or values[0] <= 0:
            raise LatentzooError("alphas_cumprod must lie in (0, 1); check beta_start and beta_end of the training schedule")
        sigmas: list[float] = []
        for a in values:  # abar_t = 0 (sigma = inf) becomes twice the sigma before it, so the grid stays finite
            sigmas.append(math.sqrt((1 - a) / a) if a > 0 else 2 * sigmas[-1])
        logs = [math.log(s) for s in sigmas]
        if any(b <= a for a, b in itertools.pairwise(logs)):
            raise LatentzooError("alphas_cumprod must decrease strictly; use a standard beta schedule")
        self.alphas_cumprod = abar
        self.betas = betas
        self.num_train_timesteps = len(values)
        self.sigmas: tuple[float, ...] = tuple(sigmas)
        self.log_sigmas: tuple[float, ...] = tuple(logs)
        self._abar = tuple(values)
        self._index = {s: t for t, s in enumerate(sigmas)}

    @classmethod
    def from_betas(
        cls,
        *,
        beta_schedule: str,
        num_train_timesteps: int,
        beta_start: float | None = None,
        beta_end: float | None = None,
        rescale_betas_zero_snr: bool = False,
    ) -> NoiseSchedule:
        if beta_schedule != "squaredcos_cap_v2" and (beta_start is None or beta_end is None):
            raise LatentzooError(
                f"beta_schedule {beta_schedule} needs beta_start and beta_end; state the values the model was trained with"
            )
        if not isinstance(num_train_timesteps, int) or num_train_timesteps < 2:
            raise LatentzooError(f"num_train_timesteps must be an integer >= 2, not {num_train_timesteps!r}")
        betas = make_betas(beta_schedule, num_train_timesteps, beta_start or 0.0, beta_end or 0.0)
        if rescale_betas_zero_snr:
            betas = rescale_zero_terminal_snr(betas)
        abar = torch.cumprod(1.0 - betas, dim=0)
        if rescale_betas_zero_snr:
            # keep 1/sqrt(alpha_bar) finite (as diffusers does), but below alpha_bar[T-2] so the
            # schedule stays decreasing (a step 999 -> 998 would otherwise have a negative beta)
            abar[-1] = min(2**-24, float(abar[-2]) / 2)
        return cls(abar, betas)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> NoiseSchedule:
        """From a ``training_schedule`` config; its fields are required, never defaulted to another model's values.

        Fields: beta_schedule, num_train_timesteps, beta_start and beta_end (except for
        squaredcos_cap_v2), optional rescale_betas_zero_snr (default false).
        """
        if not isinstance(config, dict):
            raise LatentzooError(f"training_schedule must be a mapping, not {type(config).__name__}")
        known = {"beta_schedule", "num_train_timesteps", "beta_start", "beta_end", "rescale_betas_zero_snr"}
        unknown = sorted(set(config) - known)
        if unknown:
            raise LatentzooError(f"training_schedule has unknown field(s) {', '.join(unknown)}; accepted: {', '.join(sorted(known))}")
        missing = [f for f in ("beta_schedule", "num_train_timesteps") if f not in config]
        if missing:
            raise LatentzooError(f"training_schedule lacks {', '.join(missing)}; state the schedule the model was trained with")
        return cls.from_betas(**config)

    @property
    def sigma_min(self) -> float:
        return self.sigmas[0]

    @property
    def sigma_max(self) -> float:
        return self.sigmas[-1]

    def timestep(self, sigma: float) -> float:
        """Fractional training timestep t(sigma), clamped to [0, T-1]."""
        if sigma in self._index:
            return float(self._index[sigma])
        logs, ls = self.log_sigmas, math.log(sigma) if sigma > 0 else -math.inf
        if ls <= logs[0]:
            return 0.0
        if ls >= logs[-1]:
            return float(len(logs) - 1)
        hi = bisect.bisect_left(logs, ls)  # logs[hi - 1] < ls <= logs[hi]
        if logs[hi] == ls:
            return float(hi)
        w = (ls - logs[hi - 1]) / (logs[hi] - logs[hi - 1])
        return hi - 1 + w

    def sigma(self, t: float) -> float:
        """sigma at a fractional training timestep (the inverse of ``timestep``)."""
        if float(t).is_integer() and 0 <= t < self.num_train_timesteps:
            return self.sigmas[int(t)]
        t = min(max(t, 0.0), len(self.log_sigmas) - 1.0)
        lo = min(int(t), len(self.log_sigmas) - 2)
        w = t - lo
        return math.exp((1 - w) * self.log_sigmas[lo] + w * self.log_sigmas[lo + 1])

    def alpha_bar(self, sigma: float) -> float:
        """abar = 1 / (1 + sigma^2); alphas_cumprod[t] exactly at the schedule's own sigma_t, 1 at sigma = 0."""
        if sigma == 0:
            return 1.0
        t = self._index.get(sigma)
        return self._abar[t] if t is not None else 1.0 / (1.0 + sigma * sigma)


def check_sigmas(sigmas: Sequence[float] | None, who: str) -> list[float]:
    """A scheduler's sigma levels: finite, strictly decreasing, positive, then 0.0. One-line error naming ``who``."""
    if sigmas is None:
        raise LatentzooError(f"{who} walks sigma levels; compose it with a scheduler (see `latentzoo list --role scheduler`)")
    levels = [float(s) for s in sigmas]
    if len(levels) < 2 or levels[-1] != 0.0:
        raise LatentzooError(f"{who} needs at least one noise level followed by 0.0, got {levels[:4]}...")
    head = levels[:-1]
    if not all(math.isfinite(s) and s > 0 for s in head) or any(b >= a for a, b in itertools.pairwise(head)):
        raise LatentzooError(f"{who} needs finite, positive, strictly decreasing sigmas before the final 0.0; check the scheduler")
    return levels


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
    raise LatentzooError(f"unknown prediction_type {prediction_type!r}; use one of {', '.join(PREDICTION_TYPES)}")


def training_target(prediction_type: str, x0: torch.Tensor, eps: torch.Tensor, sqrt_ab: Any, sqrt_1mab: Any) -> torch.Tensor:
    """What a denoiser learns to output at x_t = sqrt_ab x0 + sqrt_1mab eps: the inverse of ``split_prediction``.

    v = sqrt(a) eps - sqrt(1 - a) x0 (Salimans & Ho 2022, sec. 4); ``sqrt_ab`` / ``sqrt_1mab`` are floats or tensors.
    """
    if prediction_type == "epsilon":
        return eps
    if prediction_type == "v_prediction":
        return sqrt_ab * eps - sqrt_1mab * x0
    if prediction_type == "sample":
        return x0
    raise LatentzooError(f"unknown prediction_type {prediction_type!r}; use one of {', '.join(PREDICTION_TYPES)}")


def dynamic_threshold(x0: torch.Tensor, ratio: float, max_value: float) -> torch.Tensor:
    """Clamp to the ``ratio`` quantile s of |x0| per sample and divide by s (Saharia et al. 2022, sec. 2.3)."""
    s = torch.quantile(x0.abs().flatten(1), ratio, dim=1).clamp(min=1.0, max=max_value)
    s = s.view(-1, *([1] * (x0.ndim - 1)))
    return torch.maximum(torch.minimum(x0, s), -s) / s


def to_d(x: torch.Tensor, sigma: float, denoised: torch.Tensor) -> torch.Tensor:
    """dx/dsigma = (x - D(x; sigma)) / sigma, the probability-flow ODE (Karras et al. 2022, eq. 3 with sigma(t) = t)."""
    return (x - denoised) / sigma


def ancestral_step(sigma_from: float, sigma_to: float, eta: float = 1.0) -> tuple[float, float]:
    """(sigma_down, sigma_up) of an ancestral step from sigma_from to sigma_to (k-diffusion's get_ancestral_step).

    Step deterministically to sigma_down, then add fresh noise of std sigma_up, so that
    sigma_down^2 + sigma_up^2 = sigma_to^2; eta = 0 is the deterministic step.
    """
    if not eta:
        return sigma_to, 0.0
    sigma_up = min(sigma_to, eta * math.sqrt(max(0.0, sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2)))
    return math.sqrt(sigma_to**2 - sigma_up**2), sigma_up


def prior_name(prior: Any) -> str:
    return str(getattr(prior, "name", None) or type(prior).__name__)


class Denoiser:
    """D(x; sigma) of a denoiser prior, and its (x0, eps) split in the prior's own variance-preserving form.

    ``prior`` is called as ``prior(x_t, t, class_labels)`` with x_t = sqrt(abar) x0 + sqrt(1 - abar) eps
    at a fractional timestep t; it states ``prediction_type``, ``noise_schedule`` and
    ``num_classes`` (None, or the number of class embeddings, the last being the null class).

    Conditioning: with ``class_labels`` and ``guidance`` != 1 the prior is evaluated on the labels
    and on the null class in one batch and combined as uncond + guidance (cond - uncond)
    (classifier-free guidance, Ho & Salimans 2022, eq. 6). Without labels a conditional prior
    gets the null class and guidance is dropped (guiding the null class towards itself would
    double every model call for nothing). x0 is then clipped to +-clip_sample_range or
    dynamically thresholded (Saharia et al. 2022), if asked.

    Per-token conditioning (a text encoder's output, ``Conditioner.condition``: {"tokens": (B, L, W),
    "mask": (B, L), ...}) arrives as ``conditioning``; the prior is then called with the diffusers
    keywords ``encoder_hidden_states`` (the tokens) and ``encoder_attention_mask``. With guidance
    != 1, ``null_conditioning`` (the empty prompt's, batch 1 or B) is the unconditional branch, and
    a class-conditional prior also gets the null class there.

    A prior that states ``guidance_input = True`` takes the guidance scale as an input
    (guidance distillation, Meng et al. 2023, "On Distillation of Guided Diffusion Models"): it is
    called once per step with the keyword ``guidance`` (a float) and never on the null branch, so
    it needs no ``null_conditioning``.

    Foreign model formats plug in by overriding ``model_output`` only.
    """

    def __init__(
        self,
        prior: Any,
        *,
        class_labels: torch.Tensor | None = None,
        guidance: float = 1.0,
        clip_sample: bool = False,
        clip_sample_range: float = 1.0,
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        sample_max_value: float = 1.0,
        batch_size: int | None = None,
        conditioning: Mapping[str, torch.Tensor] | None = None,
        null_conditioning: Mapping[str, torch.Tensor] | None = None,
    ) -> None:
        schedule = getattr(prior, "noise_schedule", None)
        if not isinstance(schedule, NoiseSchedule):
            raise LatentzooError(
                f"prior {prior_name(prior)} has no noise_schedule; a denoiser prior must state the schedule it was trained with"
            )
        if prior.prediction_type not in PREDICTION_TYPES:
            raise LatentzooError(
                f"prior {prior_name(prior)} states prediction_type {prior.prediction_type!r}; use one of {', '.join(PREDICTION_TYPES)}"
            )
        if not math.isfinite(guidance) or guidance < 0:
            raise LatentzooError(f"guidance must be a finite number >= 0, not {guidance}")
        self.prior, self.schedule = prior, schedule
        self.class_labels, self.guidance = self.conditioning(prior, class_labels, guidance, batch_size)
        self.tokens = self.null_tokens = None
        self.added = tuple(getattr(prior, "added_conditioning", ()) or ())
        self.guidance_input = bool(getattr(prior, "guidance_input", False))
        if conditioning is not None:
            self.tokens = self._token_kwargs(conditioning, batch_size)
            self.guidance = float(guidance)
            if self.guidance != 1.0 and not self.guidance_input:
                if null_conditioning is None:
                    raise LatentzooError(
                        f"prior {prior_name(prior)}: guidance {guidance} needs the null (empty-prompt) conditioning; pass null_conditioning"
                    )
                self.null_tokens = self._token_kwargs(null_conditioning, self.tokens["encoder_hidden_states"].shape[0])
        self.clip_sample, self.clip_sample_range = clip_sample, clip_sample_range
        self.thresholding, self.dynamic_thresholding_ratio, self.sample_max_value = (
            thresholding,
            dynamic_thresholding_ratio,
            sample_max_value,
        )
        self.calls = 0
        self._timesteps: dict[float, torch.Tensor] = {}

    @staticmethod
    def conditioning(
        prior: Any, class_labels: torch.Tensor | None, guidance: float, batch_size: int | None
    ) -> tuple[torch.Tensor | None, float]:
        """The labels the prior sees and the guidance scale to apply (the null class is the last class)."""
        num_classes = getattr(prior, "num_classes", None)
        if class_labels is None:
            if num_classes and batch_size is None:
                raise LatentzooError(f"prior {prior_name(prior)} is class-conditional: pass batch_size or class_labels to the Denoiser")
            null = torch.full((batch_size,), num_classes - 1, dtype=torch.long) if num_classes else None
            return null, 1.0
        if not num_classes:
            raise LatentzooError(f"prior {prior_name(prior)} is unconditional; drop the class labels")
        return class_labels, float(guidance)

    def _token_kwargs(self, conditioning: Mapping[str, torch.Tensor], batch_size: int | None) -> dict[str, torch.Tensor | None]:
        """A conditioner's output as the prior's keywords, broadcast from batch 1 to ``batch_size``; the entries
        the prior names in ``added_conditioning`` (SDXL: ``pooled``, ``time_ids``) go along under their names."""
        if "tokens" not in conditioning:
            raise LatentzooError("conditioning must hold 'tokens' (B, L, W), as Conditioner.condition returns")
        tokens, mask = conditioning["tokens"], conditioning.get("mask")
        if batch_size is not None and tokens.shape[0] == 1 and batch_size > 1:
            tokens = tokens.expand(batch_size, *tokens.shape[1:])
            mask = None if mask is None else mask.expand(batch_size, *mask.shape[1:])
        if batch_size is not None and tokens.shape[0] != batch_size:
            raise LatentzooError(
                f"conditioning has batch {tokens.shape[0]}, the latents {batch_size}; give one condition or one per sample"
            )
        out = {"encoder_hidden_states": tokens, "encoder_attention_mask": mask}
        for key in self.added:
            value = conditioning.get(key)
            if value is None:
                raise LatentzooError(
                    f"prior {prior_name(self.prior)} needs {key!r} in its conditioning; pick a conditioner that gives it "
                    "(SDXL's UNet: a pooled text embedding and size time_ids)"
                )
            out[key] = value.expand(tokens.shape[0], *value.shape[1:]) if value.shape[0] == 1 else value
        return out

    def timestep(self, sigma: float, device: torch.device) -> torch.Tensor:
        """t(sigma) as a float64 tensor, cached per level so the loop does no host work."""
        t = self._timesteps.get(sigma)
        if t is None or t.device != device:
            t = self._timesteps[sigma] = torch.tensor(self.schedule.timestep(sigma), dtype=torch.float64, device=device)
        return t

    def model_output(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The prior's raw output (in its prediction_type), guided; override this for another model format."""
        labels = self.class_labels
        if self.guidance_input:  # w is the prior's input: one forward pass, no null branch (Meng et al. 2023, sec. 4.1)
            return self.prior(x_t, t, labels, guidance=self.guidance, **(self.tokens or {}))
        if self.tokens is not None:
            return self._token_output(x_t, t, labels)
        if labels is not None and self.guidance != 1.0:
            null = torch.full_like(labels, self.prior.num_classes - 1)
            cond, uncond = self.prior(torch.cat([x_t, x_t]), t, torch.cat([labels, null])).chunk(2)
            return uncond + self.guidance * (cond - uncond)
        return self.prior(x_t, t, labels)

    def _token_output(self, x_t: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """Cross-attention conditioning; guided as uncond + guidance (cond - uncond) in one batch (Ho & Salimans 2022, eq. 6)."""
        if self.null_tokens is None:
            return self.prior(x_t, t, labels, **self.tokens)
        both = {}
        for key, cond in self.tokens.items():
            null = self.null_tokens[key]
            if cond is None and null is None:
                both[key] = None
                continue
            # A mask on one side only: the other side attends to all its tokens.
            if key == "encoder_attention_mask":
                cond = torch.ones(self.tokens["encoder_hidden_states"].shape[:2], dtype=torch.bool) if cond is None else cond
                null = torch.ones(self.null_tokens["encoder_hidden_states"].shape[:2], dtype=torch.bool) if null is None else null
            both[key] = torch.cat([cond.to(x_t.device), null.to(x_t.device)])
        null_labels = None if labels is None else torch.full_like(labels, self.prior.num_classes - 1)
        both_labels = None if labels is None else torch.cat([labels, null_labels])
        cond_out, uncond = self.prior(torch.cat([x_t, x_t]), t, both_labels, **both).chunk(2)
        return uncond + self.guidance * (cond_out - uncond)

    def predict(self, x_t: torch.Tensor, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(x0, eps) from the variance-preserving x_t at noise level sigma (abar = 1 / (1 + sigma^2))."""
        output = self.model_output(x_t, self.timestep(sigma, x_t.device))
        self.calls += 1
        if not bool(torch.isfinite(output).all()):
            raise LatentzooError(
                f"prior {prior_name(self.prior)} returned non-finite values at sigma {sigma:.4g} (model call {self.calls}); "
                "check its weights and the latents' scaling"
            )
        x0, eps = split_prediction(output, x_t, self.schedule.alpha_bar(sigma), self.prior.prediction_type)
        if self.thresholding:
            x0 = dynamic_threshold(x0, self.dynamic_thresholding_ratio, self.sample_max_value)
        elif self.clip_sample:
            x0 = x0.clamp(-self.clip_sample_range, self.clip_sample_range)
        return x0, eps

    def __call__(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        """D(x; sigma) for x = x0 + sigma eps: the prior sees c_in x with c_in = 1 / sqrt(sigma^2 + 1)."""
        x0, _ = self.predict(x * (1 / math.sqrt(sigma**2 + 1)), sigma)
        return x0
