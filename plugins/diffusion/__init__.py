"""DDPM / DDIM diffusion family: declarations only (model code loads when built)."""

from __future__ import annotations

from latentzoo.core.hookspecs import hookimpl

LATENTZOO_PLUGIN_API = 1


@hookimpl
def latentzoo_components() -> list[dict]:
    return [
        {
            "name": "diffusion.unet",
            "roles": ["prior"],
            "kind": "denoiser",
            "family": "diffusion",
            "target": "latentzoo.plugins.diffusion.unet:UNetPrior",
            "trainer": "latentzoo.plugins.diffusion.train:train",
            "description": "UNet denoiser (diffusers UNet2DModel layout), epsilon / v / sample prediction, optional classes",
        },
        {
            "name": "diffusion.scheduler",
            "roles": ["scheduler"],
            "family": "diffusion",
            "target": "latentzoo.plugins.diffusion.schedulers:NoiseScheduler",
            "description": "Beta schedule (linear, scaled_linear, squaredcos_cap_v2) with leading / trailing / linspace spacing",
        },
        {
            "name": "diffusion.ddim",
            "roles": ["sampler"],
            "drives": ["denoiser"],
            "needs_scheduler": True,
            "family": "diffusion",
            "target": "latentzoo.plugins.diffusion.samplers:DDIMSampler",
            "description": "DDIM (Song et al. 2021), eta-controlled; deterministic at eta=0; inversion",
        },
        {
            "name": "diffusion.ddpm",
            "roles": ["sampler"],
            "drives": ["denoiser"],
            "needs_scheduler": True,
            "family": "diffusion",
            "target": "latentzoo.plugins.diffusion.samplers:DDPMSampler",
            "description": "DDPM ancestral sampling (Ho et al. 2020), fixed-small or fixed-large variance",
        },
    ]
