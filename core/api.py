"""The Python API; the CLI is a thin layer over these functions.

    import latentzoo
    latentzoo.list_entries(role="prior")
    pipe = latentzoo.load_pipeline("digits")          # or compose(prior=..., decoder=..., ...)
    images = pipe.sample(16, seed=0, steps=50)        # (16, 1, 32, 32) in [-1, 1]
    latentzoo.save_grid(images, "samples.png")
    # what `latentzoo sample` does, sidecar included (PNG + JSON written as one unit):
    record = latentzoo.sample("digits-dalle", 16, seed=0, output="out.png", options={"temperature": 0.8})
    latentzoo.describe_options("digits-dalle")        # the declared options `--set` reaches

Listing, inspecting and composing never import torch; building does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .compose import PipelineSpec, check_spec, component_options_table, load_spec, pipeline_options_table, resolve_component
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
    conditioner: str | None = None,
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
        conditioner=conditioner,
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


def sample(
    target: str | PipelineSpec,
    n: int = 16,
    *,
    seed: int = 0,
    output: str | Path = "samples.png",
    options: dict[str, Any] | None = None,
    batch_size: int = 64,
    nrow: int | None = None,
    progress: Any = None,
    extra: Any = (),
    allow_mismatch: bool | None = None,
    candidates: int | None = None,
    precision: str = "fp32",
    refiner: str | PipelineSpec | None = None,
    refiner_switch: float = 0.8,
) -> dict[str, Any]:
    """Draw ``n`` samples to ``output`` (a .png grid, or ``DIR/`` for one PNG each) with a JSON sidecar.

    ``options`` are values of declared options (``{"temperature": 0.8}``, ``{"sampler.eta": 0.5}``,
    ``{"steps": 20}``), checked like ``--set``. Returns the sidecar record (pipeline, component
    sha256s, seed, steps, sampler, scheduler, validated options, versions, files). Batch ``k`` is
    seeded from (seed, k); see ``latentzoo.core.pipeline`` for what is reproducible.
    ``candidates`` N re-ranks: N draws per output, the best by the pipeline's scorer against
    the prompt kept (``--candidates``; the sidecar's ``reranking`` records it); with no prompt
    under ``random_prompt``, against each output's caption drawn from the caption set.
    ``precision="bf16"`` runs the models under bfloat16 autocast (``--precision bf16``).
    ``refiner``: a refiner pipeline that finishes the sampling from ``refiner_switch`` (core.refine).
    """
    from .pipeline import check_precision
    from .record import SampleOutput, check_run
    from .rerank import check_candidates_value

    check_run(n, seed, batch_size, nrow)
    if candidates is not None:
        check_candidates_value(candidates)
    check_precision(precision)
    SampleOutput(str(output), n=n, nrow=nrow)  # refuse a bad output before loading weights
    pipe = load_pipeline(target, extra=extra, allow_mismatch=allow_mismatch)
    if refiner is not None:
        from .refine import attach

        attach(pipe, load_pipeline(refiner, extra=extra, allow_mismatch=allow_mismatch), refiner_switch)
    return pipe.sample_to(
        str(output),
        n,
        seed=seed,
        batch_size=batch_size,
        nrow=nrow,
        options=options,
        progress=progress,
        candidates=candidates,
        precision=precision,
    )


def describe_options(name: str, *, extra: Any = ()) -> Any:
    """The declared options of a component (a list) or of each part of a pipeline (a dict), as ``info`` shows them."""
    reg = registry(extra)
    entry = reg.get(name) if name in reg.entries else resolve_component(reg, name, declared_role(name))
    if entry.section == "pipelines":
        return pipeline_options_table(reg, PipelineSpec.from_entry(entry))
    return component_options_table(reg, entry)


def declared_role(name: str) -> str:
    """The first role a plugin declares for component class NAME (prior when no plugin declares it)."""
    from .plugins import get_manager

    decl = get_manager().components().get(name)
    return decl["roles"][0] if decl else "prior"
