"""LoRA adapters as registry components (declaration only; the math is ``latentzoo.core.runtime.adapters``).

An adapter entry (``latentzoo lora add``) names its file and the base each of its parts fits;
it is applied with ``sample --lora`` or fused with ``fuse``, never built on its own.
"""

from __future__ import annotations

from latentzoo.core.contract.hookspecs import hookimpl

LATENTZOO_PLUGIN_API = 1


@hookimpl
def latentzoo_components() -> list[dict]:
    return [
        {
            "name": "lora",
            "roles": ["adapter"],
            "family": "lora",
            "target": "latentzoo.core.runtime.adapters:Adapter",
            "trainer": "latentzoo.plugins.adapters.train:train",
            # (pipe, request) -> records: applies a typed request's loras (core.runtime.request finds it here)
            "apply": "latentzoo.interop.lora:apply_request",
            "description": "a low-rank adapter (kohya-ss or diffusers / PEFT LoRA): W + s * alpha / r * up @ down on a prior or text encoder",
        },
        {
            # its trainer publishes an ordinary ``lora`` entry (with ``distilled``); `latentzoo distill consistency` runs it
            "name": "consistency-lora",
            "roles": ["adapter"],
            "family": "consistency",
            "target": "latentzoo.core.runtime.adapters:Adapter",
            "trainer": "latentzoo.plugins.adapters.consistency:train",
            "description": "a consistency LoRA (LCM-LoRA, Luo et al. 2023): a text-to-image prior distilled to sample in 2-8 steps with the lcm sampler",
        },
    ]


@hookimpl
def latentzoo_formats() -> list[dict]:
    return [
        {"name": "kohya-lora", "description": "LoRA in kohya-ss sd-scripts' layout (lora_unet_ / lora_te_, lora_down / lora_up / alpha)",
         "export": "latentzoo.interop.lora:export_kohya"},
        {"name": "peft-lora", "description": "LoRA as diffusers' save_lora_weights writes it (unet. / text_encoder., lora_A / lora_B)",
         "export": "latentzoo.interop.lora:export_peft"},
    ]  # fmt: skip
