"""DDPM / DDIM diffusion family: declarations only (model code loads when built).

The denoiser priors (UNet, cross-attention UNet), the ``denoiser`` kind and its conformance
check, and the samplers of the diffusion papers (DDPM, DDIM, PNDM), which walk the sigma levels
of the prior's own training schedule through ``latentzoo.core.contract.denoising.Denoiser``. Every other
sigma sampler and every sigma scheduler lives in the ksampling family; any sigma scheduler
composes with any sigma sampler.
"""

from __future__ import annotations

from typing import Any

from latentzoo.core.contract.hookspecs import hookimpl
from latentzoo.core.contract.options import DENOISER_OPTIONS

LATENTZOO_PLUGIN_API = 1


def _option(name: str, type_: str, default: Any, help_: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": type_, "default": default, "help": help_, **extra}


def _sampler(name: str, target: str, description: str, options: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": f"diffusion.{name}",
        "roles": ["sampler"],
        "drives": ["denoiser"],
        "levels": "sigma",
        "family": "diffusion",
        "target": f"latentzoo.plugins.diffusion.{target}",
        "description": description,
        "options": [*options, *DENOISER_OPTIONS],
    }


@hookimpl
def latentzoo_kinds() -> list[dict[str, Any]]:
    return [
        {
            "name": "denoiser",
            "description": "Diffusion denoiser on a discrete training schedule, called at x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps",
            "convention": {
                "x_t": "sqrt(abar_t) x0 + sqrt(1 - abar_t) eps",
                "timestep": "the prior's noise_schedule, t = 0 (clean) .. T - 1 (noise)",
                "prediction_types": ["epsilon", "v_prediction", "sample"],
                "prediction_type_from": "the prior's prediction_type",
                "levels": "sigma",
            },
            "check": "latentzoo.plugins.diffusion.kind:check",
        }
    ]


@hookimpl
def latentzoo_components() -> list[dict]:
    return [
        {
            "name": "diffusion.unet",
            "roles": ["prior"],
            "kind": "denoiser",
            "scaled_latents": True,
            "family": "diffusion",
            "target": "latentzoo.plugins.diffusion.unet:UNetPrior",
            "trainer": "latentzoo.plugins.diffusion.train:train",
            "formats": {"diffusers": "latentzoo.plugins.diffusion.diffusers:DiffusersFormat"},  # UNet2DModel, DDIM/DDPM, pipelines
            "description": "UNet denoiser (diffusers UNet2DModel layout), epsilon / v / sample prediction, optional classes",
            "options": [
                # Only on class-conditional instances (conditioning: {kind: class}): `info` of an unconditional one lists neither.
                _option(
                    "class_label",
                    "int",
                    None,
                    "Class to draw (class-conditional priors; the last class is the null class)",
                    min=0,
                    conditioning="class",
                ),
                _option(
                    "guidance",
                    "float",
                    1.0,
                    "Classifier-free guidance scale (Ho & Salimans 2022); 1 = plain conditional",
                    min=0.0,
                    conditioning="class",
                ),
            ],
        },
        {
            "name": "diffusion.unet_cond",
            "roles": ["prior"],
            "kind": "denoiser",
            "scaled_latents": True,
            "family": "diffusion",
            "target": "latentzoo.plugins.diffusion.unet_cond:UNetCondPrior",
            "formats": {"diffusers": "latentzoo.plugins.diffusion.sd:StableDiffusionFormat"},  # StableDiffusionPipeline
            "description": "Cross-attention UNet denoiser (diffusers UNet2DConditionModel layout): attends to a conditioner's tokens",
            "options": [
                _option(
                    "guidance", "float", 1.0, "Classifier-free guidance scale against the negative prompt (Ho & Salimans 2022)", min=0.0
                ),
                _option("original_size", "str", "", "SDXL size conditioning: the training image's size 'H,W' (default: the image size)"),
                _option("crops_coords_top_left", "str", "", "SDXL crop conditioning: the crop's top-left 'TOP,LEFT' (default 0,0)"),
                _option("target_size", "str", "", "SDXL base size conditioning: the target size 'H,W' (default: the image size)"),
                _option("aesthetic_score", "float", None, "SDXL refiner: aesthetic score conditioned on (default 6.0)", min=0.0),
                _option(
                    "negative_aesthetic_score", "float", None, "SDXL refiner: the negative branch's aesthetic score (default 2.5)", min=0.0
                ),
            ],
        },
        _sampler(
            "ddim",
            "samplers:DDIMSampler",
            "DDIM (Song et al. 2021, eq. 12), eta-controlled; deterministic at eta=0; inversion",
            [
                _option("eta", "float", 0.0, "Stochasticity: 0 = deterministic DDIM, 1 = DDPM-like", min=0.0),
                _option("set_alpha_to_one", "bool", True, "End at sigma 0 (true) or at the schedule's sigma_min (diffusers' false)"),
            ],
        ),
        _sampler(
            "pndm",
            "samplers:PNDMSampler",
            "PLMS (Liu et al. 2022, PNDM eq. 12): Adams-Bashforth on eps with DDIM transfers, as diffusers' PNDMScheduler; steps+1 evaluations",
            [_option("set_alpha_to_one", "bool", True, "End at sigma 0 (true) or at the schedule's sigma_min (diffusers' false)")],
        ),
        _sampler(
            "ddpm",
            "samplers:DDPMSampler",
            "DDPM ancestral sampling (Ho et al. 2020), fixed-small or fixed-large variance",
            [
                _option(
                    "variance_type",
                    "str",
                    "fixed_small",
                    "Posterior variance (fixed_small) or beta_t (fixed_large)",
                    choices=["fixed_small", "fixed_large"],
                )
            ],
        ),
        {
            "name": "diffusion.pixels",
            "roles": ["decoder"],
            "family": "diffusion",
            "target": "latentzoo.plugins.diffusion.pixels:PixelDecoder",
            "description": "Identity decoder of pixel space (latent space 'pixels', factor 1) for pixel-space DDPM / DDIM priors",
        },
    ]
