"""Base plus refiner: two denoiser priors on one latent space, each over its part of the noise levels (imports torch).

A *refiner* (``prior.refiner`` true; e.g. SDXL's refiner, trained on the low-noise end of the
schedule only) continues another prior's sampling: the base walks the scheduler's levels down
to the switch, the refiner walks the rest, from the base's latents (the ensemble of expert
denoisers of Balaji et al. 2022, eDiff-I; SDXL's base + refiner, Podell et al. 2023, sec. 2.5).

The switch is diffusers' ``denoising_end`` / ``denoising_start``: a fraction ``s`` of the
training timesteps; the base takes the levels whose timestep is >= round(T (1 - s)), the refiner
the remaining ones (each with its own conditioner, sampler options and guidance from the same
prompt, the guidance scale shared). The base's sampler walks every level; its model is the
base above the switch and the refiner below it, so the latents pass from one to the other
unchanged (for Euler, step for step what diffusers' two pipelines do).

A refiner is refused as a base (from pure noise), and a prior that is not a refiner as
``--refiner``, each in one line naming the pipeline; the two must share one latent space.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from ..contract.errors import ContractError, LatentzooError

if TYPE_CHECKING:
    import torch


def check_switch(switch: Any) -> float:
    if isinstance(switch, bool) or not isinstance(switch, int | float) or not math.isfinite(switch) or not 0.0 < switch < 1.0:
        raise LatentzooError(f"--refiner-switch must lie in (0, 1) (the fraction of the schedule the base walks), not {switch!r}")
    return float(switch)


def attach(base: Any, refiner: Any, switch: float = 0.8) -> None:
    """Let pipeline ``refiner`` finish ``base``'s sampling from ``switch``; refused in one line when the two do not fit."""
    switch = check_switch(switch)
    if getattr(base.prior, "refiner", False):
        raise LatentzooError(
            f"pipeline {base.spec.name} is a refiner ({base.spec.prior}); it continues a base model's sampling: "
            "sample a base pipeline with --refiner " + base.spec.name
        )
    if not getattr(refiner.prior, "refiner", False):
        raise LatentzooError(
            f"--refiner {refiner.spec.name}: its prior {refiner.spec.prior} is not a refiner (a base model); "
            "give a refiner pipeline (e.g. a converted StableDiffusionXLImg2ImgPipeline with requires_aesthetics_score)"
        )
    a, b = base.prior.latent_space, refiner.prior.latent_space
    if a != b:
        diffs = [f for f in ("channels", "factor", "autoencoder", "scaling_factor", "shift") if getattr(a, f, None) != getattr(b, f, None)]
        raise ContractError(
            f"--refiner {refiner.spec.name}: its prior's latent space differs from base {base.spec.prior}'s ({', '.join(diffs)}); "
            "a refiner continues the base's latents, so both must share one latent space"
        )
    import torch

    same = getattr(refiner.prior, "prediction_type", None) == getattr(base.prior, "prediction_type", None)
    a_s, b_s = getattr(base.prior, "noise_schedule", None), getattr(refiner.prior, "noise_schedule", None)
    if not same or a_s is None or b_s is None or not torch.equal(a_s.alphas_cumprod, b_s.alphas_cumprod):
        raise LatentzooError(
            f"--refiner {refiner.spec.name}: its prior was trained on another noise schedule or prediction type than {base.spec.prior}; "
            "a refiner continues the base's noise levels"
        )
    base.refiner = (refiner, switch)


class _Experts:
    """The base prior above the switch timestep, the refiner (with its own conditioning) below it: one prior to the sampler."""

    def __init__(self, base: Any, refiner: Any, cutoff: float, cond: dict[str, Any], null: dict[str, Any] | None) -> None:
        self._base, self._refiner, self._cutoff, self._cond, self._null = base, refiner, cutoff, cond, null

    def __getattr__(self, name: str) -> Any:
        return getattr(self._base, name)

    def __call__(self, x: torch.Tensor, t: torch.Tensor, labels: Any = None, **kwargs: Any) -> torch.Tensor:
        import torch

        if float(t.flatten()[0]) >= self._cutoff - 1e-6:  # t(sigma) inverts a float map
            return self._base(x, t, labels, **kwargs)
        guided = self._null is not None and x.shape[0] == 2 * next(iter(self._cond.values())).shape[0]
        both = {}
        for key, value in self._cond.items():  # the batch layout the Denoiser builds: [cond, null] under guidance
            both[key] = None if value is None else (torch.cat([value, self._null[key]]) if guided else value)
        return self._refiner(x, t, labels, **both)


def sample(
    base: Any, plan: Any, noise: torch.Tensor, levels: list[float] | None, generator: torch.Generator, progress: Any, call: dict[str, Any]
) -> torch.Tensor:
    """Latents from ``noise``: the base's sampler over all the levels, its model the base above the switch and the
    refiner below (for one-step samplers such as Euler, exactly diffusers' base to ``denoising_end`` then refiner
    from ``denoising_start``; a multistep sampler keeps its history across the switch)."""
    from ..contract.denoising import Denoiser

    refiner, switch = base.refiner
    if levels is None:
        raise LatentzooError(f"pipeline {base.spec.name}: a refiner needs a sampler that walks noise levels")
    schedule = base.prior.noise_schedule
    cutoff = round(schedule.num_train_timesteps * (1.0 - switch))
    k = sum(1 for sigma in levels[:-1] if schedule.timestep(sigma) >= cutoff - 1e-6)
    if k == 0 or k == len(levels) - 1:
        raise LatentzooError(
            f"--refiner-switch {switch}: with {len(levels) - 1} steps the {'refiner' if k == 0 else 'base'} would take every step; "
            "use more steps or another switch"
        )
    given = {**plan.conditioning, **({"guidance": plan.flat["guidance"]} if plan.flat.get("guidance") is not None else {})}
    ref_plan = refiner.resolve_options(given)  # the same prompt, negative prompt and guidance
    ref_call = refiner._call_options(ref_plan, len(noise))
    guidance = call.get("guidance")
    ref = Denoiser(
        refiner.prior,
        guidance=1.0 if guidance is None else guidance,
        batch_size=len(noise),
        conditioning=ref_call.get("conditioning"),
        null_conditioning=ref_call.get("null_conditioning"),
    )
    experts = _Experts(base.prior, refiner.prior, cutoff, ref.tokens or {}, ref.null_tokens)
    return base.sampler.sample(experts, noise, levels=levels, generator=generator, progress=progress, **call)


def record(base: Any) -> dict[str, Any]:
    refiner, switch = base.refiner
    return {
        "refiner": {"pipeline": refiner.spec.name, "switch": switch, "components": refiner.spec.parts(), "sha256": dict(refiner.sha256)}
    }
