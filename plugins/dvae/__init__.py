"""DALL-E discrete VAE family."""

from __future__ import annotations

from latentzoo.core.contract.hookspecs import hookimpl

LATENTZOO_PLUGIN_API = 1


@hookimpl
def latentzoo_components() -> list[dict]:
    return [
        {
            "name": "dvae.autoencoder",
            "roles": ["encoder", "decoder"],
            "family": "dvae",
            "target": "latentzoo.plugins.dvae.model:DiscreteVAE",
            "trainer": "latentzoo.plugins.dvae.train:train",
            "description": "DALL-E discrete VAE: Gumbel-softmax over a codebook in training, hard codes at inference",
        }
    ]
