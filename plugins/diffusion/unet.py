"""UNet denoiser prior (Ho et al. 2020; Dhariwal & Nichol 2021).

Parameter names and block semantics match diffusers' ``UNet2DModel`` (``conv_in``,
``time_embedding``, ``class_embedding``, ``down_blocks``, ``mid_block``, ``up_blocks``,
``conv_norm_out``, ``conv_out``) so its checkpoints load directly. The prior adds what a
denoiser must state to be used correctly: ``prediction_type``, ``num_train_timesteps`` and the
``training_schedule`` it was trained with (required: its ``noise_schedule``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from latentzoo.core.contract.denoising import PREDICTION_TYPES, NoiseSchedule
from latentzoo.core.contract.errors import LatentzooError
from latentzoo.core.contract.interfaces import DenoiserPrior
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

DOWN_TYPES = ("DownBlock2D", "AttnDownBlock2D")
UP_TYPES = ("UpBlock2D", "AttnUpBlock2D")


class _DownBlock(nn.Module):
    def __init__(
        self,
        cin: int,
        cout: int,
        *,
        layers: int,
        temb: int,
        groups: int,
        eps: float,
        attention: bool,
        head_dim: int | None,
        downsample: bool,
        dropout: float,
        asymmetric_pad: bool = False,
    ) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(
            [
                ResnetBlock2D(cin if j == 0 else cout, cout, temb_channels=temb, groups=groups, eps=eps, dropout=dropout)
                for j in range(layers)
            ]
        )
        self.attentions = nn.ModuleList(
            [Attention(cout, head_dim=head_dim or cout, groups=groups, eps=eps) for _ in range(layers)] if attention else []
        )
        self.downsamplers = nn.ModuleList([Downsample2D(cout, asymmetric_pad=asymmetric_pad)] if downsample else [])

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        skips = []
        for j, resnet in enumerate(self.resnets):
            x = resnet(x, temb)
            if self.attentions:
                x = self.attentions[j](x)
            skips.append(x)
        for down in self.downsamplers:
            x = down(x)
            skips.append(x)
        return x, skips


class _UpBlock(nn.Module):
    def __init__(
        self,
        cin: int,
        cprev: int,
        cout: int,
        *,
        layers: int,
        temb: int,
        groups: int,
        eps: float,
        attention: bool,
        head_dim: int | None,
        upsample: bool,
        dropout: float,
    ) -> None:
        super().__init__()
        resnets = []
        for j in range(layers):
            skip = cin if j == layers - 1 else cout
            resnets.append(
                ResnetBlock2D((cprev if j == 0 else cout) + skip, cout, temb_channels=temb, groups=groups, eps=eps, dropout=dropout)
            )
        self.resnets = nn.ModuleList(resnets)
        self.attentions = nn.ModuleList(
            [Attention(cout, head_dim=head_dim or cout, groups=groups, eps=eps) for _ in range(layers)] if attention else []
        )
        self.upsamplers = nn.ModuleList([Upsample2D(cout)] if upsample else [])

    def forward(self, x: torch.Tensor, skips: list[torch.Tensor], temb: torch.Tensor) -> torch.Tensor:
        for j, resnet in enumerate(self.resnets):
            x = resnet(torch.cat([x, skips.pop()], dim=1), temb)
            if self.attentions:
                x = self.attentions[j](x)
        for up in self.upsamplers:
            x = up(x)
        return x


class UNetPrior(nn.Module, DenoiserPrior):
    """A UNet over (C, H, W) latents: sinusoidal time embedding, residual blocks, attention at low resolution."""

    def __init__(
        self,
        *,
        sample_size: int = 8,
        in_channels: int = 3,
        out_channels: int = 3,
        block_out_channels: list[int] | tuple[int, ...] = (32, 64, 64),
        layers_per_block: int = 2,
        down_block_types: list[str] | tuple[str, ...] = ("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
        up_block_types: list[str] | tuple[str, ...] = ("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        attention_head_dim: int | None = 8,
        norm_num_groups: int = 32,
        norm_eps: float = 1e-5,
        num_class_embeds: int | None = None,
        flip_sin_to_cos: bool = True,
        freq_shift: int = 0,
        dropout: float = 0.0,
        add_attention: bool = True,
        center_input_sample: bool = False,
        downsample_padding: int = 1,
        prediction_type: str = "epsilon",
        num_train_timesteps: int = 1000,
        training_schedule: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        widths = list(block_out_channels)
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, not {prediction_type!r}")
        if len(down_block_types) != len(widths) or len(up_block_types) != len(widths):
            raise ValueError("down_block_types and up_block_types need one entry per block_out_channels")
        for t in down_block_types:
            if t not in DOWN_TYPES:
                raise ValueError(f"unsupported down block {t!r}; supported: {DOWN_TYPES}")
        for t in up_block_types:
            if t not in UP_TYPES:
                raise ValueError(f"unsupported up block {t!r}; supported: {UP_TYPES}")
        if downsample_padding not in (0, 1):
            raise ValueError(f"downsample_padding must be 0 (asymmetric (0,1,0,1) pad, as google/ddpm-*) or 1, not {downsample_padding!r}")
        self.prediction_type = prediction_type
        self.num_train_timesteps = num_train_timesteps
        self.num_classes = num_class_embeds
        if training_schedule is None:
            raise ValueError(
                "UNetPrior needs training_schedule (beta_schedule, beta_start, beta_end: the schedule it was trained with); add it to its config"
            )
        try:
            self._noise_schedule = NoiseSchedule.from_config({"num_train_timesteps": num_train_timesteps, **training_schedule})
        except LatentzooError as exc:
            raise ValueError(str(exc)) from exc
        if self._noise_schedule.num_train_timesteps != num_train_timesteps:
            raise ValueError(
                f"training_schedule has {self._noise_schedule.num_train_timesteps} timesteps but num_train_timesteps is {num_train_timesteps}"
            )
        self.training_schedule = training_schedule
        self.sample_size, self.in_channels = sample_size, in_channels
        self.center_input_sample = center_input_sample
        self.flip_sin_to_cos, self.freq_shift = flip_sin_to_cos, freq_shift
        temb = widths[0] * 4
        common = dict(temb=temb, groups=norm_num_groups, eps=norm_eps, head_dim=attention_head_dim, dropout=dropout)

        self.conv_in = nn.Conv2d(in_channels, widths[0], 3, padding=1)
        self.time_embedding = TimestepEmbedding(widths[0], temb)
        self.class_embedding = nn.Embedding(num_class_embeds, temb) if num_class_embeds else None
        self.down_blocks = nn.ModuleList()
        cin = widths[0]
        for i, (cout, kind) in enumerate(zip(widths, down_block_types, strict=True)):
            last = i == len(widths) - 1
            self.down_blocks.append(
                _DownBlock(
                    cin,
                    cout,
                    layers=layers_per_block,
                    attention=kind.startswith("Attn"),
                    downsample=not last,
                    asymmetric_pad=downsample_padding == 0,
                    **common,
                )
            )
            cin = cout
        self.mid_block = MidBlock2D(
            widths[-1],
            temb_channels=temb,
            groups=norm_num_groups,
            eps=norm_eps,
            attention=add_attention,
            head_dim=attention_head_dim or widths[-1],
            dropout=dropout,
        )
        self.up_blocks = nn.ModuleList()
        rev = list(reversed(widths))
        cprev = rev[0]
        for i, (cout, kind) in enumerate(zip(rev, up_block_types, strict=True)):
            skip_in = rev[min(i + 1, len(rev) - 1)]
            last = i == len(rev) - 1
            self.up_blocks.append(
                _UpBlock(skip_in, cprev, cout, layers=layers_per_block + 1, attention=kind.startswith("Attn"), upsample=not last, **common)
            )
            cprev = cout
        self.conv_norm_out = group_norm(widths[0], norm_num_groups, norm_eps)
        self.conv_out = nn.Conv2d(widths[0], out_channels, 3, padding=1)

    @property
    def noise_schedule(self) -> NoiseSchedule:
        return self._noise_schedule

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return (self.in_channels, self.sample_size, self.sample_size)

    def forward(self, sample: torch.Tensor, timesteps: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.center_input_sample:
            sample = 2 * sample - 1.0
        timesteps = timesteps.expand(sample.shape[0]) if timesteps.ndim else timesteps.reshape(1).expand(sample.shape[0])
        emb = timestep_embedding(timesteps, self.conv_in.out_channels, flip_sin_to_cos=self.flip_sin_to_cos, freq_shift=self.freq_shift)
        emb = self.time_embedding(emb.to(sample.dtype))
        if self.class_embedding is not None:
            if class_labels is None:
                raise ValueError("this prior is class-conditional: pass class labels")
            emb = emb + self.class_embedding(class_labels)
        x = self.conv_in(sample)
        skips = [x]
        for block in self.down_blocks:
            x, block_skips = block(x, emb)
            skips.extend(block_skips)
        x = self.mid_block(x, emb)
        for block in self.up_blocks:
            x = block(x, skips, emb)
        return self.conv_out(F.silu(self.conv_norm_out(x)))
