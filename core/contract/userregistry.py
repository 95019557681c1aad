"""Adding entries to the user's registry file (``$LATENTZOO_REGISTRY`` or the config-dir default).

A read-modify-write under an exclusive lock: ``fcntl.flock`` on a sidecar ``.<name>.lock``
file beside the registry (the registry itself is replaced by rename, so it cannot carry the
lock), held from the read to the rename. Within it the file is read with the bounded safe
loader, the new entries are merged in, the result is schema-checked, and only then written
atomically (temporary file + rename): a failure leaves the old file untouched, and N
concurrent writers (parallel `convert` / `pull`) leave all N sets of entries.
A missing file is an empty layer; it is created by the first write.
(Comments in the user file are not preserved: it is a machine-written layer.)
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from .errors import LatentzooError, RegistryError
from .registry import Registry, _suggest, parse_file, user_registry_path
from .weights import atomic_write
from .yamlsafe import load_yaml


def relative_weights(path: Path, registry_file: Path) -> str:
    """A weights path as the registry file should state it: relative when beside or below it."""
    path, base = Path(path).resolve(), Path(registry_file).resolve().parent
    try:
        return os.path.relpath(path, base) if path.is_relative_to(base) else str(path)
    except ValueError:  # another drive (Windows)
        return str(path)


@contextlib.contextmanager
def locked(path: str | Path) -> Iterator[Path]:
    """Hold an exclusive advisory lock for read-modify-writes of ``path`` (blocks until free).

    The lock lives on ``.<name>.lock`` beside ``path``; it is released when the block ends or
    the process dies (flock locks belong to the open file), so a crashed writer never wedges it.
    """
    path = Path(path)
    lock = path.with_name(f".{path.name}.lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise LatentzooError(
            f"cannot lock {path} for writing ({lock}: {exc.strerror or exc}); choose a writable registry location"
        ) from exc
    try:
        try:
            import fcntl
        except ImportError:  # Windows: no flock; the rename is still atomic
            fcntl = None  # type: ignore[assignment]
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield path
    finally:
        os.close(fd)  # releases the lock


def add_entries(
    components: dict[str, dict[str, Any]] | None = None,
    pipelines: dict[str, dict[str, Any]] | None = None,
    *,
    force: bool = False,
    path: Path | None = None,
) -> Path:
    """Merge entries into the user registry; an existing name is refused unless ``force``."""
    path = Path(path or user_registry_path())
    with locked(path):
        return _merge(path, components or {}, pipelines or {}, force)


def remove_entry(name: str, *, path: Path | None = None) -> tuple[Path, str]:
    """Delete the entry ``name`` from the user registry (under the lock, atomically); returns
    (file, section). Its weights files stay where they are."""
    path = Path(path or user_registry_path())
    _entry_data(path, name)  # an unknown name is refused before the lock file is made
    with locked(path):
        data = _entry_data(path, name)
        for section in ("components", "pipelines"):
            block = data.get(section)
            if isinstance(block, dict) and name in block:
                del block[name]
                if not block:
                    del data[section]
                text = yaml.safe_dump(data, sort_keys=False)
                atomic_write(path, lambda tmp, text=text: tmp.write_text(text, encoding="utf-8"))
                return path, section
    raise RegistryError(f"{path} has no entry {name!r}; see `latentzoo list`")  # removed meanwhile


def _entry_data(path: Path, name: str) -> dict[str, Any]:
    """The user file's mapping, when it names ``name``; else one line naming the file."""
    if not path.exists():
        raise RegistryError(f"{path} does not exist; the user registry has no entry {name!r}")
    data = load_yaml(path)[1] or {}
    if not isinstance(data, dict):
        raise RegistryError(f"{path}:1: a registry file is a mapping; fix it by hand")
    names = [str(n) for s in ("components", "pipelines") if isinstance(data.get(s), dict) for n in data[s]]
    if name not in names:
        raise RegistryError(f"{path} has no entry {name!r}{_suggest(name, names)}; see `latentzoo list`")
    return data


def _merge(path: Path, components: dict[str, dict[str, Any]], pipelines: dict[str, dict[str, Any]], force: bool) -> Path:
    data: dict[str, Any] = {}
    if path.exists():
        parse_file(path, "user")  # refuse to rewrite a file that is already broken
        data = load_yaml(path)[1] or {}
    clashes = Registry.load(user=path).conflicts({**components, **pipelines}, force=True)  # names vs aliases, every layer
    if clashes:
        raise RegistryError(f"refusing to add to {path}: {'; '.join(clashes)}; choose another --name (or drop the alias)")
    data.setdefault("version", 1)
    for section, new in (("components", components), ("pipelines", pipelines)):
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
