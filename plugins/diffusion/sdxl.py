"""Stable Diffusion XL (Podell et al. 2023) in diffusers' layout <-> latentzoo components.

``StableDiffusionXLPipeline`` (the base) and ``StableDiffusionXLImg2ImgPipeline`` (the refiner,
``requires_aesthetics_score``; or the base's img2img) folders in and out, through the same
``convert_sd_parts`` as SD 1.x / 2.x (``sd.py``). What SDXL adds:

- two text encoders (``text_encoder``: CLIP ViT-L, ``text_encoder_2``: OpenCLIP bigG with
  projection; the refiner has only the second), converted as *one* conditioner by the clip
  family (``clip.text_encoders``: penultimate states concatenated, pooled = the projected
  end-token state of the last), with ``force_zeros_for_empty_prompt`` from model_index.json;
- the UNet's ``text_time`` added conditioning: its ``projection_class_embeddings_input_dim``
  must be the pooled width + 6 (base: original size, crop, target size) or 5 (refiner:
  original size, crop, aesthetic score) x ``addition_time_embed_dim``; a UNet whose count
  contradicts its pipeline (a refiner given as a base, or a base as a refiner) is refused;
- the KL VAE's own scaling factor (0.13025, from its config); Euler / Euler-ancestral
  schedulers map to ``euler`` / ``euler-ancestral`` as for SD; guidance 5.0 by default
  (StableDiffusionXLPipeline's).
"""

from __future__ import annotations

from typing import Any

from latentzoo.core.contract.errors import LatentzooError

BASE, IMG2IMG = "StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline"
DEFAULT_GUIDANCE = 5.0  # StableDiffusionXLPipeline.__call__'s
BASE_TIME_IDS, REFINER_TIME_IDS = 6, 5


def check_text_time(ctx: Any, where: Any, ucfg: dict[str, Any], cond_space: dict[str, Any]) -> int:
    """The pooled width a text_time UNet takes; refused in one line when its time-id count is not its pipeline's."""
    pooled = cond_space.get("pooled_width")
    ctx.require(bool(pooled), where, "addition_embed_type text_time needs a pooled text embedding (SDXL's text_encoder_2)")
    dim, total = ucfg.get("addition_time_embed_dim"), ucfg.get("projection_class_embeddings_input_dim")
    ctx.require(bool(dim) and bool(total), where, "text_time without addition_time_embed_dim / projection_class_embeddings_input_dim")
    refiner = bool(ucfg.get("aesthetic_score"))
    want = REFINER_TIME_IDS if refiner else BASE_TIME_IDS
    if (total - pooled) != want * dim:
        got = (total - pooled) / dim
        actual = "a refiner's (5: with aesthetic score)" if got == REFINER_TIME_IDS else f"{got:g}"
        if got == BASE_TIME_IDS:
            actual = "a base model's (6: with target size)"
        role = "a refiner (requires_aesthetics_score)" if refiner else "a base model"
        raise LatentzooError(
            f"{where}: the UNet takes {actual} time ids, but the pipeline is {role}; "
            f"convert a {'refiner as StableDiffusionXLImg2ImgPipeline with requires_aesthetics_score' if got == REFINER_TIME_IDS else 'base as StableDiffusionXLPipeline'}"
        )
    return int(pooled)


def convert_sdxl_parts(
    ctx: Any,
    parts: dict[str, tuple[dict[str, Any], dict[str, Any]]],
    *,
    tokenizers: list[Any],
    scheduler_config: dict[str, Any],
    where: Any,
    pipeline: str,
    refiner: bool,
    force_zeros_for_empty_prompt: bool,
) -> None:
    """SDXL parts in diffusers layout: ``unet``, ``vae``, ``text_encoder`` (base only) and ``text_encoder_2``."""
    from .sd import convert_sd_parts

    encoders = ["text_encoder_2"] if refiner else ["text_encoder", "text_encoder_2"]
    missing = [p for p in ("unet", "vae", *encoders) if p not in parts]
    if missing:
        what = "the SDXL refiner" if refiner else "an SDXL base pipeline"
        raise LatentzooError(f"{where}: {what} needs {', '.join(missing)}; it is not there")
    raws, state = [], {}
    for i, part in enumerate(encoders):
        raw, tensors = parts[part]
        raws.append(raw)
        state.update({f"encoders.{i}.{k}": v for k, v in tensors.items()})
    text = ({"_class_name": "CLIPTextEncoders", "encoders": raws, "force_zeros_for_empty_prompt": force_zeros_for_empty_prompt}, state)
    convert_sd_parts(
        ctx,
        {"unet": parts["unet"], "vae": parts["vae"], "text_encoder": text},
        tokenizer=None,
        scheduler_config=scheduler_config,
        where=where,
        pipeline=pipeline,
        text_context={"tokenizers": tokenizers},
        unet_extra={"aesthetic_score": refiner},
        guidance=DEFAULT_GUIDANCE,
    )
    ctx.pipelines[ctx.name]["description"] = (
        f"Stable Diffusion XL {'refiner' if refiner else 'base'} ({pipeline}) from {where.name}, converted"
        + (": refines images (img2img, inpaint, --refiner)" if refiner else ": text to image")
    )


def read_sdxl_pipeline(ctx: Any, index: dict[str, Any]) -> None:
    """A StableDiffusionXL[Img2Img]Pipeline folder."""
    src, kind = ctx.source, index.get("_class_name")
    refiner = bool(index.get("requires_aesthetics_score")) if kind == IMG2IMG else False
    present = lambda part: bool(index.get(part)) and index.get(part) != [None, None]  # noqa: E731
    encoders = [("text_encoder_2", "tokenizer_2")] if refiner else [("text_encoder", "tokenizer"), ("text_encoder_2", "tokenizer_2")]
    for part in ("unet", "vae", "scheduler", *(p for pair in encoders for p in pair)):
        if not present(part) or not (src / part).is_dir():
            role = "the refiner (requires_aesthetics_score)" if refiner else kind
            raise LatentzooError(f"{src / 'model_index.json'}: {role} needs a {part}/ subfolder, which {src} lacks")
    parts: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    for part in ("unet", "vae"):
        _, raw = ctx.config_of(src / part)
        parts[part] = (raw, ctx.read_tensors(ctx.weights_file(src / part)))
    for te, _ in encoders:
        _, raw = ctx.config_of(src / te)
        weights = src / te / "model.safetensors"
        if not weights.is_file():
            raise LatentzooError(f"{src / te} has no model.safetensors (pickles are never loaded); give a pipeline saved with safetensors")
        parts[te] = (raw, ctx.read_tensors(weights))
    _, sched_raw = ctx.config_of(src / "scheduler")
    convert_sdxl_parts(
        ctx,
        parts,
        tokenizers=[src / tk for _, tk in encoders],
        scheduler_config=sched_raw,
        where=src,
        pipeline=kind,
        refiner=refiner,
        force_zeros_for_empty_prompt=bool(index.get("force_zeros_for_empty_prompt", True)),
    )
    if any(present(p) for p in ("image_encoder", "feature_extractor")):
        ctx.notes.append("not converted: image_encoder, feature_extractor (IP-Adapter inputs)")


def write_sdxl_pipeline(
    fmt: Any, ctx: Any, entry: Any, spec: Any, prior: Any, decoder: Any, sampler: Any, scheduler: Any, conditioner: Any
) -> None:
    """A StableDiffusionXLPipeline (or, for a refiner UNet, StableDiffusionXLImg2ImgPipeline) folder."""
    from latentzoo.core.contract.weights import write_json

    from .sd import DIFFUSERS_VERSION

    name, out = entry.name, ctx.folder
    ucfg = dict(prior.data.get("config") or {})
    refiner = bool(ucfg.get("aesthetic_score"))
    if conditioner.data.get("class") != "clip.text_encoders":
        raise LatentzooError(f"pipeline {name}: an SDXL UNet needs SDXL's text encoders (clip.text_encoders), not {spec.conditioner}")
    ctx.write_model(out / "unet", fmt._unet_export_config(ctx, ucfg), ctx.tensors(prior))
    written = ctx.write_part(decoder, out / "vae", space=prior.latent_space)
    if written != "AutoencoderKL":
        raise LatentzooError(f"pipeline {name}: decoder {spec.decoder} is a {written}; SDXL needs an AutoencoderKL")
    folders = [("text_encoder_2", "tokenizer_2")] if refiner else [("text_encoder", "tokenizer"), ("text_encoder_2", "tokenizer_2")]
    ctx.write_part(conditioner, out, folders=folders)
    sched_cfg = fmt._scheduler_config(ctx, name, ucfg, sampler, scheduler)
    ctx.write_model(out / "scheduler", sched_cfg, {}, "scheduler_config.json")
    cfg = dict(conditioner.data.get("config") or {})
    none = [None, None]
    index: dict[str, Any] = {
        "_class_name": IMG2IMG if refiner else BASE,
        "_diffusers_version": DIFFUSERS_VERSION,
        "feature_extractor": none,
        "force_zeros_for_empty_prompt": bool(cfg.get("force_zeros_for_empty_prompt")),
        "image_encoder": none,
        "scheduler": ["diffusers", sched_cfg["_class_name"]],
        "text_encoder": none if refiner else ["transformers", "CLIPTextModel"],
        "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
        "tokenizer": none if refiner else ["transformers", "CLIPTokenizer"],
        "tokenizer_2": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    if refiner:
        index["requires_aesthetics_score"] = True
    write_json(out / "model_index.json", index)
    guidance = spec.defaults.get("guidance")
    if guidance is not None:
        ctx.notes.append(f"the pipeline's guidance {guidance} is a call argument in diffusers: pass guidance_scale={guidance}")
