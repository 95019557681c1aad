"""``latentzoo variations``: a thin command over ``latentzoo.core.runtime.variations``."""

from __future__ import annotations

from typing import Any

import click

from .common import _emit_json, _registry, one_line_warnings
from .sampling import _part_options, _run_options


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
@_run_options
@click.option("--json", "as_json", is_flag=True, help="Print the sidecar record as JSON.")
@click.option("--no-progress", is_flag=True, hidden=True)  # accepted for scripts shared with sample (no bar here, as in img2img)
@click.pass_context
def variations(
    ctx: click.Context, target: str, image: str, n: int, to: str | None, seed: int, no_fit: bool, allow_mismatch: bool,
    output: str, as_json: bool, no_progress: bool, batch_size: int, precision: str, device: str, threads: int | None,
    resume: bool, **parts: Any,
) -> None:  # fmt: skip
    """Decode -n variations of IMAGE from its embedding (unCLIP), or interpolate to --to B.

    \b
      latentzoo variations digits-unclip seven.png -n 8 -o sevens.png
      latentzoo variations digits-unclip three.png --to eight.png -n 8 -o morph.png
    """
    from latentzoo.core.runtime.request import SampleRequest, run

    request = SampleRequest(
        target,
        command="variations",
        **parts,
        images=(image,),
        to=to,
        n=n,
        seed=seed,
        fit=not no_fit,
        allow_mismatch=allow_mismatch,
        output=output,
        registries=tuple(ctx.obj["registries"]),
        batch_size=batch_size,
        precision=precision,
        device=device,
        threads=threads,
        resume=resume,
    )
    with one_line_warnings():
        written = run(request, registry=_registry(ctx))
    if not written:  # under torchrun only rank 0 reports
        return
    record = written[0].record
    if as_json:
        _emit_json(record)
    else:
        click.echo(f"wrote {output} ({record['n']} image(s)) and its JSON sidecar", err=True)
