"""One way in: a sampling request, the same from the CLI, the Python API and the HTTP server.

``SampleRequest`` is a frozen dataclass of everything one sampling call asks for. Every
front end builds one and hands it to ``run``; ``validate`` is the one place its values are
checked, before torch is imported or any weights load::

    from latentzoo.core.runtime.request import SampleRequest, run
    run(SampleRequest("digits", n=4, steps=20, sampler="euler", scheduler="karras", output="x.png"))

does what ``latentzoo sample digits -n 4 --steps 20 --sampler euler --scheduler karras -o x.png``
and ``latentzoo.sample("digits", 4, steps=20, sampler="euler", scheduler="karras", output="x.png")``
do. A refusal is a ``LatentzooError`` whose message is the CLI's line without ``error: ``.

Values typed on a command line are strings (``--steps 20``, ``--set eta=0.5``): a request
built from them says ``text=True``, and each is read as one YAML scalar of its declared
type (core.contract.options). From Python, give typed values.

``prompt`` / ``negative_prompt`` are conditioning inputs: they go to the pipeline's
conditioner (a pipeline without one refuses them, naming the pipelines that take text),
not to the prior's options. ``prompts`` (the lines of a prompts file) make one output per
prompt (``x.png`` -> ``x-000.png``, ...; ``DIR/`` -> ``DIR/000/``, ...), all with ``seed``.

To add a field (a new flag of a front end): add it to ``SampleRequest``, check it in
``validate`` and use it in ``run``; the CLI, the API and the server then all have it.
"""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from ..contract.compose import ROLE_FIELDS, TEXT_INPUTS, PipelineSpec, check_options, check_spec, check_text, load_spec, replace_parts
from ..contract.errors import LatentzooError
from ..contract.registry import Registry
from .record import DEFAULT_BATCH_SIZE, SampleOutput, check_held, check_precision, check_run, prompt_outputs

if TYPE_CHECKING:
    from ..contract.interfaces import Progress
    from .pipeline import Pipeline

COMMANDS = ("sample", "img2img", "inpaint", "interpolate", "variations")
# How many input images each command takes: (at least, at most).
IMAGE_COUNTS = {"sample": (0, 0), "img2img": (1, None), "inpaint": (1, None), "interpolate": (2, 2), "variations": (1, 1)}
# Request fields that are values of the pipeline's sampling options (steps, or a declared option).
OPTION_FIELDS = ("steps", "guidance", "class_label")
# Conditioning inputs: carried to the conditioner.
TEXT_FIELDS = tuple(TEXT_INPUTS)


@dataclass(frozen=True)
class SampleRequest:
    """What to sample: the pipeline (or its parts), how many, how, and where to write them."""

    pipeline: str | PipelineSpec | None = None  # a registry name, a pipeline YAML file, or a spec
    command: str = "sample"
    # part overrides (swap the pipeline's part, or compose one from parts when pipeline is None)
    encoder: str | None = None
    conditioner: str | None = None
    prior: str | None = None
    decoder: str | None = None
    sampler: str | None = None
    scheduler: str | None = None
    n: int = 16
    seed: int = 0
    steps: int | str | None = None
    guidance: float | str | None = None
    class_label: int | str | None = None
    prompt: str | None = None
    negative_prompt: str | None = None
    prompts: tuple[str, ...] | None = None  # one output per prompt (a prompts file's lines)
    options: Mapping[str, Any] = field(default_factory=dict)  # values of declared options (see `latentzoo info`)
    candidates: int | str | None = None  # re-rank: N draws per output, the scorer's best kept
    scorer: str | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    precision: str = "fp32"
    nrow: int | None = None
    output: str = "samples.png"
    allow_mismatch: bool = False
    text: bool = False  # option values (steps, guidance, class_label, options, candidates) are command-line strings
    registries: tuple[str, ...] = ()  # extra registry files (--registry)
    # inputs of the editing commands (img2img, inpaint, interpolate, variations)
    images: tuple[str, ...] = ()  # image files: interpolate takes A and B, variations one
    mask: str | None = None  # inpaint: white = repaint, black = keep
    strength: float = 0.6  # img2img: how far to noise the input, in (0, 1]
    frames: int = 8  # interpolate: frames from A to B, endpoints included
    to: str | None = None  # variations: slerp from images[0]'s embedding to this image's, n frames
    fit: bool = False  # resize / convert inputs instead of refusing them
    input_names: tuple[str, ...] | None = None  # how the sidecar names the input files (default: their paths)
    # sample: a refiner pipeline that finishes the sampling from refiner_switch (core.runtime.refine; SDXL's refiner)
    refiner: str | PipelineSpec | None = None
    refiner_switch: float = 0.8
    # LoRA adapters, NAME[:MODEL_STRENGTH[:TEXT_STRENGTH]] (a registered adapter or a .safetensors path),
    # applied in memory once the pipeline is built, by the ``adapt`` its caller gives ``run``
    loras: tuple[str, ...] = ()
    # where it runs (core.runtime.devices): torch's CPU threads (None: torch's default), the device, and
    # whether to finish an interrupted -o DIR/ run (core.runtime.rundir)
    threads: int | None = None
    device: str = "cpu"
    resume: bool = False

    def parts(self) -> dict[str, str | None]:
        return {role: getattr(self, role) for role in ROLE_FIELDS}


@dataclass
class Plan:
    """A validated request: the pipeline spec (parts swapped), its registry, the option values and the outputs."""

    request: SampleRequest
    spec: PipelineSpec
    registry: Registry
    values: dict[str, Any]  # steps and declared option values, as given (strings when request.text)
    conditioning: dict[str, str]  # prompt / negative_prompt for the conditioner
    runs: list[tuple[str, str | None]]  # (output, prompt) per output
    candidates: int | None
    warnings: list[str]
    adapt: Any = None  # (pipe, request) -> None: applies request.loras (default: the adapter plugin's declared apply)


class Written(NamedTuple):
    output: str
    record: dict[str, Any]


def resolve_spec(registry: Registry, target: str | PipelineSpec | None, parts: Mapping[str, str | None]) -> tuple[PipelineSpec, Registry]:
    """The pipeline to run: ``target`` (name, YAML file or spec) with ``parts`` swapped in, or one composed
    from ``parts`` alone. A swapped part's defaults that no longer apply are dropped silently: the new
    part runs with its own (what the user sets is checked as usual)."""
    if isinstance(target, PipelineSpec):
        spec = copy.deepcopy(target)
    elif target:
        spec, registry = load_spec(registry, target)
    else:
        missing = [f"--{r}" for r in ("prior", "decoder", "sampler") if not parts.get(r)]
        if missing:
            raise LatentzooError(f"give a pipeline name or file, or all of --prior, --decoder and --sampler (missing {', '.join(missing)})")
        return PipelineSpec(**{k: v for k, v in parts.items() if v}, name="composed"), registry
    replace_parts(registry, spec, dict(parts))
    return spec, registry


def _values(request: SampleRequest) -> tuple[dict[str, Any], dict[str, str]]:
    """The option values (options plus steps / guidance / class_label) and the conditioning inputs; a key given twice is refused."""
    values = dict(request.options)
    conditioning = {k: values.pop(k) for k in TEXT_FIELDS if k in values}  # --set prompt=... still reaches the conditioner
    for key, layer in [(k, values) for k in OPTION_FIELDS] + [(k, conditioning) for k in TEXT_FIELDS]:
        given = getattr(request, key)
        if given is None:
            continue
        if key in layer and layer[key] != given:
            raise LatentzooError(f"option {key} is given twice ({given} and {layer[key]}); give it once")
        layer[key] = given
    return values, conditioning


def _shape(request: SampleRequest) -> tuple[int, int | None]:
    """(images written, images per row) of the command's output; refuses a wrong number of inputs."""
    command, count = request.command, len(request.images)
    least, most = IMAGE_COUNTS[command]
    if count < least or (most is not None and count > most):
        wanted = "no" if most == 0 else f"{least}" if least == most else f"at least {least}"
        raise LatentzooError(f"{command} takes {wanted} input image(s), not {count}")
    if command == "inpaint" and not request.mask:
        raise LatentzooError("inpaint needs --mask (white = repaint, black = keep)")
    if command == "interpolate":  # bounded before anything loads
        check_held("--frames", request.frames, 2)
        return request.frames, request.frames
    if command in ("img2img", "inpaint"):
        return count, None
    if command == "variations":
        check_held("-n", request.n, 2 if request.to else 1)
    if command == "variations" and request.to:
        return request.n, request.n
    return request.n, request.nrow


def _check_layout(request: SampleRequest) -> None:
    """``nrow`` shapes one grid PNG: refused where no grid of the request's images is drawn (never ignored)."""
    if request.nrow is None:
        return
    if request.command not in ("sample", "variations") or (request.command == "variations" and request.to):
        raise LatentzooError(f"--nrow shapes sample's grid; {request.command} lays out its own: drop --nrow")
    if str(request.output).endswith(("/", os.sep)):
        raise LatentzooError(f"--nrow shapes a grid, but -o {request.output} writes one PNG per image: drop --nrow, or give a .png file")


def _runs(request: SampleRequest, conditioning: dict[str, str]) -> list[tuple[str, str | None]]:
    output = str(request.output)
    if request.prompts is not None and request.command != "sample":
        raise LatentzooError(f"--prompts-file is for sample; {request.command} writes one output")
    if request.prompts is None:
        return [(output, conditioning.get("prompt"))]
    if "prompt" in conditioning:
        raise LatentzooError("give --prompt or --prompts-file, not both")
    prompts = [p.strip() for p in request.prompts if isinstance(p, str) and p.strip()]
    if not prompts or len(prompts) != len(request.prompts):
        raise LatentzooError("prompts must be a non-empty list of non-blank texts (one output per prompt)")
    return list(zip(prompt_outputs(output, len(prompts)), prompts, strict=True))


def _candidates(request: SampleRequest) -> int | None:
    from .rerank import check_candidates_value, parse_candidates

    if request.candidates is None:
        return None
    if request.text and isinstance(request.candidates, str):
        return parse_candidates(request.candidates)
    return check_candidates_value(request.candidates)


def validate(request: SampleRequest, registry: Registry | None = None) -> Plan:
    """Check everything a request asks for before torch loads (no weights are read): the numbers,
    the outputs, the parts and how they fit, the option values, the text and the re-ranking."""
    if request.command not in COMMANDS:
        raise LatentzooError(f"command {request.command!r} is not one of {', '.join(COMMANDS)}")
    values, conditioning = _values(request)
    n, nrow = _shape(request)
    check_run(n, request.seed, request.batch_size, nrow)
    _check_layout(request)
    check_precision(request.precision)
    from .devices import check_device, check_precision_on, check_threads

    check_threads(request.threads)
    check_precision_on(request.precision, check_device(request.device))
    if request.resume and not request.output.endswith(("/", os.sep)):
        raise LatentzooError(f"--resume continues a -o DIR/ run; -o {request.output} is written at once: drop --resume")
    runs = _runs(request, conditioning)
    for out, _ in runs:
        SampleOutput(out, n=n, nrow=nrow)  # refuse a bad output before building anything
    candidates = _candidates(request)
    if request.loras:
        from .adapters import parse_spec

        for spec_text in request.loras:
            parse_spec(spec_text)  # strengths finite and within [-20, 20], before anything loads
    if candidates is not None and request.command != "sample":
        raise LatentzooError(f"--candidates re-ranks samples; {request.command} takes none")
    reg = registry if registry is not None else Registry.load(list(request.registries))
    for spec_text in request.loras:  # a named adapter must exist before anything loads (a .safetensors path is read once built)
        ref = spec_text.split(":")[0]
        if not ref.endswith(".safetensors"):
            reg.get(ref)
    spec, reg = resolve_spec(reg, request.pipeline, request.parts())
    spec.scorer = request.scorer or spec.scorer
    _shadow_warnings(reg, request, spec)
    if candidates is not None:
        from .rerank import check_scorer_spec

        check_scorer_spec(spec)
    found = check_spec(reg, spec, allow_mismatch=request.allow_mismatch or None)
    if request.refiner is not None:
        from .refine import check_switch

        if request.command != "sample":
            raise LatentzooError(f"--refiner finishes sampling from noise; {request.command} takes none (edit with the refiner itself)")
        check_switch(request.refiner_switch)
        refiner, reg = resolve_spec(reg, request.refiner, {})
        check_spec(reg, refiner, allow_mismatch=request.allow_mismatch or None)
    check_text(
        reg, spec, [f"--{k.replace('_', '-')}" for k in TEXT_FIELDS if k in conditioning] + (["--prompts-file"] if request.prompts else [])
    )
    given = {**values, **conditioning}
    check_options(reg, spec, **({"text_options": given} if request.text else {"options": given}))
    from .distilled import check as check_distilled

    found += check_distilled(reg, spec, values, conditioning, request.loras)  # a distilled prior or LoRA sampled otherwise than trained
    return Plan(request, spec, reg, values, conditioning, runs, candidates, found)


def _shadow_warnings(reg: Registry, request: SampleRequest, spec: PipelineSpec) -> None:
    """The shadow warning ``list`` and ``info`` print, for the entries this request uses that come
    from the user file or a plugin (a --registry file on the same command line is an explicit override)."""
    names = (request.pipeline if isinstance(request.pipeline, str) else None, *(getattr(spec, k, None) for k in (*ROLE_FIELDS, "scorer")))
    used = {reg.canonical(n) for n in names if isinstance(n, str)}
    for message in reg.shadow_warnings({n for n in used if n in reg.entries and reg.entries[n].layer != "cli"}):
        warnings.warn(message, stacklevel=3)


def build(plan: Plan) -> Pipeline:
    """The pipeline a validated request runs (imports torch, loads and verifies weights); its
    warnings (an allowed mismatch, ...) are Python warnings, one line each on the CLI."""
    from .build import Builder

    pipe = Builder(plan.registry).pipeline(plan.spec, allow_mismatch=plan.request.allow_mismatch or None)
    for message in pipe.warnings:
        warnings.warn(message, stacklevel=2)
    if plan.request.loras:
        (plan.adapt or declared_adapter())(pipe, plan.request)
    if plan.request.refiner is not None:  # SDXL's refiner finishes the walk from the switch (core.runtime.refine)
        from .refine import attach

        refiner, _ = resolve_spec(plan.registry, plan.request.refiner, {})
        attach(
            pipe, Builder(plan.registry).pipeline(refiner, allow_mismatch=plan.request.allow_mismatch or None), plan.request.refiner_switch
        )
    return pipe


def declared_adapter() -> Any:
    """The ``apply`` of the installed adapter plugin (a component declaration with role adapter), which
    applies a request's ``loras`` to a built pipeline: the CLI, the API and the server share it."""
    from ..contract.plugins import get_manager
    from ..contract.registry import import_target

    for decl in get_manager().components().values():
        if "adapter" in decl["roles"] and decl.get("apply"):
            return import_target(decl["apply"])
    raise LatentzooError("no installed plugin applies adapters (--lora); reinstall latentzoo, whose adapters plugin does")


def run(request: SampleRequest, *, progress: Progress | None = None, registry: Registry | None = None, adapt: Any = None) -> list[Written]:
    """Validate the request, build its pipeline once and write each output with its JSON sidecar.
    ``adapt(pipe, request)`` applies ``request.loras`` to the built pipeline; by default the adapter
    plugin's declared ``apply`` (the LoRA file formats live at the edge, ``latentzoo.interop.lora``)."""
    plan = validate(request, registry)
    plan.adapt = adapt
    if request.command == "img2img":
        from .editing import check_strength

        check_strength(request.strength)  # before any weights load
    return execute(plan, build(plan), progress=progress)


def execute(plan: Plan, pipe: Pipeline, *, progress: Progress | None = None) -> list[Written]:
    """Run a validated plan on its built pipeline (``build(plan)``), writing each output and sidecar:
    ``run`` for one-shot front ends, and the server, which keeps built pipelines warm, call this."""
    from .devices import apply_threads, join_world, place, rank_device

    request = plan.request
    extra = {"threads": apply_threads(request.threads), "device": request.device}
    world = join_world(request.device)  # torchrun: each rank renders its share (core.runtime.rundir); None for one process
    try:
        place(pipe, rank_device(request.device, world), request.precision)
        if request.command != "sample":
            with sampler_progress(pipe, progress):
                record = _edit(plan, pipe, world, extra)
            return [Written(request.output, record)] if world is None or world.is_main else []
        return _sample(plan, pipe, progress, world, extra)
    finally:
        if world is not None:
            world.close()


def _sample(plan: Plan, pipe: Pipeline, progress: Progress | None, world: Any, extra: dict[str, Any]) -> list[Written]:
    if "steps" in plan.values and plan.values["steps"] is not None and getattr(pipe.sampler, "levels", None) is None:
        raise LatentzooError(  # never silently ignored
            f"--steps: sampler {pipe.spec.sampler} walks no noise schedule (it draws tokens or samples directly), "
            "so it takes no steps; drop --steps"
        )
    return _sample_runs(plan, pipe, progress, world, extra)


class sampler_progress:
    """The editing functions call ``sampler.sample`` without a progress callback: give it ``progress``
    for the duration (an instance attribute over the bound method, removed afterwards)."""

    def __init__(self, pipe: Pipeline, progress: Progress | None) -> None:
        self.sampler, self.progress = pipe.sampler, progress

    def __enter__(self) -> None:
        if self.progress is None:
            return
        original = self.sampler.sample

        def sample(*args: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("progress", self.progress)
            return original(*args, **kwargs)

        self.sampler.sample = sample  # type: ignore[method-assign]

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            del self.sampler.sample


def _sample_runs(plan: Plan, pipe: Pipeline, progress: Progress | None, world: Any, extra: dict[str, Any]) -> list[Written]:
    request = plan.request
    written = []
    for out, prompt in plan.runs:
        conditioning = {**plan.conditioning, **({"prompt": prompt} if prompt is not None else {})}
        record = pipe.sample_to(
            out,
            request.n,
            seed=request.seed,
            batch_size=request.batch_size,
            nrow=request.nrow,
            **_option_values(plan, {**plan.values, **conditioning}),
            progress=progress,
            candidates=plan.candidates,
            precision=request.precision,
            resume=request.resume,
            world=world,
            extra=extra,
        )
        if world is None or world.is_main:  # the other ranks wrote their share; rank 0 reports
            written.append(Written(out, record))
    return written


def _option_values(plan: Plan, values: dict[str, Any]) -> dict[str, Any]:
    """``options=`` (typed values) or ``text_options=`` (command-line strings) of the pipeline's calls."""
    return {"text_options": values} if plan.request.text else {"options": values}


def _inputs_named(r: SampleRequest, paths: list[Any]) -> list[Any]:
    """The sidecar's names of the input files: ``input_names`` in order (a server names uploads by id), else the paths."""
    return paths if r.input_names is None else list(r.input_names)


def _edit(plan: Plan, pipe: Pipeline, world: Any, extra: dict[str, Any]) -> dict[str, Any]:
    """Run an editing command (imports torch): its Job (core.runtime.editing: outputs rendered by index, inputs
    read as their batch renders), written by ``rundir.write_job`` (``-o DIR/``: committed batch by
    batch, resumable, shared among ranks; a grid: assembled by rank 0). Returns the sidecar record."""
    from . import editing
    from . import variations as embedding
    from .rundir import write_job

    r = plan.request
    if r.command == "img2img":
        editing.check_strength(r.strength)
    options = _option_values(plan, {**plan.values, **plan.conditioning})
    frames, inputs, nrow = False, list(r.images), None
    if r.command == "variations":
        embedding.check_variations(pipe)
        if r.to:
            job = embedding.interpolate_embeddings_job(pipe, r.images[0], r.to, r.n, seed=r.seed, fit=r.fit)
            inputs, nrow = [r.images[0], r.to], r.n
        else:
            job, nrow = embedding.variations_job(pipe, r.images[0], r.n, seed=r.seed, fit=r.fit), r.nrow
    else:
        if r.command == "interpolate":
            editing.check_invertible(pipe)
        editing.check_editable(pipe, "editing")
        if r.command == "img2img":
            job = editing.img2img_job(pipe, list(r.images), r.strength, seed=r.seed, fit=r.fit, **options)
        elif r.command == "inpaint":
            assert r.mask is not None  # validate refused a missing mask
            job = editing.inpaint_job(pipe, list(r.images), r.mask, seed=r.seed, fit=r.fit, **options)
            inputs = [*r.images, r.mask]
        else:
            job = editing.interpolate_job(pipe, list(r.images[:1]), list(r.images[1:]), r.frames, seed=r.seed, fit=r.fit, **options)
            frames, nrow = True, r.frames
    return write_job(
        job, pipe, r.output, inputs=inputs, names=_inputs_named(r, inputs), nrow=nrow, frames=frames,
        batch_size=r.batch_size, precision=r.precision, resume=r.resume, world=world, extra=extra,
    )  # fmt: skip
