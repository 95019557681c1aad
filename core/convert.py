"""diffusers interop without diffusers: import model / pipeline folders, export them back.

Reads and writes diffusers' on-disk format only (``config.json`` / ``scheduler_config.json`` /
``model_index.json`` + ``diffusion_pytorch_model.safetensors``). ``VQModel``, ``AutoencoderKL``
and ``UNet2DModel`` state dicts map key for key onto ``VQAutoencoder``, ``KLAutoencoder`` and
``UNetPrior`` (see core/layers.py), so converting is config mapping plus a strict load that
proves the fit. A KL autoencoder's ``shift_factor`` is latentzoo's ``shift`` (both normalise as
``(z - shift) * scaling_factor``).

The VQ latent scaling factor is never defaulted. ``VQModel``'s constructor default (0.18215)
is Stable Diffusion's KL-VAE constant, not a measurement of any VQ model, and old configs
(e.g. CompVis/ldm-celebahq-256) do not state one at all, so diffusers silently uses that
constant and samples garbage. Conversion takes it from the config only when stated and not
that default; otherwise from ``--scaling-factor`` or measured with ``--calibrate``.

Safetensors only: a folder holding only ``diffusion_pytorch_model.bin`` (a pickle) is refused.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import LatentzooError
from .registry import Registry, parse_file, user_registry_path
from .weights import save_tensors, space_identity, write_bytes, write_json

WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"
DIFFUSERS_VERSION = "0.30.0"  # the format written; any diffusers >= 0.30 reads it
SD_VAE_DEFAULT_SCALE = 0.18215

# diffusers' constructor defaults, for keys an (old) config leaves out.
VQ_DEFAULTS: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"],
    "up_block_types": ["UpDecoderBlock2D"],
    "block_out_channels": [64],
    "layers_per_block": 1,
    "act_fn": "silu",
    "latent_channels": 3,
    "sample_size": 32,
    "num_vq_embeddings": 256,
    "norm_num_groups": 32,
    "vq_embed_dim": None,
    "norm_type": "group",
    "mid_block_add_attention": True,
    "lookup_from_codebook": False,
    "force_upcast": False,
}
KL_DEFAULTS: dict[str, Any] = {
    **{k: v for k, v in VQ_DEFAULTS.items() if k not in ("num_vq_embeddings", "vq_embed_dim", "norm_type", "lookup_from_codebook")},
    "latent_channels": 4,
    "force_upcast": True,
    "shift_factor": None,
    "latents_mean": None,
    "latents_std": None,
    "use_quant_conv": True,
    "use_post_quant_conv": True,
}
KL_TO_OURS = (
    "in_channels",
    "out_channels",
    "block_out_channels",
    "layers_per_block",
    "latent_channels",
    "norm_num_groups",
    "sample_size",
    "mid_block_add_attention",
    "use_quant_conv",
    "use_post_quant_conv",
)
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
VQ_TO_OURS = (
    "in_channels",
    "out_channels",
    "block_out_channels",
    "layers_per_block",
    "latent_channels",
    "num_vq_embeddings",
    "vq_embed_dim",
    "norm_num_groups",
    "sample_size",
    "mid_block_add_attention",
)
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
# a diffusers scheduler config splits three ways: the prior's training schedule, the level picker
# (spacing), and the sampler's options
TRAINING_FROM_SCHED = ("beta_schedule", "beta_start", "beta_end", "rescale_betas_zero_snr")
SAMPLER_FROM_SCHED = ("clip_sample", "clip_sample_range", "thresholding", "dynamic_thresholding_ratio", "sample_max_value")
PIPELINE_STEPS = {"LDMPipeline": 50, "DDIMPipeline": 50, "DDPMPipeline": 1000}


@dataclass
class Converted:
    """What ``convert_diffusers`` wrote: the fragment, its entries, and how each value was chosen."""

    name: str
    outdir: Path
    fragment: Path
    components: dict[str, dict[str, Any]]
    pipelines: dict[str, dict[str, Any]]
    notes: list[str] = field(default_factory=list)
    registered: Path | None = None


# ---------------------------------------------------------------------------------------
# reading diffusers folders


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise LatentzooError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except json.JSONDecodeError as exc:
        raise LatentzooError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg}); is this a diffusers folder?") from exc
    if not isinstance(data, dict):
        raise LatentzooError(f"{path} is not a JSON object; is this a diffusers folder?")
    return data


def _config_of(folder: Path) -> tuple[Path, dict[str, Any]]:
    for name in ("config.json", "scheduler_config.json"):
        if (folder / name).is_file():
            return folder / name, _read_json(folder / name)
    raise LatentzooError(f"{folder} has no model_index.json, config.json or scheduler_config.json; give a diffusers folder")


def _with_defaults(config: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    return {**defaults, **{k: v for k, v in config.items() if not k.startswith("_")}}


def _require(cond: bool, where: Path, message: str) -> None:
    if not cond:
        raise LatentzooError(f"{where}: {message}; latentzoo cannot convert this model")


def _load_source_weights(folder: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    path = folder / WEIGHTS_FILE
    if not path.is_file():
        if (folder / "diffusion_pytorch_model.bin").is_file():
            raise LatentzooError(
                f"{folder} holds only diffusion_pytorch_model.bin (a pickle, never loaded by latentzoo); "
                "re-save it as safetensors (save_pretrained(..., safe_serialization=True))"
            )
        raise LatentzooError(f"{folder} has no {WEIGHTS_FILE}; give a diffusers model folder saved with safetensors")
    try:
        return load_file(str(path))
    except Exception as exc:
        raise LatentzooError(f"{path} is not a readable safetensors file ({exc})") from exc


def vq_config(path: Path, raw: dict[str, Any]) -> dict[str, Any]:
    """Our VQAutoencoder config from a diffusers VQModel config (refusing what we do not implement)."""
    cfg = _with_defaults(raw, VQ_DEFAULTS)
    n = len(cfg["block_out_channels"])
    _require(cfg["act_fn"] == "silu", path, f"act_fn {cfg['act_fn']!r} (only silu)")
    _require(cfg["norm_type"] == "group", path, f"norm_type {cfg['norm_type']!r} (only group)")
    _require(not cfg["lookup_from_codebook"], path, "lookup_from_codebook is set")
    _require(list(cfg["down_block_types"]) == ["DownEncoderBlock2D"] * n, path, f"down_block_types {cfg['down_block_types']}")
    _require(list(cfg["up_block_types"]) == ["UpDecoderBlock2D"] * n, path, f"up_block_types {cfg['up_block_types']}")
    return {k: (list(cfg[k]) if isinstance(cfg[k], tuple | list) else cfg[k]) for k in VQ_TO_OURS}


def kl_config(path: Path, raw: dict[str, Any]) -> dict[str, Any]:
    """Our KLAutoencoder config from a diffusers AutoencoderKL config."""
    cfg = _with_defaults(raw, KL_DEFAULTS)
    n = len(cfg["block_out_channels"])
    _require(cfg["act_fn"] == "silu", path, f"act_fn {cfg['act_fn']!r} (only silu)")
    _require(list(cfg["down_block_types"]) == ["DownEncoderBlock2D"] * n, path, f"down_block_types {cfg['down_block_types']}")
    _require(list(cfg["up_block_types"]) == ["UpDecoderBlock2D"] * n, path, f"up_block_types {cfg['up_block_types']}")
    _require(cfg["latents_mean"] is None and cfg["latents_std"] is None, path, "per-channel latents_mean / latents_std")
    return {k: (list(cfg[k]) if isinstance(cfg[k], tuple | list) else cfg[k]) for k in KL_TO_OURS}


def unet_config(path: Path, raw: dict[str, Any]) -> dict[str, Any]:
    """Our UNetPrior config (without prediction_type / num_train_timesteps) from a UNet2DModel config."""
    cfg = _with_defaults(raw, UNET_DEFAULTS)
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
        _require(cfg[key] == want, path, f"{key} {cfg[key]!r} (only {want!r})")
    _require(isinstance(cfg["sample_size"], int), path, f"sample_size {cfg['sample_size']!r} (need one integer size)")
    out = {k: (list(cfg[k]) if isinstance(cfg[k], tuple | list) else cfg[k]) for k in UNET_TO_OURS}
    if isinstance(out["attention_head_dim"], list):
        _require(len(set(out["attention_head_dim"])) == 1, path, "per-block attention_head_dim")
        out["attention_head_dim"] = out["attention_head_dim"][0]
    return out


@dataclass
class SchedulerParts:
    """A DDIM/DDPM scheduler config split into the prior's training schedule, a timestep scheduler and a sampler."""

    training_schedule: dict[str, Any]
    num_train_timesteps: int
    levels: dict[str, Any]  # a diffusion.timesteps scheduler config: spacing, steps_offset
    sampler_cls: str
    sampler: dict[str, Any]
    prediction_type: str


def scheduler_parts(path: Path, raw: dict[str, Any]) -> SchedulerParts:
    """The parts of a diffusers DDIM/DDPM scheduler config."""
    cls = raw.get("_class_name")
    _require(cls in ("DDIMScheduler", "DDPMScheduler"), path, f"scheduler class {cls!r} (only DDIMScheduler, DDPMScheduler)")
    cfg = _with_defaults(raw, SCHED_DEFAULTS)
    _require(cfg["trained_betas"] is None, path, "trained_betas (an explicit beta list)")
    _require(
        cfg["beta_schedule"] in ("linear", "scaled_linear", "squaredcos_cap_v2"),
        path,
        f"beta_schedule {cfg['beta_schedule']!r}",
    )
    _require(cfg["timestep_spacing"] in ("leading", "trailing", "linspace"), path, f"timestep_spacing {cfg['timestep_spacing']!r}")
    _require(cfg["prediction_type"] in ("epsilon", "v_prediction", "sample"), path, f"prediction_type {cfg['prediction_type']!r}")
    training = {k: cfg[k] for k in TRAINING_FROM_SCHED}
    if training["beta_schedule"] == "squaredcos_cap_v2":
        training.pop("beta_start"), training.pop("beta_end")
    levels = {"spacing": cfg["timestep_spacing"], "steps_offset": cfg["steps_offset"]}
    sampler = {k: cfg[k] for k in SAMPLER_FROM_SCHED}
    if cls == "DDPMScheduler":  # DDPMScheduler's alpha_bar before t = 0 is 1
        _require(cfg["variance_type"] in ("fixed_small", "fixed_large"), path, f"variance_type {cfg['variance_type']!r}")
        sampler_cls, sampler = "diffusion.ddpm", {"variance_type": cfg["variance_type"], **sampler}
    else:
        sampler_cls, sampler = "diffusion.ddim", {"eta": 0.0, "set_alpha_to_one": cfg["set_alpha_to_one"], **sampler}
    return SchedulerParts(training, int(cfg["num_train_timesteps"]), levels, sampler_cls, sampler, cfg["prediction_type"])


# ---------------------------------------------------------------------------------------
# converting


def _build_and_load(cls: Any, config: dict[str, Any], state: dict[str, Any], where: Path) -> Any:
    try:
        model = cls(**config)
    except (TypeError, ValueError) as exc:
        raise LatentzooError(f"{where}: config does not build a latentzoo model ({exc})") from exc
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise LatentzooError(
            f"{where}: weights do not map onto latentzoo's layout: {len(missing)} missing {missing[:3]}, "
            f"{len(unexpected)} unexpected {unexpected[:3]}"
        )
    return model.eval().requires_grad_(False)


def calibrate(vq: Any, data: str, batch: int = 64) -> tuple[float, float, int]:
    """(scaling_factor = 1/std, mean, number of images) of ``vq``'s pre-quantisation latents on ``data``."""
    import torch

    from .data import load_dataset

    images = load_dataset(data, split="train", size=int(vq.sample_size), channels=int(vq.image_channels)).images
    with torch.inference_mode():
        z = torch.cat([vq.encode(images[i : i + batch]) for i in range(0, len(images), batch)]).double()
    std = float(z.std())
    if not math.isfinite(std) or std <= 0:
        raise LatentzooError(f"--calibrate {data}: the latents have std {std}; cannot measure a scaling factor")
    return 1.0 / std, float(z.mean()), len(images)


def _scaling(
    vq_path: Path, raw: dict[str, Any], vq: Any, scaling_factor: float | None, data: str | None, notes: list[str], *, vq_model: bool = True
) -> tuple[float, str]:
    if scaling_factor is not None and data is not None:
        raise LatentzooError("give --scaling-factor or --calibrate, not both")
    if scaling_factor is not None:
        if not (math.isfinite(scaling_factor) and scaling_factor > 0):
            raise LatentzooError(f"--scaling-factor must be a positive number, not {scaling_factor}")
        return float(scaling_factor), "--scaling-factor"
    if data is not None:
        sf, mean, n = calibrate(vq, data)
        notes.append(
            f"calibrated on {data} ({n} images): latent std {1 / sf:.6g}, mean {mean:.6g}; "
            "shift stays 0 (diffusers' latents are only scaled, as LDM's scale_factor = 1/std)"
        )
        return sf, f"--calibrate {data}"
    stated = raw.get("scaling_factor")
    if stated is None:
        raise LatentzooError(
            f"{vq_path} states no scaling_factor and latentzoo never defaults it: "
            "pass --scaling-factor F, or --calibrate DATA (a dataset name or image folder) to measure 1/std of the latents"
        )
    if vq_model and abs(float(stated) - SD_VAE_DEFAULT_SCALE) < 1e-9:
        raise LatentzooError(
            f"{vq_path} states scaling_factor {SD_VAE_DEFAULT_SCALE}, diffusers' default (Stable Diffusion's KL-VAE constant), "
            f"not a measurement for this VQ model: pass --calibrate DATA to measure it, "
            f"or --scaling-factor {SD_VAE_DEFAULT_SCALE} to accept it"
        )
    return float(stated), f"{vq_path.name}"


def default_outdir(name: str) -> Path:
    return user_registry_path().parent / "converted" / name


def _prepare_outdir(outdir: Path, force: bool) -> None:
    if outdir.exists() and not outdir.is_dir():
        raise LatentzooError(f"-o {outdir} is a file; give a directory")
    if (outdir / "registry.yaml").exists() and not force:
        raise LatentzooError(f"{outdir} already holds a converted model; choose another -o or --name, or pass --force")


def convert_diffusers(
    source: str | Path,
    name: str,
    *,
    outdir: str | Path | None = None,
    scaling_factor: float | None = None,
    calibrate_data: str | None = None,
    register: bool = True,
    force: bool = False,
) -> Converted:
    """Convert a diffusers model or pipeline folder; write weights + registry fragment; register it."""
    src = Path(source)
    if not src.is_dir():
        raise LatentzooError(f"{source} is not a folder; give a diffusers model or pipeline folder (config.json / model_index.json)")
    if not name or any(c in name for c in "/\\: ") or name.startswith("."):
        raise LatentzooError(f"--name {name!r} is not a usable registry name (no spaces, slashes or colons)")
    out = Path(outdir) if outdir else default_outdir(name)
    _prepare_outdir(out, force)
    if register:
        _check_free(name, force)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LatentzooError(f"cannot create {out}: {exc.strerror or exc}; choose a writable -o") from exc
    stage = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=out))
    try:
        return _convert(src, name, out, stage, scaling_factor, calibrate_data, register, force)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        if out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # a failed conversion leaves nothing behind


def _check_free(name: str, force: bool) -> None:
    user = user_registry_path()
    if force or not user.is_file():
        return
    taken = {e.name for e in parse_file(user, "user")}
    clash = sorted(n for n in taken if n == name or n.startswith(f"{name}-"))
    if clash:
        raise LatentzooError(f"{user} already names {', '.join(clash)}; choose another --name or pass --force to replace it")


def _convert(
    src: Path,
    name: str,
    out: Path,
    stage: Path,
    scaling_factor: float | None,
    calibrate_data: str | None,
    register: bool,
    force: bool,
) -> Converted:
    notes: list[str] = []
    components: dict[str, dict[str, Any]] = {}
    pipelines: dict[str, dict[str, Any]] = {}
    provenance = {"converted_from": "diffusers", "source": str(src.resolve())}

    def add_vq(folder: Path, comp: str) -> tuple[dict[str, Any], Any, dict[str, Any]]:
        from latentzoo.plugins.vqgan.model import VQAutoencoder

        path, raw = _config_of(folder)
        _require(raw.get("_class_name") == "VQModel", path, f"class {raw.get('_class_name')!r} is not VQModel")
        cfg = vq_config(path, raw)
        model = _build_and_load(VQAutoencoder, cfg, _load_source_weights(folder), path)
        sf, source_of = _scaling(path, raw, model, scaling_factor, calibrate_data, notes)
        notes.append(f"scaling_factor {sf:.6g} from {source_of}")
        sha = save_tensors(stage / f"{comp}.safetensors", model.state_dict(), metadata={"family": "vqgan"})
        space = {**model.shape_fields(), "autoencoder": space_identity(sha), "scaling_factor": sf, "shift": 0.0}
        components[comp] = {
            "family": "vqgan",
            "class": "vqgan.autoencoder",
            "roles": ["encoder", "decoder"],
            "config": cfg,
            "weights": {"path": f"{comp}.safetensors", "sha256": sha},
            "latent_space": space,
            "description": f"diffusers VQModel from {src.name}, converted (scaling_factor from {source_of})",
            "training": {**provenance, "scaling_factor_source": source_of},
        }
        return space, model, cfg

    def add_kl(folder: Path, comp: str) -> None:
        from .plugins import get_manager

        path, raw = _config_of(folder)
        if "vae.autoencoder" not in get_manager().components():
            raise LatentzooError(f"{path}: AutoencoderKL needs the KL-VAE family (vae.autoencoder), which no loaded plugin declares")
        from latentzoo.plugins.vae.model import KLAutoencoder

        cfg = kl_config(path, raw)
        model = _build_and_load(KLAutoencoder, cfg, _load_source_weights(folder), path)
        sf, source_of = _scaling(path, raw, model, scaling_factor, calibrate_data, notes, vq_model=False)
        shift = float(raw.get("shift_factor") or 0.0)
        notes.append(f"scaling_factor {sf:.6g} from {source_of}; shift {shift:.6g} (shift_factor)")
        sha = save_tensors(stage / f"{comp}.safetensors", model.state_dict(), metadata={"family": "vae"})
        components[comp] = {
            "family": "vae",
            "class": "vae.autoencoder",
            "roles": ["encoder", "decoder"],
            "config": cfg,
            "weights": {"path": f"{comp}.safetensors", "sha256": sha},
            "latent_space": {**model.shape_fields(), "autoencoder": space_identity(sha), "scaling_factor": sf, "shift": shift},
            "description": f"diffusers AutoencoderKL from {src.name}, converted (scaling_factor from {source_of})",
            "training": {**provenance, "scaling_factor_source": source_of},
        }

    def add_unet(folder: Path, comp: str, parts: SchedulerParts, space: dict[str, Any]) -> None:
        from latentzoo.plugins.diffusion.unet import UNetPrior

        path, raw = _config_of(folder)
        _require(raw.get("_class_name") == "UNet2DModel", path, f"class {raw.get('_class_name')!r} is not UNet2DModel")
        cfg = {
            **unet_config(path, raw),
            "prediction_type": parts.prediction_type,
            "num_train_timesteps": parts.num_train_timesteps,
            "training_schedule": parts.training_schedule,
        }
        model = _build_and_load(UNetPrior, cfg, _load_source_weights(folder), path)
        _require(cfg["in_channels"] == space["channels"], path, f"in_channels {cfg['in_channels']} != latent channels {space['channels']}")
        sha = save_tensors(stage / f"{comp}.safetensors", model.state_dict(), metadata={"family": "diffusion"})
        components[comp] = {
            "family": "diffusion",
            "class": "diffusion.unet",
            "roles": ["prior"],
            "config": cfg,
            "weights": {"path": f"{comp}.safetensors", "sha256": sha},
            "latent_space": space,
            "description": f"diffusers UNet2DModel from {src.name}, converted ({parts.prediction_type})",
            "training": dict(provenance),
        }

    def add_scheduler(folder: Path, comp: str, base: str) -> tuple[str, str, SchedulerParts]:
        path, raw = _config_of(folder)
        parts = scheduler_parts(path, raw)
        components[comp] = {
            "family": "diffusion",
            "class": "diffusion.timesteps",
            "roles": ["scheduler"],
            "config": parts.levels,
            "description": f"{raw['_class_name']} timesteps ({parts.levels['spacing']} spacing) from {src.name}",
            "training": dict(provenance),
        }
        sampler = f"{base}-{parts.sampler_cls.split('.')[1]}"
        components[sampler] = {
            "family": "diffusion",
            "class": parts.sampler_cls,
            "roles": ["sampler"],
            "config": parts.sampler,
            "description": f"{raw['_class_name']} sampling options from {src.name}",
            "training": dict(provenance),
        }
        return comp, sampler, parts

    def pixel_space(channels: int) -> dict[str, Any]:
        return {"kind": "continuous", "channels": channels, "factor": 1, "autoencoder": "pixels", "scaling_factor": 1.0, "shift": 0.0}

    index_path = src / "model_index.json"
    if index_path.is_file():
        index = _read_json(index_path)
        kind = index.get("_class_name")
        if kind not in ("LDMPipeline", "DDPMPipeline", "DDIMPipeline"):
            raise LatentzooError(f"{index_path}: pipeline {kind!r} is not supported (LDMPipeline, DDPMPipeline, DDIMPipeline)")
        for part in ("unet", "scheduler", *(("vqvae",) if kind == "LDMPipeline" else ())):
            if not (src / part).is_dir():
                raise LatentzooError(f"{index_path}: {kind} needs a {part}/ subfolder, which {src} lacks")
        sched_name, sampler_name, parts = add_scheduler(src / "scheduler", f"{name}-scheduler", name)
        if kind == "LDMPipeline":
            space, _, _ = add_vq(src / "vqvae", f"{name}-vqvae")
            decoder = encoder = f"{name}-vqvae"
        else:
            if scaling_factor is not None or calibrate_data is not None:
                raise LatentzooError(f"--scaling-factor / --calibrate apply to latent (VQ) models; {kind} samples pixels")
            channels = int(_with_defaults(_config_of(src / "unet")[1], UNET_DEFAULTS)["in_channels"])
            space = pixel_space(channels)
            decoder, encoder = f"{name}-pixels", None
            components[decoder] = {
                "family": "diffusion",
                "class": "diffusion.pixels",
                "roles": ["decoder"],
                "config": {"channels": channels},
                "latent_space": {k: v for k, v in space.items() if k in ("kind", "channels", "factor", "autoencoder")},
                "description": "pixel space (identity decoder)",
            }
        add_unet(src / "unet", f"{name}-unet", parts, space)
        body: dict[str, Any] = {"prior": f"{name}-unet", "decoder": decoder, "sampler": sampler_name, "scheduler": sched_name}
        if encoder:
            body = {"encoder": encoder, **body}
        defaults: dict[str, Any] = {"steps": PIPELINE_STEPS[kind]}
        if "eta" in parts.sampler:
            defaults["eta"] = 0.0
        pipelines[name] = {**body, "defaults": defaults, "description": f"diffusers {kind} from {src.name}, converted"}
    else:
        path, raw = _config_of(src)
        kind = raw.get("_class_name")
        if kind == "VQModel":
            add_vq(src, name)
        elif kind == "UNet2DModel":
            sched_path = src.parent / "scheduler" / "scheduler_config.json"
            if sched_path.is_file():
                parts = scheduler_parts(sched_path, _read_json(sched_path))
                notes.append(f"prediction_type {parts.prediction_type} and training schedule from {sched_path}")
            else:
                parts = scheduler_parts(path, {"_class_name": "DDPMScheduler"})
                notes.append(
                    "prediction_type epsilon, 1000 training timesteps, linear betas 0.0001..0.02 (diffusers' defaults; "
                    "no ../scheduler/ config found): check them, they are the prior's training_schedule"
                )
            channels = int(_with_defaults(raw, UNET_DEFAULTS)["in_channels"])
            notes.append("latent space: pixels (a UNet folder alone does not say which autoencoder it was trained on)")
            add_unet(src, name, parts, pixel_space(channels))
        elif kind in ("DDIMScheduler", "DDPMScheduler"):
            _, _, parts = add_scheduler(src, name, name)
            notes.append(
                f"prediction_type {parts.prediction_type} and the {parts.training_schedule['beta_schedule']} training schedule belong "
                "to a prior; they are recorded when a pipeline or UNet is converted"
            )
        elif kind == "AutoencoderKL":
            add_kl(src, name)
        else:
            raise LatentzooError(
                f"{path}: class {kind!r} is not supported (VQModel, AutoencoderKL, UNet2DModel, DDIMScheduler, DDPMScheduler, pipelines)"
            )

    fragment = {"version": 1, "components": components}
    if pipelines:
        fragment["pipelines"] = pipelines
    staged = write_bytes(stage / "registry.yaml", yaml.safe_dump(fragment, sort_keys=False).encode())
    parse_file(staged, "cli")  # the fragment is valid registry YAML
    for entry in components.values():  # weights first, the fragment that names them last
        if "weights" in entry:
            os.replace(stage / entry["weights"]["path"], out / entry["weights"]["path"])
    frag_path = out / "registry.yaml"
    os.replace(staged, frag_path)
    result = Converted(name, out, frag_path, components, pipelines, notes)
    if register:
        from .userregistry import add_entries, relative_weights

        user = user_registry_path()
        comps = {}
        for comp, entry in components.items():
            entry = dict(entry)
            if "weights" in entry:
                entry["weights"] = {**entry["weights"], "path": relative_weights(out / entry["weights"]["path"], user)}
            comps[comp] = entry
        result.registered = add_entries(comps, pipelines, force=force, path=user)
    return result


# ---------------------------------------------------------------------------------------
# exporting


def _signature_defaults(cls: Any) -> dict[str, Any]:
    return {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items() if p.default is not inspect.Parameter.empty}


def _vq_export_config(config: dict[str, Any], scaling_factor: float | None) -> dict[str, Any]:
    from latentzoo.plugins.vqgan.model import VQAutoencoder

    cfg = {**_signature_defaults(VQAutoencoder), **config}
    n = len(cfg["block_out_channels"])
    out = {"_class_name": "VQModel", "_diffusers_version": DIFFUSERS_VERSION}
    out.update({k: (list(cfg[k]) if isinstance(cfg[k], tuple | list) else cfg[k]) for k in VQ_TO_OURS})
    out.update(
        down_block_types=["DownEncoderBlock2D"] * n,
        up_block_types=["UpDecoderBlock2D"] * n,
        act_fn="silu",
        norm_type="group",
        lookup_from_codebook=False,
        force_upcast=False,
    )
    if scaling_factor is not None:
        out["scaling_factor"] = scaling_factor
    return out


def _kl_export_config(config: dict[str, Any], scaling_factor: float | None, shift: float | None) -> dict[str, Any]:
    from latentzoo.plugins.vae.model import KLAutoencoder

    cfg = {**_signature_defaults(KLAutoencoder), **config}
    n = len(cfg["block_out_channels"])
    out = {"_class_name": "AutoencoderKL", "_diffusers_version": DIFFUSERS_VERSION}
    out.update({k: (list(cfg[k]) if isinstance(cfg[k], tuple | list) else cfg[k]) for k in KL_TO_OURS})
    out.update(down_block_types=["DownEncoderBlock2D"] * n, up_block_types=["UpDecoderBlock2D"] * n, act_fn="silu", force_upcast=False)
    if scaling_factor is not None:
        out["scaling_factor"] = scaling_factor
    out["shift_factor"] = shift or None
    return out


def _unet_export_config(config: dict[str, Any]) -> dict[str, Any]:
    from latentzoo.plugins.diffusion.unet import UNetPrior

    cfg = {**_signature_defaults(UNetPrior), **config}
    out = {"_class_name": "UNet2DModel", "_diffusers_version": DIFFUSERS_VERSION}
    out.update({k: (list(cfg[k]) if isinstance(cfg[k], tuple | list) else cfg[k]) for k in UNET_TO_OURS})
    out.update({k: UNET_DEFAULTS[k] for k in UNET_DEFAULTS if k not in out})
    return out


def _scheduler_export_config(
    training: dict[str, Any],
    num_train_timesteps: int,
    levels: dict[str, Any],
    sampler_cls: str,
    sampler: dict[str, Any],
    prediction_type: str,
) -> dict[str, Any]:
    """A diffusers scheduler config from the prior's training schedule, a diffusion.timesteps config and the sampler's options."""
    from latentzoo.plugins.diffusion.samplers import DDIMSampler, DDPMSampler, DenoiserSampler

    cls = DDPMSampler if sampler_cls == "diffusion.ddpm" else DDIMSampler
    smp = {**_signature_defaults(DenoiserSampler), **_signature_defaults(cls), **sampler}
    name = "DDPMScheduler" if sampler_cls == "diffusion.ddpm" else "DDIMScheduler"
    out: dict[str, Any] = {"_class_name": name, "_diffusers_version": DIFFUSERS_VERSION}
    out.update({k: training.get(k, SCHED_DEFAULTS[k]) for k in TRAINING_FROM_SCHED}, num_train_timesteps=num_train_timesteps)
    out.update(timestep_spacing=levels.get("spacing", "leading"), steps_offset=levels.get("steps_offset", 0))
    if name == "DDIMScheduler":
        out["set_alpha_to_one"] = smp["set_alpha_to_one"]
    out.update({k: smp[k] for k in SAMPLER_FROM_SCHED})
    out.update(prediction_type=prediction_type, trained_betas=None)
    if name == "DDPMScheduler":
        out["variance_type"] = smp["variance_type"]
    return out


def _weights(entry: Any) -> dict[str, Any]:
    from .build import resolve_weights
    from .weights import load_tensors

    if "weights" not in entry.data:
        raise LatentzooError(f"{entry.name} has no weights to export")
    path, sha = resolve_weights(entry)
    return load_tensors(path, sha)


def _write_model(folder: Path, config: dict[str, Any], tensors: dict[str, Any], config_name: str = "config.json") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / config_name, config)
    if tensors:
        save_tensors(folder / WEIGHTS_FILE, tensors, metadata={"format": "pt"})


def _fold_shift(tensors: dict[str, Any], shift: float) -> dict[str, Any]:
    """Move a latent shift into the VQ weights: encode gives h - shift; the codebook moves with it; decode is unchanged."""
    t = dict(tensors)
    t["quant_conv.bias"] = t["quant_conv.bias"] - shift
    t["quantize.embedding.weight"] = t["quantize.embedding.weight"] - shift
    t["post_quant_conv.bias"] = t["post_quant_conv.bias"] + shift * t["post_quant_conv.weight"].sum(dim=(1, 2, 3))
    return t


def export_diffusers(registry: Registry, name: str, outdir: str | Path, *, force: bool = False) -> tuple[Path, list[str]]:
    """Write ``name`` (a component or a pipeline) as a folder diffusers' from_pretrained loads; return it and notes."""
    from .compose import PipelineSpec, check_spec

    out = Path(outdir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise LatentzooError(f"-o {out} exists and is not empty; choose another directory or pass --force")
    entry = registry.get(name)
    notes: list[str] = []
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        if entry.section == "components":
            cls = entry.data.get("class")
            cfg = dict(entry.data.get("config") or {})
            space = entry.latent_space
            if cls == "vqgan.autoencoder":
                sf = space.scaling_factor if space else None
                if sf is None:
                    notes.append("the autoencoder states no scaling_factor: diffusers will assume 0.18215; export a pipeline to carry one")
                _write_model(tmp, _vq_export_config(cfg, sf), _weights(entry))
            elif cls == "vae.autoencoder":
                sf = space.scaling_factor if space else None
                if sf is None:
                    notes.append("the autoencoder states no scaling_factor: diffusers will assume 0.18215")
                _write_model(tmp, _kl_export_config(cfg, sf, space.shift if space else None), _weights(entry))
            elif cls == "diffusion.unet":
                notes.append(f"UNet2DModel configs carry no prediction_type; this prior predicts {cfg.get('prediction_type', 'epsilon')}")
                body = {k: v for k, v in cfg.items() if k not in ("prediction_type", "num_train_timesteps", "training_schedule")}
                _write_model(tmp, _unet_export_config(body), _weights(entry))
            elif cls == "diffusion.timesteps":
                raise LatentzooError(
                    f"{name} picks timesteps of a prior's training schedule and states no betas of its own; export a pipeline instead"
                )
            else:
                raise LatentzooError(
                    f"{name} ({cls}) has no diffusers counterpart; export a vqgan/vae autoencoder, a diffusion.unet or a pipeline"
                )
        else:
            spec = PipelineSpec.from_entry(entry)
            check_spec(registry, spec)
            prior, decoder = registry.get(spec.prior), registry.get(spec.decoder)
            sampler = registry.get(spec.sampler)
            if prior.data.get("class") != "diffusion.unet":
                raise LatentzooError(f"pipeline {name}: prior {spec.prior} is not a diffusion.unet; diffusers pipelines need a UNet2DModel")
            if sampler.data.get("class") not in ("diffusion.ddim", "diffusion.ddpm") or not spec.scheduler:
                raise LatentzooError(f"pipeline {name}: sampler must be DDIM or DDPM with a scheduler to export to diffusers")
            if spec.encoder and spec.encoder != spec.decoder:
                raise LatentzooError(f"pipeline {name}: encoder and decoder differ; an LDMPipeline has one vqvae")
            sched_entry = registry.get(spec.scheduler)
            if sched_entry.data.get("class") != "diffusion.timesteps":
                raise LatentzooError(
                    f"pipeline {name}: diffusers' DDIM/DDPM schedulers step on training timesteps; compose it with "
                    "--scheduler leading, trailing or linspace to export"
                )
            sampler_cfg = dict(sampler.data.get("config") or {})
            eta = spec.defaults.get("eta", sampler_cfg.get("eta", 0.0))
            prior_cfg = dict(prior.data.get("config") or {})
            space = prior.latent_space
            sched_cfg = _scheduler_export_config(
                prior_cfg["training_schedule"],
                int(prior_cfg.get("num_train_timesteps", 1000)),
                dict(sched_entry.data.get("config") or {}),
                sampler.data["class"],
                sampler_cfg,
                prior_cfg.get("prediction_type", "epsilon"),
            )
            if sched_cfg["_class_name"] == "DDIMScheduler" and sched_cfg["timestep_spacing"] != "leading":
                notes.append("diffusers' DDIMScheduler steps to t - T // n, which matches latentzoo only for leading spacing")
            unet_body = {k: v for k, v in prior_cfg.items() if k not in ("prediction_type", "num_train_timesteps", "training_schedule")}
            _write_model(tmp / "unet", _unet_export_config(unet_body), _weights(prior))
            _write_model(tmp / "scheduler", sched_cfg, {}, "scheduler_config.json")
            if decoder.data.get("class") == "vqgan.autoencoder":
                if sched_cfg["_class_name"] != "DDIMScheduler":
                    raise LatentzooError(f"pipeline {name}: diffusers' LDMPipeline runs DDIM; compose it with a DDIM sampler to export")
                tensors = _weights(decoder)
                if space.shift:
                    tensors = _fold_shift(tensors, space.shift)
                    notes.append(f"latent shift {space.shift:.6g} folded into the VQ weights (diffusers' LDMPipeline only scales)")
                _write_model(tmp / "vqvae", _vq_export_config(dict(decoder.data.get("config") or {}), space.scaling_factor), tensors)
                index = {
                    "vqvae": ["diffusers", "VQModel"],
                    "unet": ["diffusers", "UNet2DModel"],
                    "scheduler": ["diffusers", "DDIMScheduler"],
                }
                kind = "LDMPipeline"
            elif decoder.data.get("class") == "diffusion.pixels":
                if space.scaling_factor not in (None, 1.0) or space.shift:
                    raise LatentzooError(f"pipeline {name}: a pixel prior with scaling/shift has no diffusers pipeline")
                kind = "DDPMPipeline" if sched_cfg["_class_name"] == "DDPMScheduler" else "DDIMPipeline"
                index = {"unet": ["diffusers", "UNet2DModel"], "scheduler": ["diffusers", sched_cfg["_class_name"]]}
            else:
                raise LatentzooError(f"pipeline {name}: decoder {spec.decoder} has no diffusers counterpart (vqgan.autoencoder or pixels)")
            if eta:
                notes.append(f"the pipeline's eta {eta} is a call argument in diffusers: pass eta={eta}")
            write_json(tmp / "model_index.json", {"_class_name": kind, "_diffusers_version": DIFFUSERS_VERSION, **index})
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out, notes
