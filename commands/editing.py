"""Editing commands: img2img (SDEdit), inpaint, interpolate; thin layers over ``latentzoo.core.editing``."""

from __future__ import annotations

from typing import Any

import click

from .common import _emit_json
from .sampling import _build, _option_strings, _part_options


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
        click.option("--json", "as_json", is_flag=True, help="Print the sidecar record as JSON."),
    ]
    for option in reversed(options):
        f = option(f)
    return _part_options(f)


def _prepare(ctx: click.Context, target: str, output: str, n: int, nrow: int | None, kw: dict[str, Any]):
    """Validate the options and -o before anything loads, then build the pipeline; returns (pipe, text_options, seed, fit)."""
    from latentzoo.core.record import SampleOutput, check_run

    shortcuts = {k: kw.pop(k) for k in ("eta", "class_label", "guidance")}
    text_options = _option_strings(kw.pop("settings"), steps=kw.pop("steps"), **shortcuts)
    seed, fit, allow_mismatch = kw.pop("seed"), kw.pop("fit"), kw.pop("allow_mismatch")
    check_run(n, seed, None, nrow)
    SampleOutput(output, n=n, nrow=nrow)  # refuse a bad -o before building anything
    pipe = _build(ctx, target, kw, allow_mismatch, text_options)
    return pipe, text_options, seed, fit


def _images(pipe: Any, paths: list[str], fit: bool):
    from latentzoo.core.codec import _inputs
    from latentzoo.core.editing import check_editable

    check_editable(pipe, "editing")
    return _inputs(pipe, paths, fit)


def _done(record: dict[str, Any], output: str, as_json: bool) -> None:
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
    from latentzoo.core import editing

    editing.check_strength(strength)
    pipe, text_options, seed, fit = _prepare(ctx, target, output, len(images), None, kw)
    x = _images(pipe, list(images), fit)
    record = editing.write(editing.img2img(pipe, x, strength, seed=seed, text_options=text_options), output, inputs=list(images))
    _done(record, output, as_json)


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
    from latentzoo.core import editing

    pipe, text_options, seed, fit = _prepare(ctx, target, output, len(images), None, kw)
    x = _images(pipe, list(images), fit)
    m = editing.load_mask(mask, tuple(x.shape[-2:]))
    record = editing.write(editing.inpaint(pipe, x, m, seed=seed, text_options=text_options), output, inputs=[*images, mask])
    _done(record, output, as_json)


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
    from latentzoo.core.record import check_held

    check_held("--frames", frames, 2)  # before torch is imported
    from latentzoo.core import editing

    pipe, text_options, seed, fit = _prepare(ctx, target, output, frames, frames, kw)
    editing.check_invertible(pipe)
    x = _images(pipe, [a, b], fit)
    edit = editing.interpolate(pipe, x[:1], x[1:], frames, seed=seed, text_options=text_options)
    record = editing.write(edit, output, nrow=frames, inputs=[a, b], frames=True)
    _done(record, output, as_json)
    if not as_json:
        click.echo(f"frames: {', '.join(record.get('frame_files') or record['files'])}", err=True)
