"""Write a pipeline as an original single-file checkpoint (the ``single-file`` format's export).

``latentzoo export NAME --to single-file -o DIR`` writes ``DIR/NAME.safetensors`` under
CompVis / Stability's original parameter names, the file ComfyUI and A1111 load:

- Stable Diffusion XL base: ``model.diffusion_model.*``, ``first_stage_model.*``,
  ``conditioner.embedders.0.transformer.*`` (CLIP ViT-L) and ``conditioner.embedders.1.model.*``
  (OpenCLIP bigG, every block, ``text_projection`` as ``x @ P``);
- the SDXL refiner: the same with ``conditioner.embedders.0.model.*`` (bigG) alone;
- Stable Diffusion 1.x (a 4- or 9-channel UNet): ``cond_stage_model.transformer.*``.

Beside it, ``DIR/NAME.yaml`` states what the tensors cannot (the original config's fields that
``convert --config`` reads: heads, image size, latent ``scale_factor``, for SD 1.x the prediction
type and training schedule), and ``DIR/NAME-tokenizer/`` the CLIP tokenizer (vocab.json +
merges.txt; a single file carries none). So ``convert DIR/NAME.safetensors --config DIR/NAME.yaml
--tokenizer DIR/NAME-tokenizer`` gives back the same components, byte for byte.

The pipeline is first written as a diffusers folder by the diffusion family's own exporter (the
path ``export --to diffusers`` takes, checked tensor for tensor against diffusers), into a
temporary folder; its tensors are renamed with ``keys.py``'s inverse maps. SD 2.x is refused:
its converted text encoder lacks OpenCLIP's last block (SD 2.x conditions on the penultimate
layer: 23 of ViT-H's 24), and a single file needs all of them.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from latentzoo.core.contract.errors import LatentzooError

from . import keys as K

XL = "conditioner.embedders."
SDXL_BASE, SDXL_REFINER = "StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline"
SD_PIPELINES = ("StableDiffusionPipeline", "StableDiffusionInpaintPipeline")
PUBLISHED_BETAS = (0.00085, 0.012, 1000)  # SD / SDXL: what a single file's reader assumes without a .yaml


def export(registry: Any, name: str, folder: Path) -> list[str]:
    """The ``single-file`` format's export (see latentzoo.interop.formats)."""
    from latentzoo.interop.formats import get_format

    entry = registry.get(name)
    if entry.section != "pipelines":
        raise LatentzooError(
            f"{name} is a component; --to single-file writes a whole Stable Diffusion pipeline (export a component --to diffusers)"
        )
    work = Path(tempfile.mkdtemp(prefix=".single-file-", dir=folder.parent))
    try:
        pipe = work / "pipeline"
        pipe.mkdir()
        notes = list(get_format("diffusers", "export")(registry, name, pipe) or [])
        notes = [n for n in notes if "safety_checker" not in n and "guidance_scale" not in n]  # diffusers-only advice
        index = json.loads((pipe / "model_index.json").read_text(encoding="utf-8"))
        kind = index.get("_class_name")
        if kind in (SDXL_BASE, SDXL_REFINER):
            tensors, config, tok = _sdxl(pipe, kind == SDXL_REFINER, notes)
        elif kind in SD_PIPELINES:
            tensors, config, tok = _sd1(pipe, name, notes)
        else:
            raise LatentzooError(
                f"pipeline {name} is a {kind}; --to single-file writes Stable Diffusion 1.x and XL pipelines (use --to diffusers)"
            )
        _write(folder, name, tensors, config)
        shutil.copytree(pipe / tok, folder / f"{name}-tokenizer")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    notes.append(
        f"wrote {name}.safetensors ({len(tensors)} tensors, original names), {name}.yaml (what the tensors do not fix) and "
        f"{name}-tokenizer/; convert it back with: latentzoo convert {name}.safetensors --config {name}.yaml --tokenizer {name}-tokenizer"
    )
    return notes


# ---------------------------------------------------------------------------------------
# the parts, renamed


def _load(part: Path, file: str) -> tuple[dict[str, Any], dict[str, Any]]:
    from safetensors.torch import load_file

    config = json.loads((part / "config.json").read_text(encoding="utf-8"))
    return config, load_file(str(part / file))  # memory-mapped: pages are read as the writer copies them


def _unet_vae(pipe: Path, notes: list[str]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    ucfg, unet = _load(pipe / "unet", "diffusion_pytorch_model.safetensors")
    vcfg, vae = _load(pipe / "vae", "diffusion_pytorch_model.safetensors")
    ups = [t.startswith("CrossAttn") for t in ucfg["up_block_types"]]
    for what, cfg in (("UNet", ucfg), ("VAE", vcfg)):
        if int(cfg.get("norm_num_groups", 32)) != 32:
            notes.append(
                f"the {what} normalises over {cfg['norm_num_groups']} groups; original checkpoints fix 32 norm groups, "
                "which a reader of the file assumes"
            )
    out = {K.UNET + k: v for k, v in K.unet_to_original(unet, int(ucfg["layers_per_block"]), ups).items()}
    out |= {K.VAE + k: v for k, v in K.ae_to_original(vae, len(vcfg["block_out_channels"])).items()}
    return out, ucfg, vcfg


def _text(state: dict[str, Any]) -> dict[str, Any]:
    """transformers CLIPTextModel names with the ``text_model.`` level (older saves lack it), ``position_ids`` dropped."""
    return {
        (k if k.startswith("text_model.") or k == "text_projection.weight" else "text_model." + k): v
        for k, v in state.items()
        if not k.endswith("position_ids")
    }


def _heads(ucfg: dict[str, Any]) -> list[int]:
    """Heads per level: diffusers' UNet2DConditionModel reads ``attention_head_dim`` as the head count (its legacy name)."""
    widths = list(ucfg["block_out_channels"])
    heads = ucfg.get("num_attention_heads") or ucfg["attention_head_dim"]
    return [int(h) for h in heads] if isinstance(heads, list) else [int(heads)] * len(widths)


def _head_channels(ucfg: dict[str, Any], notes: list[str]) -> int | None:
    """One head width for every attending level (the original config's ``num_head_channels``), else None."""
    widths, heads = list(ucfg["block_out_channels"]), _heads(ucfg)
    attends = [t.startswith("CrossAttn") for t in ucfg["down_block_types"]]
    found = {w // h for w, h, a in zip(widths, heads, attends, strict=True) if a}
    if len(found) == 1:
        return found.pop()
    notes.append(f"attention heads {heads} give no single head width for the .yaml; convert it back with the heads stated by hand")
    return None


def _schedule(pipe: Path, name: str) -> dict[str, Any]:
    sched = json.loads((pipe / "scheduler" / "scheduler_config.json").read_text(encoding="utf-8"))
    if sched.get("beta_schedule", "scaled_linear") != "scaled_linear":
        raise LatentzooError(
            f"pipeline {name}: beta_schedule {sched.get('beta_schedule')!r}; an original checkpoint's schedule is LDM's "
            "'linear' (diffusers' scaled_linear): use --to diffusers"
        )
    return sched


def _sdxl(pipe: Path, refiner: bool, notes: list[str]) -> tuple[dict[str, Any], dict[str, Any], str]:
    tensors, ucfg, vcfg = _unet_vae(pipe, notes)
    _, big = _load(pipe / "text_encoder_2", "model.safetensors")
    bigg = K.openclip_to_original(_text(big))
    if refiner:
        tensors |= {f"{XL}0.model." + k: v for k, v in bigg.items()}
    else:
        _, clip = _load(pipe / "text_encoder", "model.safetensors")
        tensors |= {f"{XL}0.transformer." + k: v for k, v in _text(clip).items()}
        tensors |= {f"{XL}1.model." + k: v for k, v in bigg.items()}
    network: dict[str, Any] = {"image_size": int(ucfg.get("sample_size") or 128)}
    head = _head_channels(ucfg, notes)
    if head is not None:
        network["num_head_channels"] = head
    sched = _schedule(pipe, "SDXL")
    if (sched.get("beta_start"), sched.get("beta_end"), sched.get("num_train_timesteps")) != PUBLISHED_BETAS:
        notes.append("the noise schedule differs from SDXL's published one, which the single-file reader assumes")
    config = {
        "model": {
            "target": "sgm.models.diffusion.DiffusionEngine",
            "params": {
                "scale_factor": float(vcfg["scaling_factor"]),
                "network_config": {"target": "sgm.modules.diffusionmodules.openaimodel.UNetModel", "params": network},
            },
        }
    }
    return tensors, config, "tokenizer_2" if refiner else "tokenizer"


def _sd1(pipe: Path, name: str, notes: list[str]) -> tuple[dict[str, Any], dict[str, Any], str]:
    tcfg, text = _load(pipe / "text_encoder", "model.safetensors")
    if tcfg.get("hidden_act") != "quick_gelu":
        n = int(tcfg.get("num_hidden_layers", 0))
        raise LatentzooError(
            f"pipeline {name} is Stable Diffusion 2.x-shaped (an OpenCLIP text encoder): its converted text encoder holds "
            f"{n} of OpenCLIP's {n + 1} blocks (SD 2.x conditions on the penultimate layer), and a single file needs them all; "
            "use --to diffusers"
        )
    tensors, ucfg, vcfg = _unet_vae(pipe, notes)
    tensors |= {K.CLIP + k: v for k, v in _text(text).items()}
    sched = _schedule(pipe, name)
    unet: dict[str, Any] = {"image_size": int(ucfg.get("sample_size") or 64), "in_channels": int(ucfg["in_channels"])}
    heads = _heads(ucfg)
    if len(set(heads)) == 1:
        unet["num_heads"] = heads[0]
    else:
        head = _head_channels(ucfg, notes)
        if head is not None:
            unet["num_head_channels"] = head
    params = {
        "linear_start": float(sched["beta_start"]),
        "linear_end": float(sched["beta_end"]),
        "timesteps": int(sched.get("num_train_timesteps", 1000)),
        "parameterization": "v" if sched.get("prediction_type") == "v_prediction" else "eps",
        "scale_factor": float(vcfg["scaling_factor"]),
        "unet_config": {"target": "ldm.modules.diffusionmodules.openaimodel.UNetModel", "params": unet},
        "cond_stage_config": {"target": "ldm.modules.encoders.modules.FrozenCLIPEmbedder"},
    }
    config = {"model": {"target": "ldm.models.diffusion.ddpm.LatentDiffusion", "params": params}}
    return tensors, config, "tokenizer"


def _write(folder: Path, name: str, tensors: dict[str, Any], config: dict[str, Any]) -> None:
    import yaml

    from latentzoo.core.contract.weights import save_tensors, write_bytes

    save_tensors(folder / f"{name}.safetensors", {k: v.contiguous() for k, v in tensors.items()}, metadata={"format": "pt"})
    write_bytes(folder / f"{name}.yaml", yaml.safe_dump(config, sort_keys=False).encode())
