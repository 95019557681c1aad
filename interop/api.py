"""Python API for interop: what ``latentzoo convert / export / push / pull / formats`` do.

import latentzoo
latentzoo.convert("ldm-celebahq-256/", "celebahq", from_format="diffusers", scaling_factor=0.6)
latentzoo.export("digits", "digits-diffusers/", to_format="diffusers")
latentzoo.push("digits-vqgan", "me/digits-vqgan")
latentzoo.pull("me/digits-vqgan@main", name="my-vqgan")
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
    from latentzoo.core.api import registry

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
    from latentzoo.core.api import registry

    from .hub import push as _push

    return _push(registry(extra), name, repo, revision=revision, private=private, create_pr=create_pr, dry_run=dry_run)


def pull(ref: str, *, name: str | None = None, force: bool = False, trust_unverified: bool = False) -> Pulled:
    """Download ``ORG/NAME[@REVISION]``, verify its sha256 and add it to the user registry
    (a config stating no sha256 is refused unless ``trust_unverified``)."""
    from .hub import pull as _pull

    return _pull(ref, name=name, force=force, trust_unverified=trust_unverified)
