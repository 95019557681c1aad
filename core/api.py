"""The Python API; the CLI is a thin layer over these functions.

    import latentzoo
    latentzoo.list_entries(role="prior")
    pipe = latentzoo.load_pipeline("digits")          # or compose(prior=..., decoder=..., ...)
    images = pipe.sample(16, seed=0, steps=50)        # (16, 1, 32, 32) in [-1, 1]
    latentzoo.save_grid(images, "samples.png")

Listing, inspecting and composing never import torch; building does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .compose import PipelineSpec, check_spec, load_spec
from .registry import Entry, Registry


def registry(extra: list[str | Path] | tuple[str | Path, ...] = ()) -> Registry:
    """All registry layers merged (built-in, plugins, user file, ``extra`` files)."""
    return Registry.load(list(extra))


def list_entries(role: str | None = None, family: str | None = None, *, extra: Any = ()) -> list[Entry]:
    return registry(extra).list(role=role, family=family)


def info(name: str, *, extra: Any = ()) -> Entry:
    return registry(extra).get(name)


def compose(
    *,
    prior: str,
    decoder: str,
    sampler: str,
    encoder: str | None = None,
    scheduler: str | None = None,
    defaults: dict[str, Any] | None = None,
    name: str = "composed",
    allow_mismatch: bool = False,
    extra: Any = (),
) -> PipelineSpec:
    """A checked pipeline spec (raises ContractError on a mismatch); ``spec.to_yaml()`` saves it."""
    spec = PipelineSpec(
        prior=prior,
        decoder=decoder,
        sampler=sampler,
        encoder=encoder,
        scheduler=scheduler,
        defaults=dict(defaults or {}),
        name=name,
        allow_mismatch=allow_mismatch,
    )
    check_spec(registry(extra), spec)
    return spec


def load_pipeline(target: str | PipelineSpec, *, extra: Any = (), allow_mismatch: bool | None = None) -> Any:
    """Build a pipeline from a registry name, a pipeline YAML file, or a spec."""
    from .build import Builder

    reg = registry(extra)
    if isinstance(target, PipelineSpec):
        spec = target
    else:
        spec, reg = load_spec(reg, target)
    return Builder(reg).pipeline(spec, allow_mismatch=allow_mismatch)


def build(name: str, role: str, *, extra: Any = ()) -> Any:
    """Build one named component (weights loaded and verified)."""
    from .build import Builder

    return Builder(registry(extra)).component(name, role)


def save_grid(images: Any, path: str | Path, *, nrow: int | None = None) -> Path:
    from .images import save_grid as _save

    return _save(images, path, nrow=nrow)


def train(family: str, options: Any = None, **fields: Any) -> dict[str, Any] | None:
    """Train FAMILY's component, as ``latentzoo train FAMILY`` does: ``options`` is a
    ``latentzoo.TrainOptions`` (or give its fields as keywords, ``out=`` required). Returns the
    registry entry written to ``<out>/registry.yaml`` (None on data-parallel ranks other than 0)."""
    from .training import TrainOptions
    from .training import train as _train

    if options is None:
        options = TrainOptions(**fields)
    elif fields:
        raise TypeError("give a TrainOptions or keyword fields, not both")
    return _train(family, options)
