"""diffusers <-> the diffusion family: UNet2DModel, DDIM/DDPM schedulers, LDM/DDPM/DDIM pipelines.

Used by the diffusers format plugin through this family's declaration on ``diffusion.unet``
(``"formats": {"diffusers": ...}``). ``UNet2DModel`` state dicts map key for key onto
``UNetPrior``, so converting a UNet is config mapping plus a strict load that proves the fit.

A diffusers scheduler config mixes three things latentzoo keeps apart:

* the **training schedule** (``beta_schedule``, ``beta_start``, ``beta_end``,
  ``num_train_timesteps``, ``rescale_betas_zero_snr``) and ``prediction_type``: they describe
  how the UNet was trained, so they go to the prior's config (``training_schedule``), from which
  it builds its ``noise_schedule``;
* the **timestep spacing** (``timestep_spacing``, ``steps_offset``): which of those levels to
  visit, i.e. a scheduler: the built-in ``leading`` / ``trailing`` / ``linspace`` (a
  ``diffusion.timesteps`` entry of its own when ``steps_offset`` is not 0);
* the **sampler** (DDIM: ``set_alpha_to_one``; DDPM: ``variance_type``; both: the x0 clipping /
  thresholding options): a sampler entry ``<name>-ddim`` or ``<name>-ddpm``.

Export puts them back together from the prior, the scheduler and the sampler of a pipeline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from latentzoo.core.contract.errors import LatentzooError

DIFFUSERS_VERSION = "0.30.0"
UNET_DEFAULTS: dict[str, Any] = {
    "sample_size": None,
    "in_channels": 3,
    "out_channels": 3,
    "center_input_sample": False,
    "time_embedding_type": "positional",
    "time_embedding_dim": None,
    "freq_shift": 0,
    "flip_sin_to_cos": True,
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"],
    "mid_block_type": "UNetMidBlock2D",
    "up_block_types": ["AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
    "block_out_channels": [224, 448, 672, 896],
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "downsample_padding": 1,
    "downsample_type": "conv",
    "upsample_type": "conv",
    "dropout": 0.0,
    "act_fn": "silu",
    "attention_head_dim": 8,
    "norm_num_groups": 32,
    "attn_norm_num_groups": None,
    "norm_eps": 1e-5,
    "resnet_time_scale_shift": "default",
    "add_attention": True,
    "class_embed_type": None,
    "num_class_embeds": None,
    "num_train_timesteps": None,
}
UNET_TO_OURS = (
    "sample_size",
    "in_channels",
    "out_channels",
    "block_out_channels",
    "layers_per_block",
    "down_block_types",
    "up_block_types",
    "attention_head_dim",
    "norm_num_groups",
    "norm_eps",
    "num_class_embeds",
    "flip_sin_to_cos",
    "freq_shift",
    "dropout",
    "add_attention",
    "center_input_sample",
    "downsample_padding",
)
SCHED_DEFAULTS: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "trained_betas": None,
    "clip_sample": True,
    "set_alpha_to_one": True,
    "steps_offset": 0,
    "prediction_type": "epsilon",
    "thresholding": False,
    "dynamic_thresholding_ratio": 0.995,
    "clip_sample_range": 1.0,
    "sample_max_value": 1.0,
    "timestep_spacing": "leading",
    "rescale_betas_zero_snr": False,
    "variance_type": "fixed_small",
}
TRAINING_SCHEDULE = ("beta_schedule", "beta_start", "beta_end", "rescale_betas_zero_snr")
X0_OPTIONS = ("clip_sample", "clip_sample_range", "thresholding", "dynamic_thresholding_ratio", "sample_max_value")
SPACINGS = ("leading", "trailing", "linspace")  # the built-in diffusion.timesteps schedulers of the same names
SCHEDULERS = {"diffusion.ddim": "DDIMScheduler", "diffusion.ddpm": "DDPMScheduler"}
PIPELINE_STEPS = {"LDMPipeline": 50, "DDIMPipeline": 50, "DDPMPipeline": 1000}


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple | list) else value


def unet_config(ctx: Any, path: Path, raw: dict[str, Any]) -> dict[str, Any]:
    """Our UNetPrior config (without prediction_type / training schedule) from a UNet2DModel config."""
    cfg = ctx.with_defaults(raw, UNET_DEFAULTS)
    checks = {
        "time_embedding_type": "positional",
        "time_embedding_dim": None,
        "mid_block_type": "UNetMidBlock2D",
        "mid_block_scale_factor": 1,
        "downsample_type": "conv",
        "upsample_type": "conv",
        "act_fn": "silu",
        "attn_norm_num_groups": None,
        "resnet_time_scale_shift": "default",
        "class_embed_type": None,
    }
    for key, want in checks.items():
        ctx.require(cfg[key] == want, path, f"{key} {cfg[key]!r} (only {want!r})")
    ctx.require(isinstance(cfg["sample_size"], int), path, f"sample_size {cfg['sample_size']!r} (need one integer size)")
    out = {k: _plain(cfg[k]) for k in UNET_TO_OURS}
    if isinstance(out["attention_head_dim"], list):
        ctx.require(len(set(out["attention_head_dim"])) == 1, path, "per-block attention_head_dim")
        out["attention_head_dim"] = out["attention_head_dim"][0]
    return out


def scheduler_parts(ctx: Any, path: Path, raw: dict[str, Any]) -> dict[str, Any]:
    """A DDIM/DDPM scheduler config split into training schedule, spacing and sampler (see the module docstring)."""
    cls = raw.get("_class_name")
    ctx.require(cls in SCHEDULERS.values(), path, f"scheduler class {cls!r} (only {', '.join(SCHEDULERS.values())})")
    cfg = ctx.with_defaults(raw, SCHED_DEFAULTS)
    ctx.require(cfg["trained_betas"] is None, path, "trained_betas (an explicit beta list)")
    ctx.require(cfg["beta_schedule"] in ("linear", "scaled_linear", "squaredcos_cap_v2"), path, f"beta_schedule {cfg['beta_schedule']!r}")
    ctx.require(cfg["timestep_spacing"] in SPACINGS, path, f"timestep_spacing {cfg['timestep_spacing']!r}")
    ctx.require(cfg["prediction_type"] in ("epsilon", "v_prediction", "sample"), path, f"prediction_type {cfg['prediction_type']!r}")
    ctx.require(isinstance(cfg["num_train_timesteps"], int) and cfg["num_train_timesteps"] >= 2, path, "num_train_timesteps")
    ctx.require(isinstance(cfg["steps_offset"], int) and cfg["steps_offset"] >= 0, path, f"steps_offset {cfg['steps_offset']!r}")
    x0 = {k: cfg[k] for k in X0_OPTIONS}
    if cls == "DDPMScheduler":
        ctx.require(cfg["variance_type"] in ("fixed_small", "fixed_large"), path, f"variance_type {cfg['variance_type']!r}")
        sampler_cls, sampler = "diffusion.ddpm", {"variance_type": cfg["variance_type"], **x0}
    else:
        sampler_cls, sampler = "diffusion.ddim", {"eta": 0.0, "set_alpha_to_one": bool(cfg["set_alpha_to_one"]), **x0}
    training = {k: cfg[k] for k in TRAINING_SCHEDULE}
    if training["beta_schedule"] == "squaredcos_cap_v2":  # a closed form: beta_start / beta_end do not enter it
        training.pop("beta_start"), training.pop("beta_end")
    return {
        "class": cls,
        "training_schedule": training,
        "num_train_timesteps": int(cfg["num_train_timesteps"]),
        "prediction_type": cfg["prediction_type"],
        "spacing": cfg["timestep_spacing"],
        "steps_offset": int(cfg["steps_offset"]),
        "sampler_class": sampler_cls,
        "sampler": sampler,
    }


def pixel_space(channels: int) -> dict[str, Any]:
    return {"kind": "continuous", "channels": channels, "factor": 1, "autoencoder": "pixels", "scaling_factor": 1.0, "shift": 0.0}


class DiffusersFormat:
    """The diffusers mapping of the diffusion family."""

    reads = ("UNet2DModel", "DDIMScheduler", "DDPMScheduler")
    pipelines = tuple(PIPELINE_STEPS)

    # -- reading ---------------------------------------------------------------------------
    def read(self, ctx: Any, folder: Path, raw: dict[str, Any], comp: str, **context: Any) -> dict[str, Any]:
        if raw.get("_class_name") == "UNet2DModel":
            return self._read_unet_alone(ctx, folder, raw, comp)
        return self._read_scheduler(ctx, folder / "scheduler_config.json", raw, comp, standalone=True)

    def _read_scheduler(self, ctx: Any, path: Path, raw: dict[str, Any], base: str, *, standalone: bool) -> dict[str, Any]:
        parts = scheduler_parts(ctx, path, raw)
        provenance = dict(ctx.provenance)
        if standalone or parts["steps_offset"]:
            name = base if standalone else f"{base}-scheduler"
            ctx.components[name] = {
                "family": "diffusion",
                "class": "diffusion.timesteps",
                "roles": ["scheduler"],
                "config": {"spacing": parts["spacing"], "steps_offset": parts["steps_offset"]},
                "description": f"{parts['class']} timestep spacing from {ctx.source.name}",
                "training": provenance,
            }
        else:
            name = parts["spacing"]  # the built-in scheduler of that spacing
        sampler = f"{base}-{parts['sampler_class'].split('.')[1]}"
        ctx.components[sampler] = {
            "family": "diffusion",
            "class": parts["sampler_class"],
            "roles": ["sampler"],
            "config": parts["sampler"],
            "description": f"{parts['class']} sampling options from {ctx.source.name}",
            "training": provenance,
        }
        if standalone:
            ctx.notes.append(
                f"prediction_type {parts['prediction_type']} and the {parts['training_schedule']['beta_schedule']} training schedule "
                "belong to a prior; they are recorded when a pipeline or UNet is converted"
            )
        return {**parts, "scheduler": name, "sampler_name": sampler}

    def _unet(self, ctx: Any, folder: Path, raw: dict[str, Any], comp: str, sched: dict[str, Any], space: dict[str, Any]) -> None:
        from .unet import UNetPrior

        path = folder / "config.json"
        ctx.require(raw.get("_class_name") == "UNet2DModel", path, f"class {raw.get('_class_name')!r} is not UNet2DModel")
        cfg = {
            **unet_config(ctx, path, raw),
            "prediction_type": sched["prediction_type"],
            "num_train_timesteps": sched["num_train_timesteps"],
            "training_schedule": dict(sched["training_schedule"]),
        }
        model = ctx.build_and_load(UNetPrior, cfg, ctx.load_weights(folder), path)
        ctx.require(
            cfg["in_channels"] == space["channels"], path, f"in_channels {cfg['in_channels']} != latent channels {space['channels']}"
        )
        sha = ctx.save(comp, model, "diffusion")
        ctx.components[comp] = {
            "family": "diffusion",
            "class": "diffusion.unet",
            "roles": ["prior"],
            "config": cfg,
            "weights": {"path": f"{comp}.safetensors", "sha256": sha},
            "latent_space": space,
            "description": f"diffusers UNet2DModel from {ctx.source.name}, converted ({sched['prediction_type']})",
            "training": dict(ctx.provenance),
        }

    def _read_unet_alone(self, ctx: Any, folder: Path, raw: dict[str, Any], comp: str) -> dict[str, Any]:
        unet_config(ctx, folder / "config.json", raw)  # what we cannot convert is refused first
        ctx.weights_file(folder)
        sched_path = folder.parent / "scheduler" / "scheduler_config.json"
        if not sched_path.is_file():
            raise LatentzooError(
                f"{folder}: a UNet alone does not say how it was trained and latentzoo never guesses a noise schedule; "
                "convert the pipeline folder, or put its scheduler_config.json in ../scheduler/ (diffusers' layout)"
            )
        sched = scheduler_parts(ctx, sched_path, ctx.read_json(sched_path))
        ctx.notes.append(f"prediction_type {sched['prediction_type']} and training schedule from {sched_path}")
        channels = int(ctx.with_defaults(raw, UNET_DEFAULTS)["in_channels"])
        ctx.notes.append("latent space: pixels (a UNet folder alone does not say which autoencoder it was trained on)")
        self._unet(ctx, folder, raw, comp, sched, pixel_space(channels))
        return {}

    def read_pipeline(self, ctx: Any, index: dict[str, Any]) -> None:
        src, name, kind = ctx.source, ctx.name, index.get("_class_name")
        for part in ("unet", "scheduler", *(("vqvae",) if kind == "LDMPipeline" else ())):
            if not (src / part).is_dir():
                raise LatentzooError(f"{src / 'model_index.json'}: {kind} needs a {part}/ subfolder, which {src} lacks")
        sched_path, sched_raw = ctx.config_of(src / "scheduler")
        sched = self._read_scheduler(ctx, sched_path, sched_raw, name, standalone=False)
        _, unet_raw = ctx.config_of(src / "unet")
        if kind == "LDMPipeline":
            encoder = decoder = f"{name}-vqvae"
            space = ctx.read_part(src / "vqvae", decoder).get("latent_space")
            if space is None:
                raise LatentzooError(f"{src / 'vqvae'}: the converted autoencoder states no latent space")
        else:
            channels = int(ctx.with_defaults(unet_raw, UNET_DEFAULTS)["in_channels"])
            space = pixel_space(channels)
            encoder, decoder = None, f"{name}-pixels"
            ctx.components[decoder] = {
                "family": "diffusion",
                "class": "diffusion.pixels",
                "roles": ["decoder"],
                "config": {"channels": channels},
                "latent_space": {k: v for k, v in space.items() if k in ("kind", "channels", "factor", "autoencoder")},
                "description": "pixel space (identity decoder)",
            }
        if kind == "LDMPipeline" and sched["sampler_class"] != "diffusion.ddim":
            raise LatentzooError(f"{sched_path}: an LDMPipeline runs DDIM, but its scheduler is {sched['class']}")
        self._unet(ctx, src / "unet", unet_raw, f"{name}-unet", sched, space)
        body: dict[str, Any] = {
            "prior": f"{name}-unet",
            "decoder": decoder,
            "sampler": sched["sampler_name"],
            "scheduler": sched["scheduler"],
        }
        if encoder:
            body = {"encoder": encoder, **body}
        defaults: dict[str, Any] = {"steps": PIPELINE_STEPS[kind]}
        if sched["sampler_class"] == "diffusion.ddim":
            defaults["eta"] = 0.0
        ctx.pipelines[name] = {**body, "defaults": defaults, "description": f"diffusers {kind} from {src.name}, converted"}

    # -- writing ---------------------------------------------------------------------------
    def _unet_export_config(self, ctx: Any, config: dict[str, Any]) -> dict[str, Any]:
        from .unet import UNetPrior

        body = {k: v for k, v in config.items() if k not in ("prediction_type", "num_train_timesteps", "training_schedule")}
        cfg = {**ctx.signature_defaults(UNetPrior), **body}
        out = {"_class_name": "UNet2DModel", "_diffusers_version": DIFFUSERS_VERSION}
        out.update({k: _plain(cfg[k]) for k in UNET_TO_OURS})
        out.update({k: UNET_DEFAULTS[k] for k in UNET_DEFAULTS if k not in out})
        return out

    def write(self, ctx: Any, entry: Any, folder: Path, **context: Any) -> str:
        """A UNet2DModel folder (its config carries no prediction_type: a note says which)."""
        cfg = dict(entry.data.get("config") or {})
        ctx.notes.append(f"UNet2DModel configs carry no prediction_type; this prior predicts {cfg.get('prediction_type', 'epsilon')}")
        ctx.write_model(folder, self._unet_export_config(ctx, cfg), ctx.tensors(entry))
        return "UNet2DModel"

    def _scheduler_config(self, ctx: Any, name: str, prior: Any, sampler: Any, scheduler: Any) -> dict[str, Any]:
        cls = SCHEDULERS.get(sampler.data.get("class", ""))
        if cls is None or scheduler is None:
            raise LatentzooError(
                f"pipeline {name}: diffusers pipelines run DDIM or DDPM on a timestep scheduler; compose it with ddim or ddpm"
            )
        if scheduler.data.get("class") != "diffusion.timesteps":
            raise LatentzooError(
                f"pipeline {name}: scheduler {scheduler.name} ({scheduler.data.get('class')}) has no diffusers counterpart; "
                f"use one that walks the training timesteps ({', '.join(SPACINGS)})"
            )
        prior_cfg = dict(prior.data.get("config") or {})
        schedule = dict(prior_cfg.get("training_schedule") or {})
        if "beta_schedule" not in schedule:
            raise LatentzooError(f"pipeline {name}: prior {prior.name} states no training_schedule; diffusers needs its beta schedule")
        spacing = ctx.options(scheduler)
        smp = ctx.options(sampler)
        out: dict[str, Any] = {"_class_name": cls, "_diffusers_version": DIFFUSERS_VERSION}
        out["num_train_timesteps"] = int(schedule.get("num_train_timesteps", prior_cfg.get("num_train_timesteps", 1000)))
        for key in TRAINING_SCHEDULE:
            out[key] = schedule.get(key, SCHED_DEFAULTS[key])
        out["timestep_spacing"] = spacing.get("spacing") or "leading"
        out["steps_offset"] = int(spacing.get("steps_offset") or 0)
        if cls == "DDIMScheduler":
            out["set_alpha_to_one"] = bool(smp.get("set_alpha_to_one", True))
        else:
            out["variance_type"] = smp.get("variance_type") or "fixed_small"
        for key in X0_OPTIONS:
            out[key] = smp.get(key) if smp.get(key) is not None else (False if key == "clip_sample" else SCHED_DEFAULTS[key])
        out.update(prediction_type=prior_cfg.get("prediction_type", "epsilon"), trained_betas=None)
        return out

    def write_pipeline(self, ctx: Any, entry: Any, spec: Any) -> None:
        """An LDMPipeline (autoencoder decoder) or a DDPM/DDIMPipeline (pixel decoder) folder."""
        from latentzoo.core.contract.compose import resolve_component

        reg, name, out = ctx.registry, entry.name, ctx.folder
        prior = resolve_component(reg, spec.prior, "prior")
        decoder = resolve_component(reg, spec.decoder, "decoder")
        sampler = resolve_component(reg, spec.sampler, "sampler")
        scheduler = resolve_component(reg, spec.scheduler, "scheduler") if spec.scheduler else None
        if spec.encoder and spec.encoder != spec.decoder:
            raise LatentzooError(f"pipeline {name}: encoder and decoder differ; a diffusers pipeline has one autoencoder")
        sched_cfg = self._scheduler_config(ctx, name, prior, sampler, scheduler)
        if sched_cfg["_class_name"] == "DDIMScheduler" and sched_cfg["timestep_spacing"] != "leading":
            ctx.notes.append("diffusers' DDIMScheduler steps to t - T // n, which matches latentzoo only for leading spacing")
        space = prior.latent_space
        ctx.write_model(out / "unet", self._unet_export_config(ctx, dict(prior.data.get("config") or {})), ctx.tensors(prior))
        ctx.write_model(out / "scheduler", sched_cfg, {}, "scheduler_config.json")
        if decoder.data.get("class") == "diffusion.pixels":
            if space is not None and (space.scaling_factor not in (None, 1.0) or space.shift):
                raise LatentzooError(f"pipeline {name}: a pixel prior with scaling/shift has no diffusers pipeline")
            kind = "DDPMPipeline" if sched_cfg["_class_name"] == "DDPMScheduler" else "DDIMPipeline"
            index = {"unet": ["diffusers", "UNet2DModel"], "scheduler": ["diffusers", sched_cfg["_class_name"]]}
        else:
            if sched_cfg["_class_name"] != "DDIMScheduler":
                raise LatentzooError(f"pipeline {name}: diffusers' LDMPipeline runs DDIM; compose it with a DDIM sampler to export")
            written = ctx.write_part(decoder, out / "vqvae", space=space)
            if written != "VQModel":
                raise LatentzooError(f"pipeline {name}: decoder {spec.decoder} is a {written}; diffusers' LDMPipeline needs a VQModel")
            kind = "LDMPipeline"
            index = {"vqvae": ["diffusers", "VQModel"], "unet": ["diffusers", "UNet2DModel"], "scheduler": ["diffusers", "DDIMScheduler"]}
        eta = spec.defaults.get("eta", ctx.options(sampler).get("eta", 0.0))
        if eta:
            ctx.notes.append(f"the pipeline's eta {eta} is a call argument in diffusers: pass eta={eta}")
        from latentzoo.core.contract.weights import write_json

        write_json(out / "model_index.json", {"_class_name": kind, "_diffusers_version": DIFFUSERS_VERSION, **index})
