"""unCLIP family (DALL-E 2, Ramesh et al. 2022): declarations only (model code loads when built).

Two stages, each an ordinary part of a pipeline, so composition checks every link:

    text --(conditioner: CLIP text embedding)--> prior --(image embedding)--> decoder --> image

- ``unclip.prior``: a ``denoiser`` prior whose latent space is the CLIP *image-embedding*
  space (declared like any latent space: channels = embedding width, factor = image size,
  autoencoder = the CLIP model's identity). Any sampler that drives denoisers (ddim, euler,
  dpmpp_2m, ...) with any sigma scheduler samples it; it accepts ``clip-text-embedding``
  conditioning from ``clip.embedder`` and guides against the empty prompt.
- ``unclip.decoder``: a decoder of that same space, itself a small guided pixel diffusion
  (stochastic: it decodes one embedding into many images, see ``latentzoo variations``).

The family uses only latentzoo's public API (core/).
"""

from __future__ import annotations

from latentzoo.core.contract.hookspecs import hookimpl

LATENTZOO_PLUGIN_API = 1


def _option(name: str, type_: str, default, help_: str, **bounds) -> dict:
    return {"name": name, "type": type_, "default": default, "min": bounds.get("min"), "max": bounds.get("max"), "help": help_}


@hookimpl
def latentzoo_components() -> list[dict]:
    return [
        {
            "name": "unclip.prior",
            "roles": ["prior"],
            "kind": "denoiser",
            "scaled_latents": True,
            "family": "unclip",
            "target": "latentzoo.plugins.unclip.model:UnCLIPPrior",
            "trainer": "latentzoo.plugins.unclip.train:train",
            "description": "unCLIP diffusion prior: CLIP image embedding given the CLIP text embedding (x0-predicting residual MLP)",
            "options": [
                _option("guidance", "float", 1.0, "Classifier-free guidance scale on the text embedding (Ho & Salimans 2022)", min=0.0),
            ],
        },
        {
            "name": "unclip.decoder",
            "roles": ["decoder"],
            "family": "unclip",
            "target": "latentzoo.plugins.unclip.model:UnCLIPDecoder",
            "description": "unCLIP decoder: image from a CLIP image embedding by guided pixel diffusion (stochastic; variations)",
        },
    ]
