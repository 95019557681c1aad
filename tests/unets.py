"""Small models shared by the sampler tests."""

from __future__ import annotations

from typing import Any

import torch

from latentzoo.core.contract.denoising import NoiseSchedule
from latentzoo.plugins.diffusion.unet import UNetPrior

# (beta_schedule, beta_start, beta_end) as used by shipped and converted models
BETAS = {"linear": (0.0001, 0.02), "scaled_linear": (0.00085, 0.012), "squaredcos_cap_v2": (None, None), "sigmoid": (0.0001, 0.02)}


def training_schedule(name: str = "scaled_linear", **kw: Any) -> dict[str, Any]:
    """A training_schedule config for beta schedule ``name``."""
    start, end = BETAS[name]
    cfg: dict[str, Any] = {"beta_schedule": name}
    if start is not None:
        cfg.update(beta_start=start, beta_end=end)
    cfg.update(kw)
    return cfg


def noise_schedule(name: str = "scaled_linear", num_train_timesteps: int = 1000, **kw: Any) -> NoiseSchedule:
    return NoiseSchedule.from_config({"num_train_timesteps": num_train_timesteps, **training_schedule(name, **kw)})


class OnSchedule:
    """Stands in for a prior where a scheduler only needs its noise_schedule."""

    def __init__(self, schedule: NoiseSchedule) -> None:
        self.noise_schedule = schedule


def tiny_unet(seed: int = 0, schedule: str = "scaled_linear", zsnr: bool = False, **kw) -> UNetPrior:
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
        training_schedule=training_schedule(schedule, **({"rescale_betas_zero_snr": True} if zsnr else {})),
    )
    cfg.update(kw)
    return UNetPrior(**cfg).eval()
