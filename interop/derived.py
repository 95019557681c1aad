"""Registering models made from others (``fuse``, ``merge``): their names, entries and one rollback.

A derived component copies its source's entry with new weights (and the tokenizer file shipped
beside them); a derived pipeline is its base's entry with the new parts. Nothing stays written if
any step fails: the weights files are removed and no entry is added.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from latentzoo.core.contract.errors import LatentzooError


def derived_names(registry: Any, name: str, parts: Any, is_pipe: bool) -> dict[str, str]:
    """Part -> new component name (``NAME-unet`` / ``NAME-text-encoder`` of a pipeline, else ``NAME``); names taken are refused."""
    names = {p: (f"{name}-{'unet' if p == 'prior' else 'text-encoder'}" if is_pipe else name) for p in parts}
    taken = sorted(n for n in {name, *names.values()} if n in registry.entries)
    if taken:
        raise LatentzooError(f"the registry already names {', '.join(taken)}; choose another --name")
    return names


def derived_component(
    source: Any, weights: Path, sha256: str, *, user: Path, assets: Path, written: list[Path], recipe: dict[str, Any], description: str
) -> dict[str, Any]:
    """``source``'s entry with new weights; a tokenizer file beside its weights (in ``assets``) is copied and verified."""
    from latentzoo.core.contract.userregistry import relative_weights
    from latentzoo.core.contract.weights import sha256_file, write_bytes

    data = copy.deepcopy(source.data)
    data.pop("aliases", None)
    data["weights"] = {"path": relative_weights(weights, user), "sha256": sha256}
    tok = (data.get("config") or {}).get("tokenizer")
    if isinstance(tok, dict) and "file" in tok:  # assets shipped beside the weights travel with them
        asset = assets / tok["file"]
        written.append(write_bytes(weights.parent / tok["file"], asset.read_bytes()))
        if sha256_file(weights.parent / tok["file"]) != tok["sha256"]:
            raise LatentzooError(f"{asset} fails its sha256 check; restore {source.name}'s files")
    data["training"] = {"recipe": recipe}
    data["description"] = description
    return data


def derived_pipeline(base: Any, names: dict[str, str], description: str) -> dict[str, Any]:
    """The base pipeline's entry with its parts replaced by the derived components."""
    data = copy.deepcopy(base.data)
    data.pop("aliases", None)
    data.update(names)
    data["description"] = description
    return data


@contextlib.contextmanager
def rollback(written: list[Path]) -> Iterator[None]:
    """Remove the files in ``written`` if the block fails (or is interrupted), then re-raise."""
    try:
        yield
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
