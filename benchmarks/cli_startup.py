"""CLI start-up cost: inspecting commands versus ``import torch``, and the cost of 30 installed plugins.

Usage::

    python benchmarks/cli_startup.py            # a table
    python benchmarks/cli_startup.py --json     # the same numbers as JSON
    python benchmarks/cli_startup.py --reps 11 --plugins 30
    python benchmarks/cli_startup.py --check    # exit 1 if a target is missed

Part 1 times ``latentzoo list``, ``info ddim``, ``plugins`` and ``--help`` against
``python -c "import torch"`` (median of --reps runs, commands interleaved so background
load hits all of them alike) and prints each ratio to the torch import (target <= 0.15).

Part 2 builds --plugins throwaway plugin distributions by hand (zipped wheels, each
declaring one component class and a one-entry registry fragment), installs them offline
with ``pip --no-index --target`` into a temporary directory, and times ``latentzoo list``
with that directory on PYTHONPATH versus without (target ratio <= 1.2).

Nothing touches the network. The user registry is pointed at an empty config dir.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

TORCH_TARGET = 0.15
PLUGINS_TARGET = 1.2


def latentzoo_command() -> list[str]:
    script = Path(sys.executable).parent / "latentzoo"
    return [str(script)] if script.exists() else [sys.executable, "-m", "latentzoo"]


def clean_env(config_home: Path, pythonpath: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LATENTZOO_") and k not in ("PYTHONPATH", "PYTHONHOME")}
    env["XDG_CONFIG_HOME"] = str(config_home)
    env["HF_HUB_OFFLINE"] = "1"
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return env


def run_once(cmd: list[str], env: dict[str, str], cwd: Path) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"benchmark command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr.strip()}")
    return elapsed


def time_interleaved(cases: dict[str, tuple[list[str], dict[str, str]]], reps: int, cwd: Path) -> dict[str, list[float]]:
    """Run every case once as a warm-up, then ``reps`` rounds of all cases in turn."""
    for cmd, env in cases.values():
        run_once(cmd, env, cwd)
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(reps):
        for name, (cmd, env) in cases.items():
            times[name].append(run_once(cmd, env, cwd))
    return times


# ---------------------------------------------------------------------------------------
# throwaway plugins


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def build_wheel(out_dir: Path, dist: str, version: str, files: dict[str, str], entry_point: tuple[str, str]) -> Path:
    """A minimal pure-Python wheel with one entry point in the ``latentzoo`` group."""
    stem = f"{dist.replace('-', '_')}-{version}"
    info = f"{stem}.dist-info"
    contents = {path: text.encode() for path, text in files.items()}
    contents[f"{info}/METADATA"] = f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n".encode()
    contents[f"{info}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: latentzoo-bench\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    contents[f"{info}/entry_points.txt"] = f"[latentzoo]\n{entry_point[0]} = {entry_point[1]}\n".encode()
    record = [f"{path},{_record_hash(data)},{len(data)}" for path, data in contents.items()] + [f"{info}/RECORD,,"]
    contents[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    wheel = out_dir / f"{stem}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path, data in contents.items():
            zf.writestr(path, data)
    return wheel


PLUGIN_INIT = '''"""Throwaway benchmark plugin {i}."""
from pathlib import Path

from latentzoo.core.contract.hookspecs import hookimpl

LATENTZOO_PLUGIN_API = 1


@hookimpl
def latentzoo_components():
    return [
        {{
            "name": "bench{i:02d}.scheduler",
            "roles": ["scheduler"],
            "family": "bench",
            "target": "{package}.model:Scheduler",
            "description": "benchmark plugin {i}",
        }}
    ]


@hookimpl
def latentzoo_registry():
    return [str(Path(__file__).with_name("registry.yaml"))]
'''

PLUGIN_MODEL = "import torch  # never imported by `latentzoo list`\n\n\nclass Scheduler:\n    pass\n"

PLUGIN_REGISTRY = """components:
  bench{i:02d}-linear:
    family: bench
    class: bench{i:02d}.scheduler
    roles: [scheduler]
    config: {{beta_schedule: linear}}
    description: benchmark plugin {i}
"""


def install_plugins(count: int, root: Path) -> Path:
    wheels_dir, site = root / "wheels", root / "site"
    wheels_dir.mkdir(parents=True)
    wheels = []
    for i in range(count):
        package = f"lzbench_plugin_{i:02d}"
        files = {
            f"{package}/__init__.py": PLUGIN_INIT.format(i=i, package=package),
            f"{package}/model.py": PLUGIN_MODEL,
            f"{package}/registry.yaml": PLUGIN_REGISTRY.format(i=i),
        }
        wheels.append(build_wheel(wheels_dir, f"lzbench-plugin-{i:02d}", "0.0.1", files, (f"bench{i:02d}", package)))
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1", "PIP_CONFIG_FILE": os.devnull}
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(site), *map(str, wheels)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"pip install of the benchmark plugins failed:\n{proc.stderr}")
    return site


def check_plugins_visible(lz: list[str], env: dict[str, str], cwd: Path, count: int) -> None:
    """The plugin run must really load all plugins (else the ratio means nothing)."""
    out = subprocess.run([*lz, "list", "--family", "bench", "--json"], env=env, cwd=cwd, capture_output=True, text=True, check=True)
    found = len(json.loads(out.stdout))
    if found != count:
        raise SystemExit(f"expected {count} benchmark registry entries in `latentzoo list`, found {found}")


# ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7, help="timed runs per command (median reported)")
    parser.add_argument("--plugins", type=int, default=30, help="throwaway plugins to install for part 2")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    args = parser.parse_args(argv)

    lz = latentzoo_command()
    with tempfile.TemporaryDirectory(prefix="lz-bench-") as tmp:
        tmp_path = Path(tmp)
        cwd, config = tmp_path / "cwd", tmp_path / "config"
        cwd.mkdir()
        config.mkdir()
        env = clean_env(config)

        # part 1: inspecting commands vs import torch
        cases = {
            "latentzoo list": ([*lz, "list"], env),
            "latentzoo info ddim": ([*lz, "info", "ddim"], env),
            "latentzoo plugins": ([*lz, "plugins"], env),
            "latentzoo --help": ([*lz, "--help"], env),
            "python -c 'import torch'": ([sys.executable, "-c", "import torch"], env),
        }
        times = time_interleaved(cases, args.reps, cwd)
        medians = {name: statistics.median(ts) for name, ts in times.items()}
        torch_median = medians["python -c 'import torch'"]
        startup = [
            {
                "command": name,
                "median_s": round(medians[name], 4),
                "min_s": round(min(times[name]), 4),
                "ratio_to_torch": round(medians[name] / torch_median, 3),
                "ok": medians[name] / torch_median <= TORCH_TARGET,
            }
            for name in cases
            if name.startswith("latentzoo")
        ]

        # part 2: 30 installed plugins vs none
        site = install_plugins(args.plugins, tmp_path / "plugins")
        env_plugins = clean_env(config, pythonpath=site)
        check_plugins_visible(lz, env_plugins, cwd, args.plugins)
        plugin_cases = {
            "latentzoo list (built-ins only)": ([*lz, "list"], env),
            f"latentzoo list (+{args.plugins} plugins)": ([*lz, "list"], env_plugins),
        }
        ptimes = time_interleaved(plugin_cases, args.reps, cwd)
        pmed = {name: statistics.median(ts) for name, ts in ptimes.items()}
        base, loaded = pmed.values()
        plugin_ratio = loaded / base

    report = {
        "reps": args.reps,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "torch_import_median_s": round(torch_median, 4),
        "torch_target": TORCH_TARGET,
        "startup": startup,
        "plugins": {
            "count": args.plugins,
            "without_median_s": round(base, 4),
            "with_median_s": round(loaded, 4),
            "ratio": round(plugin_ratio, 3),
            "target": PLUGINS_TARGET,
            "ok": plugin_ratio <= PLUGINS_TARGET,
        },
    }
    report["ok"] = all(row["ok"] for row in startup) and report["plugins"]["ok"]

    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"median of {args.reps} interleaved runs (after one warm-up), python {report['python']}, {report['cpus']} CPUs")
        print()
        width = max(len(name) for name in [*cases, *plugin_cases]) + 2
        print(f"{'command':<{width}}{'median':>9}{'min':>9}{'/torch':>9}   target <= {TORCH_TARGET}")
        for row in startup:
            verdict = "ok" if row["ok"] else "OVER"
            print(f"{row['command']:<{width}}{row['median_s']:>8.3f}s{row['min_s']:>8.3f}s{row['ratio_to_torch']:>9.3f}   {verdict}")
        print(f"{'python -c import torch':<{width}}{torch_median:>8.3f}s{min(times[next(reversed(cases))]):>8.3f}s{1:>9.3f}")
        print()
        print(f"{'command':<{width}}{'median':>9}{'min':>9}{'ratio':>9}   target <= {PLUGINS_TARGET}")
        for i, (name, ts) in enumerate(ptimes.items()):
            ratio = f"{plugin_ratio:>9.3f}   {'ok' if report['plugins']['ok'] else 'OVER'}" if i else f"{1:>9.3f}"
            print(f"{name:<{width}}{pmed[name]:>8.3f}s{min(ts):>8.3f}s{ratio}")
    return 1 if args.check and not report["ok"] else 0


if __name__ == "__main__":
    sys.exit(main())
