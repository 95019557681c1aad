"""CLIP family (Radford et al. 2021): text and vision transformers in transformers' layout,
contrastive training, zero-shot classification and text-image scores."""

from __future__ import annotations

from latentzoo.core.hookspecs import hookimpl

LATENTZOO_PLUGIN_API = 1


@hookimpl
def latentzoo_components() -> list[dict]:
    return [
        {
            "name": "clip.model",
            "roles": ["conditioner"],
            "family": "clip",
            "target": "latentzoo.plugins.clip.model:CLIPModel",
            "trainer": "latentzoo.plugins.clip.train:train",
            "description": "CLIP text + vision towers (transformers CLIPModel layout); conditions on its text tower, scores images against texts",
        },
        {
            "name": "clip.text",
            "roles": ["conditioner"],
            "family": "clip",
            "target": "latentzoo.plugins.clip.model:CLIPTextEncoder",
            "description": "CLIP text transformer (transformers CLIPTextModel / CLIPTextModelWithProjection layout), e.g. Stable Diffusion's text encoder",
        },
    ]


@hookimpl
def latentzoo_commands(cli) -> None:
    from .commands import classify, score

    cli.add_command(classify)
    cli.add_command(score)
