"""Helpers shared by the command modules (no torch at import)."""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Iterator
from typing import Any

import click

ROLE_CHOICES = ["encoder", "decoder", "prior", "sampler", "scheduler", "conditioner", "adapter", "pipeline"]


def _version() -> str:
    from latentzoo import __version__

    return __version__


def _registry(ctx: click.Context):
    from latentzoo.core.contract.registry import Registry

    reg = Registry.load(list(ctx.obj["registries"]))
    for message in reg.errors:
        click.echo(f"warning: {message}", err=True)
    return reg


@contextlib.contextmanager
def one_line_warnings() -> Iterator[None]:
    """Python warnings raised inside (a truncated prompt, an empty one) as one ``warning: ...`` line
    each, printed when raised, each message once."""
    seen: set[str] = set()

    def show(message: Warning | str, *args: Any, **kwargs: Any) -> None:
        if str(message) not in seen:  # once per command (the "once" filter would be once per process)
            seen.add(str(message))
            click.echo(f"warning: {message}", err=True)

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show
        yield


def _emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


def _table(rows: list[list[str]], headers: list[str]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=False)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=False)).rstrip() for row in [headers, *rows]]
    click.echo("\n".join(lines))  # one write: 20k rows in one call, not 20k


def run_options(what: str) -> list[Any]:
    """Where and how a run executes, the same flags on sample and the editing commands (core.runtime.request):
    --batch-size, --precision, --device, --threads, --resume."""
    return [
        click.option(
            "--batch-size", type=int, default=64, show_default=True, help=f"{what.capitalize()} per batch (memory is flat in their number)."
        ),
        click.option(
            "--precision",
            type=click.Choice(["fp32", "bf16", "bf16-weights", "fp16"]),
            default="fp32",
            show_default=True,
            help="bf16: models run under bfloat16 autocast (~3 significant digits; CPU, CUDA, MPS); bf16-weights: the same, with the "
            "weights held in bfloat16; fp16: float16 autocast, CUDA only. Recorded in the sidecar.",
        ),
        click.option(
            "--device",
            default="cpu",
            show_default=True,
            metavar="DEV",
            help="cpu, cuda (under torchrun: each rank its own GPU), cuda:N or mps: where the models run (noise is drawn on the CPU).",
        ),
        click.option(
            "--threads", type=int, metavar="N", help="CPU threads for torch (default: torch's, the usable cores). Recorded in the sidecar."
        ),
        click.option(
            "--resume",
            is_flag=True,
            help=f"Finish an interrupted -o DIR/ run: render only its missing or unverifiable {what} (same request).",
        ),
    ]
