"""``latentzoo install`` / ``uninstall``: pip in latentzoo's own environment.

Nothing here loads plugins (so a broken plugin can always be removed) or imports torch.
What a newly installed distribution registers is read from a fresh ``latentzoo plugins
--json`` process, because this process's view of entry points predates the install.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from ..core.contract.errors import LatentzooError


def normalize(name: str) -> str:
    """PEP 503 form of a distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def snapshot() -> dict[str, tuple[str, float]]:
    """Installed distributions: normalized name -> (version, mtime of its metadata)."""
    importlib.invalidate_caches()
    found: dict[str, tuple[str, float]] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"] if dist.metadata else None
        if not name or normalize(name) in found:  # the first on sys.path is the one Python imports
            continue
        path = getattr(dist, "_path", None)  # PathDistribution: the .dist-info / .egg-info folder
        try:
            mtime = Path(path).stat().st_mtime if path else 0.0
        except OSError:
            mtime = 0.0
        found[normalize(name)] = (dist.version, mtime)
    return found


def changed(before: dict[str, tuple[str, float]], after: dict[str, tuple[str, float]]) -> set[str]:
    """Distributions that are new, or were re-installed, between two snapshots."""
    return {name for name, state in after.items() if before.get(name) != state}


def pip(args: list[str]) -> int:
    """Run ``python -m pip ARGS`` with this interpreter; pip's own output goes to the terminal."""
    if importlib.util.find_spec("pip") is None:
        raise LatentzooError(f"pip is not available to {sys.executable}; add it with `{sys.executable} -m ensurepip`")
    try:
        return subprocess.call([sys.executable, "-m", "pip", *args])
    except OSError as exc:
        raise LatentzooError(f"cannot run pip with {sys.executable}: {exc.strerror or exc}") from exc


def installed_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def plugin_report() -> list[dict[str, Any]]:
    """``latentzoo plugins --json`` from a fresh process (entry points changed since this one started)."""
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    proc = subprocess.run([sys.executable, "-m", "latentzoo", "plugins", "--json"], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        message = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise LatentzooError(
            f"installed, but `latentzoo plugins` then failed (exit status {proc.returncode}: {message}); "
            "a plugin that kills the process on import can be removed with `latentzoo uninstall`"
        )
    return json.loads(proc.stdout)
