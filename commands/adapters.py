"""LoRA adapters and checkpoint merging: ``lora add``, ``fuse``, ``merge`` (over latentzoo.interop.lora / .merge)."""

from __future__ import annotations

import click

from .common import _emit_json


@click.group()
def lora() -> None:
    """LoRA adapters (kohya-ss and diffusers / PEFT .safetensors): register, then `sample --lora` or `fuse`."""


@lora.command("add")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--base", required=True, metavar="PIPELINE_OR_COMPONENT", help="The model the LoRA was made for (checked: it must fit).")
@click.option("--name", required=True, help="Registry name of the adapter.")
@click.option("--allow-partial", is_flag=True, help="Register a LoRA some of whose modules the base lacks (they are not applied).")
@click.option("--json", "as_json", is_flag=True, help="Print the registry entry as JSON.")
@click.pass_context
def lora_add(ctx: click.Context, file: str, base: str, name: str, allow_partial: bool, as_json: bool) -> None:
    """Register FILE as adapter NAME after checking that it fits --base.

    A LoRA that does not fit is refused in one line with the matched and unmatched module
    counts and the first unmatched key. The entry records the format, rank, alpha, and the
    base each part fits (name, sha256, structural fingerprint of the targeted modules).

    \b
      latentzoo lora add my-style.safetensors --base sd15 --name my-style
      latentzoo sample sd15 --lora my-style:0.8 --prompt "a castle"
    """
    from latentzoo.interop.lora import add

    entry, notes = add(file, base=base, name=name, allow_partial=allow_partial, extra=ctx.obj["registries"])
    for note in notes:
        click.echo(f"note: {note}", err=True)
    if as_json:
        _emit_json({name: entry})
    parts = ", ".join(f"{p} {v['base']} ({v['modules']} modules)" for p, v in entry["config"]["parts"].items())
    click.echo(f"registered {name}: LoRA {entry['config']['format']} rank {entry['config']['rank']} on {parts}", err=True)


def parse_loras(values: tuple[str, ...]) -> list[tuple[str, float, float]]:
    """``--lora NAME[:MODEL[:TEXT]]`` values -> (name or path, model strength, text strength), checked."""
    from latentzoo.core.runtime.adapters import parse_spec

    return [parse_spec(v) for v in values]


LORA_HELP = (
    "NAME[:MODEL_STRENGTH[:TEXT_STRENGTH]]: apply a LoRA (a registered adapter or a .safetensors path); strengths in [-20, 20], "
    "default 1, text strength defaults to the model strength; repeatable."
)


@click.command()
@click.argument("target")
@click.option("--lora", "loras", multiple=True, required=True, metavar="NAME[:S[:T]]", help=LORA_HELP)
@click.option("--name", required=True, help="Registry name of the fused pipeline (its parts: NAME-unet, NAME-text-encoder) or component.")
@click.option("-o", "--out", "outdir", type=click.Path(file_okay=False), help="Output directory [default: <user registry dir>/fused/NAME].")
@click.pass_context
def fuse(ctx: click.Context, target: str, loras: tuple[str, ...], name: str, outdir: str | None) -> None:
    """Fuse LoRA(s) into TARGET's weights (W + s * alpha / r * up @ down), as a new registered pipeline or component.

    The same weights as diffusers' load_lora_weights + fuse_lora(lora_scale=s); the recipe
    (adapters, their sha256 and strengths) goes into the weights' metadata and the entry.
    """
    from latentzoo.interop.lora import fuse as run

    result = run(target, parse_loras(loras), name=name, outdir=outdir, extra=ctx.obj["registries"])
    made = [*result["components"], *result["pipelines"]]
    click.echo(f"wrote {', '.join(made)} to {result['outdir']} and registered them", err=True)


@click.group()
def merge() -> None:
    """Merge checkpoints, tensor by tensor in fp32 (A1111's checkpoint merger).

    \b
      latentzoo merge weighted-sum A B --alpha 0.3 --name C       # (1 - a) A + a B
      latentzoo merge add-difference A B C --alpha 1 --name D     # A + a (B - C)

    ComfyUI's ModelMergeSimple(ratio) runs the other way: ratio * A + (1 - ratio) * B, so its
    ratio r is --alpha 1 - r here. A, B and C are components (priors, text encoders) or
    pipelines (their UNet and text encoder merged pair by pair; the autoencoder, which must be
    shared, is kept).
    """


def _merge_options(f):
    f = click.option("--alpha", type=float, required=True, help="The merge ratio a (see the formula).")(f)
    f = click.option("--name", required=True, help="Registry name of the result (not one of the inputs).")(f)
    f = click.option("--dtype", type=click.Choice(["fp32", "fp16", "bf16"]), help="Output dtype [default: the first input's].")(f)
    f = click.option(
        "-o", "--out", "outdir", type=click.Path(file_okay=False), help="Output directory [default: <user registry dir>/merged/NAME]."
    )(f)
    return f


def _run_merge(
    ctx: click.Context, operation: str, inputs: list[str], alpha: float, name: str, dtype: str | None, outdir: str | None
) -> None:
    from latentzoo.interop.merge import merge as run

    result = run(operation, inputs, alpha=alpha, name=name, dtype=dtype, outdir=outdir, extra=ctx.obj["registries"])
    made = [*result["components"], *result["pipelines"]]
    click.echo(f"wrote {', '.join(made)} to {result['outdir']} and registered them", err=True)


@merge.command("weighted-sum")
@click.argument("a")
@click.argument("b")
@_merge_options
@click.pass_context
def weighted_sum(ctx: click.Context, a: str, b: str, alpha: float, name: str, dtype: str | None, outdir: str | None) -> None:
    """(1 - alpha) A + alpha B (ComfyUI's ModelMergeSimple ratio r is alpha = 1 - r)."""
    _run_merge(ctx, "weighted-sum", [a, b], alpha, name, dtype, outdir)


@merge.command("add-difference")
@click.argument("a")
@click.argument("b")
@click.argument("c")
@_merge_options
@click.pass_context
def add_difference(ctx: click.Context, a: str, b: str, c: str, alpha: float, name: str, dtype: str | None, outdir: str | None) -> None:
    """A + alpha (B - C): add what B learnt over C to A."""
    _run_merge(ctx, "add-difference", [a, b, c], alpha, name, dtype, outdir)
