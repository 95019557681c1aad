"""Stable Diffusion (1.x and 2.x) in diffusers' layout <-> latentzoo components and a text-to-image pipeline.

The diffusion family's mapping of ``diffusion.unet_cond`` (declared there under ``"formats"``):
``StableDiffusionPipeline`` folders in (``convert --from diffusers``) and out (``export --to
diffusers``). The UNet is this family's; the VAE and the text encoder are converted / written
by the families that map them (``ctx.convert_state`` / ``ctx.write_part``: vae.autoencoder for
AutoencoderKL, clip.text for CLIPTextModel + its tokenizer), so nothing here imports them.

Layered so that any source of diffusers-layout state dicts can use it (a diffusers folder
here; an original single-file checkpoint once its keys are renamed to diffusers' names):

``convert_sd_parts(ctx, parts, *, tokenizer, scheduler_config, where=None) -> None``
    ``ctx``: ``latentzoo.interop.toolkit.ReadContext.create(name, source, stage)``
    (``ctx.name`` names the pipeline, weights go to ``ctx.stage``). ``parts`` maps ``"unet"``,
    ``"vae"`` and ``"text_encoder"`` to ``(config, state_dict)``: diffusers'
    ``UNet2DConditionModel`` / ``AutoencoderKL`` config.json dicts and transformers'
    ``CLIPTextModel`` config.json dict (``_class_name`` / ``architectures`` may be left out),
    state dicts in diffusers / transformers key names. ``tokenizer``: a
    ``latentzoo.core.runtime.text.TextTokenizer`` or a folder (vocab.json + merges.txt or tokenizer.json).
    ``scheduler_config``: a diffusers scheduler_config.json dict. Adds to ``ctx.components``
    ``NAME-text-encoder`` (clip.text conditioner, tokenizer.json beside its weights),
    ``NAME-vae`` (vae.autoencoder), ``NAME-unet`` (diffusion.unet_cond prior), a sampler and a
    scheduler entry where the config needs its own; ``ctx.pipelines[NAME]``; notes. The format's
    ``convert`` then returns ``{"components": ctx.components, "pipelines": ctx.pipelines,
    "notes": ctx.notes}``. Weights are adopted, never copied (``ctx.build_assigned``).

The scheduler config is split as latentzoo keeps things apart: the training schedule (betas,
T) and ``prediction_type`` (epsilon / v_prediction) go to the prior; timestep spacing +
``steps_offset`` to a ``diffusion.timesteps`` scheduler (the built-in ``leading`` / ``trailing``
/ ``linspace`` when the offset is 0; ``use_karras_sigmas``: the karras scheduler); the algorithm
to a sampler: DDIM -> ddim (eta 0); PNDM -> pndm (PLMS, step for step as diffusers runs it with
``skip_prk_steps``; with the Runge-Kutta warm-up a note says PLMS's improved-Euler start replaces it); DDPM -> ddpm;
Euler -> euler; EulerAncestral -> euler-ancestral; DPMSolverMultistep (dpmsolver++, order 2) ->
dpmpp-2m; LMS -> lms. Defaults: 50 steps, guidance 7.5 (StableDiffusionPipeline's). Export maps
the sampler back (ddim -> DDIMScheduler, ...). ``safety_checker``, ``feature_extractor`` and
``image_encoder`` are not converted (a note says so) and not written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from latentzoo.core.contract.errors import LatentzooError

DIFFUSERS_VERSION = "0.30.0"
PIPELINE = "StableDiffusionPipeline"
INPAINT = "StableDiffusionInpaintPipeline"  # a 9-channel UNet: latents + mask + masked-image latents
IGNORED = ("safety_checker", "feature_extractor", "image_encoder")
DEFAULT_STEPS, DEFAULT_GUIDANCE = 50, 7.5  # StableDiffusionPipeline.__call__ defaults

UNET_DEFAULTS: dict[str, Any] = {  # diffusers UNet2DConditionModel's constructor defaults
    "sample_size": None,
    "in_channels": 4,
    "out_channels": 4,
    "center_input_sample": False,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "only_cross_attention": False,
    "block_out_channels": [320, 640, 1280, 1280],
    "layers_per_block": 2,
    "downsample_padding": 1,
    "mid_block_scale_factor": 1,
    "dropout": 0.0,
    "act_fn": "silu",
    "norm_num_groups": 32,
    "norm_eps": 1e-5,
    "cross_attention_dim": 1280,
    "transformer_layers_per_block": 1,
    "reverse_transformer_layers_per_block": None,
    "encoder_hid_dim": None,
    "encoder_hid_dim_type": None,
    "attention_head_dim": 8,
    "num_attention_heads": None,
    "dual_cross_attention": False,
    "use_linear_projection": False,
    "class_embed_type": None,
    "addition_embed_type": None,
    "addition_time_embed_dim": None,
    "num_class_embeds": None,
    "upcast_attention": False,
    "resnet_time_scale_shift": "default",
    "resnet_skip_time_act": False,
    "resnet_out_scale_factor": 1.0,
    "time_embedding_type": "positional",
    "time_embedding_dim": None,
    "time_embedding_act_fn": None,
    "timestep_post_act": None,
    "time_cond_proj_dim": None,
    "conv_in_kernel": 3,
    "conv_out_kernel": 3,
    "projection_class_embeddings_input_dim": None,
    "attention_type": "default",
    "class_embeddings_concat": False,
    "mid_block_only_cross_attention": None,
    "cross_attention_norm": None,
}
UNET_TO_OURS = (
    "sample_size",
    "in_channels",
    "out_channels",
    "block_out_channels",
    "layers_per_block",
    "down_block_types",
    "up_block_types",
    "mid_block_type",
    "cross_attention_dim",
    "attention_head_dim",
    "num_attention_heads",
    "transformer_layers_per_block",
    "use_linear_projection",
    "upcast_attention",
    "norm_num_groups",
    "norm_eps",
    "num_class_embeds",
    "flip_sin_to_cos",
    "freq_shift",
    "dropout",
    "addition_embed_type",
    "addition_time_embed_dim",
    "projection_class_embeddings_input_dim",
)
# Options latentzoo's UNetCondPrior does not implement: each must keep diffusers' default.
UNET_FIXED = tuple(k for k in UNET_DEFAULTS if k not in UNET_TO_OURS)

SCHED_COMMON: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "trained_betas": None,
    "prediction_type": "epsilon",
    "steps_offset": 0,
    "rescale_betas_zero_snr": False,
    "use_karras_sigmas": False,
}
# Per class: (its defaults that differ, the latentzoo sampler it maps to, a note when the mapping is not exact).
SCHEDULERS: dict[str, tuple[dict[str, Any], str, str | None]] = {
    "DDIMScheduler": ({"timestep_spacing": "leading", "set_alpha_to_one": True, "clip_sample": True}, "diffusion.ddim", None),
    "PNDMScheduler": ({"timestep_spacing": "leading", "set_alpha_to_one": False, "skip_prk_steps": False}, "diffusion.pndm", None),
    "DDPMScheduler": ({"timestep_spacing": "leading", "variance_type": "fixed_small", "clip_sample": True}, "diffusion.ddpm", None),
    "EulerDiscreteScheduler": ({"timestep_spacing": "linspace"}, "diffusion.euler", None),
    "EulerAncestralDiscreteScheduler": ({"timestep_spacing": "linspace"}, "ksampling.euler_ancestral", None),
    "DPMSolverMultistepScheduler": (
        {"timestep_spacing": "linspace", "algorithm_type": "dpmsolver++", "solver_order": 2},
        "diffusion.dpmpp_2m",
        None,
    ),
    "LMSDiscreteScheduler": ({"timestep_spacing": "linspace"}, "ksampling.lms", None),
}
# The registry names of those samplers (built-in entries), and back to a diffusers class on export.
SAMPLER_NAMES = {
    "diffusion.ddim": "ddim",
    "diffusion.pndm": "pndm",
    "diffusion.ddpm": "ddpm",
    "diffusion.euler": "euler",
    "ksampling.euler_ancestral": "euler-ancestral",
    "diffusion.dpmpp_2m": "dpmpp-2m",
    "ksampling.lms": "lms",
}
EXPORT_SCHEDULERS = {
    "diffusion.ddim": "DDIMScheduler",
    "diffusion.pndm": "PNDMScheduler",
    "diffusion.ddpm": "DDPMScheduler",
    "diffusion.euler": "EulerDiscreteScheduler",
    "ksampling.euler_ancestral": "EulerAncestralDiscreteScheduler",
    "diffusion.dpmpp_2m": "DPMSolverMultistepScheduler",
    "ksampling.lms": "LMSDiscreteScheduler",
}
SPACINGS = ("leading", "trailing", "linspace")
TRAINING = ("beta_schedule", "beta_start", "beta_end", "rescale_betas_zero_snr")


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple | list) else value


# ---------------------------------------------------------------------------------------
# reading


def unet_config(ctx: Any, where: Any, raw: dict[str, Any]) -> dict[str, Any]:
    """UNetCondPrior's config (without prediction type and training schedule) from a UNet2DConditionModel config."""
    cfg = ctx.with_defaults(raw, UNET_DEFAULTS)
    for key in UNET_FIXED:
        if key not in ("only_cross_attention",):
            ctx.require(cfg[key] == UNET_DEFAULTS[key], where, f"{key} {cfg[key]!r} (only {UNET_DEFAULTS[key]!r})")
    ctx.require(cfg["only_cross_attention"] in (False, None) or cfg["only_cross_attention"] == [False] * len(cfg["block_out_channels"]),
                where, "only_cross_attention")  # fmt: skip
    ctx.require(isinstance(cfg["sample_size"], int), where, f"sample_size {cfg['sample_size']!r} (need one integer size)")
    depth = cfg["transformer_layers_per_block"]
    ctx.require(
        isinstance(depth, int)
        or (isinstance(depth, list) and len(depth) == len(cfg["block_out_channels"]) and all(isinstance(d, int) for d in depth)),
        where,
        f"transformer_layers_per_block {depth!r} (one integer, or one per block)",
    )
    ctx.require(
        cfg["addition_embed_type"] in (None, "text_time"), where, f"addition_embed_type {cfg['addition_embed_type']!r} (only text_time)"
    )
    return {k: _plain(cfg[k]) for k in UNET_TO_OURS}


def scheduler_parts(ctx: Any, where: Any, raw: dict[str, Any]) -> dict[str, Any]:
    """A diffusers scheduler config split into training schedule, spacing and sampler (module docstring)."""
    cls = raw.get("_class_name")
    if cls not in SCHEDULERS:
        raise LatentzooError(f"{where}: scheduler {cls!r} is not supported; latentzoo maps {', '.join(SCHEDULERS)}")
    defaults, sampler_cls, note = SCHEDULERS[cls]
    cfg = ctx.with_defaults(raw, {**SCHED_COMMON, **defaults})
    ctx.require(cfg["trained_betas"] is None, where, "trained_betas (an explicit beta list)")
    ctx.require(cfg["beta_schedule"] in ("linear", "scaled_linear", "squaredcos_cap_v2"), where, f"beta_schedule {cfg['beta_schedule']!r}")
    ctx.require(cfg["timestep_spacing"] in SPACINGS, where, f"timestep_spacing {cfg['timestep_spacing']!r}")
    ctx.require(cfg["prediction_type"] in ("epsilon", "v_prediction"), where, f"prediction_type {cfg['prediction_type']!r}")
    ctx.require(isinstance(cfg["num_train_timesteps"], int) and cfg["num_train_timesteps"] >= 2, where, "num_train_timesteps")
    ctx.require(isinstance(cfg["steps_offset"], int) and cfg["steps_offset"] >= 0, where, f"steps_offset {cfg['steps_offset']!r}")
    if cls == "DPMSolverMultistepScheduler":
        ok = cfg["algorithm_type"] == "dpmsolver++" and cfg["solver_order"] == 2
        ctx.require(ok, where, f"algorithm_type {cfg['algorithm_type']!r} order {cfg['solver_order']} (only dpmsolver++ order 2)")
    sampler: dict[str, Any] = {}
    if sampler_cls == "diffusion.pndm":
        sampler = {"set_alpha_to_one": bool(cfg["set_alpha_to_one"])}
        if not cfg["skip_prk_steps"]:
            note = (
                "PNDMScheduler with skip_prk_steps false warms up with 3 pseudo Runge-Kutta steps; latentzoo's pndm "
                "starts with PLMS's pseudo improved-Euler step instead (the same as skip_prk_steps true)"
            )
    elif sampler_cls == "diffusion.ddim":
        sampler = {"eta": 0.0, "set_alpha_to_one": bool(cfg["set_alpha_to_one"])}
        if cls == "DDIMScheduler" and cfg["clip_sample"]:
            sampler["clip_sample"] = True
    elif sampler_cls == "diffusion.ddpm":
        sampler = {"variance_type": cfg["variance_type"], "clip_sample": bool(cfg["clip_sample"])}
    training = {k: cfg[k] for k in TRAINING}
    if training["beta_schedule"] == "squaredcos_cap_v2":
        training.pop("beta_start"), training.pop("beta_end")
    return {
        "class": cls,
        "training_schedule": training,
        "num_train_timesteps": int(cfg["num_train_timesteps"]),
        "prediction_type": cfg["prediction_type"],
        "spacing": cfg["timestep_spacing"],
        "steps_offset": int(cfg["steps_offset"]),
        "karras": bool(cfg["use_karras_sigmas"]),
        "sampler_class": sampler_cls,
        "sampler": sampler,
        "note": note,
    }


def convert_sd_parts(
    ctx: Any,
    parts: dict[str, tuple[dict[str, Any], dict[str, Any]]],
    *,
    tokenizer: Any,
    scheduler_config: dict[str, Any],
    where: str | Path | None = None,
    pipeline: str = PIPELINE,
    text_context: dict[str, Any] | None = None,
    unet_extra: dict[str, Any] | None = None,
    guidance: float = DEFAULT_GUIDANCE,
) -> None:
    """Stable Diffusion parts in diffusers layout -> registry entries in ``ctx`` (see the module docstring).

    SDXL (``plugins/diffusion/sdxl.py``) passes its own ``pipeline`` name, its text encoders' raw config
    (``_class_name: CLIPTextEncoders``) with ``text_context`` (their tokenizers), ``unet_extra`` (latentzoo-only
    UNet config: ``aesthetic_score``) and its default ``guidance``."""
    from .unet_cond import UNetCondPrior

    where = Path(where) if where is not None else ctx.source
    missing = [p for p in ("unet", "vae", "text_encoder") if p not in parts]
    if missing:
        raise LatentzooError(f"{where}: a Stable Diffusion pipeline needs {', '.join(missing)}; it is not there")
    name = ctx.name
    sched = scheduler_parts(ctx, where / "scheduler", scheduler_config)
    te_comp, vae_comp = f"{name}-text-encoder", f"{name}-vae"
    te_raw, te_state = parts["text_encoder"]
    te_raw = {"architectures": ["CLIPTextModel"], **te_raw}
    text_context = {"tokenizer": tokenizer} if text_context is None else text_context
    cond_space = ctx.convert_state(te_raw, te_state, te_comp, where / "text_encoder", **text_context)["conditioning_space"]
    vae_raw, vae_state = parts["vae"]
    vae_raw = {"_class_name": "AutoencoderKL", **vae_raw}
    space = ctx.convert_state(vae_raw, vae_state, vae_comp, where / "vae" / "config.json")["latent_space"]

    # UNet -> prior in that latent space, conditioned on the text encoder's tokens
    unet_raw, unet_state = parts["unet"]
    unet_where = where / "unet" / "config.json"
    ctx.require(unet_raw.get("_class_name", "UNet2DConditionModel") == "UNet2DConditionModel", unet_where, "not a UNet2DConditionModel")
    ucfg = {
        **unet_config(ctx, unet_where, unet_raw),
        "prediction_type": sched["prediction_type"],
        "num_train_timesteps": sched["num_train_timesteps"],
        "training_schedule": dict(sched["training_schedule"]),
        **(unet_extra or {}),
    }
    c = space["channels"]
    # An inpainting UNet (StableDiffusionInpaintPipeline) also takes the mask and the masked image's latents: 2C + 1 channels.
    ctx.require(
        ucfg["in_channels"] in (c, 2 * c + 1),
        unet_where,
        f"in_channels {ucfg['in_channels']} (VAE latent channels {c}: {c} or {2 * c + 1})",
    )
    ctx.require(ucfg["out_channels"] == c, unet_where, f"out_channels {ucfg['out_channels']} != VAE latent channels {c}")
    inpainting = ucfg["in_channels"] == 2 * c + 1
    if inpainting and pipeline == PIPELINE:
        pipeline = INPAINT
    conditioning = {k: cond_space[k] for k in ("kind", "width", "sequence_length", "encoder")}
    if ucfg.get("addition_embed_type") == "text_time":  # first: a refiner given as a base is named as such
        from .sdxl import check_text_time

        conditioning.update(pooled=True, pooled_width=check_text_time(ctx, unet_where, ucfg, cond_space))
    ctx.require(
        ucfg["cross_attention_dim"] == cond_space["width"],
        unet_where,
        f"cross_attention_dim {ucfg['cross_attention_dim']} != text encoder width {cond_space['width']}",
    )
    unet = ctx.build_assigned(UNetCondPrior, ucfg, unet_state, unet_where)
    unet_comp = f"{name}-unet"
    unet_sha = ctx.save(unet_comp, unet, "diffusion")
    ctx.components[unet_comp] = {
        "family": "diffusion",
        "class": "diffusion.unet_cond",
        "roles": ["prior"],
        "config": ucfg,
        "weights": {"path": f"{unet_comp}.safetensors", "sha256": unet_sha},
        "latent_space": dict(space),  # a copy: one dict twice would be a YAML alias in the fragment
        "conditioning": conditioning,
        "description": f"{pipeline} UNet2DConditionModel from {where.name} ({sched['prediction_type']})",
        "training": dict(ctx.provenance),
    }

    # scheduler config -> scheduler + sampler
    if sched["karras"]:
        scheduler = "karras"
    elif sched["steps_offset"] == 0:
        scheduler = sched["spacing"]
    else:
        scheduler = f"{name}-scheduler"
        ctx.components[scheduler] = {
            "family": "diffusion",
            "class": "diffusion.timesteps",
            "roles": ["scheduler"],
            "config": {"spacing": sched["spacing"], "steps_offset": sched["steps_offset"]},
            "description": f"{sched['class']} timestep spacing from {where.name}",
            "training": dict(ctx.provenance),
        }
    sampler = SAMPLER_NAMES[sched["sampler_class"]]
    if sched["sampler"] and {k: v for k, v in sched["sampler"].items() if k != "eta"} != {"set_alpha_to_one": True}:
        sampler = f"{name}-{sampler}"
        ctx.components[sampler] = {
            "family": sched["sampler_class"].split(".")[0],
            "class": sched["sampler_class"],
            "roles": ["sampler"],
            "config": sched["sampler"],
            "description": f"{sched['class']} sampling options from {where.name}",
            "training": dict(ctx.provenance),
        }
    defaults: dict[str, Any] = {"steps": DEFAULT_STEPS, "guidance": guidance}
    if sched["sampler_class"] == "diffusion.ddim":
        defaults["eta"] = 0.0
    ctx.pipelines[name] = {
        "conditioner": te_comp,
        "encoder": vae_comp,
        "prior": unet_comp,
        "decoder": vae_comp,
        "sampler": sampler,
        "scheduler": scheduler,
        "defaults": defaults,
        "description": f"Stable Diffusion ({pipeline}) from {where.name}, converted: "
        + ("inpainting (latentzoo inpaint; the mask and the masked image's latents condition the UNet)" if inpainting else "text to image"),
    }
    if sched["note"]:
        ctx.notes.append(sched["note"])
    if sched["spacing"] == "linspace" and sched["sampler_class"] != "diffusion.ddim":
        ctx.notes.append(f"{sched['class']} with linspace spacing visits fractional timesteps; latentzoo rounds them to training timesteps")
    ctx.notes.append(
        f"scheduler {sched['class']} -> sampler {sampler}, scheduler {scheduler}; prediction_type {sched['prediction_type']}; "
        f"defaults {DEFAULT_STEPS} steps, guidance {guidance}"
    )


class StableDiffusionFormat:
    """The diffusers mapping of ``diffusion.unet_cond``: StableDiffusionPipeline folders in and out."""

    reads: tuple[str, ...] = ()
    pipelines = (PIPELINE, INPAINT, "StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline")

    @staticmethod
    def read_parts(ctx: Any, parts: dict[str, tuple[dict[str, Any], dict[str, Any]]], **context: Any) -> None:
        """The pipeline's parts already in memory (config, tensors), as a single-file checkpoint gives them: ``convert_sd_parts``
        (SDXL's, with ``text_encoder_2``: ``sdxl.convert_sdxl_parts``)."""
        if "text_encoder_2" in parts:
            from .sdxl import convert_sdxl_parts

            return convert_sdxl_parts(ctx, parts, **context)
        convert_sd_parts(ctx, parts, **context)

    def read_pipeline(self, ctx: Any, index: dict[str, Any]) -> None:
        kind = index.get("_class_name")
        if kind not in (PIPELINE, INPAINT):
            from .sdxl import read_sdxl_pipeline

            return read_sdxl_pipeline(ctx, index)
        src = ctx.source
        for part in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
            if not (src / part).is_dir():
                raise LatentzooError(f"{src / 'model_index.json'}: {kind} needs a {part}/ subfolder, which {src} lacks")
        parts = {}
        for part in ("unet", "vae"):
            _, raw = ctx.config_of(src / part)
            parts[part] = (raw, ctx.read_tensors(ctx.weights_file(src / part)))
        te = src / "text_encoder"
        _, te_raw = ctx.config_of(te)
        te_weights = te / "model.safetensors"
        if not te_weights.is_file():
            if (te / "pytorch_model.bin").is_file():
                raise LatentzooError(
                    f"{te} holds only pytorch_model.bin (a pickle, never loaded by latentzoo); re-save it with safe_serialization=True"
                )
            raise LatentzooError(f"{te} has no model.safetensors; give a pipeline saved with safetensors")
        parts["text_encoder"] = (te_raw, ctx.read_tensors(te_weights))
        _, sched_raw = ctx.config_of(src / "scheduler")
        skipped = [p for p in IGNORED if index.get(p) and index.get(p) != [None, None]]
        convert_sd_parts(ctx, parts, tokenizer=src / "tokenizer", scheduler_config=sched_raw, where=src)
        if skipped:
            ctx.notes.append(f"not converted: {', '.join(skipped)} (latentzoo runs no safety checker; images are not filtered)")

    # -- writing ---------------------------------------------------------------------------
    def write_pipeline(self, ctx: Any, entry: Any, spec: Any) -> None:
        """A StableDiffusionPipeline folder (unet, vae, text_encoder, tokenizer, scheduler, model_index.json)."""
        from latentzoo.core.contract.compose import resolve_component
        from latentzoo.core.contract.weights import write_json

        reg, name, out = ctx.registry, entry.name, ctx.folder
        prior = resolve_component(reg, spec.prior, "prior")
        decoder = resolve_component(reg, spec.decoder, "decoder")
        sampler = resolve_component(reg, spec.sampler, "sampler")
        scheduler = resolve_component(reg, spec.scheduler, "scheduler") if spec.scheduler else None
        if not spec.conditioner:
            raise LatentzooError(f"pipeline {name}: a {PIPELINE} needs a text conditioner")
        conditioner = resolve_component(reg, spec.conditioner, "conditioner")
        if spec.encoder and spec.encoder != spec.decoder:
            ctx.notes.append(f"encoder {spec.encoder} differs from decoder {spec.decoder}; the folder's vae is the decoder")
        space = prior.latent_space
        ucfg = dict(prior.data.get("config") or {})
        if ucfg.get("addition_embed_type") == "text_time":
            from .sdxl import write_sdxl_pipeline

            return write_sdxl_pipeline(self, ctx, entry, spec, prior, decoder, sampler, scheduler, conditioner)
        ctx.write_model(out / "unet", self._unet_export_config(ctx, ucfg), ctx.tensors(prior))
        written = ctx.write_part(decoder, out / "vae", space=space)
        if written != "AutoencoderKL":
            raise LatentzooError(f"pipeline {name}: decoder {spec.decoder} is a {written}; {PIPELINE} needs an AutoencoderKL")
        ctx.write_part(conditioner, out / "text_encoder", tokenizer_folder=out / "tokenizer")
        sched_cfg = self._scheduler_config(ctx, name, ucfg, sampler, scheduler)
        ctx.write_model(out / "scheduler", sched_cfg, {}, "scheduler_config.json")
        inpainting = int(ucfg.get("in_channels", 4)) == 2 * int(space.channels) + 1
        index = {
            "_class_name": INPAINT if inpainting else PIPELINE,
            "_diffusers_version": DIFFUSERS_VERSION,
            "feature_extractor": [None, None],
            "image_encoder": [None, None],
            "requires_safety_checker": False,
            "safety_checker": [None, None],
            "scheduler": ["diffusers", sched_cfg["_class_name"]],
            "text_encoder": ["transformers", "CLIPTextModel"],
            "tokenizer": ["transformers", "CLIPTokenizer"],
            "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"],
        }
        write_json(out / "model_index.json", index)
        ctx.notes.append("no safety_checker / feature_extractor written (requires_safety_checker false)")
        guidance = spec.defaults.get("guidance")
        if guidance is not None:
            ctx.notes.append(f"the pipeline's guidance {guidance} is a call argument in diffusers: pass guidance_scale={guidance}")

    @staticmethod
    def _unet_export_config(ctx: Any, config: dict[str, Any]) -> dict[str, Any]:
        from latentzoo.plugins.diffusion.unet_cond import UNetCondPrior

        body = {
            k: v for k, v in config.items() if k not in ("prediction_type", "num_train_timesteps", "training_schedule", "aesthetic_score")
        }
        cfg = {**ctx.signature_defaults(UNetCondPrior), **body}
        out: dict[str, Any] = {"_class_name": "UNet2DConditionModel", "_diffusers_version": DIFFUSERS_VERSION}
        out.update({k: UNET_DEFAULTS[k] for k in UNET_FIXED})
        out.update({k: _plain(cfg[k]) for k in UNET_TO_OURS if k in cfg})
        return out

    def _scheduler_config(self, ctx: Any, name: str, ucfg: dict[str, Any], sampler: Any, scheduler: Any) -> dict[str, Any]:
        cls = EXPORT_SCHEDULERS.get(sampler.data.get("class", ""))
        if cls is None:
            raise LatentzooError(
                f"pipeline {name}: sampler {sampler.name} has no diffusers scheduler; compose it with one of "
                f"{', '.join(SAMPLER_NAMES.values())}"
            )
        out: dict[str, Any] = {"_class_name": cls, "_diffusers_version": DIFFUSERS_VERSION}
        schedule = dict(ucfg.get("training_schedule") or {})
        out["num_train_timesteps"] = int(ucfg.get("num_train_timesteps", 1000))
        out.update({k: schedule.get(k, SCHED_COMMON[k]) for k in TRAINING})
        out.update(prediction_type=ucfg.get("prediction_type", "epsilon"), trained_betas=None)
        sched_cls = scheduler.data.get("class") if scheduler is not None else None
        if sched_cls == "diffusion.timesteps":
            opts = ctx.options(scheduler)
            out["timestep_spacing"] = opts.get("spacing") or "leading"
            out["steps_offset"] = int(opts.get("steps_offset") or 0)
        elif sched_cls == "diffusion.karras" and cls != "DDIMScheduler":
            out.update(use_karras_sigmas=True, timestep_spacing="leading", steps_offset=0)
        else:
            raise LatentzooError(
                f"pipeline {name}: scheduler {scheduler.name if scheduler else None} has no diffusers counterpart; "
                f"use one that walks the training timesteps ({', '.join(SPACINGS)})"
            )
        smp = ctx.options(sampler)
        if cls == "DDIMScheduler":
            out.update(set_alpha_to_one=bool(smp.get("set_alpha_to_one", True)), clip_sample=bool(smp.get("clip_sample") or False))
        elif cls == "PNDMScheduler":
            out.update(set_alpha_to_one=bool(smp.get("set_alpha_to_one", True)), skip_prk_steps=True)
        elif cls == "DDPMScheduler":
            out.update(variance_type=smp.get("variance_type") or "fixed_small", clip_sample=bool(smp.get("clip_sample") or False))
        elif cls == "DPMSolverMultistepScheduler":
            out.update(algorithm_type="dpmsolver++", solver_order=2)
        return out
