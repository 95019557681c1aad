"""``latentzoo merge weighted-sum | add-difference``: registry glue over ``latentzoo.core.runtime.merge``.

Inputs are components (priors or conditioners of one class) or pipelines, whose model
components (prior, and the text encoder where the inputs' differ) are merged pair by pair; the
autoencoder is the first input's, which the others must share (the same latent space). The new
components and pipeline go to ``<registry dir>/merged/NAME/`` and the user registry, each with
its recipe.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from latentzoo.core.contract.errors import LatentzooError

MERGED_PARTS = ("prior", "conditioner")


def _weights(entry: Any) -> tuple[Path, str]:
    from latentzoo.core.runtime.sources import resolve_weights

    if "weights" not in entry.data:
        raise LatentzooError(f"{entry.name} has no weights file; merge trained components")
    return resolve_weights(entry)


def _check_pair(entries: list[Any]) -> None:
    first = entries[0]
    for other in entries[1:]:
        if other.data.get("class") != first.data.get("class"):
            raise LatentzooError(
                f"cannot merge {first.name} ({first.data.get('class')}) and {other.name} ({other.data.get('class')}): different classes"
            )
        if other.data.get("latent_space") != first.data.get("latent_space"):
            raise LatentzooError(
                f"cannot merge {first.name} and {other.name}: they model different latent spaces (merging across latent spaces "
                "gives noise); merge models trained on one autoencoder"
            )


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
    """Merge ``inputs`` with ``operation`` into components / a pipeline ``name``; registered. Nothing written on refusal."""
    from latentzoo.core.contract.registry import user_registry_path
    from latentzoo.core.contract.userregistry import add_entries
    from latentzoo.core.runtime.api import registry as load_registry
    from latentzoo.core.runtime.merge import DTYPES, OPERATIONS, check_alpha, check_same_tensors, merge_files

    from .derived import derived_component, derived_names, derived_pipeline, rollback
    from .hub import check_name

    if operation not in OPERATIONS:
        raise LatentzooError(f"unknown merge {operation!r}; choose {', '.join(OPERATIONS)}")
    if len(inputs) != OPERATIONS[operation]:
        raise LatentzooError(f"merge {operation} takes {OPERATIONS[operation]} inputs, not {len(inputs)}")
    if dtype is not None and dtype not in DTYPES:
        raise LatentzooError(f"--dtype {dtype!r}: choose {', '.join(DTYPES)}")
    alpha = check_alpha(alpha)
    check_name(name)
    if name in inputs:
        raise LatentzooError(f"merge output --name {name} is one of its inputs; choose a new name (inputs are never overwritten)")
    reg = load_registry(extra)
    entries = [reg.get(n) for n in inputs]
    if name in {e.name for e in entries}:
        raise LatentzooError(f"merge output --name {name} is one of its inputs; choose a new name (inputs are never overwritten)")
    kinds = {e.section for e in entries}
    if len(kinds) != 1:
        raise LatentzooError(f"merge {', '.join(inputs)}: give all pipelines or all components")
    is_pipe = kinds == {"pipelines"}
    if is_pipe:
        space = reg.get(entries[0].data["decoder"]).data.get("latent_space")
        for e in entries[1:]:
            if reg.get(e.data["decoder"]).data.get("latent_space") != space:
                raise LatentzooError(
                    f"cannot merge {entries[0].name} and {e.name}: their autoencoders define different latent spaces; "
                    "merge pipelines that share one"
                )
        groups = {}
        for part in MERGED_PARTS:
            names = [e.data.get(part) for e in entries]
            if not all(names) and any(names):
                raise LatentzooError(f"cannot merge {', '.join(inputs)}: only some have a {part}")
            if names[0] and len({_weights(reg.get(n))[1] for n in names}) > 1:  # identical parts are reused, not merged
                groups[part] = [reg.get(n) for n in names]
        if "prior" not in groups:
            raise LatentzooError(f"{', '.join(inputs)} share their prior's weights; there is nothing to merge")
    else:
        for e in entries:
            if not any(r in MERGED_PARTS for r in e.roles):
                raise LatentzooError(
                    f"{e.name} is a {'/'.join(e.roles)}; merge priors or conditioners (an autoencoder defines its latent space)"
                )
        groups = {entries[0].roles[0]: entries}
    new_names = derived_names(reg, name, groups, is_pipe)
    plans = []
    for part, group in groups.items():
        _check_pair(group)
        files = [_weights(e) for e in group]
        check_same_tensors([e.name for e in group], [p for p, _ in files])
        recipe = {
            "operation": operation,
            "alpha": alpha,
            "inputs": [{"name": e.name, "sha256": s} for e, (_, s) in zip(group, files, strict=True)],
        }
        plans.append((part, group, files, recipe))
    user = user_registry_path()
    out = Path(outdir) if outdir else user.parent / "merged" / name
    formula = "(1 - a) A + a B" if operation == "weighted-sum" else "A + a (B - C)"
    components: dict[str, dict[str, Any]] = {}
    pipelines: dict[str, dict[str, Any]] = {}
    written: list[Path] = []
    with rollback(written):
        for part, group, files, recipe in plans:
            path = out / f"{new_names[part]}.safetensors"
            sha = merge_files(operation, [p for p, _ in files], alpha, path, dtype=dtype, recipe=recipe)
            written.append(path)
            components[new_names[part]] = derived_component(
                group[0], path, sha, user=user, assets=files[0][0].parent, written=written, recipe=recipe,
                description=f"{operation} {formula}, a = {alpha:g}, of {', '.join(e.name for e in group)}",
            )  # fmt: skip
        if is_pipe:
            pipelines[name] = derived_pipeline(entries[0], new_names, f"{operation} of {', '.join(inputs)} (a = {alpha:g})")
        add_entries(components, pipelines, path=user)
    return {"components": components, "pipelines": pipelines, "outdir": str(out)}
