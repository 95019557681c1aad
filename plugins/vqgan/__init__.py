"""VQ-VAE / VQ-GAN family: declarations only (model code loads when built)."""

from __future__ import annotations

from latentzoo.core.contract.hookspecs import hookimpl

LATENTZOO_PLUGIN_API = 1


@hookimpl
def latentzoo_components() -> list[dict]:
    return [
        {
            "name": "vqgan.autoencoder",
            "roles": ["encoder", "decoder"],
            "family": "vqgan",
            "target": "latentzoo.plugins.vqgan.model:VQAutoencoder",
            "trainer": "latentzoo.plugins.vqgan.train:train",
            "formats": {"diffusers": "latentzoo.plugins.vqgan.diffusers:VQModelFormat"},  # key mapping to diffusers, with the family
            "accepts_codes": True,
            "description": "Convolutional VQ autoencoder (diffusers VQModel layout); decoder takes latents or code indices",
        }
    ]
