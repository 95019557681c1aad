"""Composing and running pipelines: compose, sample, reconstruct, encode, decode (torch imports inside the bodies)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from latentzoo.core.errors import LatentzooError

from .common import _emit_json, _registry, _version


def _spec_from_options(ctx: click.Context, target: str | None, parts: dict[str, str | None], name: str | None = None):
    """A pipeline spec from a name / YAML file, with any --encoder/--prior/... overriding its parts."""
    from latentzoo.core.compose import PipelineSpec, load_spec

    reg = _registry(ctx)
    if target:
        spec, reg = load_spec(reg, target)
        for role, value in parts.items():
            if value:
                setattr(spec, role, value)
    else:
        missing = [f"--{r}" for r in ("prior", "decoder", "sampler") if not parts.get(r)]
        if missing:
            raise LatentzooError(f"give a pipeline name or file, or all of --prior, --decoder and --sampler (missing {', '.join(missing)})")
        spec = PipelineSpec(**{k: v for k, v in parts.items() if v}, name=name or "composed")
    return spec, reg


def _part_options(f):
    for role in reversed(("encoder", "prior", "decoder", "sampler", "scheduler")):
        f = click.option(f"--{role}", help=f"{role.capitalize()} name from the registry.")(f)
    return f


def _progress(enabled: bool, desc: str):
    from tqdm.auto import tqdm

    state: dict[str, Any] = {}

    def update(i: int, total: int) -> None:
        if "bar" not in state:
            state["bar"] = tqdm(total=total, desc=desc, disable=not enabled, leave=False, dynamic_ncols=True)
        state["bar"].update(1)
        if i == total:
            state.pop("bar").close()

    return update


def _versions() -> dict[str, str]:
    import platform

    import torch

    return {"latentzoo": _version(), "torch": torch.__version__, "python": platform.python_version()}


def _build(ctx: click.Context, target: str | None, parts: dict[str, Any], allow_mismatch: bool):
    from latentzoo.core.build import Builder

    spec, reg = _spec_from_options(ctx, target, parts)
    pipe = Builder(reg).pipeline(spec, allow_mismatch=allow_mismatch or None)
    for warning in pipe.warnings:
        click.echo(f"warning: {warning}", err=True)
    return pipe


def _check_output(output: str) -> Path:
    path = Path(output)
    parent = path if output.endswith(("/", os.sep)) else path.parent
    probe = parent
    while not probe.exists():
        probe = probe.parent
    if not os.access(probe, os.W_OK):
        raise LatentzooError(f"cannot write {output}: {probe} is not writable; choose another -o")
    if not output.endswith(("/", os.sep)) and path.is_dir():
        raise LatentzooError(f"-o {output} is a directory; end it with / to write one PNG per sample, or give a .png file")
    return path


@click.command()
@_part_options
@click.option("--name", default="composed", show_default=True, help="Name of the pipeline in the YAML.")
@click.option("--steps", type=int, help="Default sampling steps.")
@click.option("--eta", type=float, help="Default DDIM eta.")
@click.option("--allow-mismatch", is_flag=True, help="Allow latent spaces of equal kind and shape but different identity (warns).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the pipeline YAML here instead of printing it.")
@click.pass_context
def compose(
    ctx: click.Context, name: str, steps: int | None, eta: float | None, allow_mismatch: bool, output: str | None, **parts: str | None
) -> None:
    """Check that parts fit together and print (or write) the pipeline as registry YAML."""
    from latentzoo.core.compose import check_spec
    from latentzoo.core.weights import write_bytes

    spec, reg = _spec_from_options(ctx, None, parts, name)
    spec.defaults.update({k: v for k, v in {"steps": steps, "eta": eta}.items() if v is not None})
    spec.allow_mismatch = allow_mismatch
    for warning in check_spec(reg, spec):
        click.echo(f"warning: {warning}", err=True)
    if output:
        write_bytes(output, spec.to_yaml().encode())
        click.echo(f"wrote {output}", err=True)
    else:
        click.echo(spec.to_yaml().rstrip())


@click.command()
@click.argument("target", required=False)
@_part_options
@click.option("-n", "--num", "n", type=int, default=16, show_default=True, help="Number of samples.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed (same seed, same output).")
@click.option("--steps", type=int, help="Sampling steps (default: the pipeline's).")
@click.option("--eta", type=float, help="DDIM eta (0 = deterministic).")
@click.option("--class", "class_label", type=int, help="Class label for a class-conditional prior.")
@click.option("--guidance", type=float, help="Classifier-free guidance scale (with --class).")
@click.option("--nrow", type=int, help="Images per row of the grid.")
@click.option("--allow-mismatch", is_flag=True, help="Allow equal-shape latent spaces of different identity (warns).")
@click.option(
    "-o", "--output", default="samples.png", show_default=True, help="A .png grid, or a directory ending in / for one PNG per sample."
)
@click.option("--json", "as_json", is_flag=True, help="Print the sidecar record as JSON.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@click.pass_context
def sample(
    ctx: click.Context,
    target: str | None,
    n: int,
    seed: int,
    steps: int | None,
    eta: float | None,
    class_label: int | None,
    guidance: float | None,
    nrow: int | None,
    allow_mismatch: bool,
    output: str,
    as_json: bool,
    no_progress: bool,
    **parts: str | None,
) -> None:
    """Draw samples from a pipeline (a registry name, a pipeline YAML file, or --prior/--decoder/--sampler...).

    Writes a PNG grid and a JSON sidecar beside it (pipeline, component sha256s, seed,
    steps, sampler, versions). With -o DIR/ writes DIR/0000.png, DIR/0001.png, ...
    """
    if n < 1:
        raise LatentzooError(f"-n must be at least 1, not {n}")
    if steps is not None and steps < 1:
        raise LatentzooError(f"--steps must be at least 1, not {steps}")
    if guidance is not None and class_label is None:
        raise LatentzooError("--guidance needs --class (classifier-free guidance towards a class)")
    out = _check_output(output)
    pipe = _build(ctx, target, parts, allow_mismatch)
    overrides = {"steps": steps, "eta": eta, "class_label": class_label, "guidance": guidance}
    images = pipe.sample(n, seed=seed, progress=_progress(not no_progress, "sampling"), **overrides)

    from latentzoo.core.images import save_each, save_grid
    from latentzoo.core.weights import write_json

    opts = pipe.options(**overrides)
    record = {
        **pipe.record(),
        "seed": seed,
        "n": n,
        "steps": int(opts.get("steps", 50)),
        "sampler": pipe.spec.sampler,
        "scheduler": pipe.spec.scheduler,
        "options": {k: v for k, v in opts.items() if k != "steps"},
        "versions": _versions(),
    }
    if output.endswith(("/", os.sep)):
        files = save_each(images, out)
        record["files"] = [f.name for f in files]
        sidecar = out / "samples.json"
    else:
        save_grid(images, out, nrow=nrow)
        record["files"] = [out.name]
        sidecar = out.with_suffix(".json")
    write_json(sidecar, record)
    if as_json:
        _emit_json(record)
    else:
        click.echo(f"wrote {out} ({n} samples) and {sidecar}", err=True)


@click.command()
@click.argument("name")
@click.argument("images", nargs=-1, required=True)
@click.option(
    "-o",
    "--output",
    default="reconstruction.png",
    show_default=True,
    help="PNG: inputs (top row) above reconstructions; DIR/ writes DIR/reconstruction.png.",
)
@click.option("--fit", is_flag=True, help="Resize, centre-crop and convert inputs instead of refusing them.")
@click.option("--json", "as_json", is_flag=True, help="Print per-image PSNR as JSON.")
@click.pass_context
def reconstruct(ctx: click.Context, name: str, images: tuple[str, ...], output: str, fit: bool, as_json: bool) -> None:
    """Encode and decode IMAGES with a pipeline's (or an autoencoder's) encoder and decoder."""
    from latentzoo.core.codec import reconstruct as run

    result = run(name, list(images), output, fit=fit, extra=ctx.obj["registries"])
    if as_json:
        _emit_json({"output": str(result.output), "psnr_db": result.psnr_db})
    else:
        scores = ", ".join(f"{Path(k).name} {v}" for k, v in result.psnr_db.items())
        click.echo(f"wrote {result.output}; PSNR (dB): {scores}", err=True)


@click.command()
@click.argument("name")
@click.argument("images", nargs=-1, required=True)
@click.option(
    "-o",
    "--output",
    default="latents.safetensors",
    show_default=True,
    help="A .safetensors latent file; DIR/ writes DIR/latents.safetensors.",
)
@click.option("--fit", is_flag=True, help="Resize, centre-crop and convert inputs instead of refusing them.")
@click.pass_context
def encode(ctx: click.Context, name: str, images: tuple[str, ...], output: str, fit: bool) -> None:
    """Encode IMAGES to a .safetensors latent file (raw latents plus their latent space)."""
    from latentzoo.core.codec import encode as run

    result = run(name, list(images), output, fit=fit, extra=ctx.obj["registries"])
    click.echo(f"wrote {result.output}: latents {result.shape} in {result.latent_space.describe()}", err=True)


@click.command()
@click.argument("name")
@click.argument("latents", type=click.Path(dir_okay=False))
@click.option("-o", "--output", default="decoded.png", show_default=True, help="A .png grid, or a directory ending in / for one PNG each.")
@click.option("--allow-mismatch", is_flag=True, help="Allow an equal-shape latent space of another autoencoder (warns).")
@click.pass_context
def decode(ctx: click.Context, name: str, latents: str, output: str, allow_mismatch: bool) -> None:
    """Decode a .safetensors latent file (from `encode`) to images."""
    from latentzoo.core.codec import decode as run

    result = run(name, latents, output, allow_mismatch=allow_mismatch, extra=ctx.obj["registries"])
    for w in result.warnings:
        click.echo(f"warning: {w}", err=True)
    click.echo(f"wrote {result.output} ({len(result.files)} file(s))", err=True)
