"""Loading plugins from the ``latentzoo`` entry-point group, each in isolation.

Built-in families are found exactly like third-party ones (latentzoo's own distribution
declares them as entry points). A plugin that fails to import, targets another plugin
API, or raises in a hook is recorded as broken and skipped; every other plugin and every
command keeps working. Nothing here imports torch.

``LATENTZOO_PLUGINS`` (comma-separated entry-point or distribution names) selects which
third-party plugins load; set but empty means built-ins only.

Plugin code (its import and every hook call) runs under a guard: stdout is redirected to
stderr (a ``print`` never corrupts ``list --json``), any exception (``SystemExit`` and a
``KeyboardInterrupt`` raised by the plugin included) marks the plugin broken with a message
naming it, while a real Ctrl-C (SIGINT received during the call) still interrupts. A hook
returning the wrong type marks its plugin broken too, and a broken plugin's registry
fragment is not loaded. What a guard cannot catch in-process, a plugin calling ``os._exit``
or hanging at import, ``latentzoo plugins --check`` finds by probing each third-party plugin
in a subprocess with a time budget (``probe_plugins``); ``LATENTZOO_PLUGINS`` then leaves it out.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import pluggy

from . import hookspecs
from .errors import LatentzooError
from .interfaces import ROLES
from .options import parse_options

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
    kinds: list[str] = field(default_factory=list)  # prior kinds it declares (latentzoo_kinds)
    api: int | None = None
    warning: str | None = None  # works, but something is wrong (e.g. imports torch at import time)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


class _Interrupted(Exception):
    """Internal: a real Ctrl-C arrived while plugin code ran."""


class PluginExit(SystemExit):
    """Plugin code called ``os._exit(status)`` inside a guard: unwound instead of ending the process."""


_GUARDS = 0  # guards active (plugin code running); os._exit is contained while > 0
_REAL_EXIT = os._exit


def _contained_exit(status: int) -> None:
    if _GUARDS > 0 and threading.current_thread() is threading.main_thread():
        raise PluginExit(status)
    _REAL_EXIT(status)


@contextlib.contextmanager
def _contain_os_exit() -> Iterator[None]:
    """While plugin code runs, ``os._exit`` (and ``posix._exit``, the same function) raises
    PluginExit, which the guard reports like SystemExit, instead of killing the command.

    Chosen over running plugins in a subprocess (which would cost every command a process
    start): it contains the Python-level call, at import or in a hook, including a plugin that
    did ``from os import _exit`` inside the guard (outside a guard the replacement exits as
    the real one does). Not contained: C code calling exit(), or a plugin killing its own
    process with a signal; ``latentzoo plugins --check`` (subprocess probes) finds those.
    """
    global _GUARDS
    import posix

    if _GUARDS == 0:
        os._exit = posix._exit = _contained_exit
    _GUARDS += 1
    try:
        yield
    finally:
        _GUARDS -= 1
        if _GUARDS == 0:
            os._exit = posix._exit = _REAL_EXIT


@contextlib.contextmanager
def _guard() -> Iterator[dict[str, bool]]:
    """Run plugin code with stdout sent to stderr, noting whether a real SIGINT arrives.

    A KeyboardInterrupt that a plugin raises itself (at import or in a hook) is a broken
    plugin; one that comes from the terminal must still interrupt the command. The SIGINT
    handler installed here records the signal before raising, which tells the two apart.
    """
    seen = {"sigint": False}
    previous = None
    if threading.current_thread() is threading.main_thread():
        try:

            def on_sigint(signum: int, frame: Any) -> None:
                seen["sigint"] = True
                raise KeyboardInterrupt

            previous = signal.signal(signal.SIGINT, on_sigint)
        except (ValueError, OSError):  # not in the main interpreter / signals unavailable
            previous = None
    try:
        with contextlib.redirect_stdout(sys.stderr), _contain_os_exit():
            yield seen
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _plugin_failure(exc: BaseException, seen: dict[str, bool]) -> str:
    """The one-line description of what plugin code raised; re-raise a real Ctrl-C."""
    if isinstance(exc, KeyboardInterrupt) and seen["sigint"]:
        raise exc
    if isinstance(exc, PluginExit):
        return f"called os._exit({exc.code}), which would have ended every command"
    if isinstance(exc, _ImportBudget):
        return str(exc)
    if isinstance(exc, SystemExit):
        return f"SystemExit: {exc.code}" if exc.code is not None else "SystemExit"
    return _one_line(exc)


# What each hook must return (None is always accepted as "nothing").
_RETURNS = {
    "latentzoo_components": "a list of declaration dicts",
    "latentzoo_registry": "a list of paths",
    "latentzoo_datasets": "a list of declaration dicts",
    "latentzoo_kinds": "a list of declaration dicts",
}


def _check_return(hook: str, value: Any) -> str | None:
    if hook not in _RETURNS or value is None:
        return None
    if not isinstance(value, (list, tuple)):
        return f"hook {hook} returned {type(value).__name__} {str(value)[:40]}, not {_RETURNS[hook]}"
    if hook == "latentzoo_registry":
        bad = [p for p in value if not isinstance(p, (str, os.PathLike))]
    else:
        bad = [d for d in value if not isinstance(d, dict)]
    if bad:
        return f"hook {hook} returned a list holding {type(bad[0]).__name__} {str(bad[0])[:40]}, not {_RETURNS[hook]}"
    return None


ENV_IMPORT_WARN = "LATENTZOO_PLUGIN_IMPORT_WARN"


def _import_warn_seconds() -> float:
    """Seconds a plugin may import before a warning names it (``LATENTZOO_PLUGIN_IMPORT_WARN``, default 30)."""
    try:
        return max(0.1, float(os.environ.get(ENV_IMPORT_WARN, "30")))
    except ValueError:
        return 30.0


def _warn_slow_import(name: str, seconds: float) -> None:
    """A plugin still importing after some seconds: say which, and how to leave it out."""
    print(
        f"warning: plugin {name} has been importing for {seconds:g} s; if it hangs, find it with "
        f"`latentzoo plugins --check` and leave it out with {ENV_ALLOW}=<the other plugins> (or uninstall it)",
        file=sys.__stderr__,
        flush=True,
    )


ENV_IMPORT_BUDGET = "LATENTZOO_PLUGIN_IMPORT_BUDGET"


def _import_budget_seconds() -> float:
    """Seconds a plugin's import may take before it is stopped and skipped (``LATENTZOO_PLUGIN_IMPORT_BUDGET``,
    default 10; 0 turns the budget off)."""
    try:
        return max(0.0, float(os.environ.get(ENV_IMPORT_BUDGET, "10")))
    except ValueError:
        return 10.0


class _ImportBudget(Exception):
    """Internal: a plugin's import ran past its time budget (raised in it by SIGALRM)."""


@contextlib.contextmanager
def _import_budget(name: str) -> Iterator[None]:
    """Stop an import that runs past the budget: SIGALRM raises _ImportBudget inside it.

    A signal reaches Python code between bytecodes (and interrupts sleeps), so a slow or
    looping import is stopped; one blocked inside C code is not (the slow-import warning and
    ``plugins --check`` cover it). Main thread only, and only where no other alarm is set.
    """
    budget = _import_budget_seconds()
    usable = budget > 0 and hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if usable and signal.getitimer(signal.ITIMER_REAL)[0] > 0:
        usable = False  # someone else's alarm is pending: leave it alone

    def on_alarm(signum: int, frame: Any) -> None:
        raise _ImportBudget(
            f"import took longer than {budget:g} s ({ENV_IMPORT_BUDGET}); skipped: find out why with `latentzoo plugins --check`"
        )

    if not usable:
        yield
        return
    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, budget)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


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
        self._kinds: dict[str, dict[str, Any]] | None = None
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
            had_torch = "torch" in sys.modules
            warn_after = _import_warn_seconds()
            slow = threading.Timer(warn_after, _warn_slow_import, args=(ep.name, warn_after))
            slow.daemon = True
            slow.start()
            with _guard() as sigint:
                try:
                    # a budget for third-party imports only: a built-in is never skipped on a loaded machine
                    with contextlib.nullcontext() if info.builtin else _import_budget(ep.name):
                        module = ep.load()
                except BaseException as exc:
                    info.status, info.error = "broken", f"import failed: {_plugin_failure(exc, sigint)}"
                    if isinstance(exc, _ImportBudget):
                        print(f"warning: plugin {ep.name}: {exc}", file=sys.__stderr__, flush=True)
                    continue
                finally:
                    slow.cancel()
            if not had_torch and "torch" in sys.modules and not info.builtin:
                info.warning = "imports torch at import time: slows every command; import it inside the model code"
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
            with _guard() as seen:
                try:
                    value = impl.function(**kwargs)
                except BaseException as exc:
                    info.status, info.error = "broken", f"hook {hook} raised {_plugin_failure(exc, seen)}"
                    if os.environ.get("LATENTZOO_DEBUG"):
                        traceback.print_exc()
                    continue
            problem = _check_return(hook, value)
            if problem:
                info.status, info.error = "broken", problem
                continue
            results.append((info, value))
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
                except (LatentzooError, TypeError, KeyError, AttributeError) as exc:
                    info.status, info.error = "broken", f"bad component declaration: {exc}"
            self._components = found
        return self._components

    def datasets(self) -> dict[str, dict[str, Any]]:
        if self._datasets is None:
            found: dict[str, dict[str, Any]] = {}
            for info, decls in self.call("latentzoo_datasets"):
                for decl in decls or []:
                    if "name" not in decl or "target" not in decl or not isinstance(decl["name"], str):
                        info.status, info.error = "broken", "bad dataset declaration: needs name and target"
                        break
                    found.setdefault(decl["name"], {**decl, "plugin": info.name})
                    info.datasets.append(decl["name"])
            self._datasets = found
        return self._datasets

    def kinds(self) -> dict[str, dict[str, Any]]:
        """Prior kinds by name: {name, description, convention, check, plugin}; a kind declared twice marks the later plugin broken."""
        if self._kinds is None:
            found: dict[str, dict[str, Any]] = {}
            for info, decls in self.call("latentzoo_kinds"):
                try:
                    for decl in decls or []:
                        decl = _check_kind(decl)
                        if decl["name"] in found:
                            raise LatentzooError(f"kind {decl['name']!r} is already declared by plugin {found[decl['name']]['plugin']}")
                        found[decl["name"]] = {**decl, "plugin": info.name}
                        info.kinds.append(decl["name"])
                except LatentzooError as exc:
                    info.status, info.error = "broken", f"bad kind declaration: {exc}"
            self._kinds = found
        return self._kinds

    def registry_fragments(self) -> list[tuple[str, Path]]:
        """Registry fragments of plugins in good standing: a plugin whose other hooks raised
        (or returned garbage) is broken, and its fragment is not loaded."""
        self.components()
        self.datasets()
        found = self.call("latentzoo_registry")
        return [(info.name, Path(p)) for info, paths in found if info.status == "ok" for p in paths or []]

    def add_commands(self, cli: Any) -> None:
        self.call("latentzoo_commands", cli=cli)

    def report(self) -> list[PluginInfo]:
        self.components()
        self.datasets()
        self.kinds()
        self.registry_fragments()  # a raising latentzoo_registry hook is reported too
        return sorted(self.info.values(), key=lambda i: (not i.builtin, i.name))


PROBE = """
import json, sys
from importlib import metadata
name = sys.argv[1]
eps = [ep for ep in metadata.entry_points(group="latentzoo") if ep.name == name]
module = eps[0].load()
for hook in ("latentzoo_components", "latentzoo_datasets", "latentzoo_kinds", "latentzoo_registry"):
    function = getattr(module, hook, None)
    if callable(function):
        function()
print(json.dumps({"ok": True}))
"""


def probe_plugins(timeout: float = 20.0, names: list[str] | None = None) -> list[dict[str, Any]]:
    """Import each third-party plugin and call its declaration hooks in its own subprocess,
    all in parallel, within ``timeout`` seconds: what an in-process guard cannot survive (a
    plugin that calls ``os._exit`` or hangs at import) is found and named here.

    Returns one dict per plugin: name, distribution, status (ok | exits | hangs | fails),
    seconds and a one-line detail. Nothing is imported in this process.
    """
    allow = _allowed()
    probes: list[tuple[dict[str, Any], subprocess.Popen[str]]] = []
    seen: set[str] = set()
    for ep in metadata.entry_points(group=hookspecs.PROJECT):
        dist = ep.dist.metadata["Name"] if ep.dist else None
        if (dist or "").lower() == BUILTIN_DIST or ep.name in seen or (names and ep.name not in names):
            continue
        seen.add(ep.name)
        row: dict[str, Any] = {"name": ep.name, "distribution": dist, "module": ep.value}
        if allow is not None and ep.name not in allow and (dist or "") not in allow:
            row.update(status="disabled", seconds=0.0, detail=f"not in {ENV_ALLOW}")
            probes.append((row, None))  # type: ignore[arg-type]
            continue
        row["started"] = time.perf_counter()
        logs = (tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+"))  # files, not pipes: a chatty plugin cannot block
        proc = subprocess.Popen([sys.executable, "-c", PROBE, ep.name], stdout=logs[0], stderr=logs[1], stdin=subprocess.DEVNULL, text=True)
        row["logs"] = logs
        probes.append((row, proc))
    deadline = time.perf_counter() + timeout
    running = [(row, proc) for row, proc in probes if proc is not None]
    while running and time.perf_counter() < deadline:
        time.sleep(0.05)
        for row, proc in running:
            if proc.poll() is not None:
                row["seconds"] = round(time.perf_counter() - row["started"], 2)
        running = [(row, proc) for row, proc in running if proc.returncode is None]
    out = []
    for row, proc in probes:
        if proc is None:
            out.append(row)
            continue
        if proc.poll() is None:
            proc.kill()
            proc.wait()
            row.update(status="hangs", detail=f"import or a declaration hook did not finish within {timeout:g} s")
            row["seconds"] = round(timeout, 2)
        else:
            stdout, stderr = (f.seek(0) or f.read() for f in row["logs"])
            last = (stderr.strip().splitlines() or [""])[-1]
            if proc.returncode == 0 and '"ok": true' in stdout:
                row.update(status="ok", detail="")
            elif proc.returncode == 0 or not last:
                row.update(status="exits", detail=f"the process exited (status {proc.returncode}) during import or a declaration hook")
            else:
                row.update(status="fails", detail=last[:200])
        for f in row.pop("logs"):
            f.close()
        row.pop("started")
        out.append(row)
    return sorted(out, key=lambda r: r["name"])


def _nonempty_str(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _check_component(decl: Any) -> dict[str, Any]:
    """Check the shape of one declaration (plain data); kinds and levels are open strings."""
    if not isinstance(decl, dict):
        raise LatentzooError(f"a component declaration must be a dict, not {type(decl).__name__}")
    missing = [k for k in ("name", "roles", "target") if k not in decl]
    if missing:
        raise LatentzooError(f"component declaration {decl.get('name', '?')!r} is missing {', '.join(missing)}")
    name = decl["name"]
    if not _nonempty_str(name):
        raise LatentzooError(f"a component name must be a non-empty string, not {name!r}")
    roles = decl["roles"]
    if not isinstance(roles, (list, tuple)):
        raise LatentzooError(f"component {name!r} roles must be a list, not {type(roles).__name__}")
    bad = [r for r in roles if r not in ROLES]
    if bad or not roles:
        raise LatentzooError(f"component {name!r} has unknown role(s) {bad}; roles are {', '.join(ROLES)}")
    if not isinstance(decl["target"], str) or ":" not in decl["target"]:
        raise LatentzooError(f"component {name!r} target must be 'module:Class', not {decl['target']!r}")
    if "prior" in roles:
        if not _nonempty_str(decl.get("kind")):
            raise LatentzooError(f"prior {name!r} must declare kind, a non-empty string (e.g. denoiser, autoregressive, flow)")
        if not isinstance(decl.get("scaled_latents", False), bool):
            raise LatentzooError(f"prior {name!r}: scaled_latents must be true or false")
    if "sampler" in roles:
        drives = decl.get("drives")
        if not isinstance(drives, (list, tuple)) or not drives or not all(_nonempty_str(k) for k in drives):
            raise LatentzooError(f"sampler {name!r} must declare drives, a non-empty list of the prior kinds it drives")
    if "sampler" in roles or "scheduler" in roles:
        levels = decl.get("levels")
        if levels is not None and not _nonempty_str(levels):
            raise LatentzooError(f"{'/'.join(roles)} {name!r}: levels must be a non-empty string (e.g. sigma, flow), not {levels!r}")
    out = dict(decl)
    if "sampler" in roles and "drives" in out:
        out["drives"] = list(out["drives"])
    parse_options(decl.get("options"), f"component {name!r}")  # raises OptionError (a LatentzooError)
    return out


def _check_kind(decl: Any) -> dict[str, Any]:
    """A kind declaration: a name, a convention (a dict of plain data) and, optionally, its conformance check "module:function"."""
    if not isinstance(decl, dict) or not _nonempty_str(decl.get("name")):
        raise LatentzooError(f"a kind declaration must be a dict with a non-empty name, not {str(decl)[:40]}")
    name = decl["name"]
    if not isinstance(decl.get("convention"), dict):
        raise LatentzooError(f"kind {name!r} must declare its convention, a dict (e.g. {{noise_at: 1, velocity: eps - x0}})")
    check = decl.get("check")
    if check is not None and (not isinstance(check, str) or ":" not in check):
        raise LatentzooError(f"kind {name!r}: check must be 'module:function', not {check!r}")
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
