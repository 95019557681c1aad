"""diffusers ``VQModel`` <-> ``vqgan.autoencoder``: config mapping (the state dicts match key for key).

Used by the diffusers format plugin through this family's declaration
(``"formats": {"diffusers": ...}``). A latent shift (latentzoo normalises ``(z - shift) *
scaling_factor``; diffusers' LDMPipeline only scales) is folded into the weights on export.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from latentzoo.core.contract.weights import space_identity

# diffusers' constructor defaults, for keys an (old) config leaves out.
VQ_DEFAULTS: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"],
    "up_block_types": ["UpDecoderBlock2D"],
    "block_out_channels": [64],
    "layers_per_block": 1,
    "act_fn": "silu",
    "latent_channels": 3,
    "sample_size": 32,
    "num_vq_embeddings": 256,
    "norm_num_groups": 32,
    "vq_embed_dim": None,
    "norm_type": "group",
    "mid_block_add_attention": True,
    "lookup_from_codebook": False,
    "force_upcast": False,
}
VQ_TO_OURS = (
    "in_channels",
    "out_channels",
    "block_out_channels",
    "layers_per_block",
    "latent_channels",
    "num_vq_embeddings",
    "vq_embed_dim",
    "norm_num_groups",
    "sample_size",
    "mid_block_add_attention",
)


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple | list) else value


def vq_config(ctx: Any, path: Path, raw: dict[str, Any]) -> dict[str, Any]:
    """Our VQAutoencoder config from a diffusers VQModel config (refusing what we do not implement)."""
    cfg = ctx.with_defaults(raw, VQ_DEFAULTS)
    n = len(cfg["block_out_channels"])
    ctx.require(cfg["act_fn"] == "silu", path, f"act_fn {cfg['act_fn']!r} (only silu)")
    ctx.require(cfg["norm_type"] == "group", path, f"norm_type {cfg['norm_type']!r} (only group)")
    ctx.require(not cfg["lookup_from_codebook"], path, "lookup_from_codebook is set")
    ctx.require(list(cfg["down_block_types"]) == ["DownEncoderBlock2D"] * n, path, f"down_block_types {cfg['down_block_types']}")
    ctx.require(list(cfg["up_block_types"]) == ["UpDecoderBlock2D"] * n, path, f"up_block_types {cfg['up_block_types']}")
    return {k: _plain(cfg[k]) for k in VQ_TO_OURS}


def fold_shift(tensors: dict[str, Any], shift: float) -> dict[str, Any]:
    """Move a latent shift into the VQ weights: encode gives h - shift; the codebook moves with it; decode is unchanged."""
    t = dict(tensors)
    t["quant_conv.bias"] = t["quant_conv.bias"] - shift
    t["quantize.embedding.weight"] = t["quantize.embedding.weight"] - shift
    t["post_quant_conv.bias"] = t["post_quant_conv.bias"] + shift * t["post_quant_conv.weight"].sum(dim=(1, 2, 3))
    return t


class VQModelFormat:
    """The diffusers mapping of ``vqgan.autoencoder``."""

    reads = ("VQModel",)

    def read(self, ctx: Any, folder: Path, raw: dict[str, Any], comp: str, **context: Any) -> dict[str, Any]:
        from .model import VQAutoencoder

        path = folder / "config.json"
        cfg = vq_config(ctx, path, raw)
        model = ctx.build_and_load(VQAutoencoder, cfg, ctx.load_weights(folder), path)
        sf, source_of = ctx.scaling(path, raw, model, suspect_default=True)
        ctx.notes.append(f"scaling_factor {sf:.6g} from {source_of}")
        sha = ctx.save(comp, model, "vqgan")
        space = {**model.shape_fields(), "autoencoder": space_identity(sha), "scaling_factor": sf, "shift": 0.0}
        ctx.components[comp] = {
            "family": "vqgan",
            "class": "vqgan.autoencoder",
            "roles": ["encoder", "decoder"],
            "config": cfg,
            "weights": {"path": f"{comp}.safetensors", "sha256": sha},
            "latent_space": space,
            "description": f"diffusers VQModel from {ctx.source.name}, converted (scaling_factor from {source_of})",
            "training": {**ctx.provenance, "scaling_factor_source": source_of},
        }
        return {"latent_space": space}

    def read_state(
        self, ctx: Any, where: Path, raw: dict[str, Any], state: dict[str, Any], comp: str, *, scaling_factor: float, description: str
    ) -> dict[str, Any]:
        """A VQModel given as config + diffusers-named tensors (a single-file checkpoint's first stage), its scaling factor stated."""
        from .model import VQAutoencoder

        cfg = vq_config(ctx, where, raw)
        model = ctx.build_assigned(VQAutoencoder, cfg, state, where)
        sha = ctx.save(comp, model, "vqgan")
        space = {**model.shape_fields(), "autoencoder": space_identity(sha), "scaling_factor": scaling_factor, "shift": 0.0}
        ctx.components[comp] = {
            "family": "vqgan",
            "class": "vqgan.autoencoder",
            "roles": ["encoder", "decoder"],
            "config": cfg,
            "weights": {"path": f"{comp}.safetensors", "sha256": sha},
            "latent_space": space,
            "description": description,
            "training": dict(ctx.provenance),
        }
        return {"latent_space": space}

    def write(self, ctx: Any, entry: Any, folder: Path, *, space: Any = None, **context: Any) -> str:
        """A VQModel folder; with ``space`` (a pipeline's prior's latent space) its scaling factor and folded shift."""
        from .model import VQAutoencoder

        tensors = ctx.tensors(entry)
        if space is not None and space.shift:
            tensors = fold_shift(tensors, space.shift)
            ctx.notes.append(f"latent shift {space.shift:.6g} folded into the VQ weights (diffusers' LDMPipeline only scales)")
        space = space if space is not None else entry.latent_space
        sf = space.scaling_factor if space else None
        if sf is None:
            ctx.notes.append("the autoencoder states no scaling_factor: diffusers will assume 0.18215; export a pipeline to carry one")
        cfg = {**ctx.signature_defaults(VQAutoencoder), **dict(entry.data.get("config") or {})}
        n = len(cfg["block_out_channels"])
        out = {"_class_name": "VQModel", "_diffusers_version": "0.30.0"}
        out.update({k: _plain(cfg[k]) for k in VQ_TO_OURS})
        out.update(
            down_block_types=["DownEncoderBlock2D"] * n,
            up_block_types=["UpDecoderBlock2D"] * n,
            act_fn="silu",
            norm_type="group",
            lookup_from_codebook=False,
            force_upcast=False,
        )
        if sf is not None:
            out["scaling_factor"] = sf
        ctx.write_model(folder, out, tensors)
        return "VQModel"
