"""diffusers folders in and out; each family maps its own classes (a mapping per family, found by declaration).

A family's mapping is the class its component declaration names under
``"formats": {"diffusers": "module:Class"}``. It may define:

``reads``: diffusers model / scheduler class names (``_class_name``, or transformers'
    ``architectures[0]``) it converts;
``read_state(ctx, where, raw, state, comp, **context) -> dict``: the same from a config dict and
    a state dict already in memory (``ctx.convert_state`` dispatches to it), so a pipeline mapping,
    or a single-file checkpoint reader, converts parts without knowing their family;
``pipelines``: diffusers pipeline class names (``model_index.json``) it assembles;
``read(ctx, folder, raw, comp, **context) -> dict``: convert one folder into entry ``comp``
    (added to ``ctx.components``); returns what a pipeline needs (e.g. ``latent_space``);
``read_pipeline(ctx, index) -> None``: convert a whole pipeline folder (``ctx.read_part``
    converts a sub-folder with whichever family maps its class);
``write(ctx, entry, folder, **context) -> str``: write a registry entry as a diffusers model
    folder; returns its diffusers class name;
``write_pipeline(ctx, entry, spec) -> None``: write a pipeline whose prior is this family's
    (``ctx.write_part`` writes another part, e.g. the autoencoder, with its own family).

``ReadContext`` / ``WriteContext`` carry the shared helpers (reading configs, loading
safetensors, the never-defaulted latent scaling factor, writing model folders), so a family's
mapping imports nothing from other plugins.

The VQ latent scaling factor is never defaulted. ``VQModel``'s constructor default (0.18215)
is Stable Diffusion's KL-VAE constant, not a measurement of any VQ model, and old configs
(e.g. CompVis/ldm-celebahq-256) do not state one at all, so diffusers silently uses that
constant and samples garbage. Conversion takes it from the config only when stated and not
that default; otherwise from ``--scaling-factor`` or measured with ``--calibrate``.

Safetensors only: a folder holding only ``diffusion_pytorch_model.bin`` (a pickle) is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from latentzoo.core.contract.errors import LatentzooError
from latentzoo.interop.toolkit import (  # noqa: F401  (ReadContext, WriteContext: the toolkit this format's mappings get)
    DIFFUSERS_VERSION,
    FORMAT,
    SD_VAE_DEFAULT_SCALE,
    WEIGHTS_FILE,
    ReadContext,
    WriteContext,
    readers,
)


def _space_of(name: str) -> dict[str, Any]:
    """The latent space a registry component (or a pipeline's decoder) states, for --latent-space-of."""
    from latentzoo.core.contract.registry import Registry

    registry = Registry.load()
    entry = registry.get(name)
    if entry.section == "pipelines":
        entry = registry.get(str(entry.data.get("decoder")), "decoder")
    space = entry.latent_space
    if space is None:
        raise LatentzooError(f"--latent-space-of {name}: {entry.name} states no latent space; name an autoencoder or a pipeline")
    return space.to_dict()


def convert(
    source: Path,
    name: str,
    stage: Path,
    *,
    scaling_factor: float | None = None,
    calibrate: str | None = None,
    latent_space_of: str | None = None,
) -> dict:
    """The format's convert (see latentzoo.interop.formats): a diffusers model or pipeline folder.

    ``latent_space_of``: a registry name whose latent space a fine-tuned AutoencoderKL decodes
    (e.g. SD's ft-MSE VAE for a converted SD pipeline); the result is a decoder of that space.
    """
    if not source.is_dir():
        raise LatentzooError(f"{source} is not a folder; give a diffusers model or pipeline folder (config.json / model_index.json)")
    models, pipelines = readers()
    ctx = ReadContext(name, source, stage, scaling_factor=scaling_factor, calibrate=calibrate, models=models)
    index_path = source / "model_index.json"
    if index_path.is_file():
        index = ctx.read_json(index_path)
        kind = index.get("_class_name")
        mapping = pipelines.get(kind)
        if mapping is None:
            raise LatentzooError(
                f"{index_path}: pipeline {kind!r} is not supported ({', '.join(sorted(pipelines)) or 'no loaded family maps one'})"
            )
        mapping.read_pipeline(ctx, index)
    elif latent_space_of is not None:
        path, raw = ctx.config_of(source)
        if raw.get("_class_name") != "AutoencoderKL":
            raise LatentzooError(f"--latent-space-of applies to an AutoencoderKL folder; {path} is a {raw.get('_class_name')!r}")
        if scaling_factor is not None or calibrate is not None:
            raise LatentzooError("--latent-space-of takes the scaling factor of that space; drop --scaling-factor / --calibrate")
        ctx.read_part(source, name, latent_space_of=_space_of(latent_space_of))
    else:
        ctx.read_part(source, name)
    if latent_space_of is not None and index_path.is_file():
        raise LatentzooError(f"--latent-space-of applies to a VAE folder, not a pipeline ({index_path})")
    if (scaling_factor is not None or calibrate is not None) and not ctx.scaling_used:
        raise LatentzooError(f"--scaling-factor / --calibrate apply to latent autoencoders; {source} converts none")
    return {"components": ctx.components, "pipelines": ctx.pipelines, "notes": ctx.notes}


def export(registry: Any, name: str, folder: Path) -> list[str]:
    """The format's export (see latentzoo.interop.formats): a model folder, or a pipeline folder with model_index.json."""
    from latentzoo.core.contract.compose import PipelineSpec, check_spec, resolve_component

    entry = registry.get(name)
    ctx = WriteContext(registry, folder)
    if entry.section == "components":
        ctx.write_part(entry, folder)
        return ctx.notes
    spec = PipelineSpec.from_entry(entry)
    check_spec(registry, spec)
    prior = resolve_component(registry, spec.prior, "prior")
    mapping = ctx.mapping(prior)
    if mapping is None or not hasattr(mapping, "write_pipeline"):
        raise LatentzooError(f"pipeline {name}: prior {spec.prior} ({prior.data.get('class')}) has no diffusers pipeline counterpart")
    mapping.write_pipeline(ctx, entry, spec)
    return ctx.notes
