"""KL-VAE family: Gaussian-posterior autoencoder, its analytic N(0, I) prior and sampler."""

from __future__ import annotations

from latentzoo.core.contract.hookspecs import hookimpl

LATENTZOO_PLUGIN_API = 1


@hookimpl
def latentzoo_kinds() -> list[dict]:
    # No conformance check: an analytic prior has no prediction whose convention could be reversed.
    return [
        {
            "name": "analytic",
            "description": "A closed-form prior sampled directly (N(0, I) over scaled latents, a uniform categorical over codes)",
            "convention": {"distribution": "closed form, sampled without a sampler's levels", "levels": None},
        }
    ]


@hookimpl
def latentzoo_components() -> list[dict]:
    return [
        {
            "name": "vae.autoencoder",
            "roles": ["encoder", "decoder"],
            "family": "vae",
            "target": "latentzoo.plugins.vae.model:KLAutoencoder",
            "trainer": "latentzoo.plugins.vae.train:train",
            "formats": {"diffusers": "latentzoo.plugins.vae.diffusers:AutoencoderKLFormat"},  # key mapping to diffusers, with the family
            "description": "KL-regularised autoencoder (diffusers AutoencoderKL layout); encode gives the posterior mean or a sample",
        },
        {
            "name": "vae.gaussian",
            "roles": ["prior"],
            "kind": "analytic",
            "family": "vae",
            "target": "latentzoo.plugins.vae.model:GaussianPrior",
            "description": "Analytic N(0, I) prior over a latent grid",
        },
        {
            "name": "vae.analytic",
            "roles": ["sampler"],
            "drives": ["analytic"],
            "family": "vae",
            "target": "latentzoo.plugins.vae.model:AnalyticSampler",
            "description": "Closed-form sampling from an analytic prior (temperature-scaled)",
            "options": [
                {
                    "name": "temperature",
                    "type": "float",
                    "default": 1.0,
                    "min": 0.0,
                    "min_exclusive": True,
                    "help": "Scale of the N(0, I) draw (< 1: closer to the mean image)",
                }
            ],
        },
    ]
