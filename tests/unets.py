"""Small models shared by the sampler tests."""

from __future__ import annotations

import torch

from latentzoo.plugins.diffusion.unet import UNetPrior


def tiny_unet(seed: int = 0, **kw) -> UNetPrior:
    """A seeded 2-channel 4x4 UNet prior, small enough for hundreds of sampler runs."""
    torch.manual_seed(seed)
    cfg = dict(
        sample_size=4,
        in_channels=2,
        out_channels=2,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=8,
        norm_num_groups=4,
    )
    cfg.update(kw)
    return UNetPrior(**cfg).eval()
