"""Cross-attention UNet denoiser prior (Rombach et al. 2022, "High-Resolution Image Synthesis with Latent Diffusion Models", sec. 3.3).

The UNet attends to a conditioner's per-token states (``encoder_hidden_states``, (B, L, W))
through transformer blocks: self-attention, cross-attention (queries from the image, keys and
values from the tokens) and a GEGLU feed-forward (Shazeer 2020), each pre-norm with a residual.
Parameter names and block semantics match diffusers' ``UNet2DConditionModel``
(``CrossAttnDownBlock2D`` / ``CrossAttnUpBlock2D`` / ``UNetMidBlock2DCrossAttn``,
``Transformer2DModel`` with ``BasicTransformerBlock``), so its state dicts load key for key.

As in diffusers, ``attention_head_dim`` of a cross-attention block is the *number of heads*
(the SD 1.x config's ``8`` means 8 heads); ``num_attention_heads`` overrides it when given.

SDXL (Podell et al. 2023, sec. 2.2) adds ``addition_embed_type: text_time``: the pooled text
embedding and the size conditioning (``time_ids``: original size, crop top-left and target
size, or for the refiner original size, crop and aesthetic score), each number embedded
sinusoidally in ``addition_time_embed_dim`` channels, are concatenated and mapped by
``add_embedding`` into the timestep embedding. Such a prior states ``added_conditioning``
(``pooled`` and ``time_ids``), which the Denoiser passes from the conditioning it is given.
Transformer depth may differ per level (``transformer_layers_per_block`` a list; the middle
block takes the last level's depth, the up path the reversed list).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from latentzoo.core.contract.denoising import PREDICTION_TYPES, NoiseSchedule
from latentzoo.core.contract.errors import LatentzooError
from latentzoo.core.contract.interfaces import DenoiserPrior
from latentzoo.core.nn.layers import Downsample2D, ResnetBlock2D, TimestepEmbedding, Upsample2D, group_norm, timestep_embedding

DOWN_TYPES = ("DownBlock2D", "CrossAttnDownBlock2D")
UP_TYPES = ("UpBlock2D", "CrossAttnUpBlock2D")
MID_TYPES = ("UNetMidBlock2DCrossAttn",)


class CrossAttention(nn.Module):
    """Multi-head attention, queries from ``x``, keys and values from ``context`` (``x`` itself for self-attention)."""

    def __init__(self, dim: int, heads: int, head_dim: int, context_dim: int | None = None) -> None:
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim or dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim or dim, inner, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(inner, dim), nn.Dropout(0.0)])

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
        context = x if context is None else context
        b = x.shape[0]
        q, k, v = (t.reshape(b, t.shape[1], self.heads, -1).transpose(1, 2) for t in (self.to_q(x), self.to_k(context), self.to_v(context)))
        # mask: (B, L) True for real tokens; padded tokens get no attention weight.
        attn_mask = None if mask is None else mask[:, None, None, :].to(torch.bool)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # softmax(q k^T / sqrt(d)) v
        return self.to_out[0](y.transpose(1, 2).reshape(b, x.shape[1], -1))


class GEGLU(nn.Module):
    """x W -> (a, g); a * gelu(g) (Shazeer 2020, "GLU Variants Improve Transformer", eq. 6)."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, gate = self.proj(x).chunk(2, dim=-1)
        if torch.is_grad_enabled():
            return a * F.gelu(gate)
        # At inference the product goes into gelu's fresh output: the same bytes (a * b == b * a in IEEE
        # arithmetic), one (tokens x 4 dim) buffer fewer at the peak (SDXL at 32x32: 21 MB).
        return F.gelu(gate).mul_(a)


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = nn.ModuleList([GEGLU(dim, dim * mult), nn.Dropout(dropout), nn.Linear(dim * mult, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.net:
            x = layer(x)
        return x


class BasicTransformerBlock(nn.Module):
    """Pre-norm self-attention, cross-attention, feed-forward, each with a residual."""

    def __init__(self, dim: int, heads: int, head_dim: int, context_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = CrossAttention(dim, heads, head_dim)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = CrossAttention(dim, heads, head_dim, context_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, dropout=dropout)

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if torch.is_grad_enabled():
            x = self.attn1(self.norm1(x)) + x
            x = self.attn2(self.norm2(x), context, mask) + x
            return self.ff(self.norm3(x)) + x
        # Inference: each residual sum goes into the branch's fresh output (the same bytes, one buffer fewer).
        x = self.attn1(self.norm1(x)).add_(x)
        x = self.attn2(self.norm2(x), context, mask).add_(x)
        return self.ff(self.norm3(x)).add_(x)


class Transformer2DModel(nn.Module):
    """GroupNorm, project to tokens (1x1 conv or linear), transformer blocks, project back, residual."""

    def __init__(
        self, channels: int, heads: int, *, context_dim: int, groups: int, depth: int = 1, linear: bool = False, dropout: float = 0.0
    ) -> None:
        super().__init__()
        head_dim = channels // heads
        inner = heads * head_dim
        self.linear = linear
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, inner) if linear else nn.Conv2d(channels, inner, 1)
        self.transformer_blocks = nn.ModuleList([BasicTransformerBlock(inner, heads, head_dim, context_dim, dropout) for _ in range(depth)])
        self.proj_out = nn.Linear(inner, channels) if linear else nn.Conv2d(inner, channels, 1)

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, c, h, w = x.shape
        y = self.norm(x)
        if self.linear:
            y = self.proj_in(y.permute(0, 2, 3, 1).reshape(b, h * w, c))
        else:
            y = self.proj_in(y)
            y = y.permute(0, 2, 3, 1).reshape(b, h * w, y.shape[1])
        for block in self.transformer_blocks:
            y = block(y, context, mask)
        # Back to contiguous NCHW: a permuted (channels-last strided) tensor would carry its
        # layout into every following conv, which then re-lays out its weights on each call.
        if self.linear:
            y = self.proj_out(y).reshape(b, h, w, c).permute(0, 3, 1, 2).contiguous()
        else:
            y = self.proj_out(y.reshape(b, h, w, -1).permute(0, 3, 1, 2).contiguous())
        return y + x


class _DownBlock(nn.Module):
    def __init__(
        self, cin: int, cout: int, *, layers: int, temb: int, groups: int, eps: float, heads: int | None, downsample: bool, **tf
    ) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(
            [ResnetBlock2D(cin if j == 0 else cout, cout, temb_channels=temb, groups=groups, eps=eps) for j in range(layers)]
        )
        self.attentions = nn.ModuleList([Transformer2DModel(cout, heads, groups=groups, **tf) for _ in range(layers)] if heads else [])
        self.downsamplers = nn.ModuleList([Downsample2D(cout, asymmetric_pad=False)] if downsample else [])

    def forward(self, x, temb, context, mask) -> tuple[torch.Tensor, list[torch.Tensor]]:
        skips = []
        for j, resnet in enumerate(self.resnets):
            x = resnet(x, temb)
            if self.attentions:
                x = self.attentions[j](x, context, mask)
            skips.append(x)
        for down in self.downsamplers:
            x = down(x)
            skips.append(x)
        return x, skips


class _UpBlock(nn.Module):
    def __init__(
        self, cin: int, cprev: int, cout: int, *, layers: int, temb: int, groups: int, eps: float, heads: int | None, upsample: bool, **tf
    ) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(
            [
                ResnetBlock2D(
                    (cprev if j == 0 else cout) + (cin if j == layers - 1 else cout), cout, temb_channels=temb, groups=groups, eps=eps
                )
                for j in range(layers)
            ]
        )
        self.attentions = nn.ModuleList([Transformer2DModel(cout, heads, groups=groups, **tf) for _ in range(layers)] if heads else [])
        self.upsamplers = nn.ModuleList([Upsample2D(cout)] if upsample else [])

    def forward(self, x, skips, temb, context, mask) -> torch.Tensor:
        for j, resnet in enumerate(self.resnets):
            x = resnet(torch.cat([x, skips.pop()], dim=1), temb)
            if self.attentions:
                x = self.attentions[j](x, context, mask)
        for up in self.upsamplers:
            x = up(x)
        return x


class _MidBlock(nn.Module):
    def __init__(self, channels: int, *, temb: int, groups: int, eps: float, heads: int, **tf) -> None:
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock2D(channels, channels, temb_channels=temb, groups=groups, eps=eps) for _ in range(2)])
        self.attentions = nn.ModuleList([Transformer2DModel(channels, heads, groups=groups, **tf)])

    def forward(self, x, temb, context, mask) -> torch.Tensor:
        x = self.resnets[0](x, temb)
        x = self.attentions[0](x, context, mask)
        return self.resnets[1](x, temb)


SIZE_OPTIONS = ("original_size", "crops_coords_top_left", "target_size", "aesthetic_score", "negative_aesthetic_score")


def _pair(text: Any, name: str, default: tuple[int, int], *, positive: bool) -> tuple[int, int]:
    """``"H,W"`` (or ``HxW``) -> (H, W); sizes must be positive multiples of 8, crop offsets non-negative."""
    if text in (None, ""):
        return default
    parts = str(text).replace("x", ",").split(",")
    try:
        pair = tuple(int(p.strip()) for p in parts)
    except ValueError:
        pair = ()
    ok = len(pair) == 2 and all((v > 0 and v % 8 == 0) if positive else v >= 0 for v in pair)
    if not ok:
        what = "two positive multiples of 8" if positive else "two non-negative integers"
        raise LatentzooError(f"{name} {text!r} must be {what}, as 'HEIGHT,WIDTH' (e.g. 1024,1024)")
    return pair  # type: ignore[return-value]


def _per_block(value: Any, n: int, name: str) -> list[Any]:
    values = list(value) if isinstance(value, (list, tuple)) else [value] * n
    if len(values) != n:
        raise ValueError(f"{name} needs one entry per block_out_channels ({n}), got {len(values)}")
    return values


class UNetCondPrior(nn.Module, DenoiserPrior):
    """A UNet over (C, H, W) latents that cross-attends to a conditioner's tokens (diffusers UNet2DConditionModel layout)."""

    load_by_assignment = True  # every parameter is in its weights file: built on meta, loaded without a copy (core.runtime.build)

    def __init__(
        self,
        *,
        sample_size: int = 8,
        in_channels: int = 4,
        out_channels: int = 4,
        block_out_channels: list[int] | tuple[int, ...] = (320, 640, 1280, 1280),
        layers_per_block: int = 2,
        down_block_types: list[str] | tuple[str, ...] = ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types: list[str] | tuple[str, ...] = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        mid_block_type: str = "UNetMidBlock2DCrossAttn",
        cross_attention_dim: int = 768,
        attention_head_dim: int | list[int] = 8,
        num_attention_heads: int | list[int] | None = None,
        transformer_layers_per_block: int | list[int] = 1,
        use_linear_projection: bool = False,
        upcast_attention: bool = False,
        norm_num_groups: int = 32,
        norm_eps: float = 1e-5,
        num_class_embeds: int | None = None,
        flip_sin_to_cos: bool = True,
        freq_shift: int = 0,
        dropout: float = 0.0,
        addition_embed_type: str | None = None,
        addition_time_embed_dim: int | None = None,
        projection_class_embeddings_input_dim: int | None = None,
        aesthetic_score: bool = False,
        prediction_type: str = "epsilon",
        num_train_timesteps: int = 1000,
        training_schedule: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        widths = list(block_out_channels)
        n = len(widths)
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, not {prediction_type!r}")
        if len(down_block_types) != n or len(up_block_types) != n:
            raise ValueError("down_block_types and up_block_types need one entry per block_out_channels")
        for t in down_block_types:
            if t not in DOWN_TYPES:
                raise ValueError(f"unsupported down block {t!r}; supported: {DOWN_TYPES}")
        for t in up_block_types:
            if t not in UP_TYPES:
                raise ValueError(f"unsupported up block {t!r}; supported: {UP_TYPES}")
        if mid_block_type not in MID_TYPES:
            raise ValueError(f"unsupported mid block {mid_block_type!r}; supported: {MID_TYPES}")
        if training_schedule is None:
            raise ValueError(
                "UNetCondPrior needs training_schedule (beta_schedule, beta_start, beta_end: the schedule it was trained with); add it to its config"
            )
        try:
            self._noise_schedule = NoiseSchedule.from_config({"num_train_timesteps": num_train_timesteps, **training_schedule})
        except LatentzooError as exc:
            raise ValueError(str(exc)) from exc
        self.prediction_type, self.num_train_timesteps, self.training_schedule = prediction_type, num_train_timesteps, training_schedule
        self.num_classes = num_class_embeds
        self.sample_size, self.in_channels, self.cross_attention_dim = sample_size, in_channels, cross_attention_dim
        # diffusers' upcast_attention computes q k^T in fp32 under fp16; SDPA accumulates in fp32 already, so it is recorded only.
        self.upcast_attention = upcast_attention
        self.flip_sin_to_cos, self.freq_shift = flip_sin_to_cos, freq_shift
        # diffusers: num_attention_heads defaults to attention_head_dim (a historical misnomer: it counts heads).
        heads = _per_block(num_attention_heads or attention_head_dim, n, "attention_head_dim")
        depths = _per_block(transformer_layers_per_block, n, "transformer_layers_per_block")
        temb = widths[0] * 4
        tf = dict(context_dim=cross_attention_dim, linear=use_linear_projection, dropout=dropout)
        common = dict(temb=temb, groups=norm_num_groups, eps=norm_eps)

        self.conv_in = nn.Conv2d(in_channels, widths[0], 3, padding=1)
        self.time_embedding = TimestepEmbedding(widths[0], temb)
        self.class_embedding = nn.Embedding(num_class_embeds, temb) if num_class_embeds else None
        self.addition_embed_type, self.addition_time_embed_dim = addition_embed_type, addition_time_embed_dim
        self.added_conditioning: tuple[str, ...] = ()
        # SDXL's refiner: time ids (original size, crop, aesthetic score) instead of (..., target size). Trained on
        # the low-noise end of the schedule only, it continues a base's sampling (core.runtime.refine), never from pure noise.
        self.aesthetic_score = self.refiner = aesthetic_score
        if addition_embed_type is not None:
            if addition_embed_type != "text_time":
                raise ValueError(f"addition_embed_type {addition_embed_type!r} is not supported (only text_time, SDXL's)")
            if not addition_time_embed_dim or not projection_class_embeddings_input_dim:
                raise ValueError("addition_embed_type text_time needs addition_time_embed_dim and projection_class_embeddings_input_dim")
            self.add_embedding = TimestepEmbedding(projection_class_embeddings_input_dim, temb)
            self.added_conditioning = ("pooled", "time_ids")
        self.down_blocks = nn.ModuleList()
        cin = widths[0]
        for i, (cout, kind) in enumerate(zip(widths, down_block_types, strict=True)):
            attn = heads[i] if kind.startswith("CrossAttn") else None
            self.down_blocks.append(
                _DownBlock(cin, cout, layers=layers_per_block, heads=attn, downsample=i < n - 1, depth=depths[i], **common, **tf)
            )
            cin = cout
        self.mid_block = _MidBlock(widths[-1], heads=heads[-1], depth=depths[-1], **common, **tf)
        self.up_blocks = nn.ModuleList()
        rev, rev_heads, rev_depths = list(reversed(widths)), list(reversed(heads)), list(reversed(depths))
        cprev = rev[0]
        for i, (cout, kind) in enumerate(zip(rev, up_block_types, strict=True)):
            attn = rev_heads[i] if kind.startswith("CrossAttn") else None
            skip_in = rev[min(i + 1, n - 1)]
            self.up_blocks.append(
                _UpBlock(
                    skip_in, cprev, cout, layers=layers_per_block + 1, heads=attn, upsample=i < n - 1, depth=rev_depths[i], **common, **tf
                )
            )
            cprev = cout
        self.conv_norm_out = group_norm(widths[0], norm_num_groups, norm_eps)
        self.conv_out = nn.Conv2d(widths[0], out_channels, 3, padding=1)

    @property
    def noise_schedule(self) -> NoiseSchedule:
        return self._noise_schedule

    @property
    def mask_conditioned(self) -> bool:
        """An inpainting UNet (SD 1.x / 2.x inpainting checkpoints): its input is the latents, the mask and the
        masked image's latents (2C + 1 channels), concatenated by ``latentzoo inpaint`` (core.runtime.editing)."""
        return self.in_channels == 2 * self.conv_out.out_channels + 1

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return (self.conv_out.out_channels, self.sample_size, self.sample_size)

    def forward(
        self,
        sample: torch.Tensor,
        timesteps: torch.Tensor,
        class_labels: torch.Tensor | None = None,
        *,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        pooled: torch.Tensor | None = None,
        time_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if encoder_hidden_states is None:
            raise ValueError("this prior cross-attends to a conditioner's tokens: pass encoder_hidden_states (B, L, W)")
        if encoder_hidden_states.shape[-1] != self.cross_attention_dim:
            raise ValueError(
                f"encoder_hidden_states width {encoder_hidden_states.shape[-1]} != cross_attention_dim {self.cross_attention_dim}"
            )
        if sample.shape[1] != self.in_channels:
            if self.mask_conditioned and sample.shape[1] == self.conv_out.out_channels:
                raise LatentzooError(
                    f"this is an inpainting UNet ({self.in_channels} input channels: latents, mask, masked-image latents); "
                    "it only runs under `latentzoo inpaint` (no plain sampling, img2img or latent blending): use a text-to-image pipeline for those"
                )
            raise ValueError(f"sample has {sample.shape[1]} channels; this UNet takes {self.in_channels}")
        timesteps = timesteps.expand(sample.shape[0]) if timesteps.ndim else timesteps.reshape(1).expand(sample.shape[0])
        emb = timestep_embedding(timesteps, self.conv_in.out_channels, flip_sin_to_cos=self.flip_sin_to_cos, freq_shift=self.freq_shift)
        emb = self.time_embedding(emb.to(sample.dtype))
        if self.class_embedding is not None:
            if class_labels is None:
                raise ValueError("this prior is class-conditional: pass class labels")
            emb = emb + self.class_embedding(class_labels)
        if self.added_conditioning:
            emb = emb + self._text_time_embedding(pooled, time_ids, sample.shape[0], emb.dtype)
        context, mask = encoder_hidden_states, encoder_attention_mask
        x = self.conv_in(sample)
        skips = [x]
        for block in self.down_blocks:
            x, block_skips = block(x, emb, context, mask)
            skips.extend(block_skips)
        x = self.mid_block(x, emb, context, mask)
        for block in self.up_blocks:
            x = block(x, skips, emb, context, mask)
        return self.conv_out(F.silu(self.conv_norm_out(x)))

    def extra_conditioning(self, options: dict[str, Any], size: tuple[int, int]) -> tuple[dict[str, Any], dict[str, Any]]:
        """SDXL's size conditioning from the prior options (popped from ``options``) and the image ``size`` (H, W):
        ``time_ids`` (1, 6) = original size, crop top-left, target size (base), or (1, 5) = original size, crop,
        aesthetic score (refiner; the negative branch gets ``negative_aesthetic_score``). Sizes default to the
        image size, the crop to (0, 0), as in StableDiffusionXLPipeline."""
        given = {k: options.pop(k, None) for k in SIZE_OPTIONS}
        if not self.added_conditioning:
            stated = [k for k, v in given.items() if v not in (None, "")]
            if stated:
                raise LatentzooError(
                    f"{', '.join(stated)}: this prior takes no size conditioning (only SDXL's text_time UNets do); drop it"
                )
            return {}, {}
        original = _pair(given["original_size"], "original_size", size, positive=True)
        crop = _pair(given["crops_coords_top_left"], "crops_coords_top_left", (0, 0), positive=False)
        if self.aesthetic_score:
            if given["target_size"] not in (None, ""):
                raise LatentzooError("target_size: the SDXL refiner conditions on an aesthetic score instead; drop target_size")
            score = 6.0 if given["aesthetic_score"] is None else float(given["aesthetic_score"])
            negative = 2.5 if given["negative_aesthetic_score"] is None else float(given["negative_aesthetic_score"])
            cond, null = [*original, *crop, score], [*original, *crop, negative]
        else:
            stated = [k for k in ("aesthetic_score", "negative_aesthetic_score") if given[k] is not None]
            if stated:
                raise LatentzooError(f"{', '.join(stated)}: only the SDXL refiner conditions on an aesthetic score; drop it")
            cond = null = [*original, *crop, *_pair(given["target_size"], "target_size", size, positive=True)]
        return {"time_ids": torch.tensor([cond], dtype=torch.float32)}, {"time_ids": torch.tensor([null], dtype=torch.float32)}

    def _text_time_embedding(
        self, pooled: torch.Tensor | None, time_ids: torch.Tensor | None, batch: int, dtype: torch.dtype
    ) -> torch.Tensor:
        """add_embedding([pooled, sinusoid(each time id)]) (SDXL's micro-conditioning, Podell et al. 2023, sec. 2.2)."""
        if pooled is None or time_ids is None:
            raise ValueError(
                "this prior (addition_embed_type text_time, SDXL) needs pooled (B, W) and time_ids (B, K): a pooled text embedding and the size conditioning"
            )
        if pooled.shape[0] != batch or time_ids.shape[0] != batch:
            raise ValueError(f"pooled {tuple(pooled.shape)} and time_ids {tuple(time_ids.shape)} need one row per sample ({batch})")
        dim = self.addition_time_embed_dim
        times = timestep_embedding(time_ids.flatten(), dim, flip_sin_to_cos=self.flip_sin_to_cos, freq_shift=self.freq_shift)
        features = torch.cat([pooled, times.reshape(batch, -1).to(pooled.dtype)], dim=-1)
        if features.shape[-1] != self.add_embedding.linear_1.in_features:
            raise ValueError(
                f"pooled width {pooled.shape[-1]} + {time_ids.shape[-1]} time ids x {dim} = {features.shape[-1]} != "
                f"projection_class_embeddings_input_dim {self.add_embedding.linear_1.in_features}"
            )
        return self.add_embedding(features.to(dtype))
