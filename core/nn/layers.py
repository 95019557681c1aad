"""Building blocks shared by the autoencoder and UNet families (imports torch).

Module and parameter names follow diffusers' ``ResnetBlock2D``, ``Attention``,
``Downsample2D``, ``Upsample2D`` and ``TimestepEmbedding`` so that published ``VQModel``,
``AutoencoderKL`` and ``UNet2DModel`` state dicts load onto these modules key for key:
one implementation, no conversion layer of modules.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def group_norm(channels: int, groups: int, eps: float) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=min(groups, channels), num_channels=channels, eps=eps, affine=True)


class ResnetBlock2D(nn.Module):
    """GroupNorm-SiLU-conv twice with a residual; optional additive time embedding (DDPM, Ho et al. 2020)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        temb_channels: int | None = None,
        groups: int = 32,
        eps: float = 1e-6,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.norm1 = group_norm(in_channels, groups, eps)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.time_emb_proj = nn.Linear(temb_channels, out_channels) if temb_channels else None
        self.norm2 = group_norm(out_channels, groups, eps)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        # At inference the activations and sums happen in place, on tensors made just above: the
        # same values, one full-resolution buffer fewer per op (a VAE decode at 256x256 peaks lower).
        # Autograd needs the inputs of SiLU, so training keeps the out-of-place ops.
        inplace = not torch.is_grad_enabled()
        h = self.conv1(F.silu(self.norm1(x), inplace=inplace))
        if self.time_emb_proj is not None and temb is not None:
            t = self.time_emb_proj(F.silu(temb))[:, :, None, None]
            h = h.add_(t) if inplace else h + t
        h = self.conv2(self.dropout(F.silu(self.norm2(h), inplace=inplace)))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        return h.add_(x) if inplace else x + h


class Attention(nn.Module):
    """Spatial self-attention with a residual (diffusers ``Attention`` with a group norm)."""

    def __init__(self, channels: int, *, head_dim: int | None = None, groups: int = 32, eps: float = 1e-6) -> None:
        super().__init__()
        self.heads = 1 if head_dim is None else max(1, channels // head_dim)
        self.group_norm = group_norm(channels, groups, eps)
        self.to_q = nn.Linear(channels, channels)
        self.to_k = nn.Linear(channels, channels)
        self.to_v = nn.Linear(channels, channels)
        self.to_out = nn.ModuleList([nn.Linear(channels, channels), nn.Dropout(0.0)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        y = self.group_norm(x).reshape(b, c, h * w).transpose(1, 2)
        q, k, v = (proj(y).reshape(b, h * w, self.heads, c // self.heads).transpose(1, 2) for proj in (self.to_q, self.to_k, self.to_v))
        y = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, h * w, c)
        y = self.to_out[0](y).transpose(1, 2).reshape(b, c, h, w)
        return x + y


class Downsample2D(nn.Module):
    """Strided 3x3 conv. ``asymmetric_pad`` is the autoencoders' (0,1,0,1) pad; UNets pad 1."""

    def __init__(self, channels: int, *, asymmetric_pad: bool) -> None:
        super().__init__()
        self.asymmetric_pad = asymmetric_pad
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0 if asymmetric_pad else 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.asymmetric_pad:
            x = F.pad(x, (0, 1, 0, 1))
        return self.conv(x)


class Upsample2D(nn.Module):
    """Nearest-neighbour x2 then a 3x3 conv (avoids the checkerboard of transposed convs)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def timestep_embedding(
    timesteps: torch.Tensor, dim: int, *, flip_sin_to_cos: bool = True, freq_shift: float = 0.0, max_period: float = 10000.0
) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps (Vaswani et al. 2017, sec. 3.5)."""
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / (half - freq_shift)
    args = timesteps.float()[:, None] * torch.exp(exponent)[None, :]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=-1)
    if flip_sin_to_cos:
        emb = torch.cat([emb[:, half:], emb[:, :half]], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class TimestepEmbedding(nn.Module):
    """Linear-SiLU-Linear over the sinusoidal embedding."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(in_channels, out_channels)
        self.linear_2 = nn.Linear(out_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


class MidBlock2D(nn.Module):
    """resnet - attention - resnet at the lowest resolution (diffusers ``UNetMidBlock2D``)."""

    def __init__(
        self,
        channels: int,
        *,
        temb_channels: int | None,
        groups: int,
        eps: float,
        attention: bool = True,
        head_dim: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        kw = dict(temb_channels=temb_channels, groups=groups, eps=eps, dropout=dropout)
        self.resnets = nn.ModuleList([ResnetBlock2D(channels, channels, **kw), ResnetBlock2D(channels, channels, **kw)])
        self.attentions = nn.ModuleList([Attention(channels, head_dim=head_dim, groups=groups, eps=eps)] if attention else [])

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        x = self.resnets[0](x, temb)
        for attn in self.attentions:
            x = attn(x)
        return self.resnets[1](x, temb)


# --- autoencoder stacks (diffusers Encoder / Decoder), shared by VQ-GAN and KL-VAE -------------

AE_EPS = 1e-6


class _DownEncoderBlock(nn.Module):
    def __init__(self, cin: int, cout: int, layers: int, groups: int, downsample: bool) -> None:
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock2D(cin if j == 0 else cout, cout, groups=groups, eps=AE_EPS) for j in range(layers)])
        self.downsamplers = nn.ModuleList([Downsample2D(cout, asymmetric_pad=True)] if downsample else [])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in [*self.resnets, *self.downsamplers]:
            x = block(x)
        return x


class _UpDecoderBlock(nn.Module):
    def __init__(self, cin: int, cout: int, layers: int, groups: int, upsample: bool) -> None:
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock2D(cin if j == 0 else cout, cout, groups=groups, eps=AE_EPS) for j in range(layers)])
        self.upsamplers = nn.ModuleList([Upsample2D(cout)] if upsample else [])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in [*self.resnets, *self.upsamplers]:
            x = block(x)
        return x


class ConvEncoder(nn.Module):
    """conv_in, residual down blocks, mid block with attention, norm-SiLU-conv_out."""

    def __init__(self, in_channels: int, out_channels: int, widths: list[int], layers: int, groups: int, mid_attention: bool) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, widths[0], 3, padding=1)
        chans = [widths[0], *widths]
        self.down_blocks = nn.ModuleList(
            [_DownEncoderBlock(chans[i], chans[i + 1], layers, groups, downsample=i < len(widths) - 1) for i in range(len(widths))]
        )
        self.mid_block = MidBlock2D(widths[-1], temb_channels=None, groups=groups, eps=AE_EPS, attention=mid_attention)
        self.conv_norm_out = group_norm(widths[-1], groups, AE_EPS)
        self.conv_out = nn.Conv2d(widths[-1], out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        for block in self.down_blocks:
            x = block(x)
        x = self.mid_block(x)
        return self.conv_out(F.silu(self.conv_norm_out(x)))


class ConvDecoder(nn.Module):
    """Mirror of ConvEncoder; each up block has one more resnet than the encoder's (as diffusers)."""

    def __init__(self, in_channels: int, out_channels: int, widths: list[int], layers: int, groups: int, mid_attention: bool) -> None:
        super().__init__()
        rev = list(reversed(widths))
        self.conv_in = nn.Conv2d(in_channels, rev[0], 3, padding=1)
        self.mid_block = MidBlock2D(rev[0], temb_channels=None, groups=groups, eps=AE_EPS, attention=mid_attention)
        chans = [rev[0], *rev]
        self.up_blocks = nn.ModuleList(
            [_UpDecoderBlock(chans[i], chans[i + 1], layers + 1, groups, upsample=i < len(rev) - 1) for i in range(len(rev))]
        )
        self.conv_norm_out = group_norm(widths[0], groups, AE_EPS)
        self.conv_out = nn.Conv2d(widths[0], out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.mid_block(self.conv_in(z))
        for block in self.up_blocks:
            x = block(x)
        return self.conv_out(F.silu(self.conv_norm_out(x)))
