"""Adding entries to the user's registry file (``$LATENTZOO_REGISTRY`` or the config-dir default).

The file is read with YAML's safe loader, the new entries are merged in, the result is
schema-checked, and only then written atomically: a failure leaves the old file untouched.
(Comments in the user file are not preserved: it is a machine-written layer.)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from .errors import RegistryError
from .registry import parse_file, user_registry_path
from .weights import atomic_write


def relative_weights(path: Path, registry_file: Path) -> str:
    """A weights path as the registry file should state it: relative when beside or below it."""
    path, base = Path(path).resolve(), Path(registry_file).resolve().parent
    try:
        return os.path.relpath(path, base) if path.is_relative_to(base) else str(path)
    except ValueError:  # another drive (Windows)
        return str(path)


def add_entries(
    components: dict[str, dict[str, Any]] | None = None,
    pipelines: dict[str, dict[str, Any]] | None = None,
    *,
    force: bool = False,
    path: Path | None = None,
) -> Path:
    """Merge entries into the user registry; an existing name is refused unless ``force``."""
    path = Path(path or user_registry_path())
    data: dict[str, Any] = {}
    if path.is_file():
        parse_file(path, "user")  # refuse to rewrite a file that is already broken
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    data.setdefault("version", 1)
    for section, new in (("components", components or {}), ("pipelines", pipelines or {})):
        if not new:
            continue
        block = data.get(section) or {}
        taken = sorted(set(block) & set(new))
        if taken and not force:
            raise RegistryError(f"{path} already names {', '.join(taken)}; choose another --name or pass --force to replace it")
        block.update(new)
        data[section] = block
    text = yaml.safe_dump(data, sort_keys=False)

    def write(tmp: Path) -> None:
        tmp.write_text(text, encoding="utf-8")
        parse_file(tmp, "user")  # schema check before the rename

    try:
        return atomic_write(path, write)
    except RegistryError as exc:
        raise RegistryError(f"refusing to write {path}: the merged registry would be invalid ({exc})") from exc
