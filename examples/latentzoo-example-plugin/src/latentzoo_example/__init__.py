"""latentzoo-example-plugin: declarations only (model code loads when a component is built).

Adds a PLMS sampler for denoiser priors and a latent-preview decoder for the digits VQ-GAN
latent space. This module must stay light: latentzoo imports it for ``list``, ``info`` and
``plugins``, so it imports neither torch nor the model modules.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from latentzoo.core.contract.hookspecs import hookimpl

LATENTZOO_PLUGIN_API = 1


@hookimpl
def latentzoo_components() -> list[dict[str, Any]]:
    return [
        {
            "name": "example.plms",
            "roles": ["sampler"],
            "drives": ["denoiser"],
            "levels": "sigma",
            "options": [{"name": "order", "type": "int", "default": 4, "min": 1, "max": 4, "help": "Adams-Bashforth order (1 = DDIM)"}],
            "family": "example",
            "target": "latentzoo_example.plms:PLMSSampler",
            "description": "Pseudo linear multi-step (PLMS; Liu et al. 2022), as in CompVis latent diffusion",
        },
        {
            "name": "example.preview",
            "roles": ["decoder"],
            "family": "example",
            "target": "latentzoo_example.preview:LatentPreviewDecoder",
            "description": "Approximate latent previewer: one linear map per latent neighbourhood, then pixel shuffle",
        },
    ]


@hookimpl
def latentzoo_registry() -> list[str]:
    return [str(Path(__file__).with_name("registry.yaml"))]
