"""Original single-file checkpoints (``.safetensors``): Stable Diffusion 1.x / 2.x and taming VQ-GAN (declarations only).

What ComfyUI and A1111 call a checkpoint: one file holding the UNet (``model.diffusion_model.*``),
the first stage (``first_stage_model.*``) and the text encoder (``cond_stage_model.*``) under
CompVis / Stability's original parameter names. ``convert --from single-file FILE`` (or just
``convert FILE.safetensors``) detects the model from its keys and shapes, renames the tensors
to the diffusers / transformers layout (``keys.py``) and hands them to the
StableDiffusionPipeline mapping that a loaded family declares (the diffusion family's), so a
single file and a diffusers folder give the same components. Pickled ``.ckpt`` / ``.pt`` files
are refused, never unpickled. See ``single.py``. ``export --to single-file`` writes SD 1.x and
SDXL pipelines back as such a file (``write.py``).
"""

from __future__ import annotations

from latentzoo.core.contract.hookspecs import hookimpl

LATENTZOO_PLUGIN_API = 1


@hookimpl
def latentzoo_formats() -> list[dict]:
    return [
        {
            "name": "single-file",
            "description": "original single-file .safetensors checkpoints: Stable Diffusion 1.x / 2.x / XL (A1111 / ComfyUI), taming VQ-GAN, KL VAE",
            "convert": "latentzoo.plugins.checkpoints.single:convert",
            "export": "latentzoo.plugins.checkpoints.write:export",
        }
    ]
