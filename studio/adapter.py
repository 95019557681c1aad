"""A job's JSON body -> the calls the CLI makes, so a job's images equal the CLI's for the same request.

This is the one seam between the server and the runtime. ``prepare`` checks a body without
torch (registry names only, never paths; parts, options and numbers as the CLI checks them)
and ``run`` executes it on a built pipeline, as ``latentzoo sample`` / ``img2img`` /
``inpaint`` / ``interpolate`` / ``variations`` do. When the typed request (``core/request.py``)
lands, ``prepare`` becomes ``SampleRequest(**body)`` + its validation and ``run`` its run function.
``cli_command`` writes the command line that reproduces a job.
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from latentzoo.core.errors import LatentzooError

COMMANDS = ("sample", "img2img", "inpaint", "interpolate", "variations")
PARTS = ("encoder", "conditioner", "prior", "decoder", "sampler", "scheduler")
# Body fields that are CLI shortcuts for --set KEY=VALUE (declared options of the parts).
SHORTCUTS = ("eta", "class_label", "guidance", "prompt", "negative_prompt", "temperature", "top_k", "top_p")
# An upload id: the sha256 of the bytes and the image format's extension (never a path).
UPLOAD_ID = re.compile(r"^[0-9a-f]{64}\.(png|jpg|webp|bmp|gif)$")
DEFAULT_N = {"sample": 4, "img2img": None, "inpaint": None, "interpolate": None, "variations": 8}


class JobCancelled(Exception):
    """Raised by the progress callback of a cancelled job: the sampler stops within one step."""


@dataclass
class Prepared:
    """A checked job: what to build (pipeline + part overrides) and how to call it."""

    body: dict[str, Any]
    command: str
    pipeline: str
    parts: dict[str, str]
    text_options: dict[str, str]
    n: int
    images: list[str] = field(default_factory=list)  # upload ids
    mask: str | None = None

    @property
    def cache_key(self) -> tuple:
        # bf16-weights casts a built pipeline for good: it gets its own cache slot.
        return (self.pipeline, tuple(sorted(self.parts.items())), self.body.get("scorer"), self.body.get("precision") == "bf16-weights")

    @property
    def calls(self) -> int:
        """How many sampler walks the job makes (for its progress total): one per batch when sampling."""
        if self.command == "sample":
            return math.ceil(self.n / int(self.body.get("batch_size") or 64))
        return 0 if self.command == "variations" else 1


def _text(value: Any) -> str:
    """A JSON option value as the command-line string ``--set`` takes."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def prepare(body: Mapping[str, Any], registry: Any) -> Prepared:
    """Check a job body as the CLI checks its flags (no torch); raise LatentzooError naming the fix."""
    from latentzoo.commands.sampling import _option_strings
    from latentzoo.core.compose import PipelineSpec, check_options, check_spec, replace_parts
    from latentzoo.core.pipeline import check_precision
    from latentzoo.core.record import check_run

    body = dict(body)
    command = body.get("command", "sample")
    if command not in COMMANDS:
        raise LatentzooError(f"command {command!r} is not one of {', '.join(COMMANDS)}; give one of them")
    name = body.get("pipeline")
    if not isinstance(name, str) or not name:
        raise LatentzooError("the job names no pipeline; give a pipeline name from GET /api/v1/pipelines")
    if registry.canonical(name) not in registry.entries:  # names only: a YAML file or a path is never read
        raise LatentzooError(f"pipeline {name!r} is not in the registry; give a name from GET /api/v1/pipelines")
    parts = {role: body[role] for role in PARTS if body.get(role)}
    for role, value in parts.items():
        if not isinstance(value, str) or "/" in value or "\\" in value or value.endswith((".yaml", ".yml")):
            raise LatentzooError(f"{role} {value!r} is not a registry name; give a name from GET /api/v1/components")
    spec = PipelineSpec.from_entry(registry.get(name, "pipeline"))
    replace_parts(registry, spec, parts)
    check_spec(registry, spec)
    if body.get("candidates") is not None or body.get("scorer"):  # re-ranking, checked as `sample --candidates` checks it
        from latentzoo.core.rerank import check_candidates_value, check_scorer_spec

        if command != "sample":
            raise LatentzooError(f"{command} does not re-rank; drop candidates and scorer (they are for sample)")
        if body.get("scorer") and registry.canonical(str(body["scorer"])) not in registry.entries:
            raise LatentzooError(f"scorer {body['scorer']!r} is not in the registry; give a name from GET /api/v1/components")
        spec.scorer = body.get("scorer") or spec.scorer
        check_candidates_value(body.get("candidates", 1))
        check_scorer_spec(spec)
    settings = tuple(f"{k}={_text(v)}" for k, v in (body.get("options") or {}).items())
    shortcuts = {k: _text(body[k]) for k in SHORTCUTS if body.get(k) is not None}
    steps = None if body.get("steps") is None else _text(body["steps"])
    text_options = _option_strings(settings, steps=steps, **shortcuts)
    check_options(registry, spec, text_options=text_options)
    check_precision(body.get("precision", "fp32"))
    images = list(body.get("images") or [])
    for image in [*images, body.get("mask")]:
        if image is not None and not UPLOAD_ID.match(str(image)):
            raise LatentzooError(f"image {image!r} is not an upload id; upload it with POST /api/v1/uploads and give the id it answers")
    need = {"sample": 0, "img2img": 1, "inpaint": 1, "interpolate": 2, "variations": 1}[command]
    if (command == "interpolate" and len(images) != 2) or len(images) < need:
        raise LatentzooError(
            f"{command} takes {'two' if command == 'interpolate' else 'at least ' + str(need)} image(s), not {len(images)}"
        )
    if command == "sample" and images:
        raise LatentzooError("sample takes no images; use img2img, inpaint, interpolate or variations")
    if command == "variations" and len(images) > 2:
        raise LatentzooError("variations takes one image (two to interpolate between their embeddings)")
    if command == "inpaint" and not body.get("mask"):
        raise LatentzooError("inpaint needs a mask; upload one (white = repaint) and give its id as mask")
    if command == "img2img":
        from latentzoo.core.editing import check_strength

        check_strength(float(body.get("strength", 0.6)))
    n = {"img2img": len(images), "inpaint": len(images), "interpolate": int(body.get("frames", 8))}.get(command)
    if n is None:
        n = body.get("n") or DEFAULT_N[command]
    if command == "interpolate" and n < 2:
        raise LatentzooError(f"frames must be at least 2, not {n}")
    check_run(n, body.get("seed", 0), body.get("batch_size"))
    return Prepared(body, command, name, parts, text_options, n, images, body.get("mask"))


def build(prepared: Prepared, registry: Any) -> Any:
    """The pipeline a job runs on, built as the CLI builds it (``sample NAME --sampler ...``)."""
    from latentzoo.core.build import Builder
    from latentzoo.core.compose import PipelineSpec, replace_parts

    spec = PipelineSpec.from_entry(registry.get(prepared.pipeline, "pipeline"))
    replace_parts(registry, spec, prepared.parts)
    spec.scorer = prepared.body.get("scorer") or spec.scorer
    return Builder(registry).pipeline(spec)


def run(prepared: Prepared, pipe: Any, output: str, uploads: Path, progress: Callable[[int, int], None]) -> dict[str, Any]:
    """Run a checked job on ``pipe``, writing ``output`` (a ``DIR/``: one PNG per image + sidecar) as the CLI does."""
    from latentzoo.core import editing

    b, seed = prepared.body, int(prepared.body.get("seed", 0))
    if prepared.command == "sample":
        return pipe.sample_to(
            output,
            prepared.n,
            seed=seed,
            batch_size=b.get("batch_size") or 64,
            text_options=prepared.text_options,
            progress=progress,
            candidates=b.get("candidates"),
            precision=b.get("precision", "fp32"),
        )
    from latentzoo.commands.editing import _images

    paths = [str(uploads / i) for i in prepared.images]
    fit = bool(b.get("fit", False))
    with _sampler_progress(pipe, progress):
        if prepared.command == "img2img":
            x = _images(pipe, paths, fit)
            edit = editing.img2img(pipe, x, float(b.get("strength", 0.6)), seed=seed, text_options=prepared.text_options)
            return editing.write(edit, output, inputs=prepared.images)
        if prepared.command == "inpaint":
            x = _images(pipe, paths, fit)
            m = editing.load_mask(str(uploads / prepared.mask), tuple(x.shape[-2:]))
            edit = editing.inpaint(pipe, x, m, seed=seed, text_options=prepared.text_options)
            return editing.write(edit, output, inputs=[*prepared.images, prepared.mask])
        if prepared.command == "interpolate":
            editing.check_invertible(pipe)
            x = _images(pipe, paths, fit)
            edit = editing.interpolate(pipe, x[:1], x[1:], prepared.n, seed=seed, text_options=prepared.text_options)
            return editing.write(edit, output, nrow=prepared.n, inputs=prepared.images)
        from latentzoo.core import variations

        variations.check_variations(pipe)
        if len(paths) == 2:
            edit = variations.interpolate_embeddings(pipe, paths[0], paths[1], prepared.n, seed=seed, fit=not b.get("no_fit", False))
            return editing.write(edit, output, nrow=prepared.n, inputs=prepared.images)
        edit = variations.variations(pipe, paths[0], prepared.n, seed=seed, fit=not b.get("no_fit", False))
        return editing.write(edit, output, inputs=prepared.images)


class _sampler_progress:
    """The editing functions call ``sampler.sample`` without a progress callback: give it one for the job
    (an instance attribute over the bound method, removed afterwards; the one worker thread runs one job)."""

    def __init__(self, pipe: Any, progress: Callable[[int, int], None]) -> None:
        self.sampler, self.progress = pipe.sampler, progress

    def __enter__(self) -> None:
        original = self.sampler.sample

        def sample(*args: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("progress", self.progress)
            return original(*args, **kwargs)

        self.sampler.sample = sample

    def __exit__(self, *exc: Any) -> None:
        del self.sampler.sample


def cli_command(body: Mapping[str, Any]) -> str:
    """The ``latentzoo`` command line that reproduces a job (uploads named by their ids, written to ``out/``)."""
    command = body.get("command", "sample")
    args = ["latentzoo", command, str(body.get("pipeline"))]
    images = list(body.get("images") or [])
    if command == "variations":
        args.append(images[0] if images else "IMAGE")
        if len(images) == 2:
            args += ["--to", images[1]]
    else:
        args += images
    if command == "inpaint" and body.get("mask"):
        args += ["--mask", str(body["mask"])]
    if command == "img2img" and body.get("strength") is not None:
        args += ["--strength", _text(body["strength"])]
    if command == "interpolate" and body.get("frames") is not None:
        args += ["--frames", _text(body["frames"])]
    if command in ("sample", "variations"):
        args += ["-n", str(body.get("n") or DEFAULT_N[command])]
    args += ["--seed", str(body.get("seed", 0))]
    if body.get("steps") is not None and command != "variations":
        args += ["--steps", _text(body["steps"])]
    for role in PARTS:
        if body.get(role):
            args += [f"--{role}", str(body[role])]
    for key in SHORTCUTS:
        if body.get(key) is not None:
            flag = "--class" if key == "class_label" else "--" + key.replace("_", "-")
            args += [flag, _text(body[key])]
    for key, value in (body.get("options") or {}).items():
        args += ["--set", f"{key}={_text(value)}"]
    if command == "sample":
        if body.get("candidates") is not None:
            args += ["--candidates", str(body["candidates"])]
        if body.get("scorer"):
            args += ["--scorer", str(body["scorer"])]
        if body.get("batch_size"):
            args += ["--batch-size", str(body["batch_size"])]
        if body.get("precision", "fp32") != "fp32":
            args += ["--precision", str(body["precision"])]
    if body.get("fit") and command in ("img2img", "inpaint", "interpolate"):
        args.append("--fit")
    if body.get("no_fit") and command == "variations":
        args.append("--no-fit")
    args += ["-o", "out/"]
    return shlex.join(args)
