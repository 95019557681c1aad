"""Original (CompVis / Stability "LDM") parameter names <-> diffusers / transformers names.

Pure key mapping over ``{name: tensor}`` dicts; shapes are only read (and 1x1 attention
convolutions squeezed to linear weights), never computed on. Each ``*_to_diffusers`` has an
inverse ``*_to_original`` (used to write single files and to build test checkpoints); the
tests check both directions against diffusers' own single-file converter.

Layouts (original -> diffusers):

- UNet (``openaimodel.UNetModel``, SD's ``model.diffusion_model.*``): ``input_blocks.0.0`` is
  ``conv_in``; then per level ``layers`` (resnet ``.0``, spatial transformer ``.1``) and a
  downsampler ``.0.op``; ``middle_block.{0,1,2}`` = resnet, transformer, resnet;
  ``output_blocks`` per level ``layers + 1`` (resnet ``.0``, transformer ``.1``, upsampler
  ``.1.conv`` or ``.2.conv``); ``out.{0,2}`` = norm, conv. Resnets rename ``in_layers.{0,2}``,
  ``emb_layers.1``, ``out_layers.{0,3}``, ``skip_connection``; transformers keep their names.
- Autoencoder (``first_stage_model.*`` / taming VQ-GAN): ``down.i.block.j`` ->
  ``down_blocks.i.resnets.j``; the decoder's ``up.i`` is ``up_blocks.{n-1-i}`` (CompVis
  counts up levels from the lowest resolution's end); ``mid.attn_1`` 1x1-conv q/k/v/proj_out
  -> linear ``to_q/to_k/to_v/to_out.0``; ``nin_shortcut`` -> ``conv_shortcut``.
- CLIP text (SD 1.x ``cond_stage_model.transformer.*``): transformers' names already, with
  or without the ``text_model.`` level (older transformers saved without it).
- OpenCLIP text (SD 2.x ``cond_stage_model.model.*``): ``resblocks`` -> ``layers``, fused
  ``in_proj_weight`` split into q / k / v, ``c_fc`` / ``c_proj`` -> ``fc1`` / ``fc2``. SD 2.x
  conditions on the penultimate layer's states (``layer: penultimate``), so the last block is
  dropped and ``final_layer_norm`` (``ln_final``) applies to layer N-1's output, exactly as
  diffusers' SD 2 text encoder (23 of 24 layers) does.
"""

from __future__ import annotations

import re
from typing import Any

Tensors = dict[str, Any]

UNET = "model.diffusion_model."
VAE = "first_stage_model."
CLIP = "cond_stage_model.transformer."
OPENCLIP = "cond_stage_model.model."

RESNET = (("in_layers.0.", "norm1."), ("in_layers.2.", "conv1."), ("emb_layers.1.", "time_emb_proj."))
RESNET += (("out_layers.0.", "norm2."), ("out_layers.3.", "conv2."), ("skip_connection.", "conv_shortcut."))


def strip(state: Tensors, prefix: str) -> Tensors:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def _rename(rest: str, pairs: tuple[tuple[str, str], ...], reverse: bool = False) -> str:
    for a, b in pairs:
        src, dst = (b, a) if reverse else (a, b)
        if rest.startswith(src):
            return dst + rest[len(src) :]
    return rest


# ---------------------------------------------------------------------------------------
# UNet


def unet_to_diffusers(state: Tensors, layers: int) -> Tensors:
    """``model.diffusion_model.*`` (prefix stripped) -> UNet2DConditionModel names."""
    out = {}
    for key, value in state.items():
        out[unet_key(key, layers)] = value
    return out


def unet_key(key: str, layers: int) -> str:
    parts = key.split(".")
    head = parts[0]
    if head == "time_embed":
        return f"time_embedding.linear_{1 if parts[1] == '0' else 2}." + ".".join(parts[2:])
    if head == "label_emb" and len(parts) == 4 and parts[1] == "0":  # SDXL's adm MLP (pooled text + size embeddings)
        return f"add_embedding.linear_{1 if parts[2] == '0' else 2}.{parts[3]}"
    if head == "label_emb":  # class-conditional LDM: nn.Embedding
        return "class_embedding." + ".".join(parts[1:])
    if head == "out":
        return ("conv_norm_out." if parts[1] == "0" else "conv_out.") + ".".join(parts[2:])
    if head == "input_blocks":
        i, j, rest = int(parts[1]), parts[2], ".".join(parts[3:])
        if i == 0:
            return "conv_in." + rest
        block, layer = divmod(i - 1, layers + 1)
        if layer == layers:  # the level's downsampler: input_blocks.i.0.op
            return f"down_blocks.{block}.downsamplers.0.conv." + rest.removeprefix("op.")
        if j == "0":
            return f"down_blocks.{block}.resnets.{layer}." + _rename(rest, RESNET)
        return f"down_blocks.{block}.attentions.{layer}." + rest
    if head == "middle_block":
        j, rest = parts[1], ".".join(parts[2:])
        if j == "1":
            return "mid_block.attentions.0." + rest
        return f"mid_block.resnets.{0 if j == '0' else 1}." + _rename(rest, RESNET)
    if head == "output_blocks":
        i, j, rest = int(parts[1]), parts[2], ".".join(parts[3:])
        block, layer = divmod(i, layers + 1)
        if rest.startswith("conv.") and j != "0":  # Upsample: output_blocks.i.{1|2}.conv
            return f"up_blocks.{block}.upsamplers.0.conv." + rest.removeprefix("conv.")
        if j == "0":
            return f"up_blocks.{block}.resnets.{layer}." + _rename(rest, RESNET)
        return f"up_blocks.{block}.attentions.{layer}." + rest
    raise KeyError(key)


def unet_to_original(state: Tensors, layers: int, up_attention: list[bool]) -> Tensors:
    """UNet2DConditionModel names -> ``openaimodel`` names (prefix not added); ``up_attention[b]``: up block b attends."""
    out = {}
    for key, value in state.items():
        m = re.match(r"(down_blocks|up_blocks)\.(\d+)\.(resnets|attentions|downsamplers|upsamplers)\.(\d+)\.(.*)", key)
        if key.startswith("time_embedding.linear_"):
            n = key[len("time_embedding.linear_")]
            new = f"time_embed.{0 if n == '1' else 2}." + key.split(".", 2)[2]
        elif key.startswith("add_embedding.linear_"):
            n = key[len("add_embedding.linear_")]
            new = f"label_emb.0.{0 if n == '1' else 2}." + key.split(".", 2)[2]
        elif key.startswith("class_embedding."):
            new = "label_emb." + key[len("class_embedding.") :]
        elif key.startswith("conv_in."):
            new = "input_blocks.0.0." + key[len("conv_in.") :]
        elif key.startswith("conv_norm_out."):
            new = "out.0." + key[len("conv_norm_out.") :]
        elif key.startswith("conv_out."):
            new = "out.2." + key[len("conv_out.") :]
        elif key.startswith("mid_block."):
            _, kind, n, rest = key.split(".", 3)
            if kind == "attentions":
                new = "middle_block.1." + rest
            else:
                new = f"middle_block.{0 if n == '0' else 2}." + _rename(rest, RESNET, reverse=True)
        elif m:
            side, b, kind, n, rest = m.group(1), int(m.group(2)), m.group(3), int(m.group(4)), m.group(5)
            if side == "down_blocks":
                base = 1 + b * (layers + 1)
                if kind == "downsamplers":
                    new = f"input_blocks.{base + layers}.0.op." + rest.removeprefix("conv.")
                elif kind == "resnets":
                    new = f"input_blocks.{base + n}.0." + _rename(rest, RESNET, reverse=True)
                else:
                    new = f"input_blocks.{base + n}.1." + rest
            else:
                base = b * (layers + 1)
                if kind == "upsamplers":
                    new = f"output_blocks.{base + layers}.{2 if up_attention[b] else 1}.conv." + rest.removeprefix("conv.")
                elif kind == "resnets":
                    new = f"output_blocks.{base + n}.0." + _rename(rest, RESNET, reverse=True)
                else:
                    new = f"output_blocks.{base + n}.1." + rest
        else:
            raise KeyError(key)
        out[new] = value
    return out


# ---------------------------------------------------------------------------------------
# autoencoders (KL and VQ): CompVis / taming ``Encoder`` / ``Decoder``

AE_TOP = (("encoder.norm_out.", "encoder.conv_norm_out."), ("decoder.norm_out.", "decoder.conv_norm_out."))
AE_MID = (("mid.block_1.", "mid_block.resnets.0."), ("mid.block_2.", "mid_block.resnets.1."), ("mid.attn_1.", "mid_block.attentions.0."))
AE_ATTN = (("norm.", "group_norm."), ("q.", "to_q."), ("k.", "to_k."), ("v.", "to_v."), ("proj_out.", "to_out.0."))


def ae_to_diffusers(state: Tensors, levels: int) -> Tensors:
    """Autoencoder names (prefix stripped) -> AutoencoderKL / VQModel names; attention 1x1 convs become linear."""
    out = {}
    for key, value in state.items():
        new = _rename(key, AE_TOP)
        m = re.match(r"(encoder|decoder)\.(down|up)\.(\d+)\.(block|downsample|upsample)\.(.*)", new)
        if m:
            side, _, i, kind, rest = m.groups()
            i = int(i) if side == "encoder" else levels - 1 - int(i)
            blocks = "down_blocks" if side == "encoder" else "up_blocks"
            if kind == "block":
                j, rest = rest.split(".", 1)
                new = f"{side}.{blocks}.{i}.resnets.{j}." + rest.replace("nin_shortcut.", "conv_shortcut.")
            else:
                new = f"{side}.{blocks}.{i}.{kind}rs.0.{rest}"
        elif re.match(r"(encoder|decoder)\.mid\.", new):
            side, rest = new.split(".", 1)
            rest = _rename(rest, AE_MID)
            if rest.startswith("mid_block.attentions.0."):
                inner = _rename(rest[len("mid_block.attentions.0.") :], AE_ATTN)
                rest = "mid_block.attentions.0." + inner
                if value.ndim == 4:  # a 1x1 conv is a linear map over channels
                    value = value[:, :, 0, 0]
            new = f"{side}.{rest.replace('nin_shortcut.', 'conv_shortcut.')}"
        out[new] = value
    return out


def ae_to_original(state: Tensors, levels: int) -> Tensors:
    """AutoencoderKL / VQModel names -> CompVis names (linear attention weights back to 1x1 convs)."""
    out = {}
    for key, value in state.items():
        new = _rename(key, AE_TOP, reverse=True)
        m = re.match(r"(encoder|decoder)\.(down_blocks|up_blocks)\.(\d+)\.(resnets|downsamplers|upsamplers)\.(.*)", new)
        if m:
            side, _, i, kind, rest = m.groups()
            i = int(i) if side == "encoder" else levels - 1 - int(i)
            lvl = "down" if side == "encoder" else "up"
            if kind == "resnets":
                j, rest = rest.split(".", 1)
                new = f"{side}.{lvl}.{i}.block.{j}." + rest.replace("conv_shortcut.", "nin_shortcut.")
            else:
                new = f"{side}.{lvl}.{i}.{kind.removesuffix('rs')}.{rest.removeprefix('0.')}"
        elif re.match(r"(encoder|decoder)\.mid_block\.", new):
            side, rest = new.split(".", 1)
            if rest.startswith("mid_block.attentions.0."):
                inner = _rename(rest[len("mid_block.attentions.0.") :], AE_ATTN, reverse=True)
                rest = "mid.attn_1." + inner
                if value.ndim == 2:
                    value = value[:, :, None, None]
            else:
                rest = _rename(rest, AE_MID, reverse=True).replace("conv_shortcut.", "nin_shortcut.")
            new = f"{side}.{rest}"
        out[new] = value
    return out


# ---------------------------------------------------------------------------------------
# text encoders


def clip_to_transformers(state: Tensors) -> Tensors:
    """SD 1.x ``cond_stage_model.transformer.*`` (prefix stripped) -> CLIPTextModel names (``position_ids`` dropped)."""
    out = {}
    for key, value in state.items():
        if key.endswith("position_ids"):
            continue
        out[key if key.startswith("text_model.") else "text_model." + key] = value
    return out


OPENCLIP_TOP = (
    ("token_embedding.weight", "text_model.embeddings.token_embedding.weight"),
    ("positional_embedding", "text_model.embeddings.position_embedding.weight"),
    ("ln_final.", "text_model.final_layer_norm."),
)
OPENCLIP_LAYER = (
    ("ln_1.", "layer_norm1."),
    ("ln_2.", "layer_norm2."),
    ("mlp.c_fc.", "mlp.fc1."),
    ("mlp.c_proj.", "mlp.fc2."),
    ("attn.out_proj.", "self_attn.out_proj."),
)
OPENCLIP_DROPPED = ("text_projection", "logit_scale", "attn_mask")


def openclip_layers(state: Tensors) -> int:
    return 1 + max(int(k.split(".")[2]) for k in state if k.startswith("transformer.resblocks."))


def openclip_to_transformers(state: Tensors, *, whole: bool = False) -> tuple[Tensors, list[str]]:
    """SD 2.x ``cond_stage_model.model.*`` (prefix stripped) -> CLIPTextModel names, last block dropped; (tensors, dropped keys).

    ``whole`` (SDXL's ``conditioner.embedders.N.model.*``): every block kept, and ``text_projection`` (applied
    as ``x @ P``) becomes CLIPTextModelWithProjection's ``text_projection.weight`` (``P^T``, a linear layer)."""
    last = openclip_layers(state) - 1
    out, dropped = {}, []
    for key, value in state.items():
        if whole and key == "text_projection":
            out["text_projection.weight"] = value.T.contiguous()
            continue
        if key.startswith("transformer.resblocks."):
            _, _, n, rest = key.split(".", 3)
            if int(n) == last and not whole:
                dropped.append(key)
                continue
            base = f"text_model.encoder.layers.{n}."
            if rest.startswith("attn.in_proj_"):  # fused (q; k; v) rows, in that order (torch MultiheadAttention)
                kind = rest.rsplit("_", 1)[1]
                for name, part in zip(("q", "k", "v"), value.chunk(3, dim=0), strict=True):
                    out[f"{base}self_attn.{name}_proj.{kind}"] = part
                continue
            out[base + _rename(rest, OPENCLIP_LAYER)] = value
        elif any(key.startswith(a) for a, _ in OPENCLIP_TOP):
            out[_rename(key, OPENCLIP_TOP)] = value
        else:
            dropped.append(key)
    return out, dropped


def openclip_to_original(state: Tensors, last_layer: Tensors | None = None) -> Tensors:
    """CLIPTextModel names -> OpenCLIP names (q / k / v fused); ``last_layer`` (OpenCLIP names) appended as the unused block."""
    out: Tensors = {}
    fused: dict[str, dict[str, Any]] = {}
    for key, value in state.items():
        if key.startswith("text_model.encoder.layers."):
            n, rest = key[len("text_model.encoder.layers.") :].split(".", 1)
            m = re.match(r"self_attn\.([qkv])_proj\.(weight|bias)", rest)
            if m:
                fused.setdefault(f"transformer.resblocks.{n}.attn.in_proj_{m.group(2)}", {})[m.group(1)] = value
                continue
            out[f"transformer.resblocks.{n}." + _rename(rest, OPENCLIP_LAYER, reverse=True)] = value
        elif key == "text_projection.weight":
            out["text_projection"] = value.T.contiguous()
        else:
            out[_rename(key, OPENCLIP_TOP, reverse=True)] = value
    import torch

    for key, parts in fused.items():
        out[key] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    out.update(last_layer or {})
    return out


# ---------------------------------------------------------------------------------------
# CompVis LDM's spatial self-attention (openaimodel ``AttentionBlock``) <-> diffusers ``Attention``

LDM_ATTN = re.compile(r"(.*attentions\.\d+)\.(norm|qkv|proj_out)\.(weight|bias)$")


def ldm_attention_to_diffusers(state: Tensors, head_channels: int) -> Tensors:
    """``norm`` / ``qkv`` / ``proj_out`` (1-D 1x1 convs) of UNet2DModel-named attentions -> ``group_norm``,
    ``to_q`` / ``to_k`` / ``to_v``, ``to_out.0`` (linear).

    ``QKVAttentionLegacy`` (LDM's default attention order) reshapes qkv to (B * heads, 3 * ch, T)
    and splits each head's rows into q, k, v: the fused rows are ordered (head, q|k|v, channel),
    not (q|k|v, head, channel), so the split needs the head width ``head_channels``.
    """
    out = {}
    for key, value in state.items():
        m = LDM_ATTN.match(key)
        if not m:
            out[key] = value
            continue
        base, kind, what = m.groups()
        if kind == "norm":
            out[f"{base}.group_norm.{what}"] = value
        elif kind == "proj_out":
            out[f"{base}.to_out.0.{what}"] = value[..., 0] if value.ndim == 3 else value
        else:
            c = value.shape[0] // 3
            heads = c // head_channels
            rows = value.reshape(heads, 3, head_channels, *value.shape[1:])
            for i, name in enumerate(("to_q", "to_k", "to_v")):
                part = rows[:, i].reshape(c, *value.shape[1:])
                out[f"{base}.{name}.{what}"] = part[..., 0] if part.ndim == 3 else part
    return out


def ldm_attention_to_original(state: Tensors, head_channels: int) -> Tensors:
    """The inverse of ``ldm_attention_to_diffusers`` (fused legacy qkv, 1-D conv weights)."""
    import torch

    out, fused = {}, {}
    for key, value in state.items():
        m = re.match(r"(.*attentions\.\d+)\.(group_norm|to_q|to_k|to_v|to_out\.0)\.(weight|bias)$", key)
        if not m or "transformer_blocks" in key:
            out[key] = value
            continue
        base, kind, what = m.groups()
        if kind == "group_norm":
            out[f"{base}.norm.{what}"] = value
        elif kind == "to_out.0":
            out[f"{base}.proj_out.{what}"] = value[..., None] if what == "weight" else value
        else:
            fused.setdefault((base, what), {})[kind] = value
    for (base, what), parts in fused.items():
        c = parts["to_q"].shape[0]
        heads = c // head_channels
        rows = torch.stack([parts[n].reshape(heads, head_channels, *parts[n].shape[1:]) for n in ("to_q", "to_k", "to_v")], dim=1)
        rows = rows.reshape(3 * c, *parts["to_q"].shape[1:])
        out[f"{base}.qkv.{what}"] = rows[..., None] if what == "weight" else rows
    return out
