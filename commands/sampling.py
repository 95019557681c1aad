"""Composing and running pipelines: compose, sample, reconstruct, encode, decode (torch imports inside the bodies)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from latentzoo.core.contract.errors import LatentzooError

from .adapters import LORA_HELP
from .common import _emit_json, _registry, one_line_warnings, run_options


def _spec_from_options(ctx: click.Context, target: str | None, parts: dict[str, str | None], name: str | None = None):
    """A pipeline spec from a name / YAML file, with any --encoder/--prior/... overriding its parts (core.runtime.request)."""
    from latentzoo.core.runtime.request import resolve_spec

    spec, reg = resolve_spec(_registry(ctx), target, parts)
    if not target:
        spec.name = name or "composed"
    return spec, reg


def _run_options(f):
    for option in reversed(run_options("samples")):
        f = option(f)
    return f


def _part_options(f):
    for role in reversed(("encoder", "conditioner", "prior", "decoder", "sampler", "scheduler")):
        f = click.option(f"--{role}", help=f"{role.capitalize()} name from the registry.")(f)
    return f


@click.command()
@_part_options
@click.option("--name", default="composed", show_default=True, help="Name of the pipeline in the YAML.")
@click.option("--steps", metavar="N", help="Default sampling steps.")
@click.option("--eta", metavar="X", help="Default eta (shortcut for --set eta=VALUE).")
@click.option(
    "--set", "settings", multiple=True, metavar="KEY=VALUE", help="Default of a declared option (see `latentzoo info`); repeatable."
)
@click.option(
    "--allow-mismatch",
    is_flag=True,
    help="Allow latent (or conditioning) spaces of equal kind and shape but different identity (warns).",
)
@click.option("--scorer", metavar="NAME", help="Image-text scorer (e.g. digits-clip) for re-ranking with `sample --candidates`.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the pipeline YAML here instead of printing it.")
@click.pass_context
def compose(
    ctx: click.Context,
    name: str,
    scorer: str | None,
    steps: str | None,
    eta: str | None,
    settings: tuple[str, ...],
    allow_mismatch: bool,
    output: str | None,
    **parts: str | None,
) -> None:
    """Check that parts fit together and print (or write) the pipeline as registry YAML.

    --set KEY=VALUE stores a validated default for any option the prior, sampler or
    scheduler declares (`latentzoo info NAME` lists them).
    """
    from latentzoo.core.contract.compose import check_spec, typed_defaults
    from latentzoo.core.contract.weights import write_bytes

    spec, reg = _spec_from_options(ctx, None, parts, name)
    spec.allow_mismatch = allow_mismatch
    spec.scorer = scorer
    check_spec(reg, spec)  # parts first: an option error is only meaningful for parts that fit
    spec.defaults.update(typed_defaults(reg, spec, _option_strings(settings, steps=steps, eta=eta)))
    for warning in check_spec(reg, spec):
        click.echo(f"warning: {warning}", err=True)
    if output:
        write_bytes(output, spec.to_yaml().encode())
        click.echo(f"wrote {output}", err=True)
    else:
        click.echo(spec.to_yaml().rstrip())


# ---------------------------------------------------------------------------------------
# running models (imports torch inside)


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


# Flags that are shortcuts for --set KEY=VALUE (declared options of the sampler / prior).
SAMPLE_SHORTCUTS = ("eta", "temperature", "top_k", "top_p")
# Flags that are fields of the request (core.runtime.request.SampleRequest).
REQUEST_FIELDS = ("guidance", "class_label", "prompt", "negative_prompt")


def _option_strings(settings: tuple[str, ...], **shortcuts: str | None) -> dict[str, str]:
    """--set KEY=VALUE items and shortcut flags as one dict of command-line strings (checked later against declarations)."""
    from latentzoo.core.contract.options import parse_assignments

    values = {k: v for k, v in shortcuts.items() if v is not None}
    for key, value in parse_assignments(settings).items():
        if key in values and values[key] != value:
            raise LatentzooError(f"option {key} is given twice ({values[key]} and {value}); give it once")
        values[key] = value
    return values


@click.command()
@click.argument("target", required=False)
@_part_options
@click.option("-n", "--num", "n", type=int, default=16, show_default=True, help="Number of samples.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed, 0 to 2**63-1 (same seed, same output).")
@click.option("--steps", metavar="N", help="Sampling steps (default: the pipeline's).")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE", help="Any declared option (see `latentzoo info NAME`); repeatable.")
@click.option("--eta", metavar="X", help="Shortcut for --set eta=VALUE (DDIM: 0 = deterministic).")
@click.option("--class", "class_label", metavar="N", help="Shortcut for --set class_label=N (class-conditional priors).")
@click.option("--guidance", metavar="G", help="Shortcut for --set guidance=G (classifier-free guidance, with --class or --prompt).")
@click.option("--prompt", metavar="TEXT", help="Shortcut for --set prompt=TEXT (priors conditioned on a text encoder).")
@click.option("--negative-prompt", "negative_prompt", metavar="TEXT", help="Shortcut for --set negative_prompt=TEXT (guided away from).")
@click.option(
    "--prompts-file",
    type=click.Path(dir_okay=False),
    help="One prompt per line (blank lines skipped): one output per prompt, -o x.png -> x-000.png, x-001.png, ... "
    "(DIR/ -> DIR/000/, ...), each with its sidecar naming its prompt; every prompt uses the same --seed.",
)
@click.option("--temperature", metavar="T", help="Shortcut for --set temperature=T (token / analytic samplers).")
@click.option("--top-k", "top_k", metavar="K", help="Shortcut for --set top_k=K (token sampler).")
@click.option("--top-p", "top_p", metavar="P", help="Shortcut for --set top_p=P (token sampler).")
@click.option(
    "--candidates",
    metavar="N",
    help="Draw N candidates per output and keep the best by the pipeline's scorer vs --prompt "
    "(no prompt, random_prompt: vs each output's drawn caption).",
)
@click.option("--scorer", metavar="NAME", help="Image-text scorer for --candidates (default: the pipeline's, e.g. digits-clip).")
@click.option("--nrow", type=int, help="Images per row of the grid.")
@click.option("--allow-mismatch", is_flag=True, help="Allow equal-shape latent spaces of different identity (warns).")
@click.option("--lora", "loras", multiple=True, metavar="NAME[:S[:T]]", help=LORA_HELP)
@click.option(
    "-o", "--output", default="samples.png", show_default=True, help="A .png grid, or a directory ending in / for one PNG per sample."
)
@_run_options
@click.option("--json", "as_json", is_flag=True, help="Print the sidecar record as JSON.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@click.option("--refiner", metavar="NAME", help="A refiner pipeline (e.g. SDXL's) that finishes the sampling from --refiner-switch.")
@click.option(
    "--refiner-switch", type=float, default=0.8, show_default=True, help="Fraction of the schedule the base walks before the refiner."
)
@click.pass_context
def sample(
    ctx: click.Context,
    target: str | None,
    n: int,
    seed: int,
    steps: str | None,
    settings: tuple[str, ...],
    batch_size: int,
    nrow: int | None,
    allow_mismatch: bool,
    output: str,
    as_json: bool,
    no_progress: bool,
    prompts_file: str | None,
    candidates: str | None,
    scorer: str | None,
    precision: str,
    refiner: str | None,
    refiner_switch: float,
    loras: tuple[str, ...],
    resume: bool,
    threads: int | None,
    device: str,
    **parts: str | None,
) -> None:
    """Draw samples from a pipeline (a registry name, a pipeline YAML file, or --prior/--decoder/--sampler...).

    Writes a PNG grid and a JSON sidecar beside it (pipeline, component sha256s, seed,
    steps, sampler, options, versions). With -o DIR/ writes DIR/0000.png, DIR/0001.png, ...
    and DIR/samples.json. Sample i's randomness comes from (seed, i) alone: -n 6 gives the
    first 6 of -n 12, and another --batch-size the same images (within one grey level).
    -o DIR/ commits each finished batch (--resume finishes a killed run); under torchrun each
    rank renders its share (rank 0 writes the sidecar, or assembles the grid).

    Text-to-image pipelines take --prompt (empty: unconditional, with a warning; longer than
    the text encoder's context: truncated, with a warning), --negative-prompt (the branch
    guidance steers away from; default the empty prompt) and --guidance. --prompts-file FILE
    samples each line's prompt into its own output (x-000.png, x-001.png, ... or DIR/000/, ...)
    with the same seed, each sidecar recording its prompt:

    \b
      latentzoo sample digits-t2i --prompt "a thick seven" --negative-prompt "slanted" --guidance 4
      latentzoo sample digits-t2i --prompts-file prompts.txt -n 8 -o out/grid.png
      latentzoo sample sd15 --lora my-style:0.8 --lora detail.safetensors:1:0.5 --prompt "a castle"

    --candidates N re-ranks: N draws per output, the best by the scorer (digits-clip) against
    --prompt kept (DALL-E); without a prompt (random_prompt) each output's caption is drawn from
    the training captions and its N candidates are scored against it (the sidecar records the
    captions). One image (-n 1 -o x.png) is written at the model's size, ready for img2img.
    """
    from latentzoo.core.runtime.request import SampleRequest, run
    from latentzoo.core.runtime.text import read_prompts

    fields = {k: parts.pop(k) for k in REQUEST_FIELDS}
    options = _option_strings(settings, **{k: parts.pop(k) for k in SAMPLE_SHORTCUTS})
    if prompts_file is not None and fields["prompt"] is not None:
        raise LatentzooError("give --prompt or --prompts-file, not both")
    request = SampleRequest(
        target,
        **parts,
        **fields,
        n=n,
        seed=seed,
        steps=steps,
        prompts=None if prompts_file is None else tuple(read_prompts(prompts_file)),
        options=options,
        candidates=candidates,
        scorer=scorer,
        batch_size=batch_size,
        precision=precision,
        nrow=nrow,
        output=output,
        allow_mismatch=allow_mismatch,
        refiner=refiner,
        refiner_switch=refiner_switch,
        text=True,
        registries=tuple(ctx.obj["registries"]),
        loras=loras,
        threads=threads,
        device=device,
        resume=resume,
    )
    main = int(os.environ.get("RANK", "0")) == 0  # under torchrun only rank 0 reports
    with one_line_warnings():
        for out, record in run(request, progress=_progress(not no_progress and main, "sampling"), registry=_registry(ctx)):
            if as_json:
                _emit_json(record)
            else:
                sidecar = Path(out) / "samples.json" if out.endswith(("/", os.sep)) else Path(out).with_suffix(".json")
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
    from latentzoo.core.runtime.codec import reconstruct as run

    result = run(name, list(images), output, fit=fit, extra=ctx.obj["registries"])
    for w in result.warnings:
        click.echo(f"warning: {w}", err=True)
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
    from latentzoo.core.runtime.codec import encode as run

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
    from latentzoo.core.runtime.codec import decode as run

    result = run(name, latents, output, allow_mismatch=allow_mismatch, extra=ctx.obj["registries"])
    for w in result.warnings:
        click.echo(f"warning: {w}", err=True)
    click.echo(f"wrote {result.output} ({len(result.files)} file(s))", err=True)
