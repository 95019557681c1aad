"""Every sigma sampler: components over the solver functions in ``ode.py`` and ``solvers.py``.

One base class (``KSampler``) does what every sampler shares: check the scheduler's sigmas, turn the prior
into D(x; sigma) with the public ``Denoiser`` (classifier-free guidance, and the x0 clipping / thresholding
options it declares), start from
x_T = noise * sqrt(sigma_0^2 + 1) (the variance of x0 + sigma_0 eps for unit-variance latents;
the point DDIM starts from), resolve the declared options (a value passed at sample time
overrides the registry entry's config, which overrides the declared default), and hand the
solver its noise source drawn from the pipeline's generator:

* ``noise = "gaussian"``: fresh N(0, I) per step (ancestral samplers);
* ``noise = "brownian"``: a Brownian tree over [sigma_min, sigma_max] of the levels seeded from
  the generator (k-diffusion's BrownianTreeNoiseSampler semantics; SDE samplers).

The same seed and options therefore give identical output on CPU.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import torch

from latentzoo.core.contract.denoising import Denoiser, check_sigmas
from latentzoo.core.contract.errors import LatentzooError
from latentzoo.core.contract.interfaces import Progress, Sampler
from latentzoo.core.contract.options import DENOISER_OPTIONS, Option, OptionError, parse_options
from latentzoo.core.runtime.seeding import row_seeds

from . import ALL_SAMPLERS, consistency, ode, solvers
from .brownian import BrownianNoise, GaussianNoise

X0_KEYS = tuple(o["name"] for o in DENOISER_OPTIONS)  # they go to the Denoiser, not to the solver


class KSampler(Sampler):
    """A sigma sampler for denoiser priors; subclasses name their ``solver`` and declaration ``key``."""

    drives: ClassVar[tuple[str, ...]] = ("denoiser",)
    levels: ClassVar[str | None] = "sigma"
    key: ClassVar[str]
    solver: ClassVar[Callable[..., torch.Tensor]]
    noise: ClassVar[str | None] = None  # "gaussian", "brownian" or None (deterministic)
    fixed: ClassVar[dict[str, Any]] = {}  # solver arguments this class pins (e.g. UniPC's variant)

    def __init__(self, **config: Any) -> None:
        self.specs = {o.name: o for o in parse_options(ALL_SAMPLERS[self.key][2], f"sampler {self.name}")}
        unknown = sorted(set(config) - set(self.specs))
        if unknown:
            raise LatentzooError(f"sampler {self.name}: unknown option(s) {', '.join(unknown)}; it takes {', '.join(self.specs) or 'none'}")
        self.defaults = {n: self.check(s, config.get(n, s.default)) for n, s in self.specs.items()}
        self.info: dict[str, Any] = {}

    def check(self, spec: Option, value: Any) -> Any:
        """A declared option's value, checked by the one option checker (``core.contract.options``), refused in one line naming both."""
        try:
            return spec.check(value)
        except OptionError as exc:
            raise OptionError(f"sampler {self.name}: option {spec.name} {exc}") from None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "key" in cls.__dict__:  # the registry spelling: dpmpp_2m -> dpmpp-2m
            cls.name = cls.key.replace("_", "-")

    def resolve(self, options: dict[str, Any]) -> dict[str, Any]:
        out = dict(self.defaults)
        for n in self.specs:
            if options.get(n) is not None:
                out[n] = self.check(self.specs[n], options[n])
        return {k: v for k, v in out.items() if v is not None}

    def noise_source(self, x: torch.Tensor, sigmas: list[float], generator: torch.Generator) -> Callable | None:
        if self.noise == "gaussian":
            return GaussianNoise(x, generator)
        if self.noise == "brownian":
            # One tree per sample, keyed by a draw from its own generator (core.runtime.seeding.row_seeds).
            return BrownianNoise(x, sigmas[-2], sigmas[0], row_seeds(generator, x.shape[0]))
        return None

    def run(
        self, model: Callable, x: torch.Tensor, sigmas: list[float], noise: Callable | None, progress: Progress | None, **options: Any
    ) -> torch.Tensor:
        kwargs = {**options, **self.fixed}
        if noise is not None:
            kwargs["noise"] = noise
        return type(self).solver(model, x, sigmas, progress=progress, **kwargs)

    @torch.inference_mode()
    def sample(
        self,
        prior: Any,
        noise: torch.Tensor,
        *,
        levels: list[float] | None,
        generator: torch.Generator,
        progress: Progress | None = None,
        class_labels: torch.Tensor | None = None,
        guidance: float | None = None,
        conditioning: dict[str, torch.Tensor] | None = None,
        null_conditioning: dict[str, torch.Tensor] | None = None,
        **options: Any,
    ) -> torch.Tensor:
        sigmas = check_sigmas(levels, f"sampler {self.name}")
        opts = self.resolve(options)
        x0_options = {k: opts.pop(k) for k in X0_KEYS if k in opts}  # clip_sample, thresholding: the Denoiser applies them
        model = Denoiser(
            prior,
            class_labels=class_labels,
            guidance=1.0 if guidance is None else guidance,
            batch_size=noise.shape[0],
            conditioning=conditioning,
            null_conditioning=null_conditioning,
            **x0_options,
        )
        x = noise * math.sqrt(sigmas[0] ** 2 + 1)
        return self.run(model, x, sigmas, self.noise_source(x, sigmas, generator), progress, **opts)


class EulerSampler(KSampler):
    """Euler on the probability-flow ODE (Karras et al. 2022, algorithm 2 without churn); steps model evaluations."""

    key, solver = "euler", staticmethod(ode.sample_euler)


class HeunSampler(KSampler):
    """Heun, 2nd order (Karras et al. 2022, algorithm 1); 2 * steps - 1 model evaluations."""

    key, solver = "heun", staticmethod(ode.sample_heun)


class DPMSolverPP2MSampler(KSampler):
    """DPM-Solver++(2M) (Lu et al. 2022, algorithm 2); steps model evaluations."""

    key, solver = "dpmpp_2m", staticmethod(ode.sample_dpmpp_2m)


class EulerAncestralSampler(KSampler):
    key, solver, noise = "euler_ancestral", staticmethod(solvers.sample_euler_ancestral), "gaussian"


class DPM2Sampler(KSampler):
    key, solver, noise = "dpm2", staticmethod(solvers.sample_dpm2), "gaussian"  # the noise only feeds churn (s_churn > 0)


class DPM2AncestralSampler(KSampler):
    key, solver, noise = "dpm2_ancestral", staticmethod(solvers.sample_dpm2_ancestral), "gaussian"


class LMSSampler(KSampler):
    key, solver = "lms", staticmethod(solvers.sample_lms)


class DPMSolverPP2SAncestralSampler(KSampler):
    key, solver, noise = "dpmpp_2s_ancestral", staticmethod(solvers.sample_dpmpp_2s_ancestral), "gaussian"


class DPMSolverPPSDESampler(KSampler):
    key, solver, noise = "dpmpp_sde", staticmethod(solvers.sample_dpmpp_sde), "brownian"


class DPMSolverPP2MSDESampler(KSampler):
    key, solver, noise = "dpmpp_2m_sde", staticmethod(solvers.sample_dpmpp_2m_sde), "brownian"


class DPMSolverPP3MSDESampler(KSampler):
    key, solver, noise = "dpmpp_3m_sde", staticmethod(solvers.sample_dpmpp_3m_sde), "brownian"


class UniPCSampler(KSampler):
    key, solver = "uni_pc", staticmethod(solvers.sample_unipc)


class DEISSampler(KSampler):
    key, solver = "deis", staticmethod(solvers.sample_deis)


class IPNDMSampler(KSampler):
    key, solver = "ipndm", staticmethod(solvers.sample_ipndm)


class DPMFastSampler(KSampler):
    key, solver, noise = "dpm_fast", staticmethod(solvers.sample_dpm_fast), "gaussian"


class DPMAdaptiveSampler(KSampler):
    """DPM-adaptive; ``info`` holds the last run's steps, nfe, n_accept and n_reject."""

    key, solver, noise = "dpm_adaptive", staticmethod(solvers.sample_dpm_adaptive), "gaussian"

    def run(
        self, model: Callable, x: torch.Tensor, sigmas: list[float], noise: Callable | None, progress: Progress | None, **options: Any
    ) -> torch.Tensor:
        self.info = {}
        try:
            return super().run(model, x, sigmas, noise, progress, info=self.info, **options)
        except RuntimeError as exc:
            raise LatentzooError(f"sampler {self.name}: {exc}") from exc


class LCMSampler(KSampler):
    """LCM multistep consistency sampling (Luo et al. 2023, alg. 1; ``consistency.py``); steps model evaluations.

    Meant for a consistency-distilled prior (an LCM-LoRA applied with ``--lora``), usually with
    ``--scheduler sgm_uniform`` and 2-8 steps; on a plain denoiser it is an x0-then-renoise sampler."""

    key, solver, noise = "lcm", staticmethod(consistency.sample_lcm), "gaussian"

    def run(
        self, model: Callable, x: torch.Tensor, sigmas: list[float], noise: Callable | None, progress: Progress | None, **options: Any
    ) -> torch.Tensor:
        return super().run(model, x, sigmas, noise, progress, timestep=model.schedule.timestep, **options)
