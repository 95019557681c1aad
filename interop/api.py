"""Python API for interop: what ``latentzoo convert / export / push / pull / formats`` do.

import latentzoo
latentzoo.convert("ldm-celebahq-256/", "celebahq", from_format="diffusers", scaling_factor=0.6)
latentzoo.export("digits", "digits-diffusers/", to_format="diffusers")
latentzoo.push("digits-vqgan", "me/digits-vqgan")
latentzoo.pull("me/digits-vqgan@main", name="my-vqgan")
latentzoo.lora_add("style.safetensors", base="sd15", name="style")
pipe = latentzoo.load_pipeline("sd15"); latentzoo.apply_loras(pipe, ["style:0.8"])
latentzoo.fuse("sd15", ["style:0.8"], name="sd15-style")
latentzoo.merge("weighted-sum", ["sd15", "other"], alpha=0.3, name="mix")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .formats import Converted, Format
from .hub import Pulled, Pushed


def formats() -> list[Format]:
    """The declared formats (name, description, plugin, and whether each can convert / export)."""
    from .formats import formats as _formats

    return sorted(_formats().values(), key=lambda f: f.name)


def convert(
    source: str | Path,
    name: str,
    *,
    from_format: str,
    outdir: str | Path | None = None,
    register: bool = True,
    force: bool = False,
    **options: Any,
) -> Converted:
    """Convert a folder in ``from_format`` into weights + a registry fragment, and add it to the user registry.

    ``options`` go to the format (diffusers: ``scaling_factor``, ``calibrate``). A name the
    registry already has (built-in or user) is refused unless ``force``.
    """
    from .formats import convert as _convert

    return _convert(source, name, fmt=from_format, outdir=outdir, register=register, force=force, **options)


def export(name: str, outdir: str | Path, *, to_format: str, force: bool = False, extra: Any = ()) -> tuple[Path, list[str]]:
    """Write a component or pipeline in ``to_format`` to ``outdir`` (new, empty, or a previous export with ``force``)."""
    from latentzoo.core.runtime.api import registry

    from .formats import export as _export

    return _export(registry(extra), name, outdir, fmt=to_format, force=force)


def push(
    name: str,
    repo: str,
    *,
    revision: str | None = None,
    private: bool = False,
    create_pr: bool = False,
    dry_run: bool = False,
    extra: Any = (),
) -> list[Pushed]:
    """Upload a component or a pipeline (its components first) to the Hub repo ``ORG/NAME``."""
    from latentzoo.core.runtime.api import registry

    from .hub import push as _push

    return _push(registry(extra), name, repo, revision=revision, private=private, create_pr=create_pr, dry_run=dry_run)


def pull(ref: str, *, name: str | None = None, force: bool = False, trust_unverified: bool = False) -> Pulled:
    """Download ``ORG/NAME[@REVISION]``, verify its sha256 and add it to the user registry
    (a config stating no sha256 is refused unless ``trust_unverified``)."""
    from .hub import pull as _pull

    return _pull(ref, name=name, force=force, trust_unverified=trust_unverified)


def lora_add(file: str | Path, *, base: str, name: str, allow_partial: bool = False, extra: Any = ()) -> dict[str, Any]:
    """Register a LoRA file (kohya-ss or diffusers / PEFT) as ``name`` after checking that it fits ``base``; the entry."""
    from .lora import add

    return add(file, base=base, name=name, allow_partial=allow_partial, extra=extra)[0]


def apply_loras(pipe: Any, loras: list[str], *, extra: Any = ()) -> list[dict[str, Any]]:
    """Apply ``NAME[:MODEL[:TEXT]]`` LoRAs to a loaded pipeline in memory (``sample --lora``); their sidecar records."""
    from .lora import apply_to_pipeline, parse_spec

    return apply_to_pipeline(pipe, [parse_spec(s) for s in loras], extra)


def fuse(target: str, loras: list[str], *, name: str, outdir: str | Path | None = None, extra: Any = ()) -> dict[str, Any]:
    """Fuse ``NAME[:MODEL[:TEXT]]`` LoRAs into ``target``'s weights as a new registered pipeline / component (``latentzoo fuse``)."""
    from .lora import fuse as _fuse
    from .lora import parse_spec

    return _fuse(target, [parse_spec(s) for s in loras], name=name, outdir=outdir, extra=extra)


def merge(
    operation: str,
    inputs: list[str],
    *,
    alpha: float,
    name: str,
    dtype: str | None = None,
    outdir: str | Path | None = None,
    extra: Any = (),
) -> dict[str, Any]:
    """``weighted-sum`` (1 - a) A + a B or ``add-difference`` A + a (B - C) of components / pipelines (``latentzoo merge``)."""
    from .merge import merge as _merge

    return _merge(operation, inputs, alpha=alpha, name=name, dtype=dtype, outdir=outdir, extra=extra)
