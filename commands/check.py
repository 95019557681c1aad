"""``latentzoo check PRIOR``: the prior kind's conformance test on a few real images."""

from __future__ import annotations

import click

from latentzoo.core.contract.errors import LatentzooError

from .common import _emit_json


@click.command()
@click.argument("prior")
@click.option("--data", help="Dataset name or image folder (default: the data the latent space's autoencoder was trained on).")
@click.option("-n", "n", type=click.IntRange(1, 256), default=8, show_default=True, help="Images to encode.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the noise the check adds.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def check(ctx: click.Context, prior: str, data: str | None, n: int, seed: int, as_json: bool) -> None:
    """Check that PRIOR follows the convention of the kind it declares (which end of time is noise, what it predicts).

    \b
    Real images are encoded by a registered encoder of the prior's latent space; the prior's
    predictions on them, noised as the kind says, are compared with the kind's target and with
    the reversed conventions. Fails in one line when a reversed convention fits better.
    """
    from latentzoo.core.runtime.conformance import check as run_check

    verdict = run_check(prior, data=data, n=n, extra=ctx.obj["registries"], seed=seed)
    if as_json:
        _emit_json(
            {
                "prior": verdict.prior,
                "kind": verdict.kind,
                "ok": verdict.ok,
                "data": verdict.data,
                "images": verdict.images,
                "readings": [{"convention": r.convention, "error": r.error} for r in verdict.readings],
            }
        )
    if not verdict.ok:
        raise LatentzooError(verdict.line())
    if not as_json:
        click.echo(verdict.line())
