"""Autoregressive prior over code grids (Esser et al. 2021, sec. 3.2; Ramesh et al. 2021, sec. 2.2).

A decoder-only transformer over raster-ordered codes. Position 0 holds a conditioning
token (a class, or the null token when unconditional / dropped), and each position
predicts the next code. Sampling uses a key/value cache, so a grid of L codes costs L
single-token forward passes.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from latentzoo.core.interfaces import Prior


class CausalSelfAttention(nn.Module):
    def __init__(self, d_model: int, n_head: int, dropout: float) -> None:
        super().__init__()
        self.n_head, self.dropout = n_head, dropout
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor, cache: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = (y.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for y in self.qkv(x).split(c, dim=2))
        if cache is not None:
            if "k" in cache:
                k, v = torch.cat([cache["k"], k], dim=2), torch.cat([cache["v"], v], dim=2)
            cache["k"], cache["v"] = k, v
        causal = t > 1  # a single new query may see every cached key
        y = F.scaled_dot_product_attention(q, k, v, is_causal=causal, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(b, t, c))


class Block(nn.Module):
    """Pre-norm transformer block (Radford et al. 2019)."""

    def __init__(self, d_model: int, n_head: int, dropout: float) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, n_head, dropout)
        self.ln_2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, cache: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache)
        return x + self.mlp(self.ln_2(x))


class CodeTransformer(nn.Module, Prior):
    """p(c_1..c_L | class) = prod_i p(c_i | c_<i, class) over a grid_size x grid_size code grid."""

    kind = "autoregressive"

    def __init__(
        self,
        *,
        codebook_size: int,
        grid_size: int,
        d_model: int = 128,
        n_layer: int = 4,
        n_head: int = 4,
        num_class_embeds: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.codebook_size, self.grid_size = codebook_size, grid_size
        self.num_classes = num_class_embeds  # includes the null token (last index), as the UNet prior
        length = grid_size * grid_size
        self.tok_emb = nn.Embedding(codebook_size, d_model)
        self.cond_emb = nn.Embedding(num_class_embeds or 1, d_model)
        self.pos_emb = nn.Parameter(torch.zeros(1, length, d_model))
        nn.init.normal_(self.pos_emb, std=0.02)
        self.blocks = nn.ModuleList([Block(d_model, n_head, dropout) for _ in range(n_layer)])
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, codebook_size, bias=False)

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return (self.grid_size, self.grid_size)

    def null_labels(self, batch: int) -> torch.Tensor:
        return torch.full((batch,), (self.num_classes or 1) - 1, dtype=torch.long)

    def forward(self, codes: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced logits (B, L, K) for codes (B, L): position i predicts codes[:, i]."""
        labels = self.null_labels(codes.shape[0]) if class_labels is None else class_labels
        x = torch.cat([self.cond_emb(labels)[:, None], self.tok_emb(codes[:, :-1])], dim=1) + self.pos_emb[:, : codes.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))

    def next_logits(
        self, position: int, previous: torch.Tensor | None, class_labels: torch.Tensor, caches: list[dict[str, Any]]
    ) -> torch.Tensor:
        """Logits (B, K) for the code at ``position`` given the previous code, using the caches."""
        x = self.cond_emb(class_labels) if position == 0 else self.tok_emb(previous)
        x = (x + self.pos_emb[:, position])[:, None]
        for block, cache in zip(self.blocks, caches, strict=True):
            x = block(x, cache)
        return self.head(self.ln_f(x))[:, 0]
