"""Bounds on the dimensions a foreign model config may state, checked before anything is built.

A converter reads a config (diffusers' ``config.json``, an original checkpoint's YAML) and
builds the model it describes. ``layers_per_block: 100000`` would build for minutes and
``sample_size: 1e9`` would pass until the first sample; a negative channel count or
``norm_num_groups: 0`` ends in a raw exception deep in torch. Each known dimension is a
whole number within what any model on one machine can have (generous: the largest
published models sit far inside), refused in one line with the accepted range. Keys not
listed are not checked here (the family's own builder checks them). Contract wing: no torch.
"""

from __future__ import annotations

from typing import Any

from .errors import LatentzooError

BOUNDS: dict[str, tuple[int, int]] = {
    "in_channels": (1, 4096),
    "out_channels": (1, 4096),
    "latent_channels": (1, 4096),
    "block_out_channels": (1, 16384),
    "layers_per_block": (1, 64),
    "transformer_layers_per_block": (1, 64),
    "norm_num_groups": (1, 1024),
    "sample_size": (1, 16384),
    "num_vq_embeddings": (1, 1 << 24),
    "vq_embed_dim": (1, 4096),
    "cross_attention_dim": (1, 16384),
    "attention_head_dim": (1, 4096),
    "num_attention_heads": (1, 1024),
    "num_class_embeds": (1, 1 << 20),
    "hidden_size": (1, 65536),
    "intermediate_size": (1, 1 << 18),
    "num_hidden_layers": (1, 256),
    "vocab_size": (1, 1 << 24),
    "max_position_embeddings": (1, 1 << 20),
    "projection_dim": (1, 65536),
    "num_train_timesteps": (1, 100_000),
}
MAX_LIST = 64  # entries in a per-block list (block_out_channels, ...)


def check_dimensions(config: dict[str, Any], where: str) -> None:
    """Refuse a known dimension of ``config`` (top level) outside BOUNDS, naming ``where``, the key and the range."""
    for key, (lo, hi) in BOUNDS.items():
        if key not in config or config[key] is None:
            continue
        value = config[key]
        values = value if isinstance(value, (list, tuple)) else [value]
        if isinstance(value, (list, tuple)) and not 1 <= len(value) <= MAX_LIST:
            raise LatentzooError(f"{where}: {key} lists {len(value)} values; a model has 1 to {MAX_LIST} blocks")
        for v in values:
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise LatentzooError(
                    f"{where}: {key} is {value!r}; it must be a whole number from {lo} to {hi} "
                    "(what a model on one machine can have); fix the config"
                )
