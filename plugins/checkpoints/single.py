"""Convert an original single-file ``.safetensors`` checkpoint (the format's ``convert``).

1. The header is read and checked without loading any tensor: a pickle (``.ckpt`` / ``.pt``
   / a zip or pickle magic number) is refused, never unpickled; a header or data region that
   runs past the end of the file is a truncated download.
2. The model is detected from key prefixes and tensor shapes (``detect``): Stable Diffusion
   1.x (CLIP ViT-L text encoder), 2.x (OpenCLIP ViT-H), a taming / CompVis VQ-GAN, or a KL
   VAE alone. Everything the shapes fix (widths, levels, layers per level, attention levels,
   linear or 1x1 projections, transformer depth, context width, text encoder size) comes from
   them; what they cannot fix is said in a note: attention heads (SD 1.x: 8 heads; SD 2.x: 64
   channels per head, as both published configs state), norm groups (32), and, for SD 2.x,
   whether the model predicts epsilon (512-base) or v (768-v), which must be given
   (``--prediction-type`` or the ``.yaml``'s ``parameterization``).
3. An original LDM ``.yaml`` (``--config``, safe-loaded, at most 1 MB) may state these and the
   training schedule; every field it states that the tensors also fix must agree, or the
   conversion stops naming both.
4. Tensors are renamed (``keys.py``) and handed to the diffusers plugin's Stable Diffusion
   converter, so a single file converts to the same components a diffusers folder gives.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from latentzoo.core.contract.errors import LatentzooError

from . import keys as K

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl")
MAX_HEADER = 100 * 2**20
MAX_YAML = 2**20
SD_SCALE = 0.18215  # SD 1.x / 2.x first stage: LatentDiffusion's scale_factor in every published SD config
SD_SCHEDULE = {"linear_start": 0.00085, "linear_end": 0.012, "timesteps": 1000}  # published SD 1.x / 2.x configs
PREDICTIONS = {"eps": "epsilon", "epsilon": "epsilon", "v": "v_prediction", "v_prediction": "v_prediction"}
KINDS = {
    "sd1": "Stable Diffusion 1.x",
    "sd2": "Stable Diffusion 2.x",
    "ldm": "CompVis LDM (unconditional UNet over a VQ first stage)",
    "vqgan": "VQ-GAN (taming / CompVis first stage)",
    "kl-vae": "KL VAE (a first stage alone)",
    "sdxl": "Stable Diffusion XL base",
    "sdxl-refiner": "Stable Diffusion XL refiner",
}
SDXL_SCALE = 0.13025  # SDXL's first stage: the published sgm configs' scale_factor
SDXL_BASE, SDXL_REFINER = "StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline"
BASE_TIME_IDS, REFINER_TIME_IDS = 6, 5  # original size, crop, target size / original size, crop, aesthetic score
XL = "conditioner.embedders."

SD_PIPELINE = "StableDiffusionPipeline"  # the diffusers pipeline whose family mapping converts an SD checkpoint's parts


def pipeline_reader(pipeline: str) -> Any:
    """The loaded family mapping that reads diffusers ``pipeline`` (found through the declarations, never imported by name)."""
    from latentzoo.interop.toolkit import readers

    _, pipelines = readers()
    mapping = pipelines.get(pipeline)
    if mapping is None or not hasattr(mapping, "read_parts"):
        raise LatentzooError(f"no loaded plugin converts {pipeline} parts (the diffusion family does); is it installed and enabled?")
    return mapping


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# ---------------------------------------------------------------------------------------
# reading the file


def read_header(path: Path) -> dict[str, list[int]]:
    """{tensor name: shape} from a safetensors header, after checking the file is a complete safetensors file."""
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise LatentzooError(_pickle_message(path))
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(8)
            if head[:2] == b"PK" or head[:1] == b"\x80":
                raise LatentzooError(_pickle_message(path))
            if len(head) < 8:
                raise LatentzooError(f"{path} is truncated ({size} bytes): not even a safetensors header; download it again")
            n = int.from_bytes(head, "little")
            if n > min(MAX_HEADER, size - 8):
                raise LatentzooError(
                    f"{path}: header claims {n} bytes but the file has {size}: truncated or not a safetensors file; download it again"
                )
            raw = f.read(n)
    except OSError as exc:
        raise LatentzooError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        header = json.loads(raw)
        header.pop("__metadata__", None)
        shapes = {k: list(v["shape"]) for k, v in header.items()}
        end = max((int(v["data_offsets"][1]) for v in header.values()), default=0)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise LatentzooError(f"{path}: unreadable safetensors header ({_one_line(exc)}); is it a .safetensors file?") from exc
    if 8 + n + end > size:
        raise LatentzooError(f"{path} is truncated: its tensors need {8 + n + end} bytes, the file has {size}; download it again")
    return shapes


def _pickle_message(path: Path) -> str:
    return (
        f"{path} is a pickle (.ckpt / .pt), which can run code when loaded; latentzoo never unpickles: "
        "download the .safetensors variant of the checkpoint, or convert it once with a tool you trust in an isolated environment"
    )


def read_tensors(path: Path) -> dict[str, Any]:
    """All tensors, memory-mapped (pages are read when used)."""
    from latentzoo.interop.toolkit import ReadContext

    return ReadContext.read_tensors(path)


def read_yaml(path: Path) -> dict[str, Any]:
    """An original LDM config (``model: {target, params}``), safe-loaded and bounded."""
    import yaml

    try:
        if path.stat().st_size > MAX_YAML:
            raise LatentzooError(f"--config {path} is larger than 1 MB; an LDM .yaml config is a few KB")
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise LatentzooError(f"--config {path}: cannot read it ({exc.strerror or exc})") from exc
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise LatentzooError(f"--config {path}: not valid YAML ({_one_line(exc)})") from exc
    params = data.get("model", {}).get("params") if isinstance(data, dict) and isinstance(data.get("model"), dict) else None
    if not isinstance(params, dict):
        raise LatentzooError(f"--config {path} has no model.params; give the original LDM .yaml (e.g. v1-inference.yaml)")
    return data


# ---------------------------------------------------------------------------------------
# detection


def prefixes(shapes: dict[str, Any]) -> Counter:
    """Tensor counts per top-level prefix (two levels for model. / cond_stage_model. / conditioner.)."""
    out: Counter = Counter()
    for k in shapes:
        parts = k.split(".")
        depth = 2 if parts[0] in ("model", "cond_stage_model", "conditioner", "model_ema") and len(parts) > 2 else 1
        out[".".join(parts[:depth])] += 1
    return out


def _found(shapes: dict[str, Any]) -> str:
    return ", ".join(f"{p} ({n})" for p, n in prefixes(shapes).most_common(6))


@dataclass
class Detected:
    kind: str
    unet: dict[str, Any] = field(default_factory=dict)  # diffusers UNet2DConditionModel config (heads / sample size filled later)
    ae: dict[str, Any] = field(default_factory=dict)  # diffusers AutoencoderKL / VQModel config
    text: dict[str, Any] = field(default_factory=dict)  # transformers CLIPTextModel config
    texts: list[dict[str, Any]] = field(default_factory=list)  # SDXL: each text encoder's config (CLIP ViT-L, OpenCLIP bigG)
    ae_prefix: str = ""
    evidence: dict[str, tuple[Any, str]] = field(default_factory=dict)  # field -> (value, the tensor that fixes it)
    notes: list[str] = field(default_factory=list)


def detect(shapes: dict[str, Any], where: Path) -> Detected:
    has = {p: any(k.startswith(p) for k in shapes) for p in (K.UNET, K.VAE, K.CLIP, K.OPENCLIP)}
    bare = any(k.startswith("encoder.") for k in shapes) and any(k.startswith("decoder.") for k in shapes)
    if has[K.UNET] and any(re.match(re.escape(XL) + r"\d+\.(transformer|model)\.", k) for k in shapes):
        return _detect_sdxl(shapes, where)
    if has[K.UNET] and has[K.VAE] and (has[K.CLIP] or has[K.OPENCLIP]):
        if f"{K.VAE}quantize.embedding.weight" in shapes:
            raise LatentzooError(f"{where}: a text-conditioned UNet over a VQ first stage is not a Stable Diffusion layout latentzoo reads")
        if not any(k.endswith("attn2.to_k.weight") for k in shapes):
            raise LatentzooError(f"{where}: the UNet has no cross-attention (attn2); not a Stable Diffusion checkpoint latentzoo reads")
        det = Detected("sd2" if has[K.OPENCLIP] else "sd1", ae_prefix=K.VAE)
        _unet(det, K.strip(shapes, K.UNET))
        _autoencoder(det, K.strip(shapes, K.VAE), where)
        _text(det, shapes)
        return det
    if has[K.UNET] and has[K.VAE]:
        if any(k.startswith("cond_stage_model.") for k in shapes) or any(k.endswith("attn2.to_k.weight") for k in shapes):
            raise LatentzooError(
                f"{where}: a conditional CompVis LDM (found {_found(shapes)}); latentzoo reads unconditional LDMs and Stable Diffusion"
            )
        if f"{K.VAE}quantize.embedding.weight" not in shapes:
            raise LatentzooError(
                f"{where}: an LDM over a KL first stage without a text encoder; latentzoo reads LDMs over a VQ first stage"
            )
        det = Detected("ldm", ae_prefix=K.VAE)
        _ldm_unet(det, K.strip(shapes, K.UNET), where)
        _autoencoder(det, K.strip(shapes, K.VAE), where)
        return det
    if bare and not has[K.UNET]:
        ae = {k: v for k, v in shapes.items() if k.split(".")[0] in ("encoder", "decoder", "quant_conv", "post_quant_conv", "quantize")}
        det = Detected("vqgan" if "quantize.embedding.weight" in shapes else "kl-vae")
        _autoencoder(det, ae, where)
        dropped = len(shapes) - len(ae)
        if dropped:
            det.notes.append(
                f"{dropped} tensors outside the autoencoder (e.g. the training loss' discriminator / LPIPS: loss.*) are not converted"
            )
        return det
    raise LatentzooError(
        f"{where}: unknown checkpoint layout (found {_found(shapes) or 'no tensors'}); "
        "latentzoo reads Stable Diffusion 1.x / 2.x / XL single files, taming VQ-GAN and KL VAE files"
    )


def _detect_sdxl(shapes: dict[str, Any], where: Path) -> Detected:
    """SDXL (sgm layout): base = CLIP ViT-L (embedders.0.transformer) + OpenCLIP bigG (embedders.1.model); refiner = bigG alone (embedders.0.model)."""
    embedders: dict[int, str] = {}
    for k in shapes:
        m = re.match(re.escape(XL) + r"(\d+)\.(transformer|model)\.", k)
        if m:
            embedders[int(m.group(1))] = m.group(2)
    if not any(k.startswith(K.VAE) for k in shapes):
        raise LatentzooError(f"{where}: an SDXL file without its first stage ({K.VAE}*); give the full checkpoint")
    if embedders == {0: "model"}:
        kind = "sdxl-refiner"
    elif embedders == {0: "transformer", 1: "model"}:
        kind = "sdxl"
    else:
        found = ", ".join(f"{XL}{i}.{t}.*" for i, t in sorted(embedders.items())) or "none"
        need = f"{XL}0.transformer.* (CLIP ViT-L) and {XL}1.model.* (OpenCLIP bigG)"
        raise LatentzooError(
            f"{where}: an SDXL file missing a text encoder: it holds {found}; a base needs {need}, a refiner {XL}0.model.* alone"
        )
    det = Detected(kind, ae_prefix=K.VAE)
    _unet(det, K.strip(shapes, K.UNET))
    _autoencoder(det, K.strip(shapes, K.VAE), where)
    det.text = {}
    det.texts = [_xl_text(shapes, f"{XL}{i}.{t}.", t) for i, t in sorted(embedders.items())]
    if "label_emb.0.0.weight" not in K.strip(shapes, K.UNET):
        raise LatentzooError(f"{where}: an SDXL UNet without its size / pooled-text embedding ({K.UNET}label_emb.0.0.weight)")
    return det


def _xl_text(shapes: dict[str, Any], prefix: str, kind: str) -> dict[str, Any]:
    """transformers CLIPTextModel (CLIP ViT-L) / CLIPTextModelWithProjection (OpenCLIP bigG, every block) config from shapes."""
    if kind == "transformer":
        t = K.clip_to_transformers(K.strip(shapes, prefix))
        emb, pos = t["text_model.embeddings.token_embedding.weight"], t["text_model.embeddings.position_embedding.weight"]
        layers = len(_indices(t, r"text_model\.encoder\.layers\.(\d+)\."))
        inner, act, arch, projection = t["text_model.encoder.layers.0.mlp.fc1.weight"][0], "quick_gelu", "CLIPTextModel", None
    else:
        t = K.strip(shapes, prefix)
        emb, pos = t["token_embedding.weight"], t["positional_embedding"]
        layers, inner, act = K.openclip_layers(t), t["transformer.resblocks.0.mlp.c_fc.weight"][0], "gelu"
        arch, projection = "CLIPTextModelWithProjection", t["text_projection"][1]
    width = emb[1]
    cfg = {
        "architectures": [arch],
        "vocab_size": emb[0],
        "hidden_size": width,
        "intermediate_size": inner,
        "num_hidden_layers": layers,
        "num_attention_heads": max(1, width // 64),  # CLIP text towers use 64-channel heads (ViT-L: 12, bigG: 20)
        "max_position_embeddings": pos[0],
        "hidden_act": act,
        "layer_norm_eps": 1e-5,
        "bos_token_id": 49406,
        "eos_token_id": 49407,
        "pad_token_id": 49407 if kind == "transformer" else 0,
    }
    if projection is not None:
        cfg["projection_dim"] = projection
    return cfg


def _indices(shapes: dict[str, Any], pattern: str) -> list[int]:
    return sorted({int(m.group(1)) for k in shapes if (m := re.match(pattern, k))})


def _unet(det: Detected, u: dict[str, Any]) -> None:
    ev = det.evidence
    p = K.UNET
    model_channels, in_channels = u["input_blocks.0.0.weight"][:2]
    downs = _indices(u, r"input_blocks\.(\d+)\.0\.op\.weight$")
    levels = len(downs) + 1
    n_input = 1 + max(_indices(u, r"input_blocks\.(\d+)\."))
    layers, rest = divmod(n_input - 1 - (levels - 1), levels)
    if rest or layers < 1:
        raise LatentzooError(f"{p}input_blocks: {n_input} blocks with {levels - 1} downsamplers is not a UNet layout latentzoo knows")
    widths, attn = [], []
    for b in range(levels):
        first = 1 + b * (layers + 1)
        widths.append(u[f"input_blocks.{first}.0.out_layers.3.weight"][0])
        attn.append(f"input_blocks.{first}.1.proj_in.weight" in u)
    tf = next(k for k in u if k.endswith("proj_in.weight"))
    block = tf.rsplit(".proj_in.weight", 1)[0]
    # transformer depth per level (SDXL: 2 and 10 where SD has 1 everywhere); one integer when all agree
    per_level = [
        len(_indices(u, rf"input_blocks\.{1 + b * (layers + 1)}\.1\.transformer_blocks\.(\d+)\.")) if attn[b] else 0 for b in range(levels)
    ]
    depth: Any = next(d for d in per_level if d)
    if len({d for d in per_level if d}) > 1:
        depth = [d or 1 for d in per_level]
    to_k = next(k for k in u if k.endswith("attn2.to_k.weight"))
    context = u[to_k][1]
    linear = len(u[tf]) == 2
    det.unet = {
        "_class_name": "UNet2DConditionModel",
        "in_channels": in_channels,
        "out_channels": u["out.2.weight"][0],
        "block_out_channels": widths,
        "layers_per_block": layers,
        "down_block_types": ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attn],
        "up_block_types": ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)],
        "cross_attention_dim": context,
        "use_linear_projection": linear,
        "transformer_layers_per_block": depth,
        "norm_num_groups": 32,
    }
    if "label_emb.0.0.weight" in u:  # SDXL: the pooled text + size embeddings' MLP (adm_in_channels)
        det.unet.update(addition_embed_type="text_time", projection_class_embeddings_input_dim=u["label_emb.0.0.weight"][1])
        ev["unet_config.adm_in_channels"] = (u["label_emb.0.0.weight"][1], p + "label_emb.0.0.weight")
    ev.update(
        {
            "unet_config.in_channels": (in_channels, p + "input_blocks.0.0.weight"),
            "unet_config.out_channels": (det.unet["out_channels"], p + "out.2.weight"),
            "unet_config.model_channels": (model_channels, p + "input_blocks.0.0.weight"),
            "unet_config.channel_mult": ([w // model_channels for w in widths], p + "input_blocks.*.0.out_layers.3.weight"),
            "unet_config.num_res_blocks": (layers, p + "input_blocks.*"),
            "unet_config.context_dim": (context, p + to_k),
            "unet_config.use_linear_in_transformer": (linear, p + tf),
            "unet_config.transformer_depth": (depth if isinstance(depth, int) else per_level, p + block + ".transformer_blocks.*"),
        }
    )


def _ldm_unet(det: Detected, u: dict[str, Any], where: Path) -> None:
    """An openaimodel UNetModel without cross-attention -> a diffusers UNet2DModel config (heads: from the .yaml)."""
    p = K.UNET
    model_channels, in_channels = u["input_blocks.0.0.weight"][:2]
    downs = _indices(u, r"input_blocks\.(\d+)\.0\.op\.weight$")
    levels = len(downs) + 1
    n_input = 1 + max(_indices(u, r"input_blocks\.(\d+)\."))
    layers, rest = divmod(n_input - 1 - (levels - 1), levels)
    if rest or layers < 1:
        raise LatentzooError(
            f"{where}: {p}input_blocks: {n_input} blocks with {levels - 1} downsamplers is not a UNet layout latentzoo knows"
        )
    widths, attn = [], []
    for b in range(levels):
        first = 1 + b * (layers + 1)
        widths.append(u[f"input_blocks.{first}.0.out_layers.3.weight"][0])
        attn.append(f"input_blocks.{first}.1.qkv.weight" in u)
    emb = u["input_blocks.1.0.emb_layers.1.weight"][0]
    if emb == 2 * widths[0]:
        raise LatentzooError(
            f"{where}: the UNet uses scale-shift norm ({p}input_blocks.1.0.emb_layers.1.weight has {emb} rows); not supported"
        )
    det.unet = {
        "_class_name": "UNet2DModel",
        "in_channels": in_channels,
        "out_channels": u["out.2.weight"][0],
        "block_out_channels": widths,
        "layers_per_block": layers,
        "down_block_types": ["AttnDownBlock2D" if a else "DownBlock2D" for a in attn],
        "up_block_types": ["AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)],
        "norm_num_groups": 32,
        "norm_eps": 1e-5,
        "flip_sin_to_cos": True,  # openaimodel's timestep_embedding: [cos, sin]
        "freq_shift": 0,
        "downsample_padding": 1,
        "num_class_embeds": u["label_emb.weight"][0] if "label_emb.weight" in u else None,
    }
    det.evidence.update(
        {
            "unet_config.in_channels": (in_channels, p + "input_blocks.0.0.weight"),
            "unet_config.out_channels": (det.unet["out_channels"], p + "out.2.weight"),
            "unet_config.model_channels": (model_channels, p + "input_blocks.0.0.weight"),
            "unet_config.channel_mult": ([w // model_channels for w in widths], p + "input_blocks.*.0.out_layers.3.weight"),
            "unet_config.num_res_blocks": (layers, p + "input_blocks.*"),
        }
    )


def _autoencoder(det: Detected, a: dict[str, Any], where: Path) -> None:
    p = det.ae_prefix
    if any(re.match(r"(encoder\.down|decoder\.up)\.\d+\.attn\.", k) for k in a):
        raise LatentzooError(
            f"{where}: the autoencoder has attention inside its resolution levels ({p}encoder.down.N.attn: taming's attn_resolutions); "
            "latentzoo's autoencoders (diffusers VQModel / AutoencoderKL layout) attend only in the middle block"
        )
    try:
        levels = 1 + max(_indices(a, r"encoder\.down\.(\d+)\."))
        layers = len(_indices(a, r"encoder\.down\.0\.block\.(\d+)\."))
        widths = [a[f"encoder.down.{i}.block.0.conv2.weight"][0] for i in range(levels)]
        z = a["decoder.conv_in.weight"][1]
        cfg = {
            "in_channels": a["encoder.conv_in.weight"][1],
            "out_channels": a["decoder.conv_out.weight"][0],
            "block_out_channels": widths,
            "layers_per_block": layers,
            "down_block_types": ["DownEncoderBlock2D"] * levels,
            "up_block_types": ["UpDecoderBlock2D"] * levels,
            "norm_num_groups": 32,
            "act_fn": "silu",
        }
    except (KeyError, ValueError) as exc:
        raise LatentzooError(f"{where}: the first stage lacks {p}{_one_line(exc).strip(chr(39))}; is the file complete?") from exc
    if "quantize.embedding.weight" in a:
        n, dim = a["quantize.embedding.weight"]
        cfg = {
            "_class_name": "VQModel",
            **cfg,
            "latent_channels": a["encoder.conv_out.weight"][0],
            "num_vq_embeddings": n,
            "vq_embed_dim": dim,
        }
    else:
        cfg = {"_class_name": "AutoencoderKL", **cfg, "latent_channels": z}
    det.ae = cfg
    det.evidence.update(
        {
            "first_stage_config.embed_dim": (a["post_quant_conv.weight"][1], p + "post_quant_conv.weight"),
            "ddconfig.z_channels": (z, p + "decoder.conv_in.weight"),
            "ddconfig.ch": (widths[0], p + "encoder.down.0.block.0.conv2.weight"),
            "ddconfig.ch_mult": ([w // widths[0] for w in widths], p + "encoder.down.*.block.0.conv2.weight"),
            "ddconfig.num_res_blocks": (layers, p + "encoder.down.0.block.*"),
        }
    )


def _text(det: Detected, shapes: dict[str, Any]) -> None:
    if det.kind == "sd1":
        t = K.clip_to_transformers(K.strip(shapes, K.CLIP))
        emb, pos = t["text_model.embeddings.token_embedding.weight"], t["text_model.embeddings.position_embedding.weight"]
        layers = len(_indices(t, r"text_model\.encoder\.layers\.(\d+)\."))
        inner = t["text_model.encoder.layers.0.mlp.fc1.weight"][0]
        act = "quick_gelu"  # OpenAI CLIP ViT-L/14
    else:
        t = K.strip(shapes, K.OPENCLIP)
        emb, pos = t["token_embedding.weight"], t["positional_embedding"]
        layers = K.openclip_layers(t) - 1  # SD 2.x conditions on the penultimate layer
        inner = t["transformer.resblocks.0.mlp.c_fc.weight"][0]
        act = "gelu"  # OpenCLIP ViT-H/14
        det.notes.append(f"OpenCLIP text encoder: {layers} of its {layers + 1} layers kept (SD 2.x conditions on the penultimate layer)")
    width = emb[1]
    det.text = {
        "architectures": ["CLIPTextModel"],
        "vocab_size": emb[0],
        "hidden_size": width,
        "intermediate_size": inner,
        "num_hidden_layers": layers,
        "num_attention_heads": max(1, width // 64),  # CLIP text towers use 64-channel heads (ViT-L: 12 x 64, ViT-H: 16 x 64)
        "max_position_embeddings": pos[0],
        "hidden_act": act,
        "layer_norm_eps": 1e-5,
        "bos_token_id": 49406,
        "eos_token_id": 49407,
        "pad_token_id": 49407 if det.kind == "sd1" else 0,
    }


# ---------------------------------------------------------------------------------------
# the .yaml


def _get(data: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


def check_yaml(det: Detected, data: dict[str, Any], where: Path) -> dict[str, Any]:
    """Fields of the .yaml that agree with the tensors, or one line naming the first disagreement."""
    params = data["model"]["params"]
    places = {
        "unet_config": "unet_config.params",
        "first_stage_config": "first_stage_config.params",
        "ddconfig": "first_stage_config.params.ddconfig",
    }
    for field_name, (value, tensor) in det.evidence.items():
        section, key = field_name.split(".", 1)
        stated = _get(params, f"{places[section]}.{key}")
        if stated is None or (det.kind in ("vqgan", "kl-vae") and section == "unet_config"):
            continue
        if isinstance(value, bool) != isinstance(stated, bool) and not isinstance(value, bool):
            pass
        if (list(stated) if isinstance(stated, list | tuple) else stated) != value:
            raise LatentzooError(
                f"--config {where}: model.params.{places[section]}.{key} is {stated!r} but the checkpoint's {tensor} gives {value!r}; "
                "the config belongs to another model"
            )
    target = str(_get(params, "cond_stage_config.target") or "")
    if target and det.kind in ("sd1", "sd2") and (("OpenCLIP" in target) != (det.kind == "sd2")):
        found = K.OPENCLIP if det.kind == "sd2" else K.CLIP
        raise LatentzooError(f"--config {where}: cond_stage_config.target is {target} but the checkpoint's text encoder is {found}*")
    return params


# ---------------------------------------------------------------------------------------
# convert


def convert(
    source: Path,
    name: str,
    stage: Path,
    *,
    config: str | Path | None = None,
    prediction_type: str | None = None,
    tokenizer: str | Path | None = None,
    scaling_factor: float | None = None,
) -> dict:
    """The ``single-file`` format's convert (see latentzoo.interop.formats)."""
    from latentzoo.interop.toolkit import ReadContext

    if source.is_dir():
        raise LatentzooError(f"{source} is a folder; --from single-file takes one .safetensors file (a diffusers folder: --from diffusers)")
    shapes = read_header(source)
    det = detect(shapes, source)
    data = read_yaml(Path(config)) if config else None
    if data and det.kind in ("vqgan", "kl-vae") and _get(data["model"]["params"], "unet_config"):
        raise LatentzooError(
            f"{source} holds only a first stage ({KINDS[det.kind]}: {_found(shapes)}) but --config {config} describes a full "
            "latent diffusion model; give the full checkpoint, or drop --config to convert the autoencoder alone"
        )
    params = check_yaml(det, data, Path(config)) if data else {}
    ctx = ReadContext.create(name, source, stage)
    ctx.notes.append(f"{source.name}: {KINDS[det.kind]} detected from its tensors" + (f", checked against {config}" if config else ""))
    ctx.notes.extend(det.notes)
    tensors = read_tensors(source)
    if det.kind == "ldm":
        if prediction_type or tokenizer:
            raise LatentzooError(f"--prediction-type / --tokenizer apply to Stable Diffusion checkpoints; {source} is a {KINDS[det.kind]}")
        _convert_ldm(ctx, det, tensors, params, scaling_factor)
    elif det.kind in ("sdxl", "sdxl-refiner"):
        if prediction_type not in (None, "epsilon", "eps"):
            raise LatentzooError(f"--prediction-type {prediction_type}: SDXL base and refiner predict epsilon")
        _convert_sdxl(ctx, det, tensors, params, tokenizer=tokenizer, scaling_factor=scaling_factor)
    elif det.kind in ("sd1", "sd2"):
        _convert_sd(ctx, det, tensors, params, prediction_type=prediction_type, tokenizer=tokenizer, scaling_factor=scaling_factor)
    else:
        if prediction_type or tokenizer:
            raise LatentzooError(f"--prediction-type / --tokenizer apply to Stable Diffusion checkpoints; {source} is a {KINDS[det.kind]}")
        _convert_autoencoder(ctx, det, tensors, params, scaling_factor)
    for entry in ctx.components.values():
        if isinstance(entry.get("training"), dict):
            entry["training"]["converted_from"] = "single-file"
    return {"components": ctx.components, "pipelines": ctx.pipelines, "notes": ctx.notes}


def sd_parts(det: Detected, tensors: dict[str, Any]) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """The diffusers-layout (config, state dict) of each part of a detected SD checkpoint (configs as detected)."""
    unet = K.unet_to_diffusers(K.strip(tensors, K.UNET), det.unet["layers_per_block"])
    vae = K.ae_to_diffusers(K.strip(tensors, K.VAE), len(det.ae["block_out_channels"]))
    if det.kind == "sd1":
        text = K.clip_to_transformers(K.strip(tensors, K.CLIP))
    else:
        text, _ = K.openclip_to_transformers(K.strip(tensors, K.OPENCLIP))
    return {"unet": (det.unet, unet), "vae": (det.ae, vae), "text_encoder": (det.text, text)}


def _convert_sdxl(ctx: Any, det: Detected, tensors: dict[str, Any], params: dict[str, Any], *, tokenizer: Any, scaling_factor: Any) -> None:
    """An SDXL base or refiner file -> the parts of a StableDiffusionXL[Img2Img]Pipeline, converted by the diffusion family."""
    refiner = det.kind == "sdxl-refiner"
    source = ctx.source
    widths = det.unet["block_out_channels"]
    pooled = int(det.texts[-1]["projection_dim"])
    n_ids = REFINER_TIME_IDS if refiner else BASE_TIME_IDS
    time_dim, rest = divmod(int(det.unet["projection_class_embeddings_input_dim"]) - pooled, n_ids)
    if rest or time_dim <= 0:
        other = "a refiner's" if not refiner else "a base's"
        raise LatentzooError(
            f"{source}: {K.UNET}label_emb.0.0.weight takes {det.unet['projection_class_embeddings_input_dim']} features, not "
            f"{pooled} pooled + {n_ids} time ids; its text encoders say {KINDS[det.kind]}, its UNet {other}"
        )
    net = params.get("network_config") or params.get("unet_config")  # sgm's configs say network_config
    ucfg = net.get("params", {}) if isinstance(net, dict) and isinstance(net.get("params"), dict) else {}
    head = int(ucfg.get("num_head_channels") or 64)
    if not ucfg.get("num_head_channels"):
        ctx.notes.append("attention heads: 64 channels each (SDXL's published num_head_channels)")
    image = ucfg.get("image_size") if isinstance(ucfg.get("image_size"), int) else 128
    det.unet = {**det.unet, "attention_head_dim": [w // head for w in widths], "sample_size": image, "addition_time_embed_dim": time_dim}
    scale_sources = [("--scaling-factor", scaling_factor), ("--config scale_factor", params.get("scale_factor"))]
    sf, origin = next(((v, s) for s, v in scale_sources if v is not None), (SDXL_SCALE, "SDXL's published scale_factor"))
    det.ae = {**det.ae, "scaling_factor": _number(sf, origin), "sample_size": image * 8}
    ctx.notes.append(f"latent scaling_factor {sf:g} from {origin}; prediction_type epsilon (SDXL)")
    scheduler = {
        "_class_name": "EulerDiscreteScheduler",  # StableDiffusionXLPipeline's published scheduler
        "beta_schedule": "scaled_linear",
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "num_train_timesteps": 1000,
        "prediction_type": "epsilon",
        "timestep_spacing": "leading",
        "steps_offset": 1,
    }
    unet = K.unet_to_diffusers(K.strip(tensors, K.UNET), det.unet["layers_per_block"])
    vae = K.ae_to_diffusers(K.strip(tensors, K.VAE), len(det.ae["block_out_channels"]))
    parts = {"unet": (det.unet, unet), "vae": (det.ae, vae)}
    names = ["text_encoder_2"] if refiner else ["text_encoder", "text_encoder_2"]
    toks = []
    for i, (part, cfg) in enumerate(zip(names, det.texts, strict=True)):
        kind = "transformer" if cfg["architectures"][0] == "CLIPTextModel" else "model"
        state = K.strip(tensors, f"{XL}{i}.{kind}.")
        parts[part] = (cfg, K.clip_to_transformers(state) if kind == "transformer" else K.openclip_to_transformers(state, whole=True)[0])
        toks.append(load_tokenizer(tokenizer, det, pad=text_pad(kind)))
        cfg.update(bos_token_id=toks[-1].bos_token_id, eos_token_id=toks[-1].eos_token_id)  # the pooled state is the end token's
    pipeline_reader(SDXL_BASE).read_parts(  # the diffusion family's SDXL converter, found through its declaration
        ctx,
        parts,
        tokenizers=toks,
        scheduler_config=scheduler,
        where=source,
        pipeline=SDXL_REFINER if refiner else SDXL_BASE,
        refiner=refiner,
        force_zeros_for_empty_prompt=not refiner,  # the published base / refiner pipelines' settings
    )


def text_pad(kind: str) -> str:
    from latentzoo.core.runtime import text

    return text.EOS if kind == "transformer" else "!"  # OpenCLIP's tokenizer pads with id 0, "!"


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise LatentzooError(f"{what} must be a positive finite number, not {value!r}")
    return float(value)


def _convert_sd(
    ctx: Any, det: Detected, tensors: dict[str, Any], params: dict[str, Any], *, prediction_type: Any, tokenizer: Any, scaling_factor: Any
) -> None:
    source = ctx.source
    # prediction type: not in the tensors
    stated = params.get("parameterization")
    if prediction_type is not None and prediction_type not in PREDICTIONS:
        raise LatentzooError(f"--prediction-type {prediction_type}: use epsilon or v_prediction")
    if prediction_type and stated and PREDICTIONS.get(stated) != PREDICTIONS[prediction_type]:
        raise LatentzooError(f"--prediction-type {prediction_type} contradicts the config's parameterization {stated!r}")
    pred = PREDICTIONS[prediction_type] if prediction_type else PREDICTIONS.get(stated or "")
    if pred is None:
        if det.kind == "sd2":
            raise LatentzooError(
                f"{source} is Stable Diffusion 2.x: whether it predicts epsilon (512-base) or v (768-v) is not in its tensors; "
                "pass --prediction-type epsilon|v_prediction, or --config its .yaml (parameterization)"
            )
        pred = "epsilon"
        ctx.notes.append(
            "prediction_type epsilon (all Stable Diffusion 1.x models; a v-prediction fine-tune needs --prediction-type v_prediction)"
        )
    else:
        ctx.notes.append(f"prediction_type {pred} from {'--prediction-type' if prediction_type else '--config parameterization'}")
    # heads: not in the tensors
    ucfg = params.get("unet_config", {}).get("params", {}) if isinstance(params.get("unet_config"), dict) else {}
    widths = det.unet["block_out_channels"]
    if ucfg.get("num_head_channels", -1) not in (-1, None):
        heads = [w // int(ucfg["num_head_channels"]) for w in widths]
    elif ucfg.get("num_heads", -1) not in (-1, None):
        heads = int(ucfg["num_heads"])
    elif det.kind == "sd2":
        heads = [w // 64 for w in widths]
        ctx.notes.append("attention heads: 64 channels each (SD 2.x's published num_head_channels)")
    else:
        heads = 8
        ctx.notes.append("attention heads: 8 per block (SD 1.x's published num_heads)")
    image = ucfg.get("image_size")
    size = int(image) if isinstance(image, int) and image > 0 else (96 if det.kind == "sd2" and pred == "v_prediction" else 64)
    unet = {**det.unet, "attention_head_dim": heads, "sample_size": size}
    if det.kind == "sd2":
        unet["upcast_attention"] = pred == "v_prediction"  # SD 2.x 768-v upcasts attention to fp32 (diffusers' config for it)
    det.unet = unet
    # latent scale: the file's scale_factor buffer, the .yaml, --scaling-factor, else SD's published constant
    scale_sources = [("--scaling-factor", scaling_factor), ("--config scale_factor", params.get("scale_factor"))]
    if "scale_factor" in tensors:
        scale_sources.append(("the checkpoint's scale_factor", float(tensors["scale_factor"])))
    sf, origin = next(((v, s) for s, v in scale_sources if v is not None), (SD_SCALE, "SD's published scale_factor"))
    det.ae = {**det.ae, "scaling_factor": _number(sf, origin), "sample_size": size * 8}
    ctx.notes.append(f"latent scaling_factor {sf:g} from {origin}")
    # schedule
    sched = {k: params.get(k, v) for k, v in SD_SCHEDULE.items()}
    if params.get("beta_schedule", "linear") != "linear":
        raise LatentzooError(f"--config: beta_schedule {params['beta_schedule']!r}; Stable Diffusion's is LDM's 'linear' (scaled_linear)")
    scheduler = {
        "_class_name": "DDIMScheduler",
        "beta_schedule": "scaled_linear",  # LDM's "linear" schedule is linear in sqrt(beta)
        "beta_start": _number(sched["linear_start"], "linear_start"),
        "beta_end": _number(sched["linear_end"], "linear_end"),
        "num_train_timesteps": int(sched["timesteps"]),
        "prediction_type": pred,
        "timestep_spacing": "leading",
        "steps_offset": 1,
        "clip_sample": False,
        "set_alpha_to_one": False,
    }
    tok = load_tokenizer(tokenizer, det)
    pipeline_reader(SD_PIPELINE).read_parts(ctx, sd_parts(det, tensors), tokenizer=tok, scheduler_config=scheduler, where=source)


def _convert_ldm(ctx: Any, det: Detected, tensors: dict[str, Any], params: dict[str, Any], scaling_factor: Any) -> None:
    """An unconditional CompVis LDM: renamed to a diffusers LDMPipeline (UNet2DModel + VQModel + DDIM) and read by that mapping."""
    from safetensors.torch import save_file

    from latentzoo.interop.toolkit import ReadContext, readers

    source = ctx.source
    ucfg = _get(params, "unet_config.params") or {}
    if not params or not ucfg:
        raise LatentzooError(
            f"{source} is a {KINDS['ldm']}: its attention heads and training schedule are not in the tensors; pass --config its .yaml"
        )
    widths = det.unet["block_out_channels"]
    attn_widths = [w for w, t in zip(widths, det.unet["down_block_types"], strict=True) if t.startswith("Attn")] or widths
    if ucfg.get("num_head_channels", -1) not in (-1, None):
        head = int(ucfg["num_head_channels"])
    elif ucfg.get("num_heads", -1) not in (-1, None) and len({w // int(ucfg["num_heads"]) for w in attn_widths}) == 1:
        head = attn_widths[0] // int(ucfg["num_heads"])
    else:
        raise LatentzooError("--config: unet_config.params states neither num_head_channels nor num_heads giving one head width")
    if ucfg.get("use_scale_shift_norm") or ucfg.get("use_new_attention_order"):
        raise LatentzooError("--config: use_scale_shift_norm / use_new_attention_order are not supported (LDM's defaults are)")
    if params.get("parameterization", "eps") != "eps" or params.get("beta_schedule", "linear") != "linear":
        raise LatentzooError("--config: only LDM's eps parameterization with its 'linear' beta schedule is supported")
    image = ucfg.get("image_size")
    unet_cfg = {**det.unet, "attention_head_dim": head, "sample_size": int(image) if isinstance(image, int) else 64}
    if "scale_factor" in tensors:
        sf, origin = float(tensors["scale_factor"]), "the checkpoint's scale_factor"
    elif scaling_factor is not None:
        sf, origin = scaling_factor, "--scaling-factor"
    elif params.get("scale_factor") is not None:
        sf, origin = params["scale_factor"], "--config scale_factor"
    else:
        sf, origin = 1.0, "the .yaml states none: LatentDiffusion's scale_factor is then 1.0 (scale_by_std off), what it was trained with"
    ctx.notes.append(f"latent scaling_factor {_number(sf, 'scale_factor'):g} from {origin}")
    unet = K.ldm_attention_to_diffusers(K.unet_to_diffusers(K.strip(tensors, K.UNET), det.unet["layers_per_block"]), head)
    vq = K.ae_to_diffusers(K.strip(tensors, K.VAE), len(det.ae["block_out_channels"]))
    scheduler = {
        "_class_name": "DDIMScheduler",
        "beta_schedule": "scaled_linear",  # LDM's "linear" is linear in sqrt(beta)
        "beta_start": _number(params.get("linear_start", 1e-4), "linear_start"),
        "beta_end": _number(params.get("linear_end", 2e-2), "linear_end"),
        "num_train_timesteps": int(params.get("timesteps", 1000)),
        "clip_sample": False,
        "set_alpha_to_one": False,
        "steps_offset": 1,  # LDM's DDIM visits c*i + 1
        "timestep_spacing": "leading",
    }
    folder = ctx.stage / ".ldm-pipeline"  # a diffusers LDMPipeline, read by the diffusion family's own mapping
    parts = {"unet": (unet_cfg, unet), "vqvae": ({**det.ae, "scaling_factor": float(sf)}, vq)}
    for part, (cfg, state) in parts.items():
        (folder / part).mkdir(parents=True)
        (folder / part / "config.json").write_text(json.dumps(cfg), encoding="utf-8")
        save_file({k: v.contiguous() for k, v in state.items()}, str(folder / part / "diffusion_pytorch_model.safetensors"))
    (folder / "scheduler").mkdir()
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(scheduler), encoding="utf-8")
    index = {"_class_name": "LDMPipeline", "unet": ["diffusers", "UNet2DModel"], "vqvae": ["diffusers", "VQModel"]}
    index["scheduler"] = ["diffusers", "DDIMScheduler"]
    models, pipelines = readers()
    sub = ReadContext(ctx.name, folder, ctx.stage, models=models)
    pipelines["LDMPipeline"].read_pipeline(sub, index)
    for entry in sub.components.values():
        entry["training"] = {**(entry.get("training") or {}), **ctx.provenance, "converted_from": "single-file"}
        entry["description"] = str(entry.get("description", "")).replace(folder.name, source.name)
    ctx.components.update(sub.components)
    ctx.pipelines.update({n: {**p, "description": f"CompVis LDM from {source.name}, converted"} for n, p in sub.pipelines.items()})
    ctx.notes.extend(sub.notes)


def _convert_autoencoder(ctx: Any, det: Detected, tensors: dict[str, Any], params: dict[str, Any], scaling_factor: Any) -> None:
    """A first stage alone: its scaling factor is never defaulted (--scaling-factor, or the .yaml's scale_factor)."""
    source = ctx.source
    stated = scaling_factor if scaling_factor is not None else params.get("scale_factor")
    if stated is None:
        raise LatentzooError(
            f"{source} holds only a first stage ({KINDS[det.kind]}), no UNet or text encoder: not a full checkpoint. "
            "To convert the autoencoder alone give its latent --scaling-factor (SD's KL VAE: 0.18215); a VQ model's is measured, never defaulted"
        )
    sf = _number(stated, "--scaling-factor")
    levels = len(det.ae["block_out_channels"])
    state = K.ae_to_diffusers(
        {k: v for k, v in tensors.items() if k.split(".")[0] in ("encoder", "decoder", "quant_conv", "post_quant_conv", "quantize")}, levels
    )
    if det.kind == "kl-vae":
        ctx.convert_state({**det.ae, "scaling_factor": sf}, state, ctx.name, source)
        return
    description = f"VQ-GAN from {source.name} (original single file), converted"
    ctx.convert_state(det.ae, state, ctx.name, source, scaling_factor=sf, description=description)  # the vqgan family's VQModel mapping


# ---------------------------------------------------------------------------------------
# tokenizer


BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
BPE_PACKAGES = ("open_clip", "clip")  # open_clip_torch; clip-anytorch / openai's clip: both ship the same file


def bundled_bpe() -> Path | None:
    """CLIP's merges file from an installed package, found without importing it (no torch / torchvision import)."""
    import importlib.util

    for package in BPE_PACKAGES:
        try:
            spec = importlib.util.find_spec(package)
        except (ImportError, ValueError):
            continue
        for folder in (spec.submodule_search_locations or []) if spec else []:
            path = Path(folder) / BPE_FILE
            if path.is_file():
                return path
    return None


def load_tokenizer(tokenizer: str | Path | None, det: Detected, pad: str | None = None) -> Any:
    """``--tokenizer DIR`` (vocab.json + merges.txt / tokenizer.json), else CLIP's BPE from an installed package; never the network."""
    from latentzoo.core.runtime import text

    positions = (det.text or det.texts[0])["max_position_embeddings"]
    pad = pad or (text.EOS if det.kind == "sd1" else "!")  # SD 2.x's tokenizer (open_clip) pads with id 0, "!"
    if tokenizer is not None:
        tok = text.load(Path(tokenizer), context_length=positions)
        return tok if not det.texts or tok.pad_token == pad else text.TextTokenizer(tok.tokenizer, tok.context_length, pad)
    path = bundled_bpe()
    if path is None:
        raise LatentzooError(
            "a single-file checkpoint carries no tokenizer and CLIP's BPE vocabulary was not found: "
            "pip install --no-deps open_clip_torch (it ships bpe_simple_vocab_16e6.txt.gz), or pass --tokenizer DIR (vocab.json + merges.txt)"
        )
    return text.clip_bpe_from_merges(path, context_length=positions, pad_token=pad)
