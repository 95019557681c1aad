"""``latentzoo variations``: a thin command over ``latentzoo.core.variations``."""

from __future__ import annotations

from typing import Any

import click

from .common import _emit_json
from .sampling import _build, _part_options


@click.command()
@click.argument("target")
@click.argument("image")
@click.option("-n", "n", type=int, default=8, show_default=True, help="Number of variations (with --to: frames, endpoints included).")
@click.option("--to", "to", metavar="IMAGE", help="Interpolate instead: slerp from IMAGE's embedding to this image's, -n frames.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed (same seed, same bytes).")
@click.option("--no-fit", is_flag=True, help="Refuse inputs of another size or mode instead of converting them.")
@click.option("--allow-mismatch", is_flag=True, help="Allow equal-shape latent spaces of different identity (warns).")
@_part_options
@click.option("-o", "--output", default="variations.png", show_default=True, help="A .png grid, or DIR/ for one PNG per image.")
@click.option("--json", "as_json", is_flag=True, help="Print the sidecar record as JSON.")
@click.option("--no-progress", is_flag=True, hidden=True)  # accepted for scripts shared with sample (no bar here, as in img2img)
@click.pass_context
def variations(
    ctx: click.Context, target: str, image: str, n: int, to: str | None, seed: int, no_fit: bool, allow_mismatch: bool,
    output: str, as_json: bool, no_progress: bool, **parts: Any,
) -> None:  # fmt: skip
    """Decode -n variations of IMAGE from its embedding (unCLIP), or interpolate to --to B.

    \b
      latentzoo variations digits-unclip seven.png -n 8 -o sevens.png
      latentzoo variations digits-unclip three.png --to eight.png -n 8 -o morph.png
    """
    from latentzoo.core.record import SampleOutput, check_held, check_run

    check_run(n, seed, None, None)
    check_held("-n", n, 2 if to else 1)  # before anything loads (torch included)
    from latentzoo.core import editing
    from latentzoo.core import variations as run

    SampleOutput(output, n=n, nrow=n if to else None)  # refuse a bad -o before anything loads
    pipe = _build(ctx, target, parts, allow_mismatch)
    run.check_variations(pipe)
    if to:
        edit = run.interpolate_embeddings(pipe, image, to, n, seed=seed, fit=not no_fit)
        record = editing.write(edit, output, nrow=n, inputs=[image, to])
    else:
        edit = run.variations(pipe, image, n, seed=seed, fit=not no_fit)
        record = editing.write(edit, output, inputs=[image])
    if as_json:
        _emit_json(record)
    else:
        click.echo(f"wrote {output} ({record['n']} image(s)) and its JSON sidecar", err=True)
