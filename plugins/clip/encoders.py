"""Several CLIP text encoders as one conditioner: SDXL's (Podell et al. 2023, sec. 2.1).

SDXL conditions its UNet on two text encoders run side by side on the same prompt, each with
its own tokenizer: CLIP ViT-L (``text_encoder``, a CLIPTextModel) and OpenCLIP ViT-bigG
(``text_encoder_2``, a CLIPTextModelWithProjection). The per-token states are each encoder's
penultimate hidden states (``hidden_states[-2]``: no final LayerNorm), concatenated along the
width (768 + 1280 = 2048); the pooled embedding is the *last* encoder's projected end-token
state (``text_embeds``, 1280). The refiner has only the second encoder: the same class with
one encoder.

``force_zeros_for_empty_prompt`` (SDXL base's pipeline config): an empty text conditions as
zeros (tokens and pooled) rather than as the encoded empty prompt. diffusers zeros only the
*absent* negative prompt; latentzoo's negative prompt defaults to the empty text, so the
default negative is diffusers' default, and an empty prompt (unconditional sampling) is the
zero embedding too.

Weights: ``encoders.<i>.text_model.*`` (and ``encoders.<i>.text_projection.weight``), each
encoder's tokenizer a file beside the weights (its config's ``tokenizer``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from latentzoo.core.contract.interfaces import Conditioner

from .model import CLIPTextEncoder


class CLIPTextEncoders(nn.Module, Conditioner):
    """CLIP text encoders whose chosen hidden states are concatenated; pooled = the last one's projected embedding."""

    load_by_assignment = True  # every parameter is in its weights file (core.runtime.build)

    conditioning_space: Any = None

    def __init__(self, encoders: list[dict[str, Any]], hidden_layer: int = -2, force_zeros_for_empty_prompt: bool = False) -> None:
        super().__init__()
        if not encoders:
            raise ValueError("CLIPTextEncoders needs at least one encoder config")
        if not encoders[-1].get("projection_dim"):
            raise ValueError("the last encoder gives the pooled embedding: it needs a projection_dim (CLIPTextModelWithProjection)")
        self.encoders = nn.ModuleList(
            CLIPTextEncoder(
                e.get("text_config"), projection_dim=e.get("projection_dim"), tokenizer=e.get("tokenizer"), use_attention_mask=False
            )
            for e in encoders
        )
        self.hidden_layer, self.force_zeros_for_empty_prompt = hidden_layer, force_zeros_for_empty_prompt

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> CLIPTextEncoders:
        return cls(**config)

    def load_assets(self, folder: Path) -> None:
        """Each encoder's tokenizer, shipped beside the weights."""
        for encoder in self.encoders:
            encoder.load_assets(folder)

    def conditioning_fields(self) -> dict[str, Any]:
        last = self.encoders[-1]
        return {
            "kind": "text",
            "width": sum(e.text_config["hidden_size"] for e in self.encoders),
            "sequence_length": last.text_config["max_position_embeddings"],
            "pooled": True,
            "pooled_width": int(last.text_projection.out_features),
        }

    def forward(self, ids: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(tokens (B, L, sum of widths), pooled (B, projection_dim)) from each encoder's ids (B, L)."""
        states, pooled = [], None
        for encoder, input_ids in zip(self.encoders, ids, strict=True):
            tokens, pooled = encoder.text_model(input_ids, None, hidden_layer=self.hidden_layer)
            states.append(tokens)
        return torch.cat(states, dim=-1), self.encoders[-1].text_projection(pooled)

    @torch.inference_mode()
    def condition(self, inputs: list[str]) -> dict[str, torch.Tensor]:
        tokens, pooled = self([encoder.tokenize(inputs)[0] for encoder in self.encoders])
        if self.force_zeros_for_empty_prompt:
            empty = torch.tensor([not text.strip() for text in inputs], device=tokens.device)
            if bool(empty.any()):
                tokens = tokens.masked_fill(empty[:, None, None], 0.0)
                pooled = pooled.masked_fill(empty[:, None], 0.0)
        return {"tokens": tokens, "pooled": pooled}
