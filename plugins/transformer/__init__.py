"""Autoregressive code-transformer family (VQ-GAN stage 2, DALL-E) and its token sampler."""

from __future__ import annotations

from latentzoo.core.hookspecs import hookimpl

LATENTZOO_PLUGIN_API = 1


@hookimpl
def latentzoo_components() -> list[dict]:
    return [
        {
            "name": "transformer.prior",
            "roles": ["prior"],
            "kind": "autoregressive",
            "family": "transformer",
            "target": "latentzoo.plugins.transformer.model:CodeTransformer",
            "trainer": "latentzoo.plugins.transformer.train:train",
            "description": "Causal transformer over raster-ordered code grids, optional class token",
        },
        {
            "name": "transformer.tokens",
            "roles": ["sampler"],
            "drives": ["autoregressive"],
            "family": "transformer",
            "target": "latentzoo.plugins.transformer.sampler:TokenSampler",
            "description": "Token sampling with temperature, top-k, top-p and classifier-free guidance",
        },
    ]
