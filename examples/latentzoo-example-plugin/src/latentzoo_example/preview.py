"""A latent previewer: an approximate decoder that costs almost nothing.

Like the approximate previews Stable Diffusion front ends draw while sampling (a fixed
linear map from each latent vector to a colour), but spatial: one 5x5 convolution maps
the latents to factor^2 pixels per latent position, and a pixel shuffle puts them in
place. Its ~1,200 weights are fitted by least squares to the real decoder's output
(``fit_preview.py`` in this project), so the decoder accepts exactly the latent space of
the autoencoder it was fitted to, and says so in its registry entry.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from latentzoo.core.contract.errors import LatentzooError
from latentzoo.core.contract.interfaces import Decoder


class LatentPreviewDecoder(nn.Module, Decoder):
    """Continuous latents (B, latent_channels, h, w) -> images (B, image_channels, h * factor, w * factor)."""

    def __init__(self, *, latent_channels: int, factor: int, image_channels: int = 1, kernel_size: int = 5) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise LatentzooError(f"kernel_size must be odd, not {kernel_size}")
        self.latent_channels, self.factor, self.image_channels = latent_channels, factor, image_channels
        self.proj = nn.Conv2d(latent_channels, image_channels * factor**2, kernel_size, padding=kernel_size // 2)
        self.shuffle = nn.PixelShuffle(factor)

    def shape_fields(self) -> dict[str, Any]:
        """The latent-space fields the architecture fixes (latentzoo checks them against the registry entry)."""
        return {"kind": "continuous", "channels": self.latent_channels, "factor": self.factor}

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        if not latents.is_floating_point():
            raise LatentzooError("the latent preview decoder takes continuous latents, not code indices; decode codes with the autoencoder")
        return self.shuffle(self.proj(latents)).clamp(-1, 1)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.decode(latents)
