"""A job's JSON body -> the typed request, so a job's images equal the CLI's.

This is the one seam between the server and the runtime. ``prepare`` checks a body without
torch: registry names and upload ids only, never paths (here), then everything else through
``core.runtime.request.validate`` on a ``SampleRequest`` built from the body (the CLI's own checks and
refusal lines), keeping its plan. ``build`` is ``core.runtime.request.build`` (LoRAs applied), and ``run``
is ``core.runtime.request.execute`` on a cached, built pipeline with the job's progress callback.
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

from latentzoo.core.contract.errors import LatentzooError

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
    plan: Any = None  # core.runtime.request.Plan

    @property
    def cache_key(self) -> tuple:
        # bf16-weights casts a built pipeline for good: it gets its own cache slot.
        return (
            self.pipeline,
            tuple(sorted(self.parts.items())),
            self.body.get("scorer"),
            self.body.get("precision") == "bf16-weights",
            tuple(self.body.get("loras") or ()),  # applied to the built pipeline
        )

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


def prepare(body: Mapping[str, Any], registry: Any, output: str, uploads: Path, device: str = "cpu") -> Prepared:
    """Check a job body as the CLI checks its flags (no torch): names and upload ids here, everything
    else by the typed request's ``validate`` (core.runtime.request), with the CLI's own refusal lines.
    ``device``: the server's (``serve --device``), where every job's models run."""
    from latentzoo.commands.sampling import _option_strings
    from latentzoo.core.runtime.request import SampleRequest, validate

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
    named = {**parts, **({"scorer": body["scorer"]} if body.get("scorer") else {})}
    for role, value in named.items():
        if not isinstance(value, str) or "/" in value or "\\" in value or value.endswith((".yaml", ".yml")):
            raise LatentzooError(f"{role} {value!r} is not a registry name; give a name from GET /api/v1/components")
    images = list(body.get("images") or [])
    for image in [*images, body.get("mask")]:
        if image is not None and not UPLOAD_ID.match(str(image)):
            raise LatentzooError(f"image {image!r} is not an upload id; upload it with POST /api/v1/uploads and give the id it answers")
    loras = list(body.get("loras") or [])
    for spec in loras:  # registered adapters only: a path on the server is never read
        ref = str(spec).split(":")[0]
        if not ref or "/" in ref or "\\" in ref or ref.endswith(".safetensors"):
            raise LatentzooError(f"lora {spec!r} is not a registered adapter; give NAME[:MODEL[:TEXT]] from GET /api/v1/components")
    if command == "variations" and len(images) > 2:
        raise LatentzooError("variations takes one image (two to interpolate between their embeddings)")
    # The command line's strings (--set KEY=VALUE and the shortcut flags), as `latentzoo sample` reads them.
    settings = tuple(f"{k}={_text(v)}" for k, v in (body.get("options") or {}).items())
    shortcuts = {k: _text(body[k]) for k in SHORTCUTS if body.get(k) is not None}
    steps = None if body.get("steps") is None else _text(body["steps"])
    text_options = _option_strings(settings, steps=steps, **shortcuts)
    paths = tuple(str(uploads / i) for i in images)
    n = body.get("n") or DEFAULT_N.get(command) or 1
    request = SampleRequest(
        name,
        command=command,
        **parts,
        n=n,
        seed=body.get("seed", 0),
        options={k: v for k, v in text_options.items()},
        candidates=body.get("candidates"),
        scorer=body.get("scorer"),
        batch_size=body.get("batch_size") or 64,
        precision=body.get("precision", "fp32"),
        device=device,
        output=output,
        images=paths[:1] if command == "variations" else paths,
        mask=str(uploads / body["mask"]) if body.get("mask") else None,
        strength=float(body.get("strength", 0.6)),
        frames=int(body.get("frames", 8)),
        to=paths[1] if command == "variations" and len(paths) == 2 else None,
        fit=bool(body.get("fit", False)),
        loras=tuple(str(x) for x in loras),
        input_names=(*images, *([body["mask"]] if body.get("mask") else [])),  # upload ids, never the server's paths
        text=True,
    )
    plan = validate(request, registry)
    n = {"img2img": len(images), "inpaint": len(images), "interpolate": request.frames}.get(command, n)
    return Prepared(body, command, name, parts, text_options, n, images, body.get("mask"), plan)


def build(prepared: Prepared, registry: Any) -> Any:
    """The pipeline a job runs on, built as the CLI builds it (parts swapped, LoRAs applied)."""
    from latentzoo.core.runtime.request import build as build_plan

    return build_plan(prepared.plan)


def run(prepared: Prepared, pipe: Any, progress: Callable[[int, int], None]) -> dict[str, Any]:
    """Run a checked job on ``pipe``, writing its output (the job's ``DIR/``: one PNG per image + sidecar) as the CLI does."""
    from latentzoo.core.runtime.request import execute

    [written] = execute(prepared.plan, pipe, progress=progress)
    return written.record


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
    for spec in body.get("loras") or ():
        args += ["--lora", str(spec)]
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
