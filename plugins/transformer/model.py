"""Autoregressive prior over code grids (Esser et al. 2021, sec. 3.2; Ramesh et al. 2021, sec. 2.2).

A decoder-only transformer over raster-ordered codes. Position 0 holds a conditioning
token (a class, or the null token when unconditional / dropped), and each position
predicts the next code. Sampling uses a key/value cache, so a grid of L codes costs L
single-token forward passes.

DALL-E (Ramesh et al. 2021, sec. 2.2): with ``text_length`` the sequence is
``[text_1..text_T, start, c_1..c_{L-1}]``: T text-token states from the conditioner
(``TextTokens``: the text half of DALL-E's embedding table, shipped as its own component so
the conditioning contract can check it) come first, and the image codes attend to them
causally, as in the single-stream transformer of the paper. The text is given, not
predicted (DALL-E's text loss weight 1/8 only regularises; here it is 0). Sampling
pre-fills the caches with the text prefix, then draws codes one by one.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from latentzoo.core.contract.interfaces import Conditioner, Prior


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
        text_length: int | None = None,
        augment_flag: bool = False,
    ) -> None:
        super().__init__()
        self.text_length = text_length
        self.codebook_size, self.grid_size = codebook_size, grid_size
        self.num_classes = num_class_embeds  # includes the null token (last index), as the UNet prior
        length = grid_size * grid_size
        self.tok_emb = nn.Embedding(codebook_size, d_model)
        self.cond_emb = nn.Embedding(num_class_embeds or 1, d_model)
        self.pos_emb = nn.Parameter(torch.zeros(1, length, d_model))
        nn.init.normal_(self.pos_emb, std=0.02)
        # Augmentation conditioning (Karras et al. 2020, "non-leaking augmentations"; SDXL's
        # micro-conditioning): the first position learns whether its grid came from a warped
        # copy, so training on many warped copies teaches digits without teaching warps;
        # sampling always asks for an unwarped grid (index 0).
        self.aug_emb = nn.Embedding(2, d_model) if augment_flag else None
        if text_length:  # positions of the text prefix (the codes keep pos_emb)
            self.text_pos_emb = nn.Parameter(torch.zeros(1, text_length, d_model))
            nn.init.normal_(self.text_pos_emb, std=0.02)
        self.blocks = nn.ModuleList([Block(d_model, n_head, dropout) for _ in range(n_layer)])
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, codebook_size, bias=False)

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return (self.grid_size, self.grid_size)

    def null_labels(self, batch: int) -> torch.Tensor:
        return torch.full((batch,), (self.num_classes or 1) - 1, dtype=torch.long)

    def text_prefix(self, text: torch.Tensor) -> torch.Tensor:
        """The text states (B, T, W) plus their positions; refuses a prefix of the wrong shape."""
        if not self.text_length:
            raise ValueError("this code transformer takes no text")
        if text.ndim != 3 or text.shape[1:] != (self.text_length, self.pos_emb.shape[-1]):
            raise ValueError(f"text states must be (B, {self.text_length}, {self.pos_emb.shape[-1]}), not {tuple(text.shape)}")
        return text + self.text_pos_emb

    def start_token(self, labels: torch.Tensor, augmented: torch.Tensor | None = None) -> torch.Tensor:
        """The embedding (B, W) at position 0: class (or null) token, plus the augmentation flag (0 = unwarped)."""
        x = self.cond_emb(labels)
        if self.aug_emb is not None:
            x = x + self.aug_emb(torch.zeros_like(labels) if augmented is None else augmented.long())
        return x

    def forward(
        self,
        codes: torch.Tensor,
        class_labels: torch.Tensor | None = None,
        text: torch.Tensor | None = None,
        augmented: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Teacher-forced logits (B, L, K) for codes (B, L): position i predicts codes[:, i].

        ``text`` (B, T, W): the conditioner's token states, prepended (DALL-E). ``augmented``
        (B,): 1 for grids of warped training copies (with ``augment_flag``).
        """
        labels = self.null_labels(codes.shape[0]) if class_labels is None else class_labels
        start = self.start_token(labels, augmented)[:, None]
        x = torch.cat([start, self.tok_emb(codes[:, :-1])], dim=1) + self.pos_emb[:, : codes.shape[1]]
        if text is not None:
            x = torch.cat([self.text_prefix(text), x], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x[:, -codes.shape[1] :]))

    def prefill(self, text: torch.Tensor, caches: list[dict[str, Any]]) -> None:
        """Fill the key/value caches with the text prefix (causal), before the first code."""
        x = self.text_prefix(text)
        for block, cache in zip(self.blocks, caches, strict=True):
            x = block(x, cache)

    def next_logits(
        self, position: int, previous: torch.Tensor | None, class_labels: torch.Tensor, caches: list[dict[str, Any]]
    ) -> torch.Tensor:
        """Logits (B, K) for the code at ``position`` given the previous code, using the caches."""
        x = self.start_token(class_labels) if position == 0 else self.tok_emb(previous)
        x = (x + self.pos_emb[:, position])[:, None]
        for block, cache in zip(self.blocks, caches, strict=True):
            x = block(x, cache)
        return self.head(self.ln_f(x))[:, 0]


class TextTokens(nn.Module, Conditioner):
    """DALL-E's text-token embedding as a conditioner: a prompt -> (B, T, W) token states.

    The tokenizer (``tokenizer.json``, shipped beside the weights and sha256-checked) gives
    T = ``context_length`` ids per prompt (start, words, end, padding); the embedding is
    trained jointly with the code transformer that reads it, so its identity (its weights'
    sha256) is what that prior's ``conditioning`` names. An empty prompt is ``<start><end>``:
    the unconditional input that caption dropout trains.
    """

    conditioning_space: Any = None

    def __init__(
        self,
        *,
        vocab_size: int,
        width: int,
        context_length: int,
        tokenizer: dict[str, str] | None = None,
        captions: dict[str, str] | None = None,
    ) -> None:
        super().__init__()
        self.context_length, self.tokenizer_file, self.tokenizer = context_length, tokenizer, None
        # The caption set (config ``captions: {file, sha256}``, one caption a line): the training
        # captions, i.e. the empirical p(text) that ``random_prompt`` draws unconditional samples' captions from.
        self.captions_file, self.prompts = captions, None
        self.embedding = nn.Embedding(vocab_size, width)
        nn.init.normal_(self.embedding.weight, std=0.02)

    def conditioning_fields(self) -> dict[str, Any]:
        return {"kind": "text", "width": self.embedding.embedding_dim, "sequence_length": self.context_length}

    def set_tokenizer(self, tokenizer: Any) -> None:
        tokenizer.check_vocab(self.embedding.num_embeddings, "this text-token embedding")
        self.tokenizer = tokenizer

    def load_assets(self, folder: Any) -> None:
        """Attach the tokenizer shipped beside the weights (config ``tokenizer: {file, sha256}``), sha256-checked."""
        from pathlib import Path

        from latentzoo.core.contract.errors import WeightsError
        from latentzoo.core.contract.weights import sha256_file
        from latentzoo.core.runtime import text

        if self.captions_file and self.prompts is None:
            path = Path(folder) / self.captions_file["file"]
            if not path.is_file():
                raise WeightsError(f"caption set {path} is missing; it ships beside the weights: reinstall or re-download the model")
            if self.captions_file.get("sha256") and sha256_file(path) != self.captions_file["sha256"]:
                raise WeightsError(f"caption set {path} fails its sha256 check; the file is corrupt or was replaced: re-download it")
            self.prompts = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not self.tokenizer_file or self.tokenizer is not None:
            return
        path = Path(folder) / self.tokenizer_file["file"]
        if not path.is_file():
            raise WeightsError(f"tokenizer {path} is missing; it ships beside the weights: reinstall or re-download the model")
        if self.tokenizer_file.get("sha256") and sha256_file(path) != self.tokenizer_file["sha256"]:
            raise WeightsError(f"tokenizer {path} fails its sha256 check; the file is corrupt or was replaced: re-download it")
        self.set_tokenizer(text.load(path, context_length=self.context_length))

    def ids(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.tokenizer is None:
            from latentzoo.core.contract.errors import LatentzooError

            raise LatentzooError("this text-token embedding has no tokenizer attached; load it by name, or call set_tokenizer()")
        return self.tokenizer.encode(list(texts))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embedding(ids)

    @torch.inference_mode()
    def condition(self, inputs: list[str]) -> dict[str, torch.Tensor]:
        ids, mask = self.ids(inputs)
        return {"tokens": self.embedding(ids), "mask": mask, "ids": ids}
