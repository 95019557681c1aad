"""The whole plugin surface of latentzoo: six hooks.

A plugin is a module named by an entry point in the ``latentzoo`` group. Its module must
stay light (no torch at import): it returns *declarations*, plain data naming the import
path of model code, which latentzoo imports only when a component is built.

A plugin may set ``LATENTZOO_PLUGIN_API = 1`` (the major version it targets); a plugin
targeting another major version is reported as incompatible and not loaded.
"""

from __future__ import annotations

from typing import Any

import pluggy

PROJECT = "latentzoo"
PLUGIN_API = 1

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def latentzoo_components() -> list[dict[str, Any]]:
    """Declare component classes: dicts with name, role(s), target "module:Class", family, description, and drives (samplers) or kind (priors)."""


@hookspec
def latentzoo_kinds() -> list[dict[str, Any]]:
    """Declare prior kinds: dicts with name, description, convention (plain data) and check "module:function" (``latentzoo check``)."""


@hookspec
def latentzoo_registry() -> list[str]:
    """Return paths of registry.yaml fragments that name trained components and pipelines."""


@hookspec
def latentzoo_datasets() -> list[dict[str, Any]]:
    """Declare datasets: dicts with name, target "module:function(split, size, channels)", description."""


@hookspec
def latentzoo_commands(cli: Any) -> None:
    """Add click commands to the ``latentzoo`` group ``cli``."""


@hookspec
def latentzoo_formats() -> list[dict[str, Any]]:
    """Declare foreign weight formats: dicts with name, description, and "convert" and/or "export" ("module:function").

    ``convert`` imports a folder in that format (``latentzoo convert --from NAME``), ``export``
    writes a component or pipeline in it (``latentzoo export --to NAME``); see docs/plugins.md,
    "Formats", for the two functions' signatures. Only the declarations are read until a
    command uses the format.
    """
