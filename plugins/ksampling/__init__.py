"""Every sigma sampler and sigma scheduler for denoiser priors (k-diffusion / ComfyUI): declarations only (no torch here).

Samplers walk sigma levels through the public denoising API (``latentzoo.core.contract.denoising``), all
on one base class (``samplers.KSampler``); schedulers pick sigma levels of the prior's own
training schedule (``levels.SigmaScheduler``). Registry entries (with the names ComfyUI users
type as aliases) are in this folder's registry.yaml; the first sigma samplers and schedulers
(euler, heun, dpmpp-2m; leading / trailing / linspace, karras, sigmoid, exponential) are in the
built-in registry.yaml and keep their first class names (``diffusion.euler``, ...), which
registries written by ``convert`` name. The diffusion family keeps DDPM, DDIM and PNDM.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from latentzoo.core.contract.hookspecs import hookimpl
from latentzoo.core.contract.options import DENOISER_OPTIONS

LATENTZOO_PLUGIN_API = 1


def _option(name: str, type_: str, default: Any, help_: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": type_, "default": default, "help": help_, **extra}


ETA = _option("eta", "float", 1.0, "Noise added per step: 0 = deterministic, 1 = full ancestral / SDE noise", min=0.0)
S_NOISE = _option("s_noise", "float", 1.0, "Scale of the added noise (Karras et al. 2022, S_noise)", min=0.0)
STOCHASTIC = [ETA, S_NOISE]

# name -> (class in samplers.py, description, options)
SAMPLERS: dict[str, tuple[str, str, list[dict[str, Any]]]] = {
    "euler_ancestral": ("EulerAncestralSampler", "Euler ancestral: Euler step to sigma_down, then fresh noise (k-diffusion)", STOCHASTIC),
    "dpm2": (
        "DPM2Sampler",
        "DPM2: DPM-Solver-2 (Lu et al. 2022, alg. 1) on the sigma ODE, optional churn; 2 evaluations per step",
        [
            _option("s_churn", "float", 0.0, "Karras et al. 2022 S_churn: noise re-injected per step (0 = deterministic)", min=0.0),
            _option("s_tmin", "float", 0.0, "Churn only at sigma >= s_tmin", min=0.0),
            _option("s_tmax", "float", 1e9, "Churn only at sigma <= s_tmax", min=0.0),
            S_NOISE,
        ],
    ),
    "dpm2_ancestral": ("DPM2AncestralSampler", "DPM2 ancestral: DPM-Solver-2 step to sigma_down, then fresh noise", STOCHASTIC),
    "lms": (
        "LMSSampler",
        "Linear multistep (Adams-Bashforth on the sigma grid, k-diffusion's LMS), order 4",
        [_option("order", "int", 4, "Number of past slopes the polynomial goes through", min=1, max=4)],
    ),
    "dpmpp_2s_ancestral": (
        "DPMSolverPP2SAncestralSampler",
        "DPM-Solver++(2S) ancestral (Lu et al. 2022, alg. 1); 2 evaluations per step",
        STOCHASTIC,
    ),
    "dpmpp_sde": (
        "DPMSolverPPSDESampler",
        "DPM++ SDE: stochastic single-step 2nd-order DPM-Solver++ with Brownian-tree noise; 2 evaluations per step",
        [*STOCHASTIC, _option("r", "float", 0.5, "Position of the intermediate level in lambda (fraction of the step)", min=0.01, max=1.0)],
    ),
    "dpmpp_2m_sde": (
        "DPMSolverPP2MSDESampler",
        "DPM-Solver++(2M) SDE (Lu et al. 2022) with Brownian-tree noise; eta = 0 is DPM-Solver++(2M)",
        [*STOCHASTIC, _option("solver_type", "str", "midpoint", "Form of the 2nd-order correction", choices=["midpoint", "heun"])],
    ),
    "dpmpp_3m_sde": ("DPMSolverPP3MSDESampler", "DPM-Solver++(3M) SDE, 3rd-order multistep with Brownian-tree noise", STOCHASTIC),
    "uni_pc": (
        "UniPCSampler",
        "UniPC (Zhao et al. 2023): multistep predictor-corrector, data prediction, order 3; 1 evaluation per step",
        [
            _option("variant", "str", "bh1", "B(h) of the order conditions: bh1 = h, bh2 = e^h - 1", choices=["bh1", "bh2"]),
            _option("order", "int", 3, "Highest order (lower for the first and last steps)", min=1, max=3),
        ],
    ),
    "deis": (
        "DEISSampler",
        "DEIS tAB (Zhang & Chen 2023): exponential-integrator multistep in VP time, order 3",
        [_option("max_order", "int", 3, "Highest order of the multistep polynomial", min=1, max=4)],
    ),
    "ipndm": (
        "IPNDMSampler",
        "iPNDM (Zhang & Chen 2023): PNDM's Adams-Bashforth weights, lower-order warm start, order 4",
        [_option("max_order", "int", 4, "Highest order (fixed Adams-Bashforth weights)", min=1, max=4)],
    ),
    "dpm_fast": (
        "DPMFastSampler",
        "DPM-Solver-fast (Lu et al. 2022, sec. 3.4): orders 3, 3, .., uniform in lambda between the levels' ends",
        [_option("eta", "float", 0.0, "Ancestral noise per step (0 = deterministic)", min=0.0), S_NOISE],
    ),
    "dpm_adaptive": (
        "DPMAdaptiveSampler",
        "DPM-Solver-23 with adaptive step size (Lu et al. 2022, alg. 4-5); ignores the step count",
        [
            _option("order", "int", 3, "2 = DPM-Solver-12, 3 = DPM-Solver-23", min=2, max=3),
            _option("rtol", "float", 0.05, "Relative tolerance of the local error", min=1e-6),
            _option("atol", "float", 0.0078, "Absolute tolerance of the local error", min=1e-8),
            _option("h_init", "float", 0.05, "First step size in lambda = -log sigma", min=1e-4),
            _option("pcoeff", "float", 0.0, "PID controller: proportional coefficient"),
            _option("icoeff", "float", 1.0, "PID controller: integral coefficient"),
            _option("dcoeff", "float", 0.0, "PID controller: derivative coefficient"),
            _option("accept_safety", "float", 0.81, "Accept a step when the step-size factor reaches this", min=0.0, max=1.0),
            _option("max_evaluations", "int", 2000, "Give up after this many model evaluations", min=1),
            _option("eta", "float", 0.0, "Ancestral noise per step (0 = deterministic)", min=0.0),
            S_NOISE,
        ],
    ),
    "lcm": (
        "LCMSampler",
        "LCM (Luo et al. 2023, alg. 1): consistency x0 estimate, then fresh noise to the next level; for consistency-distilled priors",
        [],
    ),
}

# The first sigma samplers and schedulers, declared under their first names (diffusion.<key>):
# key -> (class, description, options); the samplers also take the Denoiser's x0 options.
FIRST_SAMPLERS: dict[str, tuple[str, str, list[dict[str, Any]]]] = {
    "euler": ("EulerSampler", "Euler, probability-flow ODE (Karras et al. 2022, alg. 2, no churn)", DENOISER_OPTIONS),
    "heun": ("HeunSampler", "Heun, 2nd order (Karras et al. 2022, alg. 1), 2 steps-1 evaluations", DENOISER_OPTIONS),
    "dpmpp_2m": ("DPMSolverPP2MSampler", "DPM-Solver++(2M) (Lu et al. 2022, alg. 2), multistep 2nd order", DENOISER_OPTIONS),
}
ALL_SAMPLERS = {**SAMPLERS, **FIRST_SAMPLERS}  # what samplers.KSampler reads its options from

FIRST_SCHEDULERS: dict[str, tuple[str, str, list[dict[str, Any]]]] = {
    "timesteps": (
        "TimestepScheduler",
        "The prior's own training timesteps at leading / trailing / linspace spacing (Lin et al. 2024, table 2)",
        [
            _option("spacing", "str", "leading", "Timestep spacing", choices=["leading", "trailing", "linspace"]),
            _option("steps_offset", "int", 0, "Added to every leading timestep (diffusers' steps_offset)", min=0),
        ],
    ),
    "karras": (
        "KarrasScheduler",
        "Karras et al. 2022 sigmas (eq. 5) between the prior's sigma_min and sigma_max",
        [_option("rho", "float", 7.0, "Karras rho: larger spends more steps at low noise", min=0.0, min_exclusive=True)],
    ),
    "sigmoid": ("SigmoidScheduler", "S-curve in log sigma (Chen 2023), dense near sigma_min and sigma_max", []),
    "exponential": ("ExponentialScheduler", "Sigmas uniform in log sigma (k-diffusion's exponential)", []),
}

# name -> (class in schedulers.py, description, options)
SCHEDULERS: dict[str, tuple[str, str, list[dict[str, Any]]]] = {
    "normal": ("NormalScheduler", "ComfyUI's normal: timesteps uniform from T-1 to 0, sigma interpolated in log", []),
    "sgm_uniform": ("SGMUniformScheduler", "ComfyUI's sgm_uniform: steps+1 uniform timesteps from T-1, the last (t = 0) dropped", []),
    "simple": ("SimpleScheduler", "ComfyUI's simple: every (T / steps)-th training sigma from the top", []),
    "ddim_uniform": ("DDIMUniformScheduler", "ComfyUI's ddim_uniform: training sigmas at t = 1, 1 + T//steps, ...", []),
    "beta": (
        "BetaScheduler",
        "Beta-quantile timesteps (Lee et al. 2024), dense at both ends (ComfyUI's beta)",
        [
            _option("alpha", "float", 0.6, "Beta distribution alpha", min=0.01),
            _option("beta", "float", 0.6, "Beta distribution beta", min=0.01),
        ],
    ),
    "linear_quadratic": (
        "LinearQuadraticScheduler",
        "Linear then quadratic in sigma / sigma_max (Mochi 1; ComfyUI's linear_quadratic), made for flow models",
        [
            _option("threshold_noise", "float", 0.025, "Fraction of sigma_max covered by the linear part", min=1e-6, max=1.0),
            _option("linear_steps", "int", None, "Steps in the linear part (default steps // 2)", min=1),
        ],
    ),
    "kl_optimal": ("KLOptimalScheduler", "Uniform in atan(sigma) (the KL-optimal schedule of AYS; ComfyUI's kl_optimal)", []),
    "polyexponential": (
        "PolyExponentialScheduler",
        "k-diffusion's polyexponential: polynomial ramp in log sigma",
        [_option("rho", "float", 1.0, "Ramp exponent: 1 = exponential, larger = denser near sigma_min", min=0.01)],
    ),
    "align_your_steps": (
        "AlignYourStepsScheduler",
        "Align Your Steps (Sabour et al. 2024): published optimised sigmas, log-interpolated to any step count",
        [_option("model", "str", "SD1", "Which published table", choices=["SD1", "SDXL"])],
    ),
}


ALL_SCHEDULERS = {**SCHEDULERS, **FIRST_SCHEDULERS}  # what levels.SigmaScheduler.option reads the declared options from


def _declaration(
    name: str, role: str, module: str, cls: str, description: str, options: list[dict[str, Any]], prefix: str = "ksampling"
) -> dict[str, Any]:
    decl = {
        "name": f"{prefix}.{name}",
        "roles": [role],
        "levels": "sigma",
        "family": "ksampling",
        "target": f"latentzoo.plugins.ksampling.{module}:{cls}",
        "description": description,
        "options": options,
    }
    if role == "sampler":
        decl["drives"] = ["denoiser"]
    return decl


@hookimpl
def latentzoo_components() -> list[dict[str, Any]]:
    return [
        *(_declaration(n, "scheduler", "levels", *spec, prefix="diffusion") for n, spec in FIRST_SCHEDULERS.items()),
        *(_declaration(n, "sampler", "samplers", *spec, prefix="diffusion") for n, spec in FIRST_SAMPLERS.items()),
        *(_declaration(n, "sampler", "samplers", *spec) for n, spec in SAMPLERS.items()),
        *(_declaration(n, "scheduler", "schedulers", *spec) for n, spec in SCHEDULERS.items()),
    ]


@hookimpl
def latentzoo_registry() -> list[str]:
    return [str(Path(__file__).with_name("registry.yaml"))]
