"""Shared fixtures: hand-built plugin wheels, installed with pip into throwaway dirs, and a CLI runner.

Nothing here touches the network: wheels are zipped by hand and installed with
``pip --no-index --no-deps --target``; the CLI runs as a real subprocess with
``PYTHONPATH`` pointing at those dirs so that their entry points are discovered.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

# Each test process (one per xdist worker) has a user registry, a config and a cache of its own, so no
# test reads the user's files or depends on what a test in another process wrote.
_ISOLATED = Path(__import__("tempfile").mkdtemp(prefix="latentzoo-tests-"))
os.environ["XDG_CONFIG_HOME"] = str(_ISOLATED / "config")
os.environ["XDG_CACHE_HOME"] = str(_ISOLATED / "cache")
os.environ.pop("LATENTZOO_REGISTRY", None)
if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two workers on two cores: one thread each, as OpenMP threads spin-wait when oversubscribed.
    # (Byte-exact tests pin their own thread count: CPU kernels may round differently with another.)
    os.environ.setdefault("OMP_NUM_THREADS", "1")

PYTHON = sys.executable
LATENTZOO_SCRIPT = Path(sys.executable).parent / "latentzoo"

# The hooks module path plugins import their marker from.
HOOKIMPL_IMPORT = "from latentzoo.core.contract.hookspecs import hookimpl"


# ---------------------------------------------------------------------------------------
# wheels


def _normalize(name: str) -> str:
    """Wheel / dist-info file-name form of a distribution name (PEP 427 / 491)."""
    return re.sub(r"[-_.]+", "_", name).lower()


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def build_wheel(
    out_dir: Path,
    dist: str,
    version: str,
    files: Mapping[str, str | bytes],
    entry_points: Mapping[str, str] | None = None,
) -> Path:
    """Zip a minimal, valid pure-Python wheel by hand.

    files: archive path -> content (e.g. {"acme/__init__.py": "..."}).
    entry_points: entry-point name -> "module" in the ``latentzoo`` group.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{_normalize(dist)}-{version}"
    info = f"{stem}.dist-info"
    contents: dict[str, bytes] = {path: (data.encode() if isinstance(data, str) else data) for path, data in files.items()}
    contents[f"{info}/METADATA"] = f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\nSummary: test plugin {dist}\n".encode()
    contents[f"{info}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: latentzoo-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    if entry_points:
        lines = ["[latentzoo]", *(f"{name} = {target}" for name, target in entry_points.items()), ""]
        contents[f"{info}/entry_points.txt"] = "\n".join(lines).encode()
    record = [f"{path},{_record_hash(data)},{len(data)}" for path, data in contents.items()]
    record.append(f"{info}/RECORD,,")
    contents[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    wheel = out_dir / f"{stem}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path, data in contents.items():
            zf.writestr(path, data)
    return wheel


def pip_install(wheels: Iterable[Path], target: Path) -> Path:
    """Install wheels offline into ``target`` (a directory to put on PYTHONPATH)."""
    wheels = [str(w) for w in wheels]
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1", "PIP_CONFIG_FILE": os.devnull}
    cmd = [PYTHON, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--no-compile", "--target", str(target), *wheels]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, f"pip install failed:\n{proc.stdout}\n{proc.stderr}"
    return target


@dataclass
class PluginSpec:
    """One throwaway plugin distribution: a package plus a ``latentzoo`` entry point."""

    dist: str
    package: str
    init: str  # source of <package>/__init__.py (dedented)
    entry_point: str | None = None  # defaults to the package name
    version: str = "1.0.0"
    extra: Mapping[str, str] | None = None  # further files inside the package: name -> content

    def wheel(self, out_dir: Path) -> Path:
        files = {f"{self.package}/__init__.py": textwrap.dedent(self.init)}
        for name, content in (self.extra or {}).items():
            files[f"{self.package}/{name}"] = textwrap.dedent(content)
        return build_wheel(out_dir, self.dist, self.version, files, {self.entry_point or self.package: self.package})


def install_plugins(base: Path, specs: Iterable[PluginSpec]) -> Path:
    """Build wheels for ``specs`` and install them together into ``base/site``."""
    specs = list(specs)
    wheels = [spec.wheel(base / "wheels") for spec in specs]
    return pip_install(wheels, base / "site")


# ---------------------------------------------------------------------------------------
# the plugins the tests use


GOOD = PluginSpec(
    dist="acme-zoo",
    package="acme_zoo",
    entry_point="acme",
    version="2.3.4",
    init=f'''
        """A well-behaved third-party plugin: one component class and a registry fragment."""
        from pathlib import Path

        {HOOKIMPL_IMPORT}

        LATENTZOO_PLUGIN_API = 1


        @hookimpl
        def latentzoo_components():
            return [
                {{
                    "name": "acme.flow",
                    "roles": ["prior"],
                    "kind": "analytic",
                    "family": "acme",
                    "target": "acme_zoo.model:FlowPrior",
                    "description": "ACME normalising-flow prior",
                }}
            ]


        @hookimpl
        def latentzoo_registry():
            return [str(Path(__file__).with_name("registry.yaml"))]


        @hookimpl
        def latentzoo_commands(cli):
            import click

            @cli.command("acme-hello")
            def hello():
                """Say hello from acme-zoo."""
                click.echo("hello from acme-zoo")

            @cli.command("acme-build")
            def build():
                """Import the model code (and so torch) the way latentzoo builds a component."""
                from latentzoo.core.contract.registry import import_target

                click.echo(import_target("acme_zoo.model:FlowPrior").__name__)
    ''',
    extra={
        # Model code imports torch at module level: latentzoo must never import it to list/inspect.
        "model.py": """
            import torch


            class FlowPrior(torch.nn.Module):
                pass
        """,
        "registry.yaml": """
            components:
              acme-flow:
                family: acme
                class: acme.flow
                roles: [prior]
                description: ACME flow prior from the acme-zoo plugin
        """,
    },
)

BROKEN_IMPORT = [
    PluginSpec(
        dist="raise-on-import",
        package="raise_on_import",
        init="""
            raise RuntimeError("kaboom while importing raise_on_import")
        """,
    ),
    PluginSpec(
        dist="missing-dep",
        package="missing_dep",
        init="""
            import latentzoo_no_such_dependency_xyz  # noqa: F401
        """,
    ),
    PluginSpec(
        dist="exits-on-import",
        package="exits_on_import",
        init="""
            import sys

            sys.exit("exits_on_import called sys.exit")
        """,
    ),
]

HOOK_RAISERS = [
    PluginSpec(
        dist="bad-components",
        package="bad_components",
        init=f"""
            {HOOKIMPL_IMPORT}

            LATENTZOO_PLUGIN_API = 1


            @hookimpl
            def latentzoo_components():
                raise RuntimeError("boom in bad_components.latentzoo_components")
        """,
    ),
    PluginSpec(
        dist="bad-registry-hook",
        package="bad_registry_hook",
        init=f"""
            {HOOKIMPL_IMPORT}

            LATENTZOO_PLUGIN_API = 1


            @hookimpl
            def latentzoo_registry():
                raise RuntimeError("boom in bad_registry_hook.latentzoo_registry")
        """,
    ),
    PluginSpec(
        dist="bad-fragment",
        package="bad_fragment",
        init=f"""
            from pathlib import Path

            {HOOKIMPL_IMPORT}


            @hookimpl
            def latentzoo_registry():
                return [str(Path(__file__).with_name("registry.yaml"))]
        """,
        extra={
            "registry.yaml": """
                components:
                  fragment-thing:
                    class: diffusion.ddim
                    roles: [sampler]
                    colour: blue
            """,
        },
    ),
    PluginSpec(
        dist="bad-commands",
        package="bad_commands",
        init=f"""
            {HOOKIMPL_IMPORT}

            LATENTZOO_PLUGIN_API = 1


            @hookimpl
            def latentzoo_commands(cli):
                raise RuntimeError("boom in bad_commands.latentzoo_commands")
        """,
    ),
]

INCOMPATIBLE = PluginSpec(
    dist="future-plugin",
    package="future_plugin",
    init=f"""
        {HOOKIMPL_IMPORT}

        LATENTZOO_PLUGIN_API = 99


        @hookimpl
        def latentzoo_components():
            return [{{"name": "future.thing", "roles": ["scheduler"], "target": "future_plugin:Thing"}}]
    """,
)


@pytest.fixture(scope="session")
def good_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install_plugins(tmp_path_factory.mktemp("good"), [GOOD])


@pytest.fixture(scope="session")
def broken_import_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install_plugins(tmp_path_factory.mktemp("broken-import"), BROKEN_IMPORT)


@pytest.fixture(scope="session")
def hook_raiser_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install_plugins(tmp_path_factory.mktemp("hook-raisers"), HOOK_RAISERS)


@pytest.fixture(scope="session")
def incompatible_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install_plugins(tmp_path_factory.mktemp("incompatible"), [INCOMPATIBLE])


@pytest.fixture(scope="session")
def plugin_factory(tmp_path_factory: pytest.TempPathFactory):
    """Install ad-hoc plugins together: ``site = plugin_factory(PluginSpec(...) or dict of its fields, ...)``."""

    def make(*specs: PluginSpec | Mapping[str, str]) -> Path:
        specs_ = [spec if isinstance(spec, PluginSpec) else PluginSpec(**spec) for spec in specs]
        return install_plugins(tmp_path_factory.mktemp("plugins"), specs_)

    return make


@pytest.fixture(scope="session")
def helpers():
    """This module, for tests that need its helpers beyond fixtures (--import-mode=importlib cannot import conftest)."""
    return sys.modules[__name__]


# ---------------------------------------------------------------------------------------
# running the CLI


@dataclass
class Result:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str

    def json(self):
        return json.loads(self.stdout)

    @property
    def stderr_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]

    def __str__(self) -> str:  # shown by assertion messages
        return f"latentzoo {' '.join(self.args)} -> {self.returncode}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"

    def assert_ok(self) -> Result:
        assert self.returncode == 0, str(self)
        assert "Traceback" not in self.stderr, str(self)
        return self

    def assert_one_line_error(self, *fragments: str) -> str:
        """Non-zero exit, exactly one line on stderr, no traceback; the line contains every fragment."""
        assert self.returncode != 0, str(self)
        assert "Traceback" not in self.stderr + self.stdout, str(self)
        assert len(self.stderr_lines) == 1, str(self)
        line = self.stderr_lines[0]
        for fragment in fragments:
            assert fragment in line, f"{fragment!r} not in {line!r}"
        return line


def in_process_cli(capsys: pytest.CaptureFixture[str]):
    """``run(*args) -> Result``: ``latentzoo ARGS`` through the CLI's own entry point in this process
    (errors as one line and an exit status, as installed; torch and the models' code load once)."""
    from latentzoo.cli import main

    def run(*args: str) -> Result:
        capsys.readouterr()
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        out = capsys.readouterr()
        return Result(list(args), code, out.out, out.err)

    return run


def clean_env(config_home: Path, **overrides: str | None) -> dict[str, str]:
    """os.environ without latentzoo settings, PYTHONPATH or a user registry; offline."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LATENTZOO_") and k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update({"XDG_CONFIG_HOME": str(config_home), "HF_HUB_OFFLINE": "1", "PYTHONIOENCODING": "utf-8", "COLUMNS": "200"})
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


# Environment variables read when a process starts (or by libraries at import time): a call that sets
# one, or puts plugin sites on PYTHONPATH, runs as a real process.
PROCESS_ONLY_ENV = frozenset(
    {"PYTHONPATH", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "LATENTZOO_KERNELS", "LATENTZOO_OFFLINE", "HF_HUB_OFFLINE", "HF_HOME",
     "HF_HUB_CACHE", "HF_ENDPOINT", "HF_TOKEN", "RANK", "WORLD_SIZE", "LOCAL_RANK"}
)  # fmt: skip


class Cli:
    """Runs ``latentzoo ARGS`` from a directory outside the repository, with a user registry of its own.

    By default a call runs through the CLI's entry point in this process (the environment, working
    directory, plugin manager and stdio swapped in for the call and restored after), so torch and the
    models' code load once per test process instead of once per call: errors, exit codes and output
    are the installed command's. A call that puts plugin sites on PYTHONPATH, sets a variable read at
    process start (``PROCESS_ONLY_ENV``), or is made through ``cli.process(...)`` runs as a real
    ``python -m latentzoo`` subprocess: what only a process shows (lazy imports, signals, plugins
    that exit) is tested that way.
    """

    def __init__(self, cwd: Path, config_home: Path) -> None:
        self.cwd = cwd
        self.config_home = config_home

    def env(self, sites: Iterable[Path] = (), **extra: str | None) -> dict[str, str]:
        sites = [str(s) for s in sites]
        return clean_env(self.config_home, PYTHONPATH=os.pathsep.join(sites) if sites else None, **extra)

    def __call__(self, *args: str, sites: Iterable[Path] = (), env: Mapping[str, str | None] | None = None, timeout: float = 120) -> Result:
        sites = list(sites)
        if sites or PROCESS_ONLY_ENV & set(env or {}):
            return self.process(*args, sites=sites, env=env, timeout=timeout)
        return self.in_process(*args, env=env)

    def process(self, *args: str, sites: Iterable[Path] = (), env: Mapping[str, str | None] | None = None, timeout: float = 120) -> Result:
        proc = subprocess.run(
            [PYTHON, "-m", "latentzoo", *args],
            cwd=self.cwd,
            env=self.env(sites, **(env or {})),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return Result(list(args), proc.returncode, proc.stdout, proc.stderr)

    def in_process(self, *args: str, env: Mapping[str, str | None] | None = None) -> Result:
        return run_in_process(list(args), self.env((), **(env or {})), self.cwd)

    def python(self, *args: str, sites: Iterable[Path] = (), env: Mapping[str, str | None] | None = None, timeout: float = 120) -> Result:
        proc = subprocess.run(
            [PYTHON, *args], cwd=self.cwd, env=self.env(sites, **(env or {})), capture_output=True, text=True, timeout=timeout
        )
        return Result(list(args), proc.returncode, proc.stdout, proc.stderr)


def run_in_process(args: list[str], env: Mapping[str, str], cwd: Path) -> Result:
    """``latentzoo ARGS`` through ``latentzoo.cli.main`` with ``env`` as the whole environment and ``cwd`` as the
    working directory, as a process would see them; the exit status as the interpreter would set it."""
    import contextlib
    import io
    import signal
    import warnings

    from latentzoo import cli as cli_module
    from latentzoo.core.contract.plugins import reset_manager

    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    saved_sigint, saved_sigterm = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    torch = sys.modules.get("torch")
    saved_threads = torch.get_num_threads() if torch is not None else None
    builtin = set(cli_module.cli.commands)
    out, err = io.StringIO(), io.StringIO()
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    reset_manager()  # plugins are discovered afresh, as at a process's start
    vars(cli_module.cli).pop("_plugins_added", None)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
            warnings.resetwarnings()  # a fresh process shows every warning once
            try:
                cli_module.main(args)
                code = 0
            except SystemExit as exc:
                if exc.code is None or isinstance(exc.code, int):
                    code = exc.code or 0
                else:  # sys.exit("message"): the interpreter prints it and exits 1
                    print(exc.code, file=sys.stderr)
                    code = 1
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        os.chdir(saved_cwd)
        signal.signal(signal.SIGINT, saved_sigint)
        signal.signal(signal.SIGTERM, saved_sigterm)
        for name in set(cli_module.cli.commands) - builtin:  # commands a plugin added for this call
            cli_module.cli.commands.pop(name)
        vars(cli_module.cli).pop("_plugins_added", None)
        reset_manager()
        torch = sys.modules.get("torch")
        if torch is not None and saved_threads is not None:
            torch.set_num_threads(saved_threads)
    return Result(args, code, out.getvalue(), err.getvalue())


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    work = tmp_path / "cwd"
    config = tmp_path / "config"
    work.mkdir()
    config.mkdir()
    return Cli(work, config)


def plugin_rows(result: Result) -> dict[str, dict[str, str]]:
    """The ``latentzoo plugins`` table as {plugin: {"distribution", "status", "provides", "error"}}, cut at the header's columns."""
    lines = result.stdout.splitlines()
    headers = ["PLUGIN", "DISTRIBUTION", "STATUS", "PROVIDES", "ERROR"]
    assert lines and lines[0].split() == headers, str(result)
    starts = [lines[0].index(h) for h in headers]
    table: dict[str, dict[str, str]] = {}
    for line in lines[1:]:
        cells = [line[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
        table[cells[0]] = dict(zip([h.lower() for h in headers[1:]], cells[1:], strict=True))
    return table


@pytest.fixture
def rows():
    return plugin_rows


@pytest.fixture
def compose_args(tmp_path: Path) -> list[str]:
    """CLI args composing a pipeline from a registry file that names built-in-family components."""
    path = tmp_path / "compose.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            components:
              t-ae:
                family: vqgan
                class: vqgan.autoencoder
                roles: [encoder, decoder]
                latent_space: {kind: continuous, channels: 4, factor: 4, autoencoder: "sha256:0123456789abcdef"}
              t-ldm:
                family: diffusion
                class: diffusion.unet
                roles: [prior]
                latent_space: {kind: continuous, channels: 4, factor: 4, autoencoder: "sha256:0123456789abcdef", scaling_factor: 0.5}
            """
        )
    )
    parts = ["--encoder", "t-ae", "--prior", "t-ldm", "--decoder", "t-ae", "--sampler", "ddim", "--scheduler", "karras"]
    return ["--registry", str(path), "compose", *parts]


# ---------------------------------------------------------------------------------------
# slow: full-size sweeps that belong with the benchmarks, not in CI's 20 minutes.


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: full-size check; runs only with LATENTZOO_SLOW=1 (benchmarks, not CI)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("LATENTZOO_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: set LATENTZOO_SLOW=1 to run")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


# ---------------------------------------------------------------------------------------
# --cpu-durations N: the slowest tests by CPU seconds (this process and its children), which a busy
# machine inflates far less than wall time; the test-budget numbers in the README come from it.


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--cpu-durations", type=int, default=None, metavar="N", help="show the N tests that used the most CPU time")


def _cpu_seconds() -> float:
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


_CPU_TIMES: dict[str, float] = {}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    if item.config.getoption("--cpu-durations") is None:
        yield
        return
    start = _cpu_seconds()
    yield
    _CPU_TIMES[item.nodeid] = _cpu_seconds() - start


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    count = config.getoption("--cpu-durations")
    if count is None or not _CPU_TIMES:
        return
    terminalreporter.write_sep("=", f"slowest {count} by CPU seconds (total {sum(_CPU_TIMES.values()):.0f} s)")
    for nodeid, seconds in sorted(_CPU_TIMES.items(), key=lambda kv: -kv[1])[:count]:
        terminalreporter.write_line(f"{seconds:8.2f}s cpu  {nodeid}")
    by_file: dict[str, float] = {}
    for nodeid, seconds in _CPU_TIMES.items():
        by_file[nodeid.split("::")[0]] = by_file.get(nodeid.split("::")[0], 0.0) + seconds
    terminalreporter.write_sep("-", "CPU seconds by file")
    for path, seconds in sorted(by_file.items(), key=lambda kv: -kv[1]):
        terminalreporter.write_line(f"{seconds:8.1f}s cpu  {path}")
