"""The layered registry of named, trained components and ready pipelines.

Layers, later wins: the built-in ``registry.yaml`` -> fragments from plugins -> the user's
file (``$LATENTZOO_REGISTRY`` or ``<config dir>/latentzoo/registry.yaml``) -> files given
with ``--registry``. Files are parsed with YAML's safe loader only. Schema errors name the
file, the line and the key. Nothing here imports torch.
"""

from __future__ import annotations

import difflib
import importlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .conditioning import ConditioningSpace
from .distilled import DistilledFor
from .errors import LatentzooError, RegistryError
from .interfaces import ROLES
from .latent import LatentSpace
from .options import check_steps
from .plugins import get_manager
from .yamlsafe import line_map, load_text, read_text

BUILTIN = Path(__file__).resolve().parents[2] / "registry.yaml"
ENV_USER = "LATENTZOO_REGISTRY"

COMPONENT_KEYS = {
    "family": str,
    "class": str,
    "roles": list,
    "config": dict,
    "weights": dict,
    "latent_space": dict,
    "conditioning_space": dict,
    "conditioning": dict,
    "license": str,
    "description": str,
    "metrics": dict,
    "training": dict,
    "distilled_for": dict,  # a distilled prior or adapter: the sampling it was trained for (core.contract.distilled)
    "aliases": list,
}
REQUIRED_COMPONENT_KEYS = ("class", "roles")
PIPELINE_KEYS = {
    "encoder": str,
    "prior": str,
    "decoder": str,
    "sampler": str,
    "scheduler": str,
    "conditioner": str,
    "scorer": str,
    "defaults": dict,
    "description": str,
    "license": str,
    "allow_mismatch": bool,
    "aliases": list,
}
REQUIRED_PIPELINE_KEYS = ("prior", "decoder", "sampler")
WEIGHT_KEYS = {"path", "sha256", "hub", "revision", "file"}
SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")  # as `convert --name` / `pull --name` take


@dataclass
class Entry:
    """One named component or pipeline, with where it was defined."""

    name: str
    section: str  # "components" | "pipelines"
    data: dict[str, Any]
    source: Path
    line: int
    layer: str
    shadows: str | None = None  # "<layer> <file>:<line>" of the entry this one replaces

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

    @property
    def conditioning_space(self) -> ConditioningSpace | None:
        """What a conditioner produces."""
        raw = self.data.get("conditioning_space")
        return ConditioningSpace.from_dict(raw, f"{self.name} conditioning_space") if raw else None

    @property
    def conditioning(self) -> ConditioningSpace | None:
        """What a prior accepts (None: unconditional)."""
        raw = self.data.get("conditioning")
        return ConditioningSpace.from_dict(raw, f"{self.name} conditioning") if raw else None

    def weights_path(self) -> Path | None:
        weights = self.data.get("weights") or {}
        if "path" not in weights:
            return None
        path = self.source.parent / weights["path"]
        try:
            return path.resolve()
        except (OSError, RuntimeError):  # a symlink loop: the path as written (loading it then names the file)
            return Path(os.path.abspath(path))

    def summary(self) -> dict[str, Any]:
        out = {"name": self.name, "roles": self.roles, "source": self.where, "layer": self.layer}
        if self.shadows:
            out["shadows"] = self.shadows
        out.update({k: v for k, v in self.data.items()})
        return out


def _suggest(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(word, list(choices), n=3, cutoff=0.5)
    return f"; did you mean {', '.join(close)}?" if close else ""


def _check_defaults(defaults: dict[str, Any], fail: Any) -> None:
    """A pipeline's defaults are sampling options: plain finite scalars; ``steps`` a positive integer."""
    import math

    for key, value in defaults.items():
        if not isinstance(key, str):
            raise fail(key, f"option names are strings, not {type(key).__name__}")
        if value is not None and not isinstance(value, (str, int, float, bool)):
            raise fail(key, f"must be a number, string or boolean, not a {type(value).__name__}")
        if isinstance(value, float) and not math.isfinite(value):
            raise fail(key, f"must be a finite number, not {value}")
    steps = defaults.get("steps")
    try:
        check_steps(steps, where="defaults")  # the one steps rule (core.contract.options)
    except LatentzooError:
        raise fail("steps", f"must be a positive integer number of sampling steps, not {steps!r}") from None


# Large registry files (thousands of entries) cost seconds to compose as YAML nodes; once one
# has parsed and passed the schema, its entries are kept as JSON keyed by the sha256 of its
# bytes, so `list` on 20k entries reads JSON instead (never a pickle; any change re-parses).
CACHE_MIN_BYTES = 256 * 1024
CACHE_VERSION = 3  # 2: names and roles checked at load; 3: weights values


def _cache_file(text: str) -> Path | None:
    import hashlib

    if len(text) < CACHE_MIN_BYTES or os.environ.get("LATENTZOO_NO_CACHE"):
        return None
    base = os.environ.get("XDG_CACHE_HOME") or (Path.home() / ".cache")
    digest = hashlib.sha256(f"{CACHE_VERSION}\0{_version()}\0".encode() + text.encode("utf-8")).hexdigest()
    return Path(base) / "latentzoo" / "registry" / f"{digest}.json"


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("latentzoo")
    except metadata.PackageNotFoundError:
        return "unknown"


def _from_cache(cache: Path | None, source: Path, layer: str) -> list[Entry] | None:
    if cache is None or not cache.is_file():
        return None
    try:
        rows = json.loads(cache.read_text(encoding="utf-8"))
        return [Entry(name, section, data, source, line, layer) for name, section, data, line in rows]
    except (OSError, ValueError, TypeError):
        return None  # unreadable or foreign: parse the YAML


def _to_cache(cache: Path | None, entries: list[Entry]) -> None:
    if cache is None:
        return
    rows = [[e.name, e.section, e.data, e.line] for e in entries]
    try:
        text = json.dumps(rows)
        if json.loads(text) != rows:  # only data JSON keeps exactly (no dates, sets, int keys, NaN)
            return
        from .weights import write_bytes

        write_bytes(cache, text.encode("utf-8"))
    except (TypeError, ValueError, OSError, LatentzooError):
        pass  # a cache is an optimisation: never an error


def parse_file(path: Path, layer: str) -> list[Entry]:
    """Parse and schema-check one registry file (safe loader only)."""
    path = Path(path)
    text = read_text(path)
    cache = _cache_file(text)
    cached = _from_cache(cache, path.resolve(), layer)
    if cached is not None:
        return cached
    entries = _parse(text, path, layer)
    _to_cache(cache, entries)
    return entries


def _parse(text: str, path: Path, layer: str) -> list[Entry]:
    node, data = load_text(text, path)
    if data is None:
        return []
    lines: dict[tuple[Any, ...], int] = {}
    line_map(node, lines)

    def fail(key_path: tuple[Any, ...], message: str) -> RegistryError:
        line = lines.get(key_path) or lines.get(tuple(map(str, key_path))) or lines.get(key_path[:-1]) or 1  # a key 123 maps as '123'
        return RegistryError(f"{path}:{line}: {'.'.join(map(str, key_path))}: {message}")

    if not isinstance(data, dict):
        raise RegistryError(f"{path}:1: a registry file is a mapping with 'components' and/or 'pipelines'")
    for key in data:
        if key not in ("version", "components", "pipelines"):
            raise fail((key,), f"unknown section{_suggest(str(key), ['components', 'pipelines', 'version'])}")
    entries = []
    source = Path(path).resolve()
    names: set[str] = set()  # a set: the check stays linear in the number of entries
    for section, keys, required in (
        ("components", COMPONENT_KEYS, REQUIRED_COMPONENT_KEYS),
        ("pipelines", PIPELINE_KEYS, REQUIRED_PIPELINE_KEYS),
    ):
        block = data.get(section) or {}
        if not isinstance(block, dict):
            raise fail((section,), "must be a mapping of name -> entry")
        for name, body in block.items():
            if not isinstance(name, str) or not NAME_PATTERN.match(name):
                raise fail(
                    (section, name),
                    f"{name!r} is not a usable name; use letters, digits, '.', '_', '+', '-', starting with a letter or digit",
                )
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
            if section == "components":
                roles = body["roles"]
                unknown = [r for r in roles if r not in ROLES]
                if not roles or unknown:
                    raise fail(
                        (section, name, "roles"),
                        f"{'unknown role ' + repr(unknown[0]) if unknown else 'no role given'}; roles are {', '.join(ROLES)}",
                    )
            if "distilled_for" in body:
                try:
                    DistilledFor.parse(body["distilled_for"])
                except (TypeError, ValueError) as exc:
                    raise fail((section, name, "distilled_for"), str(exc)) from None
            if "weights" in body:
                weights = body["weights"]
                for key in weights:
                    if key not in WEIGHT_KEYS:
                        raise fail((section, name, "weights", key), f"unknown key{_suggest(str(key), WEIGHT_KEYS)}")
                if "path" not in weights and not ("hub" in weights and "revision" in weights):
                    raise fail((section, name, "weights"), "needs path, or hub and revision (pinned)")
                if "sha256" not in weights:
                    raise fail((section, name, "weights"), "needs sha256 of the file")
                for key in ("path", "hub", "revision", "file"):  # an empty revision: `pull` names the fix (re-push, pinned)
                    if key in weights and (not isinstance(weights[key], str) or (not weights[key] and key != "revision")):
                        raise fail((section, name, "weights", key), f"must be a non-empty string, not {weights[key]!r}")
                if not isinstance(weights["sha256"], str) or not SHA256_PATTERN.match(weights["sha256"]):
                    raise fail((section, name, "weights", "sha256"), f"must be 64 hex digits (a sha256), not {weights['sha256']!r}")
            for i, alias in enumerate(body.get("aliases") or []):
                if not isinstance(alias, str) or not alias or alias == str(name):
                    raise fail((section, name, "aliases", i), "an alias is a non-empty name other than the entry's own")
            if "latent_space" in body:
                try:
                    LatentSpace.from_dict(body["latent_space"])
                except Exception as exc:
                    raise fail((section, name, "latent_space"), str(exc)) from exc
            for key in ("conditioning_space", "conditioning"):
                if key in body:
                    try:
                        ConditioningSpace.from_dict(body[key], key)
                    except Exception as exc:
                        raise fail((section, name, key), str(exc)) from exc
            if section == "pipelines" and "defaults" in body:
                _check_defaults(body["defaults"], lambda key, message, n=name: fail(("pipelines", n, "defaults", key), message))
            if str(name) in names:
                raise fail((section, name), "this name is already used in this file; components and pipelines share one namespace")
            names.add(str(name))
            entries.append(Entry(str(name), section, body, source, lines.get((section, name), 1), layer))
    return entries


def _layer_rank(entry: Entry) -> int:
    """Layer order, later wins: builtin < plugin < user < cli."""
    return {"builtin": 0, "user": 2, "cli": 3}.get(entry.layer, 1)


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
    aliases: dict[str, str] = field(default_factory=dict)  # alias -> entry name (an entry's optional `aliases: [..]`)
    shadowed: list[tuple[Entry, Entry]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, extra: list[str | Path] | tuple[str | Path, ...] = (), *, user: Path | None = None) -> Registry:
        """All layers; ``user`` replaces the user file's path (the file a writer is about to change)."""
        reg = cls()
        reg._add(BUILTIN, "builtin")
        for plugin, fragment in get_manager().registry_fragments():
            try:
                reg._add(fragment, f"plugin:{plugin}")
            except RegistryError as exc:  # a plugin's bad fragment must not break the rest
                reg.errors.append(f"plugin {plugin}: {exc}")
        user = Path(user) if user is not None else user_registry_path()
        if user.exists():  # a user registry that does not exist yet is an empty layer (created on first write)
            reg._add(user, "user")
        for path in extra:
            reg._add(Path(path), "cli")
        reg._index_aliases()
        return reg

    def _index_aliases(self) -> None:
        """Map every alias of a winning entry to it. An alias equal to another name or alias is a
        conflict naming both: the entry from the later layer is at fault (in one layer, the one
        carrying the alias). A user or plugin entry at fault is skipped with a warning (in
        ``errors``), so one bad entry never takes every command down; one in a ``--registry``
        file (named on this command line) or the built-in file is an error."""
        while True:
            conflict = self._alias_conflict()
            if conflict is None:
                return
            culprit, message = conflict
            if culprit.layer in ("cli", "builtin"):
                raise RegistryError(f"{culprit.where}: {message}; rename one of them")
            fix = f"rename it or run `latentzoo registry remove {culprit.name}`" if culprit.layer == "user" else "rename one of them"
            self.errors.append(f"{culprit.where}: skipping {culprit.name}: {message}; {fix}")
            self._drop(culprit)

    def _alias_conflict(self) -> tuple[Entry, str] | None:
        """The first (entry at fault, message) among the winning entries' aliases, or None."""
        self.aliases = {}
        for entry in self.entries.values():
            for alias in entry.data.get("aliases") or []:
                if alias in self.entries:
                    other = self.entries[alias]
                    if _layer_rank(other) > _layer_rank(entry):
                        return other, f"the name {other.name} is an alias of {entry.name} ({entry.where})"
                    return entry, f"alias {alias!r} of {entry.name} collides with the entry {alias} ({other.where})"
                if alias in self.aliases and self.aliases[alias] != entry.name:
                    other = self.entries[self.aliases[alias]]
                    culprit, first = (other, entry) if _layer_rank(other) > _layer_rank(entry) else (entry, other)
                    return culprit, f"alias {alias!r} of {culprit.name} is also an alias of {first.name} ({first.where})"
                self.aliases[alias] = entry.name
        return None

    def _drop(self, entry: Entry) -> None:
        """Take a skipped entry out; the entry it shadowed (if any) wins again."""
        del self.entries[entry.name]
        for i, (old, new) in enumerate(self.shadowed):
            if new is entry:
                del self.shadowed[i]
                self.entries[entry.name] = old
                break

    def conflicts(self, new: dict[str, dict[str, Any]], *, force: bool = False) -> list[str]:
        """Why entries ``new`` (name -> body) cannot join this registry as they are, checked both
        ways against every layer: a new name that is an existing alias, a new alias that is an
        existing name or alias (or another new one), and, unless ``force`` (shadowing), a new
        name the registry has. Empty when they fit."""
        out = []
        for name, body in new.items():
            if name in self.aliases and self.aliases[name] != name:
                owner = self.entries[self.aliases[name]]
                out.append(f"{name} is an alias of {owner.name} ({owner.layer} {owner.where})")
            elif name in self.entries and not force and self.entries[name].data != body:
                out.append(f"{name} ({self.entries[name].layer})")
            for alias in body.get("aliases") or []:
                if alias in new and alias != name:
                    out.append(f"alias {alias!r} of {name} is also a new entry's name")
                elif any(alias in (other.get("aliases") or []) for n, other in new.items() if n != name):
                    out.append(f"alias {alias!r} of {name} is also a new entry's alias")
                elif alias in self.entries and alias not in new:
                    other = self.entries[alias]
                    out.append(f"alias {alias!r} of {name} is the name of {other.layer} entry {alias} ({other.where})")
                elif alias in self.aliases and self.aliases[alias] != name:
                    other = self.entries[self.aliases[alias]]
                    out.append(f"alias {alias!r} of {name} is already an alias of {other.name} ({other.layer} {other.where})")
        return out

    def canonical(self, name: str) -> str:
        """The entry name that ``name`` (a name or an alias) refers to."""
        return name if name in self.entries else self.aliases.get(name, name)

    def _add(self, path: Path, layer: str) -> None:
        for entry in parse_file(path, layer):
            old = self.entries.get(entry.name)
            if old is not None:
                self.shadowed.append((old, entry))
                entry.shadows = old.shadows or f"{old.layer} {old.source.name}:{old.line}"
            self.entries[entry.name] = entry

    def shadow_warnings(self, names: Any = None) -> list[str]:
        """One line per name that a later layer (plugin, user, --registry) rebinds, e.g. a built-in."""
        out = []
        for entry in self.entries.values():
            if entry.shadows and (names is None or entry.name in names):
                out.append(f"{entry.name} from {entry.layer} {entry.where} shadows {entry.shadows}")
        return out

    def get(self, name: str, role: str | None = None) -> Entry:
        entry = self.entries.get(self.canonical(name))
        if entry is None:
            names = [*self.entries, *self.aliases]
            raise RegistryError(f"no component or pipeline named {name!r}{_suggest(name, names)} (see `latentzoo list`)")
        if role and role not in entry.roles:
            article = "an" if role[0] in "aeiou" else "a"
            raise RegistryError(f"{name} is a {'/'.join(entry.roles)}, not {article} {role}; see `latentzoo list --role {role}`")
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
