"""A small UNet velocity field for a rectified flow, built from latentzoo's core layers.

v_theta(x_t, t) approximates eps - x0 for x_t = (1 - t) x0 + t eps (Liu et al. 2022;
Lipman et al. 2023). Time enters as the sinusoidal embedding of 1000 t (so the familiar
frequencies of a 1000-step denoiser cover t in [0, 1]) added in every residual block.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from latentzoo.core.contract.interfaces import Prior
from latentzoo.core.nn.layers import (
    Attention,
    Downsample2D,
    MidBlock2D,
    ResnetBlock2D,
    TimestepEmbedding,
    Upsample2D,
    group_norm,
    timestep_embedding,
)

TIME_SCALE = 1000.0  # the embedding sees 1000 t


class _Level(nn.Module):
    """Residual blocks (each optionally followed by self-attention) at one resolution."""

    def __init__(self, cins: list[int], cout: int, *, temb: int, groups: int, attention: bool, head_dim: int, dropout: float) -> None:
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock2D(c, cout, temb_channels=temb, groups=groups, eps=1e-5, dropout=dropout) for c in cins])
        self.attentions = nn.ModuleList([Attention(cout, head_dim=head_dim, groups=groups, eps=1e-5) for _ in cins] if attention else [])


class FlowUNetPrior(nn.Module, Prior):
    """UNet over (C, H, W) latents predicting the flow velocity; attention at the levels in ``attention_levels``."""

    kind: ClassVar[str] = "flow"

    def __init__(
        self,
        *,
        sample_size: int = 8,
        in_channels: int = 3,
        block_out_channels: list[int] | tuple[int, ...] = (64, 128),
        layers_per_block: int = 2,
        attention_levels: list[int] | tuple[int, ...] = (1,),
        attention_head_dim: int = 32,
        norm_num_groups: int = 16,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        widths = list(block_out_channels)
        if not widths or any(int(w) < 1 for w in widths) or layers_per_block < 1:
            raise ValueError("block_out_channels needs positive widths and layers_per_block must be >= 1")
        if sample_size % 2 ** (len(widths) - 1):
            raise ValueError(f"sample_size {sample_size} must be divisible by 2^{len(widths) - 1} for {len(widths)} levels")
        self.sample_size, self.in_channels = sample_size, in_channels
        self.num_classes = None  # unconditional
        temb = 4 * widths[0]
        kw = dict(temb=temb, groups=norm_num_groups, head_dim=attention_head_dim, dropout=dropout)
        self.conv_in = nn.Conv2d(in_channels, widths[0], 3, padding=1)
        self.time_embedding = TimestepEmbedding(widths[0], temb)
        skips = [widths[0]]
        self.down = nn.ModuleList()
        self.downsamplers = nn.ModuleList()
        cin = widths[0]
        for i, w in enumerate(widths):
            self.down.append(_Level([cin] + [w] * (layers_per_block - 1), w, attention=i in attention_levels, **kw))
            skips += [w] * layers_per_block
            cin = w
            if i < len(widths) - 1:
                self.downsamplers.append(Downsample2D(w, asymmetric_pad=False))
                skips.append(w)
        self.mid = MidBlock2D(
            widths[-1], temb_channels=temb, groups=norm_num_groups, eps=1e-5, head_dim=attention_head_dim, dropout=dropout
        )
        self.up = nn.ModuleList()
        self.upsamplers = nn.ModuleList()
        for i in reversed(range(len(widths))):
            w = widths[i]
            cins = []
            for _ in range(layers_per_block + 1):
                cins.append(cin + skips.pop())
                cin = w
            self.up.append(_Level(cins, w, attention=i in attention_levels, **kw))
            if i > 0:
                self.upsamplers.append(Upsample2D(w))
        self.norm_out = group_norm(widths[0], norm_num_groups, 1e-5)
        self.conv_out = nn.Conv2d(widths[0], in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)  # start as v = 0 (common for diffusion UNets; stabilises early steps)
        nn.init.zeros_(self.conv_out.bias)

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return (self.in_channels, self.sample_size, self.sample_size)

    def forward(self, x: torch.Tensor, t: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        """The velocity at (x_t, t), t in [0, 1] of shape (B,) or a scalar."""
        t = t.reshape(-1).expand(x.shape[0]) if t.numel() == 1 else t
        emb = self.time_embedding(timestep_embedding(TIME_SCALE * t, self.conv_in.out_channels).to(x.dtype))
        h = self.conv_in(x)
        skips = [h]
        for i, level in enumerate(self.down):
            for j, resnet in enumerate(level.resnets):
                h = resnet(h, emb)
                if level.attentions:
                    h = level.attentions[j](h)
                skips.append(h)
            if i < len(self.downsamplers):
                h = self.downsamplers[i](h)
                skips.append(h)
        h = self.mid(h, emb)
        for i, level in enumerate(self.up):
            for j, resnet in enumerate(level.resnets):
                h = resnet(torch.cat([h, skips.pop()], dim=1), emb)
                if level.attentions:
                    h = level.attentions[j](h)
            if i < len(self.upsamplers):
                h = self.upsamplers[i](h)
        return self.conv_out(F.silu(self.norm_out(h)))
