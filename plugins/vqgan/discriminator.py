"""PatchGAN discriminator and the VQ-GAN adversarial losses (Isola et al. 2017; Esser et al. 2021)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from latentzoo.core.runtime.distributed import all_reduce_mean


class PatchDiscriminator(nn.Module):
    """Classifies overlapping patches as real or fake.

    GroupNorm replaces pix2pix's BatchNorm so the discriminator behaves the same at any
    batch size and under data-parallel training without synchronised statistics.
    """

    def __init__(self, in_channels: int = 1, width: int = 32, n_layers: int = 2) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 4, 2, 1), nn.LeakyReLU(0.2)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < n_layers else 1
            layers += [nn.Conv2d(width * prev, width * mult, 4, stride, 1, bias=False), nn.GroupNorm(8, width * mult), nn.LeakyReLU(0.2)]
        layers.append(nn.Conv2d(width * mult, 1, 4, 1, 1))
        self.main = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """Hinge loss for the discriminator (Lim & Ye 2017)."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def adaptive_weight(rec_loss: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor, max_weight: float = 1e4) -> torch.Tensor:
    """lambda = ||grad_GL L_rec|| / (||grad_GL L_GAN|| + 1e-4) (Esser et al. 2021, eq. 7).

    Under data-parallel training the two gradients are averaged over ranks first, so lambda
    is that of the global batch, as on one process.
    """
    rec_grad = all_reduce_mean(torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0])
    g_grad = all_reduce_mean(torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0])
    return (rec_grad.norm() / (g_grad.norm() + 1e-4)).clamp(0.0, max_weight).detach()
