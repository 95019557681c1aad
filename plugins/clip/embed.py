"""CLIP as an embedder for unCLIP (Ramesh et al. 2022): the projected, unit-norm embeddings.

``CLIPEmbedder`` is the shipped ``CLIPModel`` (same weights, same keys) in two more roles:

- conditioner: ``condition(prompts)`` gives the unit-norm projected *text embedding* as one
  token, {"tokens": (B, 1, D), "pooled": (B, D), "mask": (B, 1)}, so any denoiser that attends
  to a conditioner's tokens (``core.contract.denoising.Denoiser``) takes it unchanged. Its conditioning
  space is ``kind: clip-text-embedding, width: D, sequence_length: 1`` (not ``text``: a prior
  trained on the embedding does not fit the per-token text states, and vice versa).
- encoder: ``encode(images)`` gives the unit-norm projected *image embedding* (B, D), the
  latent space an unCLIP prior models and an unCLIP decoder consumes (declared ``channels: D``,
  ``factor`` = image size: one D-channel vector per image).
"""

from __future__ import annotations

from typing import Any

import torch

from latentzoo.core.contract.interfaces import Encoder

from .model import CLIPModel


class CLIPEmbedder(CLIPModel, Encoder):
    """CLIPModel whose conditioning is the text embedding and whose encoding is the image embedding."""

    latent_space: Any = None

    @property
    def sample_size(self) -> int:
        return self.image_size

    def conditioning_fields(self) -> dict[str, Any]:
        return {"kind": "clip-text-embedding", "width": int(self.text_projection.out_features), "sequence_length": 1, "pooled": True}

    def shape_fields(self) -> dict[str, Any]:
        """What the registry's latent_space must say (checked when built)."""
        return {"kind": "continuous", "channels": int(self.visual_projection.out_features), "factor": self.image_size}

    @torch.inference_mode()
    def condition(self, inputs: list[str]) -> dict[str, torch.Tensor]:
        embeds = self.encode_texts(list(inputs))
        return {"tokens": embeds[:, None, :], "pooled": embeds, "mask": torch.ones(len(embeds), 1, dtype=torch.bool)}

    @torch.inference_mode()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.encode_images(images)
