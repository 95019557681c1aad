"""The identity decoder of pixel space: what a pixel-space diffusion prior (DDPM on images) decodes through.

Its latent space is ``{kind: continuous, channels: C, factor: 1, autoencoder: pixels}``; latents
are images in [-1, 1] already.
"""

from __future__ import annotations

from typing import Any

import torch

from latentzoo.core.contract.interfaces import Decoder


class PixelDecoder(Decoder):
    def __init__(self, *, channels: int = 3, sample_size: int = 32) -> None:
        self.image_channels = channels
        self.sample_size = sample_size

    def shape_fields(self) -> dict[str, Any]:
        return {"kind": "continuous", "channels": self.image_channels, "factor": 1}

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return latents
