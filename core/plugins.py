"""Loading plugins from the ``latentzoo`` entry-point group, each in isolation.

Built-in families are found exactly like third-party ones (latentzoo's own distribution
declares them as entry points). A plugin that fails to import, targets another plugin
API, or raises in a hook is recorded as broken and skipped; every other plugin and every
command keeps working. Nothing here imports torch.

``LATENTZOO_PLUGINS`` (comma-separated entry-point or distribution names) selects which
third-party plugins load; set but empty means built-ins only.
"""

from __future__ import annotations

import difflib
import os
import traceback
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import pluggy

from . import hookspecs
from .errors import LatentzooError
from .interfaces import ROLES

BUILTIN_DIST = "latentzoo"
ENV_ALLOW = "LATENTZOO_PLUGINS"


@dataclass
class PluginInfo:
    """What ``latentzoo plugins`` shows for one plugin."""

    name: str
    module: str
    distribution: str | None
    version: str | None
    builtin: bool
    location: str | None = None
    status: str = "ok"  # ok | broken | incompatible | disabled
    error: str | None = None
    hooks: list[str] = field(default_factory=list)
    components: list[str] = field(default_factory=list)
    datasets: list[str] = field(default_factory=list)
    api: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


def _allowed() -> set[str] | None:
    value = os.environ.get(ENV_ALLOW)
    if value is None:
        return None
    return {part.strip() for part in value.split(",") if part.strip()}


class Plugins:
    """The plugin manager plus what each plugin declared."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.info: dict[str, PluginInfo] = {}
        self._components: dict[str, dict[str, Any]] | None = None
        self._datasets: dict[str, dict[str, Any]] | None = None
        self._load_entry_points()

    # -- loading -----------------------------------------------------------------------
    def _load_entry_points(self) -> None:
        allow = _allowed()
        seen: set[tuple[str, str]] = set()
        found = []
        for ep in metadata.entry_points(group=hookspecs.PROJECT):
            meta = ep.dist.metadata if ep.dist else None  # parsed once (dist.name / .version each re-parse it)
            found.append((ep, meta["Name"] if meta else None, meta["Version"] if meta else None))
        # Built-ins first (stable sort keeps sys.path order otherwise), so a third-party entry point or
        # component that reuses a built-in name is the one reported broken, never the built-in.
        found.sort(key=lambda item: (item[1] or "").lower() != BUILTIN_DIST)
        for ep, dist, version in found:
            if (ep.name, ep.value) in seen:  # the same distribution visible twice on sys.path
                continue
            seen.add((ep.name, ep.value))
            info = PluginInfo(
                name=ep.name,
                module=ep.value,
                distribution=dist,
                version=version,
                builtin=(dist or "").lower() == BUILTIN_DIST,
            )
            if ep.name in self.info:
                info.status, info.error = "broken", f"entry point name {ep.name!r} is already used by {self.info[ep.name].distribution}"
                self.info[f"{ep.name} ({dist})"] = info
                continue
            self.info[ep.name] = info
            if not info.builtin and allow is not None and ep.name not in allow and (dist or "") not in allow:
                info.status = "disabled"
                info.error = f"not in {ENV_ALLOW}"
                continue
            try:
                module = ep.load()
            except BaseException as exc:
                if isinstance(exc, KeyboardInterrupt):
                    raise
                info.status, info.error = "broken", f"import failed: {_one_line(exc)}"
                continue
            info.location = getattr(module, "__file__", None)
            api = getattr(module, "LATENTZOO_PLUGIN_API", hookspecs.PLUGIN_API)
            info.api = api
            if api != hookspecs.PLUGIN_API:
                info.status = "incompatible"
                info.error = f"targets plugin API {api}, this latentzoo provides {hookspecs.PLUGIN_API}; upgrade the plugin or latentzoo"
                continue
            try:
                self.pm.register(module, name=ep.name)
            except Exception as exc:
                info.status, info.error = "broken", f"registration failed: {_one_line(exc)}"
                continue
            info.hooks = sorted(caller.name for caller in self.pm.get_hookcallers(module) or [])
            unknown = [hook for hook in info.hooks if not getattr(self.pm.hook, hook).has_spec()]
            if unknown:  # a misspelt hook would otherwise never be called, silently
                self.pm.unregister(module)
                known = [name for name in dir(hookspecs) if name.startswith("latentzoo_")]
                hint = difflib.get_close_matches(unknown[0], known, n=1)
                info.status = "broken"
                info.error = f"unknown hook {unknown[0]}" + (f"; did you mean {hint[0]}?" if hint else f"; hooks are {', '.join(known)}")

    def call(self, hook: str, **kwargs: Any) -> list[tuple[PluginInfo, Any]]:
        """Call each implementation of ``hook`` on its own; a raising plugin is marked broken."""
        results = []
        for impl in getattr(self.pm.hook, hook).get_hookimpls():
            info = self.info[impl.plugin_name]
            if info.status != "ok":
                continue
            try:
                results.append((info, impl.function(**kwargs)))
            except Exception as exc:
                info.status, info.error = "broken", f"hook {hook} raised {_one_line(exc)}"
                if os.environ.get("LATENTZOO_DEBUG"):
                    traceback.print_exc()
        return results

    # -- declarations ------------------------------------------------------------------
    def components(self) -> dict[str, dict[str, Any]]:
        """Component classes by name: {name, roles, target, family, description, plugin, ...}."""
        if self._components is None:
            found: dict[str, dict[str, Any]] = {}
            for info, decls in self.call("latentzoo_components"):
                try:
                    for decl in decls or []:
                        decl = _check_component(decl)
                        if decl["name"] in found:
                            raise LatentzooError(
                                f"component {decl['name']!r} is already declared by plugin {found[decl['name']]['plugin']}"
                            )
                        found[decl["name"]] = {**decl, "plugin": info.name}
                        info.components.append(decl["name"])
                except (LatentzooError, TypeError, KeyError) as exc:
                    info.status, info.error = "broken", f"bad component declaration: {exc}"
            self._components = found
        return self._components

    def datasets(self) -> dict[str, dict[str, Any]]:
        if self._datasets is None:
            found: dict[str, dict[str, Any]] = {}
            for info, decls in self.call("latentzoo_datasets"):
                for decl in decls or []:
                    if not isinstance(decl, dict) or "name" not in decl or "target" not in decl:
                        info.status, info.error = "broken", "bad dataset declaration: needs name and target"
                        break
                    found.setdefault(decl["name"], {**decl, "plugin": info.name})
                    info.datasets.append(decl["name"])
            self._datasets = found
        return self._datasets

    def registry_fragments(self) -> list[tuple[str, Path]]:
        fragments = []
        for info, paths in self.call("latentzoo_registry"):
            fragments.extend((info.name, Path(p)) for p in paths or [])
        return fragments

    def add_commands(self, cli: Any) -> None:
        self.call("latentzoo_commands", cli=cli)

    def report(self) -> list[PluginInfo]:
        self.components()
        self.datasets()
        self.registry_fragments()  # a raising latentzoo_registry hook is reported too
        return sorted(self.info.values(), key=lambda i: (not i.builtin, i.name))


def _word(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _check_component(decl: Any) -> dict[str, Any]:
    if not isinstance(decl, dict):
        raise LatentzooError(f"a component declaration must be a dict, not {type(decl).__name__}")
    missing = [k for k in ("name", "roles", "target") if k not in decl]
    if missing:
        raise LatentzooError(f"component declaration {decl.get('name', '?')!r} is missing {', '.join(missing)}")
    roles = decl["roles"]
    bad = [r for r in roles if r not in ROLES]
    if bad or not roles:
        raise LatentzooError(f"component {decl['name']!r} has unknown role(s) {bad}; roles are {', '.join(ROLES)}")
    # Kinds and levels are open vocabulary: any non-empty string (the core keeps no list).
    if "prior" in roles and not _word(decl.get("kind")):
        raise LatentzooError(f"prior {decl['name']!r} must declare its kind, a non-empty string (e.g. denoiser, flow)")
    drives = decl.get("drives")
    if "sampler" in roles and (not isinstance(drives, (list, tuple)) or not drives or not all(_word(k) for k in drives)):
        raise LatentzooError(f"sampler {decl['name']!r} must declare the prior kinds it drives, a non-empty list of strings")
    if "levels" in decl and decl["levels"] is not None and not _word(decl["levels"]):
        raise LatentzooError(f"component {decl['name']!r}: levels must be a non-empty string (e.g. sigma, flow)")
    if ":" not in decl["target"]:
        raise LatentzooError(f"component {decl['name']!r} target must be 'module:Class', not {decl['target']!r}")
    return dict(decl)


_MANAGER: Plugins | None = None


def get_manager() -> Plugins:
    global _MANAGER
    if _MANAGER is None:
        _MANAGER = Plugins()
    return _MANAGER


def reset_manager() -> None:
    """Forget loaded plugins (tests, or after installing one in-process)."""
    global _MANAGER
    _MANAGER = None
