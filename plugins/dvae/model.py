"""DALL-E's discrete VAE (Ramesh et al. 2021, sec. 2.1 and app. A).

The encoder gives logits over ``num_tokens`` codes at each latent position. Training
relaxes the categorical with Gumbel-softmax (Jang et al. 2017; Maddison et al. 2017) at a
temperature annealed towards 1/16, and adds KL(q || uniform). At inference the codes are
hard (argmax), so ``encode`` returns code indices (B, h, w) and ``decode`` takes them.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from latentzoo.core.contract.interfaces import Decoder, Encoder
from latentzoo.core.nn.layers import ConvDecoder, ConvEncoder


class DiscreteVAE(nn.Module, Encoder, Decoder):
    def __init__(
        self,
        *,
        in_channels: int = 1,
        out_channels: int = 1,
        block_out_channels: list[int] | tuple[int, ...] = (32, 64, 64),
        layers_per_block: int = 1,
        num_tokens: int = 128,
        codebook_dim: int = 32,
        norm_num_groups: int = 16,
        sample_size: int = 32,
        mid_block_add_attention: bool = True,
    ) -> None:
        super().__init__()
        widths = list(block_out_channels)
        self.image_channels, self.sample_size = in_channels, sample_size
        self.num_tokens, self.factor = num_tokens, 2 ** (len(widths) - 1)
        self.encoder = ConvEncoder(in_channels, num_tokens, widths, layers_per_block, norm_num_groups, mid_block_add_attention)
        self.codebook = nn.Embedding(num_tokens, codebook_dim)
        self.decoder = ConvDecoder(codebook_dim, out_channels, widths, layers_per_block, norm_num_groups, mid_block_add_attention)

    def shape_fields(self) -> dict[str, Any]:
        return {"kind": "discrete", "channels": 1, "factor": self.factor, "codebook_size": self.num_tokens}

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder(images)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.logits(images).argmax(1)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        if latents.is_floating_point():
            raise ValueError("the dVAE decoder takes code indices (B, h, w) of integer dtype")
        return self.decoder(self.codebook(latents.long()).permute(0, 3, 1, 2))

    def forward(
        self, images: torch.Tensor, temperature: float, uniform: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training pass: reconstruction from relaxed codes, KL(q || uniform) per image, and the hard codes.

        ``uniform``: U(0, 1) noise of the logits' shape for the Gumbel draw (drawn here when not given).
        """
        logits = self.logits(images)
        u = (torch.rand_like(logits) if uniform is None else uniform).clamp(1e-10, 1.0 - 1e-10)
        soft = F.softmax((logits - torch.log(-torch.log(u))) / temperature, dim=1)  # Gumbel-softmax sample
        z = torch.einsum("bkhw,kd->bdhw", soft, self.codebook.weight)
        log_q = F.log_softmax(logits, dim=1)
        kl = (log_q.exp() * (log_q + math.log(self.num_tokens))).sum(1).flatten(1).sum(1)  # KL to the uniform prior
        return self.decoder(z), kl, logits.argmax(1)
