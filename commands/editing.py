"""Editing commands: img2img (SDEdit), inpaint, interpolate; thin layers over ``latentzoo.core.runtime.editing``."""

from __future__ import annotations

from typing import Any

import click

from .adapters import LORA_HELP
from .common import _emit_json, _registry, one_line_warnings, run_options
from .sampling import _option_strings, _part_options


def _common(f):
    options = [
        click.option("--seed", type=int, default=0, show_default=True, help="Random seed (same seed, same bytes)."),
        click.option("--steps", metavar="N", help="Sampling steps (default: the pipeline's)."),
        click.option("--set", "settings", multiple=True, metavar="KEY=VALUE", help="Any declared option (see `latentzoo info NAME`)."),
        click.option("--eta", metavar="X", help="Shortcut for --set eta=VALUE."),
        click.option("--class", "class_label", metavar="N", help="Shortcut for --set class_label=N (class-conditional priors)."),
        click.option("--guidance", metavar="G", help="Shortcut for --set guidance=G (with --class)."),
        click.option("--fit", is_flag=True, help="Resize, centre-crop and convert inputs instead of refusing them."),
        click.option("--allow-mismatch", is_flag=True, help="Allow equal-shape latent spaces of different identity (warns)."),
        click.option("--lora", "loras", multiple=True, metavar="NAME[:S[:T]]", help=LORA_HELP),
        *run_options("outputs"),
        click.option("--json", "as_json", is_flag=True, help="Print the sidecar record as JSON."),
    ]
    for option in reversed(options):
        f = option(f)
    return _part_options(f)


def _run(ctx: click.Context, command: str, target: str, output: str, kw: dict[str, Any], **inputs: Any) -> dict[str, Any]:
    """The flags as a request (core.runtime.request: checked before anything loads, as `sample`'s), run; returns the sidecar record."""
    from latentzoo.core.runtime.request import SampleRequest, run

    options = _option_strings(kw.pop("settings"), eta=kw.pop("eta"))
    request = SampleRequest(
        target,
        command=command,
        **kw,
        options=options,
        output=output,
        text=True,
        registries=tuple(ctx.obj["registries"]),
        **inputs,
    )
    with one_line_warnings():
        written = run(request, registry=_registry(ctx))
    return written[0].record if written else None  # under torchrun only rank 0 reports


def _done(record: dict[str, Any] | None, output: str, as_json: bool) -> None:
    if record is None:
        return
    if as_json:
        _emit_json(record)
    else:
        click.echo(f"wrote {output} ({record['n']} image(s)) and its JSON sidecar", err=True)


@click.command()
@click.argument("target")
@click.argument("images", nargs=-1, required=True)
@click.option("--strength", type=float, default=0.6, show_default=True, help="How far to noise the input, in (0, 1]: 1 = from pure noise.")
@_common
@click.option("-o", "--output", default="img2img.png", show_default=True, help="A .png grid, or DIR/ for one PNG per image.")
@click.option("--no-progress", is_flag=True, hidden=True)
@click.pass_context
def img2img(
    ctx: click.Context, target: str, images: tuple[str, ...], strength: float, output: str, as_json: bool, no_progress: bool, **kw: Any
) -> None:
    """SDEdit (Meng et al. 2022): noise IMAGES to the level --strength picks and denoise them with the pipeline."""
    _done(_run(ctx, "img2img", target, output, kw, images=images, strength=strength), output, as_json)


@click.command()
@click.argument("target")
@click.argument("images", nargs=-1, required=True)
@click.option("--mask", required=True, help="Mask image: white = repaint, black = keep (greyscale, thresholded at 0.5; resized, nearest).")
@_common
@click.option("-o", "--output", default="inpaint.png", show_default=True, help="A .png grid, or DIR/ for one PNG per image.")
@click.option("--no-progress", is_flag=True, hidden=True)
@click.pass_context
def inpaint(
    ctx: click.Context, target: str, images: tuple[str, ...], mask: str, output: str, as_json: bool, no_progress: bool, **kw: Any
) -> None:
    """Repaint the white region of --mask in each of IMAGES; the black region keeps the original pixels exactly."""
    _done(_run(ctx, "inpaint", target, output, kw, images=images, mask=mask), output, as_json)


@click.command()
@click.argument("target")
@click.argument("a")
@click.argument("b")
@click.option("--frames", type=int, default=8, show_default=True, help="Frames from A to B, endpoints included (at least 2).")
@_common
@click.option(
    "-o", "--output", default="interpolation.png", show_default=True, help="A strip .png (one row), or DIR/ for one PNG per frame."
)
@click.option("--no-progress", is_flag=True, hidden=True)
@click.pass_context
def interpolate(
    ctx: click.Context, target: str, a: str, b: str, frames: int, output: str, as_json: bool, no_progress: bool, **kw: Any
) -> None:
    """DDIM-invert A and B, slerp their noises, and sample each of --frames frames back (eta 0)."""
    record = _run(ctx, "interpolate", target, output, kw, images=(a, b), frames=frames)
    _done(record, output, as_json)
    if record is not None and not as_json:
        click.echo(f"frames: {', '.join(record.get('frame_files') or record['files'])}", err=True)
