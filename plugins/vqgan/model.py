"""VQ-VAE / VQ-GAN autoencoder (van den Oord et al. 2017; Esser et al. 2021).

The module tree and parameter names match diffusers' ``VQModel`` (``encoder.*``,
``quant_conv``, ``quantize.embedding``, ``post_quant_conv``, ``decoder.*``), so its
checkpoints load onto this class directly.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from latentzoo.core.contract.interfaces import Decoder, Encoder
from latentzoo.core.nn.layers import ConvDecoder, ConvEncoder
from latentzoo.core.runtime.distributed import all_gather_cat, all_reduce_sum, broadcast


class VectorQuantizer(nn.Module):
    """Nearest-codebook quantisation with straight-through gradients.

    Loss (van den Oord et al. 2017, eq. 3): ``||sg[z_e] - e||^2 + beta * ||z_e - sg[e]||^2``:
    the commitment weight ``beta`` multiplies the *encoder* term. taming's
    ``VectorQuantizer2(legacy=True)`` puts beta on the codebook term instead; this is the
    paper's version (taming's ``legacy=False``).

    Dead codes: the codebook is initialised from encoder outputs on the first training batch,
    and a code whose exponential-moving-average usage falls below ``dead_threshold`` is
    restarted at a random encoder output from the current batch (Dhariwal et al. 2020,
    "Jukebox", sec. 3.3). The usage statistics are training-only buffers, not saved.
    Under data-parallel training, usage is counted over all ranks and rank 0 picks the
    restarts from the gathered global batch and broadcasts the codebook, so every rank
    keeps the same codebook (and the same one a single process would have).
    """

    def __init__(self, num_codes: int, dim: int, *, beta: float = 0.25, usage_decay: float = 0.99, dead_threshold: float = 0.5) -> None:
        super().__init__()
        self.num_codes, self.dim, self.beta = num_codes, dim, beta
        self.usage_decay, self.dead_threshold = usage_decay, dead_threshold
        self.embedding = nn.Embedding(num_codes, dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / num_codes, 1.0 / num_codes)
        self.register_buffer("usage", torch.ones(num_codes), persistent=False)
        self.register_buffer("initialised", torch.tensor(False), persistent=False)

    def indices(self, z: torch.Tensor) -> torch.Tensor:
        """Code index per position of z (B, D, H, W) -> (B, H, W)."""
        flat = z.permute(0, 2, 3, 1).reshape(-1, self.dim)
        codebook = self.embedding.weight
        # ||z - e||^2 = ||z||^2 - 2 z.e + ||e||^2; ||z||^2 does not change the argmin.
        dist = codebook.pow(2).sum(1)[None, :] - 2.0 * flat @ codebook.t()
        return dist.argmin(1).reshape(z.shape[0], z.shape[2], z.shape[3])

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Code indices (B, H, W) -> quantised latents (B, D, H, W)."""
        return self.embedding(indices).permute(0, 3, 1, 2)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, float]]:
        if self.training and not bool(self.initialised):
            self._restart(torch.ones(self.num_codes, dtype=torch.bool, device=z.device), z)
            self.initialised.fill_(True)
        idx = self.indices(z)
        z_q = self.lookup(idx)
        loss = F.mse_loss(z_q, z.detach()) + self.beta * F.mse_loss(z, z_q.detach())
        counts = torch.bincount(idx.flatten(), minlength=self.num_codes).float()
        probs = counts / counts.sum()
        stats = {
            "perplexity": float(torch.exp(-(probs * torch.log(probs + 1e-10)).sum())),
            "usage": float((counts > 0).float().mean()),
        }
        if self.training:
            self._track_usage(counts, z)
        z_q = z + (z_q - z).detach()  # straight-through estimator
        return z_q, loss, idx, stats

    @torch.no_grad()
    def _track_usage(self, counts: torch.Tensor, z: torch.Tensor) -> None:
        counts = all_reduce_sum(counts.clone())
        expected = counts.sum() / self.num_codes
        self.usage.mul_(self.usage_decay).add_(counts / expected, alpha=1 - self.usage_decay)
        dead = self.usage < self.dead_threshold
        if dead.any():
            self._restart(dead, z)

    @torch.no_grad()
    def _restart(self, which: torch.Tensor, z: torch.Tensor) -> None:
        flat = all_gather_cat(z.detach()).permute(0, 2, 3, 1).reshape(-1, self.dim)
        n = int(which.sum())
        pick = torch.randint(0, flat.shape[0], (n,), device=z.device)
        self.embedding.weight.data[which] = flat[pick].to(self.embedding.weight.dtype)
        broadcast(self.embedding.weight.data)
        self.usage[which] = 1.0


class VQAutoencoder(nn.Module, Encoder, Decoder):
    """Encoder and decoder of one VQ space; ``encode`` gives pre-quantisation latents.

    ``decode`` accepts continuous latents (B, D, h, w), which it quantises first, or code
    indices (B, h, w) of integer dtype, which it looks up.
    """

    def __init__(
        self,
        *,
        in_channels: int = 1,
        out_channels: int = 1,
        block_out_channels: list[int] | tuple[int, ...] = (32, 64, 64),
        layers_per_block: int = 1,
        latent_channels: int = 3,
        num_vq_embeddings: int = 128,
        vq_embed_dim: int | None = None,
        norm_num_groups: int = 32,
        sample_size: int = 32,
        mid_block_add_attention: bool = True,
        commitment_weight: float = 0.25,
        dead_code_threshold: float = 0.5,
    ) -> None:
        super().__init__()
        widths = list(block_out_channels)
        embed_dim = vq_embed_dim or latent_channels
        self.image_channels = in_channels
        self.sample_size = sample_size
        self.factor = 2 ** (len(widths) - 1)
        self.embed_dim = embed_dim
        self.codebook_size = num_vq_embeddings
        self.encoder = ConvEncoder(in_channels, latent_channels, widths, layers_per_block, norm_num_groups, mid_block_add_attention)
        self.quant_conv = nn.Conv2d(latent_channels, embed_dim, 1)
        self.quantize = VectorQuantizer(num_vq_embeddings, embed_dim, beta=commitment_weight, dead_threshold=dead_code_threshold)
        self.post_quant_conv = nn.Conv2d(embed_dim, latent_channels, 1)
        self.decoder = ConvDecoder(latent_channels, out_channels, widths, layers_per_block, norm_num_groups, mid_block_add_attention)

    def shape_fields(self) -> dict[str, Any]:
        """The latent-space fields this architecture determines (checked against the registry)."""
        return {"kind": "continuous", "channels": self.embed_dim, "factor": self.factor, "codebook_size": self.codebook_size}

    @property
    def accepted_spaces(self):
        return (self.latent_space, self.latent_space.as_discrete())

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.quant_conv(self.encoder(images))

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        if latents.dtype in (torch.int64, torch.int32, torch.int16, torch.uint8):
            z_q = self.quantize.lookup(latents.long())
        else:
            z_q = self.quantize.lookup(self.quantize.indices(latents))
        return self.decoder(self.post_quant_conv(z_q))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
        """Training pass: reconstruction, VQ loss and codebook statistics."""
        z_q, vq_loss, _, stats = self.quantize(self.encode(images))
        return self.decoder(self.post_quant_conv(z_q)), vq_loss, stats

    @property
    def last_layer(self) -> torch.Tensor:
        """Weight used for the VQ-GAN adaptive weight (Esser et al. 2021, eq. 7)."""
        return self.decoder.conv_out.weight
