"""CLIP (Radford et al. 2021): a text transformer and a vision transformer in one embedding space.

Parameter names follow transformers' checkpoint files exactly, so real CLIP weights load
key for key with strict loading:

- ``CLIPTextEncoder``: ``text_model.*`` (CLIPTextModel) and, with ``projection_dim``,
  ``text_projection.weight`` (CLIPTextModelWithProjection; Stable Diffusion's text encoder).
- ``CLIPVisionEncoder``: ``vision_model.*`` (+ ``visual_projection.weight``).
- ``CLIPModel``: both towers, both projections and ``logit_scale`` (CLIPModel).

Text: token + position embeddings, pre-norm blocks under a causal mask (and the padding
mask), a final LayerNorm; the pooled state is the end token's: the first ``eos_token_id``,
or the largest id when ``eos_token_id == 2`` (configs written before transformers PR #24773,
where the end token had the largest id). Vision: a patch convolution without bias, a class
token, position embeddings, ``pre_layrnorm`` (sic), blocks, and ``post_layernorm`` on the
class token. Attention is torch's scaled_dot_product_attention. ``position_ids`` buffers are
not part of the state dict (files written by old transformers versions carry them:
``hf_state_dict`` drops them and adds the ``text_model.`` prefix that transformers >= 5
leaves out when it saves a standalone CLIPTextModel).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from latentzoo.core.contract.interfaces import Conditioner


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    """x * sigmoid(1.702 x): the GELU approximation OpenAI's CLIP was trained with."""
    return x * torch.sigmoid(1.702 * x)


ACTIVATIONS = {
    "quick_gelu": quick_gelu,
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
}


class CLIPAttention(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"hidden_size {width} is not divisible by num_attention_heads {heads}")
        self.heads = heads
        self.k_proj = nn.Linear(width, width)
        self.v_proj = nn.Linear(width, width)
        self.q_proj = nn.Linear(width, width)
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, causal: bool) -> torch.Tensor:
        b, n, w = x.shape
        q, k, v = (p(x).view(b, n, self.heads, w // self.heads).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        # Scale head_dim ** -0.5 (SDPA's default, as in CLIP).
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and mask is None)
        return self.out_proj(y.transpose(1, 2).reshape(b, n, w))


class CLIPMLP(nn.Module):
    def __init__(self, width: int, inner: int, act: str) -> None:
        super().__init__()
        if act not in ACTIVATIONS:
            raise ValueError(f"unknown hidden_act {act!r}; known: {', '.join(ACTIVATIONS)}")
        self.act = ACTIVATIONS[act]
        self.fc1 = nn.Linear(width, inner)
        self.fc2 = nn.Linear(inner, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class CLIPEncoderLayer(nn.Module):
    """Pre-norm block: x + attn(ln1(x)), then + mlp(ln2(x))."""

    def __init__(self, width: int, heads: int, inner: int, act: str, eps: float) -> None:
        super().__init__()
        self.self_attn = CLIPAttention(width, heads)
        self.layer_norm1 = nn.LayerNorm(width, eps=eps)
        self.mlp = CLIPMLP(width, inner, act)
        self.layer_norm2 = nn.LayerNorm(width, eps=eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, causal: bool) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x), mask, causal)
        return x + self.mlp(self.layer_norm2(x))


class CLIPEncoder(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, inner: int, act: str, eps: float) -> None:
        super().__init__()
        self.layers = nn.ModuleList(CLIPEncoderLayer(width, heads, inner, act, eps) for _ in range(layers))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, causal: bool = False) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, mask, causal)
        return x


class CLIPTextEmbeddings(nn.Module):
    def __init__(self, vocab_size: int, width: int, positions: int) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.position_embedding = nn.Embedding(positions, width)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.token_embedding(input_ids) + self.position_embedding.weight[: input_ids.shape[1]]


class CLIPTextTransformer(nn.Module):
    """transformers' CLIPTextModel body (its ``text_model``)."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        c = config
        self.eos_token_id = int(c["eos_token_id"])
        self.embeddings = CLIPTextEmbeddings(c["vocab_size"], c["hidden_size"], c["max_position_embeddings"])
        self.encoder = CLIPEncoder(
            c["hidden_size"], c["num_hidden_layers"], c["num_attention_heads"], c["intermediate_size"], c["hidden_act"], c["layer_norm_eps"]
        )
        self.final_layer_norm = nn.LayerNorm(c["hidden_size"], eps=c["layer_norm_eps"])

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, hidden_layer: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(last_hidden_state (B, L, W), pooler_output (B, W)) for ids (B, L); mask (B, L): 1 = a real token.

        ``hidden_layer`` k < 0: the per-token states are instead transformers' ``hidden_states[k]``, the output
        of the block k + 1 from the top without the final LayerNorm (-2: the penultimate block, as SD 2.x
        and SDXL condition on); the pooled state still comes from the whole stack."""
        n = input_ids.shape[1]
        if n > self.embeddings.position_embedding.num_embeddings:
            raise ValueError(f"{n} tokens exceed the text encoder's {self.embeddings.position_embedding.num_embeddings} positions")
        x = self.embeddings(input_ids)
        mask = None
        if attention_mask is not None:
            causal = torch.ones(n, n, dtype=torch.bool, device=x.device).tril()
            mask = (causal[None] & attention_mask.bool()[:, None, :])[:, None]  # (B, 1, L, L): True = may attend
        layers = self.encoder.layers
        keep = None if hidden_layer is None else len(layers) + 1 + hidden_layer  # hidden_states[k]: after this many blocks
        if keep is not None and not 0 <= keep <= len(layers):
            raise ValueError(f"hidden_layer {hidden_layer} is outside the text encoder's {len(layers)} blocks")
        tokens = x if keep == 0 else None
        for i, layer in enumerate(layers):
            x = layer(x, mask, True)
            if keep == i + 1:
                tokens = x
        x = self.final_layer_norm(x)
        ids = input_ids.to(torch.int)
        eos = ids.argmax(-1) if self.eos_token_id == 2 else (ids == self.eos_token_id).int().argmax(-1)
        return (x if tokens is None else tokens), x[torch.arange(len(x), device=x.device), eos]


class CLIPVisionEmbeddings(nn.Module):
    def __init__(self, channels: int, width: int, image_size: int, patch_size: int) -> None:
        super().__init__()
        self.image_size = image_size
        self.class_embedding = nn.Parameter(torch.randn(width))
        self.patch_embedding = nn.Conv2d(channels, width, kernel_size=patch_size, stride=patch_size, bias=False)
        self.position_embedding = nn.Embedding((image_size // patch_size) ** 2 + 1, width)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        h, w = pixel_values.shape[-2:]
        if (h, w) != (self.image_size, self.image_size):
            raise ValueError(f"images are {h}x{w}; this vision encoder takes {self.image_size}x{self.image_size}")
        patches = self.patch_embedding(pixel_values.to(self.patch_embedding.weight.dtype)).flatten(2).transpose(1, 2)
        cls = self.class_embedding.expand(len(patches), 1, -1)
        return torch.cat([cls, patches], dim=1) + self.position_embedding.weight


class CLIPVisionTransformer(nn.Module):
    """transformers' CLIPVisionModel body (its ``vision_model``)."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        c = config
        self.embeddings = CLIPVisionEmbeddings(c["num_channels"], c["hidden_size"], c["image_size"], c["patch_size"])
        self.pre_layrnorm = nn.LayerNorm(c["hidden_size"], eps=c["layer_norm_eps"])
        self.encoder = CLIPEncoder(
            c["hidden_size"], c["num_hidden_layers"], c["num_attention_heads"], c["intermediate_size"], c["hidden_act"], c["layer_norm_eps"]
        )
        self.post_layernorm = nn.LayerNorm(c["hidden_size"], eps=c["layer_norm_eps"])

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(last_hidden_state (B, 1 + patches, W), pooler_output (B, W): post-normed class token)."""
        x = self.encoder(self.pre_layrnorm(self.embeddings(pixel_values)))
        return x, self.post_layernorm(x[:, 0])


TEXT_DEFAULTS: dict[str, Any] = {
    # openai/clip-vit-large-patch14's text config (transformers' CLIPTextConfig names).
    "vocab_size": 49408,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
    "eos_token_id": 2,  # the legacy value those configs carry: pool at the largest id
}
VISION_DEFAULTS: dict[str, Any] = {
    # openai/clip-vit-large-patch14's vision config.
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "num_channels": 3,
    "image_size": 224,
    "patch_size": 14,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
}
# CLIP's preprocessing statistics (OpenAI), for images given in [0, 1].
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def _text_config(config: dict[str, Any] | None) -> dict[str, Any]:
    out = {**TEXT_DEFAULTS, **(config or {})}
    return {k: out[k] for k in TEXT_DEFAULTS}


def _vision_config(config: dict[str, Any] | None) -> dict[str, Any]:
    out = {**VISION_DEFAULTS, **(config or {})}
    return {k: out[k] for k in VISION_DEFAULTS}


def hf_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A transformers CLIP file's tensors in this module's names: ``position_ids`` buffers
    dropped; a standalone CLIPTextModel / CLIPVisionModel saved by transformers >= 5 (no
    ``text_model.`` / ``vision_model.`` prefix) gets its prefix back."""
    out = {k: v for k, v in state.items() if not k.endswith("position_ids")}
    if any(k.startswith("embeddings.token_embedding") for k in out):
        out = {k if k.startswith("text_projection") else f"text_model.{k}": v for k, v in out.items()}
    elif any(k.startswith("embeddings.patch_embedding") for k in out):
        out = {k if k.startswith("visual_projection") else f"vision_model.{k}": v for k, v in out.items()}
    return out


class _TextTower:
    """Tokenizer handling shared by the components that have a text tower."""

    text_model: CLIPTextTransformer
    tokenizer: Any = None  # a latentzoo.core.runtime.text.TextTokenizer, set by whoever loads the weights

    def text_fields(self) -> dict[str, Any]:
        return {"kind": "text", "width": self.text_config["hidden_size"], "sequence_length": self.text_config["max_position_embeddings"]}

    def set_tokenizer(self, tokenizer: Any, owner: str = "the text encoder") -> None:
        """Attach a TextTokenizer, refused when its vocabulary does not match the token embedding."""
        tokenizer.check_vocab(self.text_model.embeddings.token_embedding.num_embeddings, owner)
        self.tokenizer = tokenizer

    def load_assets(self, folder: Path) -> None:
        """Attach the tokenizer shipped beside the weights (config ``tokenizer: {file, sha256}``), sha256-checked."""
        spec = getattr(self, "tokenizer_file", None)
        if not spec or self.tokenizer is not None:
            return
        from latentzoo.core.contract.errors import WeightsError
        from latentzoo.core.contract.weights import sha256_file
        from latentzoo.core.runtime import text

        path = Path(folder) / spec["file"]
        if not path.is_file():
            raise WeightsError(f"tokenizer {path} is missing; it ships beside the weights: reinstall or re-download the model")
        if spec.get("sha256") and sha256_file(path) != spec["sha256"]:
            raise WeightsError(f"tokenizer {path} fails its sha256 check; the file is corrupt or was replaced: re-download it")
        self.set_tokenizer(text.load(path, context_length=self.text_config["max_position_embeddings"]), "this text encoder")

    def tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.tokenizer is None:
            from latentzoo.core.contract.errors import LatentzooError

            raise LatentzooError("this text encoder has no tokenizer attached; load it by name, or call set_tokenizer()")
        ids, mask = self.tokenizer.encode(list(texts))
        device = self.text_model.embeddings.token_embedding.weight.device
        return ids.to(device), mask.to(device)


class CLIPTextEncoder(nn.Module, _TextTower, Conditioner):
    """CLIPTextModel (``projection_dim`` None) or CLIPTextModelWithProjection, as a conditioner.

    ``forward`` returns (last_hidden_state, pooler_output or, with a projection, text_embeds
    unnormalised, as CLIPTextModelWithProjection). ``condition(prompts)``: tokens =
    last_hidden_state, pooled = the end token's state before any projection (width W, as
    the Conditioner contract says), mask = the real tokens.
    """

    load_by_assignment = True  # every parameter is in its weights file: built on meta, loaded without a copy (core.runtime.build)

    conditioning_space: Any = None

    def __init__(
        self,
        text_config: dict[str, Any] | None = None,
        projection_dim: int | None = None,
        tokenizer: dict[str, str] | None = None,
        use_attention_mask: bool = True,
    ) -> None:
        super().__init__()
        self.tokenizer_file = tokenizer
        # False: as Stable Diffusion's pipelines run CLIPTextModel: ids padded to the full length, no padding
        # mask in the encoder, and the prior attends to every token (the padding's states included).
        self.use_attention_mask = use_attention_mask
        self.text_config = _text_config(text_config)
        self.text_model = CLIPTextTransformer(self.text_config)
        self.text_projection = nn.Linear(self.text_config["hidden_size"], projection_dim, bias=False) if projection_dim else None

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        hidden, pooled = self.text_model(input_ids, attention_mask)
        return hidden, pooled if self.text_projection is None else self.text_projection(pooled)

    def conditioning_fields(self) -> dict[str, Any]:
        return {**self.text_fields(), "pooled": True}

    @torch.inference_mode()
    def condition(self, inputs: list[str]) -> dict[str, torch.Tensor]:
        ids, mask = self.tokenize(inputs)
        if not self.use_attention_mask:
            tokens, pooled = self.text_model(ids, None)
            return {"tokens": tokens, "pooled": pooled}
        tokens, pooled = self.text_model(ids, mask)
        return {"tokens": tokens, "pooled": pooled, "mask": mask}


class CLIPVisionEncoder(nn.Module):
    """CLIPVisionModel (``projection_dim`` None) or CLIPVisionModelWithProjection."""

    def __init__(self, vision_config: dict[str, Any] | None = None, projection_dim: int | None = None) -> None:
        super().__init__()
        self.vision_config = _vision_config(vision_config)
        self.vision_model = CLIPVisionTransformer(self.vision_config)
        self.visual_projection = nn.Linear(self.vision_config["hidden_size"], projection_dim, bias=False) if projection_dim else None

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> CLIPVisionEncoder:
        obj = cls(**config)
        obj.config = dict(config)
        return obj

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden, pooled = self.vision_model(pixel_values)
        return hidden, pooled if self.visual_projection is None else self.visual_projection(pooled)


class CLIPModel(nn.Module, _TextTower, Conditioner):
    """transformers' CLIPModel: both towers, projections to ``projection_dim``, and the learned
    temperature ``logit_scale`` (log of the inverse temperature, initialised to log(1 / 0.07)).

    ``image_mean`` / ``image_std`` say how images in [0, 1] are normalised before the vision
    tower (CLIP's OpenAI statistics by default; the digits model uses 0.5 / 0.5, i.e. [-1, 1]).
    """

    conditioning_space: Any = None

    def __init__(
        self,
        text_config: dict[str, Any] | None = None,
        vision_config: dict[str, Any] | None = None,
        projection_dim: int = 768,
        logit_scale_init_value: float = math.log(1 / 0.07),
        image_mean: list[float] | None = None,
        image_std: list[float] | None = None,
        tokenizer: dict[str, str] | None = None,
    ) -> None:
        super().__init__()
        self.tokenizer_file = tokenizer
        self.text_config, self.vision_config = _text_config(text_config), _vision_config(vision_config)
        self.text_model = CLIPTextTransformer(self.text_config)
        self.vision_model = CLIPVisionTransformer(self.vision_config)
        self.visual_projection = nn.Linear(self.vision_config["hidden_size"], projection_dim, bias=False)
        self.text_projection = nn.Linear(self.text_config["hidden_size"], projection_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(float(logit_scale_init_value)))
        channels = self.vision_config["num_channels"]
        mean = image_mean or list(OPENAI_MEAN if channels == 3 else [0.5] * channels)
        std = image_std or list(OPENAI_STD if channels == 3 else [0.5] * channels)
        self.register_buffer("image_mean", torch.tensor(mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(std).view(-1, 1, 1), persistent=False)

    @property
    def image_size(self) -> int:
        return int(self.vision_config["image_size"])

    @property
    def image_channels(self) -> int:
        return int(self.vision_config["num_channels"])

    def text_embeds(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Unit-norm projected text embeddings (B, projection_dim)."""
        _, pooled = self.text_model(input_ids, attention_mask)
        return F.normalize(self.text_projection(pooled), dim=-1)

    def image_embeds(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Unit-norm projected image embeddings (B, projection_dim) of normalised pixel values."""
        _, pooled = self.vision_model(pixel_values)
        return F.normalize(self.visual_projection(pooled), dim=-1)

    def pixel_values(self, images: torch.Tensor) -> torch.Tensor:
        """latentzoo images in [-1, 1] -> the vision tower's normalised input."""
        return (images.add(1).div(2) - self.image_mean) / self.image_std

    def forward(
        self, input_ids: torch.Tensor, pixel_values: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """CLIPModel's outputs: logits_per_image (I, T) = exp(logit_scale) * cos(image, text)."""
        image_embeds, text_embeds = self.image_embeds(pixel_values), self.text_embeds(input_ids, attention_mask)
        logits_per_text = text_embeds @ image_embeds.t() * self.logit_scale.exp()
        return {
            "logits_per_image": logits_per_text.t(),
            "logits_per_text": logits_per_text,
            "text_embeds": text_embeds,
            "image_embeds": image_embeds,
        }

    def conditioning_fields(self) -> dict[str, Any]:
        return {**self.text_fields(), "pooled": True}

    @torch.inference_mode()
    def condition(self, inputs: list[str]) -> dict[str, torch.Tensor]:
        """Per-token states of the text tower and its pooled end-token state (unprojected, width W)."""
        ids, mask = self.tokenize(inputs)
        tokens, pooled = self.text_model(ids, mask)
        return {"tokens": tokens, "pooled": pooled, "mask": mask}

    @torch.inference_mode()
    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        ids, mask = self.tokenize(texts)
        return self.text_embeds(ids, mask)

    @torch.inference_mode()
    def similarity(self, images: torch.Tensor, texts: list[str]) -> torch.Tensor:
        """(N images, T texts) cosine similarity of the unit-norm embeddings."""
        return self.encode_images(images) @ self.encode_texts(texts).t()

    @torch.inference_mode()
    def probabilities(self, images: torch.Tensor, texts: list[str]) -> torch.Tensor:
        """(N, T): softmax over texts of exp(logit_scale) * cosine (zero-shot classification, Radford et al. 2021 sec. 3.1.2)."""
        return (self.logit_scale.exp().clamp(max=100) * self.similarity(images, texts)).softmax(-1)

    @torch.inference_mode()
    def encode_images(self, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
        """Unit-norm image embeddings of latentzoo images (B, C, H, W) in [-1, 1]."""
        device = self.logit_scale.device
        return torch.cat([self.image_embeds(self.pixel_values(images[i : i + batch].to(device))) for i in range(0, len(images), batch)])


# transformers' CLIPTextConfig / CLIPVisionConfig defaults: what a config.json that omits a key means.
HF_TEXT_DEFAULTS: dict[str, Any] = {
    **TEXT_DEFAULTS,
    "hidden_size": 512,
    "intermediate_size": 2048,
    "num_attention_heads": 8,
    "eos_token_id": 49407,
}
HF_VISION_DEFAULTS: dict[str, Any] = {
    **VISION_DEFAULTS,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "patch_size": 32,
}
HF_PROJECTION_DIM = 512


def from_transformers(folder: str | Path) -> nn.Module:
    """A transformers CLIP folder (config.json + model.safetensors; CLIPModel, CLIPTextModel[WithProjection]
    or CLIPVisionModel[WithProjection]) as the matching latentzoo class, loaded strictly, with the
    tokenizer of the folder (or of a sibling ``tokenizer/`` folder, as in diffusers' Stable Diffusion
    layout) attached when there is one. ``model.config`` is what a registry entry needs."""
    import json

    from latentzoo.core.contract.errors import LatentzooError, WeightsError
    from latentzoo.core.contract.weights import load_tensors

    folder = Path(folder)
    try:
        cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LatentzooError(f"cannot read {folder / 'config.json'}: {exc}; give a transformers CLIP model folder") from exc

    def pick(data: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
        return {k: data.get(k, v) for k, v in defaults.items()}

    arch = (cfg.get("architectures") or ["CLIPModel"])[0]
    projection = cfg.get("projection_dim", HF_PROJECTION_DIM)
    if arch == "CLIPModel":
        config: dict[str, Any] = {
            "text_config": pick(cfg.get("text_config") or {}, HF_TEXT_DEFAULTS),
            "vision_config": pick(cfg.get("vision_config") or {}, HF_VISION_DEFAULTS),
            "projection_dim": projection,
            "logit_scale_init_value": cfg.get("logit_scale_init_value", 2.6592),
        }
        try:
            pre = json.loads((folder / "preprocessor_config.json").read_text(encoding="utf-8"))
            config.update(image_mean=list(pre["image_mean"]), image_std=list(pre["image_std"]))
        except (OSError, ValueError, KeyError):
            pass
        cls: Any = CLIPModel
    elif arch in ("CLIPTextModel", "CLIPTextModelWithProjection"):
        config, cls = (
            {"text_config": pick(cfg, HF_TEXT_DEFAULTS), "projection_dim": projection if arch.endswith("Projection") else None},
            CLIPTextEncoder,
        )
    elif arch in ("CLIPVisionModel", "CLIPVisionModelWithProjection"):
        config = {"vision_config": pick(cfg, HF_VISION_DEFAULTS), "projection_dim": projection if arch.endswith("Projection") else None}
        cls = CLIPVisionEncoder
    else:
        raise LatentzooError(
            f"{folder}: architecture {arch!r} is not a CLIP model (CLIPModel, CLIPTextModel[WithProjection], CLIPVisionModel[WithProjection])"
        )
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise WeightsError(f"{folder} has no model.safetensors; pickled .bin weights are never loaded: save the model with safetensors")
    model = cls(**config)
    missing, unexpected = model.load_state_dict(hf_state_dict(load_tensors(weights)), strict=False)
    if missing or unexpected:
        raise WeightsError(
            f"{weights} does not fit its config.json: {len(missing)} missing key(s) {missing[:3]}, {len(unexpected)} unexpected {unexpected[:3]}"
        )
    model.config = config
    if isinstance(model, _TextTower):
        from latentzoo.core.runtime import text

        for place in (folder, folder.parent / "tokenizer"):
            if (place / "tokenizer.json").is_file() or ((place / "vocab.json").is_file() and (place / "merges.txt").is_file()):
                model.set_tokenizer(text.load(place, context_length=model.text_config["max_position_embeddings"]), str(folder))
                break
    return model.eval()
