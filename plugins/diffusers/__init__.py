"""The diffusers format: import diffusers model / pipeline folders, export them back (declarations only).

Reads and writes diffusers' on-disk format (``model_index.json``, ``config.json`` /
``scheduler_config.json``, ``diffusion_pytorch_model.safetensors``) without importing diffusers.
This plugin knows the folder layout; each family maps its own classes, declared on its
component as ``"formats": {"diffusers": "module:Class"}`` (see ``folders.py`` for that class's
methods): plugins/vqgan/diffusers.py (VQModel), plugins/vae/diffusers.py (AutoencoderKL),
plugins/diffusion/diffusers.py (UNet2DModel, DDIM/DDPM schedulers, LDM/DDPM/DDIM pipelines),
plugins/diffusion/sd.py (StableDiffusionPipeline: UNet2DConditionModel, PNDM/DDIM/Euler/DPM/LMS
schedulers), plugins/clip/diffusers.py (CLIPTextModel + CLIPTokenizer).
A third-party family adds a diffusers mapping the same way, without touching this plugin.
"""

from __future__ import annotations

from latentzoo.core.contract.hookspecs import hookimpl

LATENTZOO_PLUGIN_API = 1


@hookimpl
def latentzoo_formats() -> list[dict]:
    return [
        {
            "name": "diffusers",
            "description": "diffusers model and pipeline folders (safetensors only; VQModel, AutoencoderKL, UNet2DModel, DDIM/DDPM, LDM/DDPM/DDIM and StableDiffusion pipelines)",
            "convert": "latentzoo.plugins.diffusers.folders:convert",
            "export": "latentzoo.plugins.diffusers.folders:export",
        }
    ]
