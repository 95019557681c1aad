"""The user's registry file: ``latentzoo registry remove NAME`` (no torch at import)."""

from __future__ import annotations

import click


@click.group()
def registry() -> None:
    """Edit the user registry ($LATENTZOO_REGISTRY or <config dir>/latentzoo/registry.yaml)."""


@registry.command()
@click.argument("name")
def remove(name: str) -> None:
    """Delete the entry NAME from the user registry (built-in and plugin entries cannot be removed).

    Its weights files stay where they are. Works even when the entry is skipped for a conflict.
    """
    from latentzoo.core.contract.userregistry import remove_entry

    path, section = remove_entry(name)
    click.echo(f"removed {name} ({section[:-1]}) from {path}", err=True)
