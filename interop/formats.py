"""The format seam: plugins declare foreign formats; this module converts from and exports to them.

A plugin's ``latentzoo_formats`` hook returns declarations (plain data, nothing imported):

    {"name": "diffusers", "description": "...",
     "convert": "my_plugin.fmt:convert",    # optional: latentzoo convert --from NAME
     "export": "my_plugin.fmt:export"}      # optional: latentzoo export --to NAME

``convert(source: Path, name: str, stage: Path, **options) -> dict`` reads ``source``, writes
weights (safetensors) into ``stage`` and returns ``{"components": {...}, "pipelines": {...},
"notes": [...]}``: registry entries whose ``weights.path`` is a file name in ``stage``. This
module does the rest, the same for every format: it checks the names (a name the registry
already has is refused unless ``force``), writes the weights and ``registry.yaml`` into the
output folder (weights first, the fragment that names them last) and adds the entries to the
user registry.

``export(registry, name: str, folder: Path) -> list[str]`` writes ``name`` (a component or a
pipeline) into the empty ``folder`` and returns notes. This module picks the folder: a fresh
temporary one beside the output, renamed into place when complete, with a small manifest
(``.latentzoo-export.json``) listing what it wrote. ``--force`` replaces only a previous export
whose files are all in its manifest; it never deletes anything the command did not write, and
``.``, ``/``, the home directory and their ancestors are refused.
"""

from __future__ import annotations

import errno
import inspect
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from latentzoo.core.contract.errors import LatentzooError, RegistryError
from latentzoo.core.contract.weights import drop_backups, place, unplace

ACTIONS = ("convert", "export")
MANIFEST = ".latentzoo-export.json"


@dataclass
class Format:
    """One declared format."""

    name: str
    description: str
    plugin: str
    convert: str | None = None
    export: str | None = None

    def can(self, action: str) -> bool:
        return getattr(self, action) is not None


def formats() -> dict[str, Format]:
    """Declared formats by name; a plugin with a bad declaration is marked broken and skipped."""
    from latentzoo.core.contract.plugins import get_manager

    found: dict[str, Format] = {}
    for info, decls in get_manager().call("latentzoo_formats"):
        try:
            if not isinstance(decls, list | tuple):
                raise LatentzooError(f"latentzoo_formats must return a list of dicts, not {type(decls).__name__}")
            for decl in decls:
                found_fmt = _check_format(decl, info.name)
                if found_fmt.name in found:
                    raise LatentzooError(f"format {found_fmt.name!r} is already declared by plugin {found[found_fmt.name].plugin}")
                found[found_fmt.name] = found_fmt
        except LatentzooError as exc:
            info.status, info.error = "broken", f"bad format declaration: {exc}"
    return found


def _check_format(decl: Any, plugin: str) -> Format:
    if not isinstance(decl, dict) or not isinstance(decl.get("name"), str) or not decl["name"]:
        raise LatentzooError("a format declaration is a dict with a non-empty name")
    targets = {a: decl.get(a) for a in ACTIONS}
    if not any(targets.values()):
        raise LatentzooError(f"format {decl['name']!r} declares neither convert nor export")
    for action, target in targets.items():
        if target is not None and (not isinstance(target, str) or ":" not in target):
            raise LatentzooError(f"format {decl['name']!r} {action} must be 'module:function', not {target!r}")
    return Format(decl["name"], str(decl.get("description") or ""), plugin, targets["convert"], targets["export"])


def get_format(name: str, action: str) -> Any:
    """The imported convert or export function of format ``name``; one line listing the known ones otherwise."""
    from latentzoo.core.contract.registry import import_target

    known = {n: f for n, f in formats().items() if f.can(action)}
    fmt = known.get(name)
    if fmt is None:
        flag = "--from" if action == "convert" else "--to"
        listed = ", ".join(sorted(known)) or "none (no installed plugin declares one)"
        raise LatentzooError(f"{flag} {name}: unknown format; formats that can {action}: {listed}")
    return import_target(getattr(fmt, action))


# ---------------------------------------------------------------------------------------
# convert


@dataclass
class Converted:
    """What ``convert`` wrote: the fragment, its entries, how values were chosen, where it was registered."""

    name: str
    outdir: Path
    fragment: Path
    components: dict[str, dict[str, Any]]
    pipelines: dict[str, dict[str, Any]]
    notes: list[str] = field(default_factory=list)
    registered: Path | None = None


def default_outdir(name: str) -> Path:
    from latentzoo.core.contract.registry import user_registry_path

    return user_registry_path().parent / "converted" / name


def _taken(names: list[str], bodies: dict[str, dict[str, Any]] | None = None, *, force: bool = False) -> list[str]:
    """What stops ``names`` joining the merged registry (built-in, plugins, user): a name it has
    (with its layer; allowed with ``force``, which shadows), or a name or alias that collides with
    an alias (never allowed: it would make every command refuse the registry)."""
    from latentzoo.core.contract.registry import ENV_USER, Registry, user_registry_path

    saved = None if user_registry_path().is_file() else os.environ.pop(ENV_USER, None)  # a missing user file is an empty layer
    try:
        reg = Registry.load()
    finally:
        if saved is not None:
            os.environ[ENV_USER] = saved
    return reg.conflicts({n: (bodies or {}).get(n, {}) for n in names}, force=force)


def convert(
    source: str | Path,
    name: str,
    *,
    fmt: str,
    outdir: str | Path | None = None,
    register: bool = True,
    force: bool = False,
    **options: Any,
) -> Converted:
    """Convert ``source`` from format ``fmt``; write weights + registry.yaml into ``outdir``; register the entries."""

    from .hub import check_name

    function = get_format(fmt, "convert")
    check_name(name)
    src = Path(source)
    if not src.exists():
        raise LatentzooError(f"{source} does not exist; give the {fmt} folder to convert")
    accepted = inspect.signature(function).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values()):
        unknown = sorted(k for k in options if k not in accepted)
        if unknown:
            raise LatentzooError(f"format {fmt} does not take option(s) {', '.join(unknown)}")
    if not src.is_dir():  # a FIFO or a device would hang the read or never end
        from latentzoo.core.contract.userfiles import check_file

        check_file(src, "convert source", "weights")
    out = Path(outdir) if outdir else default_outdir(name)
    from latentzoo.core.contract.weights import output_lock

    with output_lock(out, f"convert -o {out}"):  # one writer per folder
        try:
            return _convert_into(src, name, fmt, function, out, register, force, options)
        except OSError as exc:  # a full disk, a quota, a file too large: the staging folder is gone already
            where = exc.filename or out
            raise LatentzooError(
                f"cannot write {where}: {exc.strerror or exc}; free space or choose another -o (nothing was registered)"
            ) from exc


def _convert_into(
    src: Path, name: str, fmt: str, function: Any, out: Path, register: bool, force: bool, options: dict[str, Any]
) -> Converted:
    import yaml

    from latentzoo.core.contract.registry import parse_file
    from latentzoo.core.contract.weights import write_bytes

    from .hub import check_name

    if out.exists() and not out.is_dir():
        raise LatentzooError(f"-o {out} is a file; give a directory")
    if (out / "registry.yaml").exists() and not force:
        raise LatentzooError(f"{out} already holds a converted model; choose another -o or --name, or pass --force")
    if register:
        taken = _taken([name], force=force)
        if taken:
            raise RegistryError(f"the registry already names {', '.join(taken)}; choose another --name or pass --force to shadow it")
    created = not out.exists()
    made = [p for p in (out, *out.parents) if not p.exists()]  # every folder this conversion creates (converted/ too)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LatentzooError(f"cannot create {out}: {exc.strerror or exc}; choose a writable -o") from exc
    stage = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=out))
    try:
        result = function(src, name, stage, **options)
        components = dict(result.get("components") or {})
        pipelines = dict(result.get("pipelines") or {})
        notes = list(result.get("notes") or [])
        for new in (*components, *pipelines):
            check_name(new, f"{fmt} converter produced the name")
        if register:
            taken = _taken([*components, *pipelines], {**components, **pipelines}, force=force)
            if taken:
                raise RegistryError(f"the registry already names {', '.join(taken)}; choose another --name or pass --force to shadow it")
        _validate_weights(stage, components, fmt)  # before anything is moved into place or registered
        fragment = {"version": 1, "components": components}
        if pipelines:
            fragment["pipelines"] = pipelines
        staged = write_bytes(stage / "registry.yaml", yaml.safe_dump(fragment, sort_keys=False).encode())
        parse_file(staged, "cli")  # the fragment is valid registry YAML
        frag_path = out / "registry.yaml"
        converted = Converted(name, out, frag_path, components, pipelines, notes)
        # Weights first, then the files shipped beside them (a text encoder's tokenizer.json), the
        # fragment that names them last; then the user registry. Until that last write succeeds,
        # every file an earlier conversion had here is kept aside (--force), and any failure (a
        # full disk, a signal) puts it back: the old entry or the new one is complete, never neither.
        weights = [stage / e["weights"]["path"] for e in components.values() if "path" in (e.get("weights") or {})]
        extras = [f for f in sorted(stage.iterdir()) if f.is_file() and f != staged and f not in weights]
        placed = place([(f, out / f.name) for f in (*weights, *extras, staged)])
        try:
            if register:
                converted.registered = _register(components, pipelines, out, force)
        except BaseException:
            unplace(placed)
            raise
        drop_backups(placed)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        for folder in made if created else []:  # a failed conversion leaves nothing behind
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
    return converted


def _register(components: dict[str, dict[str, Any]], pipelines: dict[str, dict[str, Any]], out: Path, force: bool) -> Path:
    """Add converted entries to the user registry (one atomic write), their weights paths relative to it."""
    from latentzoo.core.contract.registry import user_registry_path
    from latentzoo.core.contract.userregistry import add_entries, relative_weights

    user = user_registry_path()
    comps = {}
    for comp, entry in components.items():
        entry = dict(entry)
        if "path" in (entry.get("weights") or {}):
            entry["weights"] = {**entry["weights"], "path": relative_weights(out / entry["weights"]["path"], user)}
        comps[comp] = entry
    return add_entries(comps, pipelines, force=force, path=user)


def _validate_weights(stage: Path, components: dict[str, dict[str, Any]], fmt: str) -> None:
    """Refuse converted weights that cannot work: a NaN / Inf in a floating tensor, or a layer's
    weight or bias stored as integers (a float tensor declared I32 in the source's header).
    One read per file (weights.scan_file); the sha256 the converter recorded must match it."""
    from latentzoo.core.contract.weights import scan_file, tensor_regions

    for name, entry in components.items():
        rel = (entry.get("weights") or {}).get("path")
        if not rel or not (stage / rel).is_file():
            continue
        path = stage / rel
        for tensor, (_, _, dtype) in tensor_regions(path).items():
            if tensor.endswith((".weight", ".bias")) and not dtype.startswith(("F", "BF")):
                raise LatentzooError(
                    f"{fmt} source: {name}'s tensor {tensor!r} is stored as {dtype}, but a layer's weight is floating point; "
                    "the checkpoint is corrupt or mislabelled: re-export it"
                )
        digest, bad, _ = scan_file(path)
        if bad is not None:
            tensor, n_bad, n = bad
            raise LatentzooError(
                f"{fmt} source: {name}'s tensor {tensor!r} holds {n_bad} NaN/Inf value(s) of {n}; "
                "the model cannot work: convert a good checkpoint (nothing was registered)"
            )
        recorded = (entry.get("weights") or {}).get("sha256")
        if recorded and recorded != digest:
            raise LatentzooError(f"{fmt} converter recorded a sha256 for {name} that its weights file does not have (internal)")


# ---------------------------------------------------------------------------------------
# export


def _files_below(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if not p.is_dir()}


def _export_target(outdir: str | Path, force: bool, hint: str) -> Path:
    """The output folder, checked: never one whose contents the export did not write."""
    out = Path(outdir).expanduser()
    resolved = out.resolve()
    cwd, home = Path.cwd().resolve(), Path.home().resolve()
    special = (
        "the root directory" if resolved == Path(resolved.anchor) else
        "your home directory" if resolved == home else
        "the current directory" if resolved == cwd else
        "a directory above the current one" if resolved in cwd.parents else
        "a directory above your home directory" if resolved in home.parents else None
    )  # fmt: skip
    if special:
        raise LatentzooError(f"-o {outdir} is {special}; export into a new folder, e.g. -o {hint}")
    if out.is_symlink():
        raise LatentzooError(f"-o {outdir} is a symbolic link; give a real directory (new or empty)")
    if out.exists() and not out.is_dir():
        raise LatentzooError(f"-o {outdir} is a file; give a directory (new or empty)")
    if out.is_dir() and any(out.iterdir()):
        manifest = out / MANIFEST
        if not manifest.is_file():
            raise LatentzooError(
                f"-o {outdir} is not empty and is not a latentzoo export (no {MANIFEST}); choose a new or empty directory"
                + (" (--force only replaces a previous export)" if force else "")
            )
        if not force:
            raise LatentzooError(f"-o {outdir} holds a previous export; pass --force to replace it, or choose another directory")
        try:
            listed = set(json.loads(manifest.read_text(encoding="utf-8"))["files"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise LatentzooError(f"-o {outdir}: {MANIFEST} is unreadable; remove the folder yourself or choose another") from exc
        extra = sorted(_files_below(out) - listed - {MANIFEST})
        if extra:
            raise LatentzooError(
                f"-o {outdir} holds files the earlier export did not write ({', '.join(extra[:3])}{', ...' if len(extra) > 3 else ''}); "
                "move them away or choose another directory"
            )
    parent = out.parent if str(out.parent) else Path(".")
    probe = parent
    while not probe.exists():
        probe = probe.parent
    if not os.access(probe, os.W_OK):
        raise LatentzooError(f"cannot write {outdir}: {probe} is not writable; choose another -o")
    return out


def export(registry: Any, name: str, outdir: str | Path, *, fmt: str, force: bool = False) -> tuple[Path, list[str]]:
    """Write ``name`` (a component or a pipeline) in format ``fmt`` to ``outdir``; return the folder and notes."""
    function = get_format(fmt, "export")
    registry.get(name)  # an unknown name fails before anything is written
    from latentzoo.core.contract.weights import output_lock

    with output_lock(outdir, f"export -o {outdir}"):  # one writer: a second export never deletes the first
        try:
            return _export(registry, name, outdir, function, fmt, force)
        except OSError as exc:  # a full disk, a read-only or virtual file system (/proc): the temporary is gone already
            full = exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
            raise LatentzooError(
                f"cannot write {exc.filename if full and exc.filename else outdir}: {exc.strerror or exc}; "
                f"{'free space or ' if full else ''}choose another -o (nothing was changed)"
            ) from exc


def _export(registry: Any, name: str, outdir: str | Path, function: Any, fmt: str, force: bool) -> tuple[Path, list[str]]:
    out = _export_target(outdir, force, f"./{name}-{fmt}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    old = None
    try:
        notes = list(function(registry, name, tmp) or [])
        manifest = {"latentzoo_export": 1, "name": name, "format": fmt, "files": sorted(_files_below(tmp))}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the export is an ordinary folder
        if out.is_dir() and any(out.iterdir()):  # a previous export, checked above: swap it out, then delete it
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            os.replace(out, old / "export")
        elif out.is_dir():
            out.rmdir()
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            if not out.exists() and (old / "export").exists():
                os.replace(old / "export", out)  # the new export failed to land: put the old one back
            shutil.rmtree(old, ignore_errors=True)
    return out, notes
