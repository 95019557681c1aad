"""diffusers ``AutoencoderKL`` <-> ``vae.autoencoder``: config mapping; ``shift_factor`` is latentzoo's ``shift``.

Both normalise latents as ``(z - shift) * scaling_factor``. Used by the diffusers format
plugin through this family's declaration (``"formats": {"diffusers": ...}``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from latentzoo.core.contract.weights import space_identity

KL_DEFAULTS: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"],
    "up_block_types": ["UpDecoderBlock2D"],
    "block_out_channels": [64],
    "layers_per_block": 1,
    "act_fn": "silu",
    "latent_channels": 4,
    "sample_size": 32,
    "norm_num_groups": 32,
    "mid_block_add_attention": True,
    "force_upcast": True,
    "shift_factor": None,
    "latents_mean": None,
    "latents_std": None,
    "use_quant_conv": True,
    "use_post_quant_conv": True,
}
KL_TO_OURS = (
    "in_channels",
    "out_channels",
    "block_out_channels",
    "layers_per_block",
    "latent_channels",
    "norm_num_groups",
    "sample_size",
    "mid_block_add_attention",
    "use_quant_conv",
    "use_post_quant_conv",
)


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple | list) else value


def kl_config(ctx: Any, path: Path, raw: dict[str, Any]) -> dict[str, Any]:
    """Our KLAutoencoder config from a diffusers AutoencoderKL config."""
    cfg = ctx.with_defaults(raw, KL_DEFAULTS)
    n = len(cfg["block_out_channels"])
    ctx.require(cfg["act_fn"] == "silu", path, f"act_fn {cfg['act_fn']!r} (only silu)")
    ctx.require(list(cfg["down_block_types"]) == ["DownEncoderBlock2D"] * n, path, f"down_block_types {cfg['down_block_types']}")
    ctx.require(list(cfg["up_block_types"]) == ["UpDecoderBlock2D"] * n, path, f"up_block_types {cfg['up_block_types']}")
    ctx.require(cfg["latents_mean"] is None and cfg["latents_std"] is None, path, "per-channel latents_mean / latents_std")
    return {k: _plain(cfg[k]) for k in KL_TO_OURS}


def convert_state(
    ctx: Any,
    path: Path,
    raw: dict[str, Any],
    state: dict[str, Any],
    comp: str,
    *,
    build: Any = None,
    latent_space_of: dict[str, Any] | None = None,
    **context: Any,
) -> dict[str, Any]:
    """An AutoencoderKL config + state dict -> entry ``comp`` in ``ctx.components``; returns its latent space.

    ``build(cls, config, state, where)`` loads the weights (default: ``ctx.build_and_load``).
    ``latent_space_of``: the space of another autoencoder this one was fine-tuned to decode (as
    SD's ft-MSE VAE replaces the original): the entry is then a decoder of that space (its own
    encoder is not used), and its config must agree with that space's shape and scale.
    """
    import math

    from latentzoo.core.contract.errors import LatentzooError

    from .model import KLAutoencoder

    cfg = kl_config(ctx, path, raw)
    model = (build or ctx.build_and_load)(KLAutoencoder, cfg, state, path)
    sha = ctx.save(comp, model, "vae")
    entry: dict[str, Any] = {
        "family": "vae",
        "class": "vae.autoencoder",
        "config": cfg,
        "weights": {"path": f"{comp}.safetensors", "sha256": sha},
    }
    if latent_space_of is not None:
        space = dict(latent_space_of)
        shape = model.shape_fields()
        wrong = [f"{k} {v!r} != {space.get(k)!r}" for k, v in shape.items() if space.get(k) != v]
        stated = raw.get("scaling_factor")
        if isinstance(stated, int | float) and space.get("scaling_factor") and abs(stated - space["scaling_factor"]) > 1e-9:
            wrong.append(f"scaling_factor {stated!r} != {space['scaling_factor']!r}")
        if wrong:
            raise LatentzooError(f"{path}: this VAE does not fit the latent space it is declared for: {'; '.join(wrong)}")
        ctx.notes.append(f"{comp} decodes latent space {space['autoencoder']} (declared with --latent-space-of); its encoder is not used")
        entry.update(roles=["decoder"], latent_space=space)
        entry["description"] = f"diffusers AutoencoderKL from {ctx.source.name}, converted: a decoder of {space['autoencoder']}"
        entry["training"] = {**ctx.provenance, "fine_tuned_for": space["autoencoder"]}
        ctx.components[comp] = entry
        return space
    sf, source_of = ctx.scaling(path, raw, model, suspect_default=False)
    shift = raw.get("shift_factor") or 0.0
    if not (isinstance(shift, int | float) and math.isfinite(shift)):
        raise LatentzooError(f"{path}: shift_factor {shift!r} is not a finite number; fix the config")
    shift = float(shift)
    ctx.notes.append(f"scaling_factor {sf:.6g} from {source_of}; shift {shift:.6g} (shift_factor)")
    space = {**model.shape_fields(), "autoencoder": space_identity(sha), "scaling_factor": sf, "shift": shift}
    entry.update(roles=["encoder", "decoder"], latent_space=space)
    entry["description"] = f"diffusers AutoencoderKL from {ctx.source.name}, converted (scaling_factor from {source_of})"
    entry["training"] = {**ctx.provenance, "scaling_factor_source": source_of}
    ctx.components[comp] = entry
    return space


class AutoencoderKLFormat:
    """The diffusers mapping of ``vae.autoencoder``."""

    reads = ("AutoencoderKL",)

    def read(self, ctx: Any, folder: Path, raw: dict[str, Any], comp: str, **context: Any) -> dict[str, Any]:
        space = convert_state(ctx, folder / "config.json", raw, ctx.load_weights(folder), comp, **context)
        return {"latent_space": space}

    def read_state(self, ctx: Any, where: Any, raw: dict[str, Any], state: dict[str, Any], comp: str, **context: Any) -> dict[str, Any]:
        """From a config + state dict in memory (a pipeline's vae, a single-file checkpoint's), loaded without a copy."""
        return {"latent_space": convert_state(ctx, where, raw, state, comp, build=ctx.build_assigned, **context)}

    def write(self, ctx: Any, entry: Any, folder: Path, *, space: Any = None, **context: Any) -> str:
        from .model import KLAutoencoder

        space = space if space is not None else entry.latent_space
        sf = space.scaling_factor if space else None
        if sf is None:
            ctx.notes.append("the autoencoder states no scaling_factor: diffusers will assume 0.18215")
        cfg = {**ctx.signature_defaults(KLAutoencoder), **dict(entry.data.get("config") or {})}
        n = len(cfg["block_out_channels"])
        out = {"_class_name": "AutoencoderKL", "_diffusers_version": "0.30.0"}
        out.update({k: _plain(cfg[k]) for k in KL_TO_OURS})
        out.update(down_block_types=["DownEncoderBlock2D"] * n, up_block_types=["UpDecoderBlock2D"] * n, act_fn="silu", force_upcast=False)
        if sf is not None:
            out["scaling_factor"] = sf
        out["shift_factor"] = (space.shift if space else None) or None
        ctx.write_model(folder, out, ctx.tensors(entry))
        return "AutoencoderKL"
