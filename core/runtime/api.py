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

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..contract.compose import PipelineSpec, check_spec, component_options_table, pipeline_options_table, resolve_component
from ..contract.errors import LatentzooError
from ..contract.registry import Entry, Registry
from .record import DEFAULT_BATCH_SIZE

if TYPE_CHECKING:
    from .pipeline import Pipeline


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


def load_pipeline(
    target: str | PipelineSpec | None = None,
    *,
    extra: Any = (),
    allow_mismatch: bool | None = None,
    device: str = "cpu",
    precision: str = "fp32",
    **parts: str | None,
) -> Pipeline:
    """Build a pipeline from a registry name, a pipeline YAML file, or a spec; ``sampler=``,
    ``scheduler=``, ``prior=``, ... swap its parts (the old part's defaults that no longer
    apply are dropped, as ``sample --sampler`` does), or compose one when ``target`` is None.
    ``device`` (checked as ``--device``) places its models there, under ``precision``'s autocast
    (core.runtime.devices.place): the editing functions (``latentzoo.img2img(pipe, ...)``) then run there."""
    from .build import Builder
    from .devices import check_device, check_precision_on, place
    from .request import resolve_spec

    check_precision_on(precision, check_device(device))
    spec, reg = resolve_spec(registry(extra), target, parts)
    return place(Builder(reg).pipeline(spec, allow_mismatch=allow_mismatch), device, precision)


def build(name: str, role: str, *, extra: Any = ()) -> Any:
    """Build one named component (weights loaded and verified)."""
    from .build import Builder

    return Builder(registry(extra)).component(name, role)


def save_grid(images: Any, path: str | Path, *, nrow: int | None = None) -> Path:
    from .images import save_grid as _save

    return _save(images, path, nrow=nrow)


def sample(
    target: str | PipelineSpec | None = None,
    n: int = 16,
    *,
    seed: int = 0,
    steps: int | None = None,
    sampler: str | None = None,
    scheduler: str | None = None,
    prompt: str | None = None,
    negative_prompt: str | None = None,
    prompts: Sequence[str] | None = None,
    prompts_file: str | Path | None = None,
    guidance: float | None = None,
    class_label: int | None = None,
    output: str | Path = "samples.png",
    options: Mapping[str, Any] | None = None,
    candidates: int | None = None,
    scorer: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    nrow: int | None = None,
    precision: str = "fp32",
    progress: Any = None,
    extra: Any = (),
    allow_mismatch: bool | None = None,
    refiner: str | PipelineSpec | None = None,
    refiner_switch: float = 0.8,
    threads: int | None = None,
    device: str = "cpu",
    resume: bool = False,
    loras: Sequence[str] = (),
    **parts: str | None,
) -> dict[str, Any] | list[dict[str, Any]]:
    """Draw ``n`` samples to ``output`` (a .png grid, or ``DIR/`` for one PNG each) with a JSON sidecar:
    ``latentzoo sample`` from Python, through the same request (core.runtime.request), checks and bytes.

    ``target`` is a pipeline name, YAML file or spec; ``sampler=``, ``scheduler=`` and the other
    parts (``prior=``, ``decoder=``, ``encoder=``, ``conditioner=``) swap the pipeline's, or compose
    one when ``target`` is None. ``options`` are values of declared options (``{"temperature": 0.8}``,
    ``{"sampler.eta": 0.5}``), checked like ``--set``. ``prompt`` / ``negative_prompt`` go to the
    conditioner of a text pipeline; ``prompts`` (or the lines of ``prompts_file``) write one output
    per prompt and return one record each. ``candidates`` N re-ranks by the pipeline's scorer (or
    ``scorer``). Returns the sidecar record (pipeline, sha256s, seed, steps, options, versions, files).
    A refusal is a LatentzooError carrying the CLI's line. Sample ``i`` is seeded from (seed, i)
    (core.runtime.seeding). ``threads`` sets torch's CPU threads (recorded); ``device`` is checked (cpu only
    today); ``resume=True`` finishes an interrupted ``DIR/`` run (core.runtime.rundir). ``loras`` are
    ``"NAME[:MODEL_STRENGTH[:TEXT_STRENGTH]]"`` as ``--lora`` takes them, applied in memory.
    ``refiner``: a refiner pipeline that finishes the sampling from ``refiner_switch`` (core.runtime.refine).
    """
    from .request import SampleRequest, run
    from .text import read_prompts

    unknown = sorted(set(parts) - {"prior", "decoder", "encoder", "conditioner"})
    if unknown:
        raise TypeError(f"sample() got unexpected keyword argument(s) {', '.join(unknown)}")
    if prompts_file is not None:
        if prompts is not None:
            raise LatentzooError("give prompts or prompts_file, not both")
        prompts = read_prompts(prompts_file)
    request = SampleRequest(
        target,
        **parts,
        sampler=sampler,
        scheduler=scheduler,
        n=n,
        seed=seed,
        steps=steps,
        guidance=guidance,
        class_label=class_label,
        prompt=prompt,
        negative_prompt=negative_prompt,
        prompts=None if prompts is None else tuple(prompts),
        options=dict(options or {}),
        candidates=candidates,
        scorer=scorer,
        batch_size=batch_size,
        precision=precision,
        nrow=nrow,
        output=str(output),
        allow_mismatch=bool(allow_mismatch),
        refiner=refiner,
        refiner_switch=refiner_switch,
        registries=tuple(str(x) for x in extra),
        threads=threads,
        device=device,
        resume=resume,
        loras=tuple(loras),
    )
    records = [w.record for w in run(request, progress=progress)]
    return records if prompts is not None else records[0]


def describe_options(name: str, *, extra: Any = ()) -> Any:
    """The declared options of a component (a list) or of each part of a pipeline (a dict), as ``info`` shows them."""
    reg = registry(extra)
    entry = reg.get(name) if name in reg.entries else resolve_component(reg, name, declared_role(name))
    if entry.section == "pipelines":
        return pipeline_options_table(reg, PipelineSpec.from_entry(entry))
    return component_options_table(reg, entry)


def declared_role(name: str) -> str:
    """The first role a plugin declares for component class NAME (prior when no plugin declares it)."""
    from ..contract.plugins import get_manager

    decl = get_manager().components().get(name)
    return decl["roles"][0] if decl else "prior"
