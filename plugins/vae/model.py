"""KL-regularised autoencoder (Kingma & Welling 2014; Rombach et al. 2022's KL-f4/f8).

Module names match diffusers' ``AutoencoderKL`` (``encoder`` with a doubled output,
``quant_conv``, ``post_quant_conv``, ``decoder``), so its checkpoints load directly.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from latentzoo.core.contract.errors import LatentzooError
from latentzoo.core.contract.interfaces import Decoder, Encoder, Prior, Sampler
from latentzoo.core.nn.layers import ConvDecoder, ConvEncoder


class KLAutoencoder(nn.Module, Encoder, Decoder):
    """Gaussian posterior q(z|x) = N(mean, exp(logvar)); ``encode`` returns the mean or a sample."""

    load_by_assignment = True  # every parameter is in its weights file: built on meta, loaded without a copy (core.runtime.build)

    def __init__(
        self,
        *,
        in_channels: int = 1,
        out_channels: int = 1,
        block_out_channels: list[int] | tuple[int, ...] = (32, 64, 64),
        layers_per_block: int = 1,
        latent_channels: int = 3,
        norm_num_groups: int = 16,
        sample_size: int = 32,
        mid_block_add_attention: bool = True,
        use_quant_conv: bool = True,
        use_post_quant_conv: bool = True,
        encode_mode: str = "mean",
    ) -> None:
        super().__init__()
        if encode_mode not in ("mean", "sample"):
            raise ValueError(f"encode_mode must be mean or sample, not {encode_mode!r}")
        widths = list(block_out_channels)
        self.image_channels, self.sample_size, self.encode_mode = in_channels, sample_size, encode_mode
        self.latent_channels, self.factor = latent_channels, 2 ** (len(widths) - 1)
        self.encoder = ConvEncoder(in_channels, 2 * latent_channels, widths, layers_per_block, norm_num_groups, mid_block_add_attention)
        self.quant_conv = nn.Conv2d(2 * latent_channels, 2 * latent_channels, 1) if use_quant_conv else None
        self.post_quant_conv = nn.Conv2d(latent_channels, latent_channels, 1) if use_post_quant_conv else None
        self.decoder = ConvDecoder(latent_channels, out_channels, widths, layers_per_block, norm_num_groups, mid_block_add_attention)

    def shape_fields(self) -> dict[str, Any]:
        return {"kind": "continuous", "channels": self.latent_channels, "factor": self.factor, "codebook_size": None}

    def posterior(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance of q(z|x); log-variance clamped to [-30, 20] as in LDM."""
        moments = self.encoder(images)
        if self.quant_conv is not None:
            moments = self.quant_conv(moments)
        mean, logvar = moments.chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def encode(self, images: torch.Tensor, *, sample: bool | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        mean, logvar = self.posterior(images)
        if not (self.encode_mode == "sample" if sample is None else sample):
            return mean
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + torch.exp(0.5 * logvar) * noise

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        if self.post_quant_conv is not None:
            latents = self.post_quant_conv(latents)
        return self.decoder(latents)

    def forward(self, images: torch.Tensor, noise: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Training pass: reconstruction from a reparametrised sample z = mean + std * noise
        (``noise`` ~ N(0, I) of the latents' shape, drawn here when not given), and
        KL(q(z|x) || N(0, I)) per image."""
        mean, logvar = self.posterior(images)
        if noise is None:
            noise = torch.randn_like(mean)
        z = mean + torch.exp(0.5 * logvar) * noise  # reparametrisation trick
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).flatten(1).sum(1)  # closed form, Kingma & Welling 2014 app. B
        return self.decode(z), kl

    @property
    def last_layer(self) -> torch.Tensor:
        return self.decoder.conv_out.weight


class GaussianPrior(Prior):
    """The analytic prior N(0, I) over a (C, H, W) latent grid: a VAE samples on its own."""

    kind = "analytic"

    def __init__(self, *, channels: int, size: int) -> None:
        self.channels, self.size = channels, size

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return (self.channels, self.size, self.size)


class AnalyticSampler(Sampler):
    """Draws from an analytic prior in closed form: for N(0, I), the initial noise is the sample (no levels)."""

    drives = ("analytic",)
    levels = None

    def __init__(self, *, temperature: float = 1.0) -> None:
        self.temperature = temperature

    def sample(
        self,
        prior: Any,
        noise: torch.Tensor,
        *,
        levels: list[float] | None = None,
        generator: torch.Generator,
        progress: Any = None,
        temperature: float | None = None,
        **_: Any,
    ) -> torch.Tensor:
        temperature = self.temperature if temperature is None else temperature
        if not math.isfinite(temperature) or temperature <= 0:
            raise LatentzooError(f"temperature must be a finite number > 0, not {temperature}")
        if progress:
            progress(1, 1)
        return noise * temperature
