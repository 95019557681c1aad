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
            "formats": {"diffusers": "latentzoo.plugins.diffusion.diffusers:DiffusersFormat"},  # UNet2DModel, DDIM/DDPM, pipelines
            "description": "UNet denoiser (diffusers UNet2DModel layout), epsilon / v / sample prediction, optional classes",
        },
        {
            "name": "diffusion.scheduler",
            "roles": ["scheduler"],
            "family": "diffusion",
            "target": "latentzoo.plugins.diffusion.schedulers:NoiseScheduler",
            "description": "Beta schedule (linear, scaled_linear, squaredcos_cap_v2, sigmoid) with leading / trailing / linspace spacing",
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
        {
            "name": "diffusion.euler",
            "roles": ["sampler"],
            "drives": ["denoiser"],
            "needs_scheduler": True,
            "family": "diffusion",
            "target": "latentzoo.plugins.diffusion.k_samplers:EulerSampler",
            "description": "Euler, probability-flow ODE (Karras et al. 2022, alg. 2, no churn); sigma_schedule timesteps|karras|sigmoid",
        },
        {
            "name": "diffusion.heun",
            "roles": ["sampler"],
            "drives": ["denoiser"],
            "needs_scheduler": True,
            "family": "diffusion",
            "target": "latentzoo.plugins.diffusion.k_samplers:HeunSampler",
            "description": "Heun, 2nd order (Karras et al. 2022, alg. 1), 2 steps-1 evaluations; sigma_schedule timesteps|karras|sigmoid",
        },
        {
            "name": "diffusion.dpmpp_2m",
            "roles": ["sampler"],
            "drives": ["denoiser"],
            "needs_scheduler": True,
            "family": "diffusion",
            "target": "latentzoo.plugins.diffusion.k_samplers:DPMSolverPP2MSampler",
            "description": "DPM-Solver++(2M) (Lu et al. 2022, alg. 2), multistep 2nd order; sigma_schedule timesteps|karras|sigmoid",
        },
        {
            "name": "diffusion.pixels",
            "roles": ["decoder"],
            "family": "diffusion",
            "target": "latentzoo.plugins.diffusion.pixels:PixelDecoder",
            "description": "Identity decoder of pixel space (latent space 'pixels', factor 1) for pixel-space DDPM / DDIM priors",
        },
    ]
