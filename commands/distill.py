"""``latentzoo distill``: fast-sampling students of a pipeline; each method is a subcommand in its own module."""

from __future__ import annotations

import click

from .consistency import consistency


@click.group()
def distill() -> None:
    """Distil a pipeline into a faster one (consistency: an LCM-LoRA adapter)."""


distill.add_command(consistency)
