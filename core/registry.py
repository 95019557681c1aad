"""The layered registry of named, trained components and ready pipelines.

Layers, later wins: the built-in ``registry.yaml`` -> fragments from plugins -> the user's
file (``$LATENTZOO_REGISTRY`` or ``<config dir>/latentzoo/registry.yaml``) -> files given
with ``--registry``. Files are parsed with YAML's safe loader only. Schema errors name the
file, the line and the key. Nothing here imports torch.
"""

from __future__ import annotations

import difflib
import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import RegistryError
from .latent import LatentSpace
from .plugins import get_manager

BUILTIN = Path(__file__).resolve().parent.parent / "registry.yaml"
ENV_USER = "LATENTZOO_REGISTRY"

COMPONENT_KEYS = {
    "family": str,
    "class": str,
    "roles": list,
    "config": dict,
    "weights": dict,
    "latent_space": dict,
    "conditioning_space": dict,
    "license": str,
    "description": str,
    "metrics": dict,
    "training": dict,
}
REQUIRED_COMPONENT_KEYS = ("class", "roles")
PIPELINE_KEYS = {
    "encoder": str,
    "prior": str,
    "decoder": str,
    "sampler": str,
    "scheduler": str,
    "defaults": dict,
    "description": str,
    "license": str,
    "allow_mismatch": bool,
}
REQUIRED_PIPELINE_KEYS = ("prior", "decoder", "sampler")
WEIGHT_KEYS = {"path", "sha256", "hub", "revision", "file"}


@dataclass
class Entry:
    """One named component or pipeline, with where it was defined."""

    name: str
    section: str  # "components" | "pipelines"
    data: dict[str, Any]
    source: Path
    line: int
    layer: str

    @property
    def roles(self) -> list[str]:
        return ["pipeline"] if self.section == "pipelines" else list(self.data.get("roles", []))

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}"

    @property
    def latent_space(self) -> LatentSpace | None:
        raw = self.data.get("latent_space")
        return LatentSpace.from_dict(raw) if raw else None

    def weights_path(self) -> Path | None:
        weights = self.data.get("weights") or {}
        return (self.source.parent / weights["path"]).resolve() if "path" in weights else None

    def summary(self) -> dict[str, Any]:
        out = {"name": self.name, "roles": self.roles, "source": self.where, "layer": self.layer}
        out.update({k: v for k, v in self.data.items()})
        return out


def _line_map(node: yaml.Node, path: tuple[Any, ...], lines: dict[tuple[Any, ...], int], source: Path) -> None:
    if isinstance(node, yaml.MappingNode):
        seen = set()
        for key_node, value_node in node.value:
            key = key_node.value
            if key in seen:
                raise RegistryError(f"{source}:{key_node.start_mark.line + 1}: duplicate key {key!r}")
            seen.add(key)
            lines[(*path, key)] = key_node.start_mark.line + 1
            _line_map(value_node, (*path, key), lines, source)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[(*path, i)] = item.start_mark.line + 1
            _line_map(item, (*path, i), lines, source)


def _suggest(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(word, list(choices), n=3, cutoff=0.5)
    return f"; did you mean {', '.join(close)}?" if close else ""


def _safe_load(text: str, loader_cls: Any) -> tuple[yaml.Node | None, Any]:
    """The node tree (for line numbers) and the data of one YAML document, parsed once."""
    loader = loader_cls(text)
    try:
        node = loader.get_single_node()
        return node, (loader.construct_document(node) if node is not None else None)
    finally:
        loader.dispose()


def parse_file(path: Path, layer: str) -> list[Entry]:
    """Parse and schema-check one registry file (safe loader only)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise RegistryError(f"cannot read registry file {path}: {exc.strerror or exc}") from exc
    try:
        try:  # one pass, with libyaml's safe loader when present (start-up cost with many plugin fragments)
            node, data = _safe_load(text, getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        except yaml.YAMLError:  # the pure-Python loader gives the same line and a clearer message
            node, data = _safe_load(text, yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise RegistryError(f"{where}: invalid YAML ({getattr(exc, 'problem', None) or exc}); fix the syntax") from exc
    if data is None:
        return []
    lines: dict[tuple[Any, ...], int] = {}
    _line_map(node, (), lines, Path(path))

    def fail(key_path: tuple[Any, ...], message: str) -> RegistryError:
        line = lines.get(key_path) or lines.get(key_path[:-1]) or 1
        return RegistryError(f"{path}:{line}: {'.'.join(map(str, key_path))}: {message}")

    if not isinstance(data, dict):
        raise RegistryError(f"{path}:1: a registry file is a mapping with 'components' and/or 'pipelines'")
    for key in data:
        if key not in ("version", "components", "pipelines"):
            raise fail((key,), f"unknown section{_suggest(str(key), ['components', 'pipelines', 'version'])}")
    entries = []
    for section, keys, required in (
        ("components", COMPONENT_KEYS, REQUIRED_COMPONENT_KEYS),
        ("pipelines", PIPELINE_KEYS, REQUIRED_PIPELINE_KEYS),
    ):
        block = data.get(section) or {}
        if not isinstance(block, dict):
            raise fail((section,), "must be a mapping of name -> entry")
        for name, body in block.items():
            if not isinstance(body, dict):
                raise fail((section, name), "an entry must be a mapping")
            for key, value in body.items():
                if key not in keys:
                    raise fail((section, name, key), f"unknown key{_suggest(str(key), keys)}")
                if not isinstance(value, keys[key]):
                    raise fail((section, name, key), f"must be a {keys[key].__name__}, not {type(value).__name__}")
            for key in required:
                if key not in body:
                    raise fail((section, name), f"missing required key {key!r}")
            if "weights" in body:
                weights = body["weights"]
                for key in weights:
                    if key not in WEIGHT_KEYS:
                        raise fail((section, name, "weights", key), f"unknown key{_suggest(str(key), WEIGHT_KEYS)}")
                if "path" not in weights and not ("hub" in weights and "revision" in weights):
                    raise fail((section, name, "weights"), "needs path, or hub and revision (pinned)")
                if "sha256" not in weights:
                    raise fail((section, name, "weights"), "needs sha256 of the file")
            if "latent_space" in body:
                try:
                    LatentSpace.from_dict(body["latent_space"])
                except Exception as exc:
                    raise fail((section, name, "latent_space"), str(exc)) from exc
            if any(e.name == str(name) for e in entries):
                raise fail((section, name), "this name is already used in this file; components and pipelines share one namespace")
            entries.append(Entry(str(name), section, body, Path(path).resolve(), lines.get((section, name), 1), layer))
    return entries


def user_registry_path() -> Path:
    env = os.environ.get(ENV_USER)
    if env:
        return Path(env)
    base = os.environ.get("XDG_CONFIG_HOME") or (Path.home() / ".config")
    return Path(base) / "latentzoo" / "registry.yaml"


@dataclass
class Registry:
    """All layers merged; ``entries`` maps a name to the winning entry."""

    entries: dict[str, Entry] = field(default_factory=dict)
    shadowed: list[tuple[Entry, Entry]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, extra: list[str | Path] | tuple[str | Path, ...] = ()) -> Registry:
        reg = cls()
        reg._add(BUILTIN, "builtin")
        for plugin, fragment in get_manager().registry_fragments():
            try:
                reg._add(fragment, f"plugin:{plugin}")
            except RegistryError as exc:  # a plugin's bad fragment must not break the rest
                reg.errors.append(f"plugin {plugin}: {exc}")
        user = user_registry_path()
        if user.is_file() or os.environ.get(ENV_USER):
            reg._add(user, "user")
        for path in extra:
            reg._add(Path(path), "cli")
        return reg

    def _add(self, path: Path, layer: str) -> None:
        for entry in parse_file(path, layer):
            if entry.name in self.entries:
                self.shadowed.append((self.entries[entry.name], entry))
            self.entries[entry.name] = entry

    def get(self, name: str, role: str | None = None) -> Entry:
        entry = self.entries.get(name)
        if entry is None:
            names = list(self.entries)
            raise RegistryError(f"no component or pipeline named {name!r}{_suggest(name, names)} (see `latentzoo list`)")
        if role and role not in entry.roles:
            raise RegistryError(f"{name} is a {'/'.join(entry.roles)}, not a {role}; see `latentzoo list --role {role}`")
        return entry

    def list(self, role: str | None = None, family: str | None = None) -> list[Entry]:
        out = []
        for entry in self.entries.values():
            if role and role not in entry.roles:
                continue
            if family and entry.data.get("family") != family:
                continue
            out.append(entry)
        return sorted(out, key=lambda e: (e.section, e.name))

    def declaration(self, entry: Entry) -> dict[str, Any]:
        """The plugin-declared class an entry instantiates."""
        components = get_manager().components()
        cls_name = entry.data.get("class", "")
        if cls_name not in components:
            raise RegistryError(
                f"{entry.where}: {entry.name} uses class {cls_name!r}, which no loaded plugin declares"
                f"{_suggest(cls_name, components)} (see `latentzoo plugins`)"
            )
        return components[cls_name]


def import_target(target: str) -> Any:
    """Import ``module:attr`` (model code is imported only here, when something is built)."""
    module_name, _, attr = target.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise RegistryError(f"cannot import {target}: {exc}; is the plugin that provides it installed?") from exc
    return obj
