"""The kernel and its edges: core imports no plugin, no build<->hub cycle, the format seam,
the Python API for every verb, directory outputs, concurrent converts, and the wheel's contents."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOT_PACKAGED = {"tests", "benchmarks", "examples", "tools", "docs", "build", "dist", "weights", "runs"}


def imported_modules(path: Path, package: str) -> set[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved against ``package``)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def latentzoo_env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "user").mkdir(exist_ok=True)
    (tmp_path / "user" / "registry.yaml").write_text("version: 1\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LATENTZOO_", "HF_"))}
    env.update(
        LATENTZOO_REGISTRY=str(tmp_path / "user" / "registry.yaml"),
        XDG_CONFIG_HOME=str(tmp_path / "cfg"),
        HF_HUB_OFFLINE="1",
        OMP_NUM_THREADS="1",
    )
    return env


def cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "latentzoo", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300)


def one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and len(lines) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


# ---------------------------------------------------------------------------------------
# the kernel knows no family


def test_no_core_module_imports_a_plugin_and_build_and_hub_do_not_import_each_other():
    offenders = []
    for path in sorted((ROOT / "core").rglob("*.py")):
        mods = imported_modules(path, "latentzoo." + ".".join(path.parent.relative_to(ROOT).parts))
        bad = sorted(m for m in mods if m == "latentzoo.plugins" or m.startswith(("latentzoo.plugins.", "latentzoo.interop")))
        offenders += [f"{path.relative_to(ROOT)}: {m}" for m in bad]
    assert not offenders, offenders
    sources = imported_modules(ROOT / "core" / "runtime" / "sources.py", "latentzoo.core.runtime")
    assert not any(m.startswith(("latentzoo.core.runtime.build", "latentzoo.interop")) for m in sources), sources
    hub = imported_modules(ROOT / "interop" / "hub.py", "latentzoo.interop")
    assert not any(m.startswith("latentzoo.core.runtime.build") for m in hub) and "latentzoo.core.runtime.sources" in hub
    assert "latentzoo.core.runtime.sources" in imported_modules(ROOT / "core" / "runtime" / "build.py", "latentzoo.core.runtime")
    assert not (ROOT / "core" / "convert.py").exists() and not (ROOT / "core" / "hub.py").exists()
    # and at run time: importing every core module loads no plugin module
    code = (
        "import importlib, pkgutil, sys; import latentzoo.core as c\n"
        "[importlib.import_module(m.name) for m in pkgutil.walk_packages(c.__path__, 'latentzoo.core.')]\n"
        "print(sorted(k for k in sys.modules if k.startswith(('latentzoo.plugins', 'latentzoo.interop'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr


def test_family_key_maps_live_with_the_families():
    """The diffusers plugin maps no family class itself: each family declares its own mapping."""
    from latentzoo.core.contract.plugins import get_manager

    declared = {name: (decl.get("formats") or {}).get("diffusers") for name, decl in get_manager().components().items()}
    for cls, module in (("vqgan.autoencoder", "vqgan"), ("vae.autoencoder", "vae"), ("diffusion.unet", "diffusion")):
        assert declared[cls] and declared[cls].startswith(f"latentzoo.plugins.{module}.diffusers:"), declared[cls]
    plugin = ROOT / "plugins" / "diffusers"
    for path in plugin.glob("*.py"):
        mods = imported_modules(path, "latentzoo.plugins.diffusers")
        assert not any(m.startswith("latentzoo.plugins.") and not m.startswith("latentzoo.plugins.diffusers") for m in mods), path


# ---------------------------------------------------------------------------------------
# the format seam


def test_a_plugin_format_is_listed_and_used_by_convert_and_export(tmp_path, monkeypatch):
    """A format declared through latentzoo_formats reaches `convert --from` / `export --to` (in-process plugin)."""
    import latentzoo
    from latentzoo.core.contract.hookspecs import hookimpl
    from latentzoo.core.contract.plugins import get_manager, reset_manager
    from latentzoo.interop import formats as seam

    class TextFormat:  # a toy format: a folder with one scheduler name in it
        @hookimpl
        def latentzoo_formats(self):
            return [{"name": "toy", "description": "toy", "convert": "tests_toy_format:convert", "export": "tests_toy_format:export"}]

    module = type(sys)("tests_toy_format")

    def convert(source, name, stage, *, spacing="leading"):
        return {"components": {name: {"class": "diffusion.ddim", "roles": ["sampler"], "config": {"eta": float((source / "eta").read_text())}}},
                "notes": [f"read {source.name}"]}  # fmt: skip

    def export(registry, name, folder):
        (folder / "eta").write_text(str(registry.get(name).data["config"]["eta"]))
        return ["wrote eta"]

    module.convert, module.export = convert, export
    monkeypatch.setitem(sys.modules, "tests_toy_format", module)
    monkeypatch.setenv("LATENTZOO_REGISTRY", str(tmp_path / "user.yaml"))
    reset_manager()
    try:
        manager = get_manager()
        manager.pm.register(TextFormat(), name="toy")
        from latentzoo.core.contract.plugins import PluginInfo

        manager.info["toy"] = PluginInfo("toy", "toy", None, None, False)
        assert {f.name for f in latentzoo.formats()} >= {"toy", "diffusers"}
        src = tmp_path / "src"
        src.mkdir()
        (src / "eta").write_text("0.25")
        result = latentzoo.convert(src, "toy-ddim", from_format="toy")
        assert result.notes == ["read src"] and result.registered == tmp_path / "user.yaml"
        assert latentzoo.info("toy-ddim").data["config"] == {"eta": 0.25}
        with pytest.raises(latentzoo.core.contract.errors.LatentzooError, match="does not take option"):
            latentzoo.convert(src, "toy-2", from_format="toy", scaling_factor=2.0)
        out, notes = latentzoo.export("toy-ddim", tmp_path / "exported", to_format="toy")
        assert notes == ["wrote eta"] and (out / "eta").read_text() == "0.25"
        assert json.loads((out / seam.MANIFEST).read_text())["files"] == ["eta"]
        with pytest.raises(
            latentzoo.core.contract.errors.LatentzooError,
            match="formats that can export: diffusers, kohya-lora, peft-lora, single-file, toy",
        ):
            latentzoo.export("toy-ddim", tmp_path / "x", to_format="nope")
    finally:
        reset_manager()


def test_bad_format_declarations_mark_the_plugin_broken(monkeypatch):
    from latentzoo.core.contract.hookspecs import hookimpl
    from latentzoo.core.contract.plugins import PluginInfo, get_manager, reset_manager
    from latentzoo.interop.formats import formats

    class Bad:
        @hookimpl
        def latentzoo_formats(self):
            return [{"name": "x"}]  # neither convert nor export

    reset_manager()
    try:
        manager = get_manager()
        manager.pm.register(Bad(), name="bad")
        manager.info["bad"] = PluginInfo("bad", "bad", None, None, False)
        assert "x" not in formats() and "diffusers" in formats()
        assert manager.info["bad"].status == "broken" and "neither convert nor export" in manager.info["bad"].error
    finally:
        reset_manager()


# ---------------------------------------------------------------------------------------
# the Python API does what the CLI does


def test_every_verb_is_in_the_lazy_api_without_torch():
    code = (
        "import sys, latentzoo\n"
        "names = ['reconstruct', 'encode', 'decode', 'convert', 'export', 'push', 'pull', 'formats']\n"
        "assert all(callable(getattr(latentzoo, n)) for n in names) and set(names) <= set(latentzoo.__all__)\n"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stdout + out.stderr


def test_reconstruct_and_encode_write_into_a_directory(tmp_path):
    """-o dir/ (or an existing directory) gets the default file name inside it, never a file named like the directory."""
    from PIL import Image

    import latentzoo

    img = tmp_path / "seven.png"
    Image.new("L", (32, 32), 30).save(img)
    env = latentzoo_env(tmp_path)
    made = tmp_path / "made"
    made.mkdir()
    for target in ("new/", str(made)):
        assert cli("reconstruct", "digits-vqgan", str(img), "-o", target, env=env, cwd=tmp_path).returncode == 0
        assert cli("encode", "digits-vqgan", str(img), "-o", target, env=env, cwd=tmp_path).returncode == 0
        folder = tmp_path / target if not Path(target).is_absolute() else Path(target)
        assert sorted(p.name for p in folder.iterdir()) == ["latents.safetensors", "reconstruction.png"]
    assert not (tmp_path / "new").is_file()
    decoded = cli("decode", "digits-vqgan", str(made / "latents.safetensors"), "-o", "dec/", env=env, cwd=tmp_path)
    assert decoded.returncode == 0 and sorted(p.name for p in (tmp_path / "dec").iterdir()) == ["0000.png"]
    (tmp_path / "file").write_text("x")
    one_line_error(cli("encode", "digits-vqgan", str(img), "-o", "file/z.safetensors", env=env, cwd=tmp_path), "is a file")
    # the same through the Python API
    rec = latentzoo.reconstruct("digits-vqgan", [img], f"{tmp_path / 'api'}/")  # a str ending in /: Path() drops it
    assert rec.output == tmp_path / "api" / "reconstruction.png" and rec.output.is_file() and rec.psnr_db[str(img)] > 10
    enc = latentzoo.encode("digits-vqgan", [img], tmp_path / "api")
    assert enc.output == tmp_path / "api" / "latents.safetensors" and enc.shape[0] == 1


# ---------------------------------------------------------------------------------------
# concurrent writers (needs the locked user-registry writes of core/contract/userregistry.py)


def test_eight_concurrent_converts_leave_eight_entries(tmp_path):
    sched = tmp_path / "sched"
    sched.mkdir()
    (sched / "scheduler_config.json").write_text(json.dumps({"_class_name": "DDIMScheduler", "beta_schedule": "scaled_linear"}))
    env = latentzoo_env(tmp_path)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "latentzoo", "convert", "--from", "diffusers", str(sched), "--name", f"cv{i}"],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(8)
    ]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    assert all(code == 0 for code, _ in results), results
    import yaml

    user = yaml.safe_load((tmp_path / "user" / "registry.yaml").read_text())
    expected = {f"cv{i}" for i in range(8)} | {f"cv{i}-ddim" for i in range(8)}
    assert set(user["components"]) == expected, sorted(expected - set(user["components"]))


# ---------------------------------------------------------------------------------------
# packaging


def test_the_wheel_holds_every_subpackage(tmp_path):
    """setup.py finds packages itself: every folder with an __init__.py (but tests, benchmarks, ...) is in the wheel."""
    pytest.importorskip("setuptools")
    pytest.importorskip("wheel")
    import shutil

    source = tmp_path / "src"  # a clean copy: no stale build/ of an earlier layout can leak into the wheel
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".*", "build", "dist", "*.egg-info", "__pycache__", "runs"))
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(source), "-w", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    (wheel,) = tmp_path.glob("latentzoo-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    packages = [
        p.parent.relative_to(ROOT)
        for p in ROOT.rglob("__init__.py")
        if not ({".venv", *NOT_PACKAGED} & set(p.relative_to(ROOT).parts[:1])) and not any(part.startswith(".") for part in p.parts)
    ]
    assert {"interop", "plugins/diffusers", "core", "commands"} <= {p.as_posix() for p in packages}
    missing = [p for p in packages if f"latentzoo/{(p / '__init__.py').as_posix()}".replace("/./", "/") not in names]
    assert not missing, missing
    for module in (
        "interop/hub.py",
        "interop/formats.py",
        "core/runtime/sources.py",
        "plugins/diffusers/folders.py",
        "commands/sampling.py",
        "registry.yaml",
        "cli.py",
    ):
        assert f"latentzoo/{module}" in names, module
    assert not any(n.startswith(("latentzoo/tests/", "latentzoo/benchmarks/")) or n == "latentzoo/setup.py" for n in names)
    assert "latentzoo/core/convert.py" not in names and "latentzoo/core/hub.py" not in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "diffusers = latentzoo.plugins.diffusers" in zipfile.ZipFile(wheel).read(entry_points).decode()


# ---------------------------------------------------------------------------------------
# offline means zero requests from every command: install too


def test_install_offline_asks_no_package_index(tmp_path):
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen: list[str] = []

    class Index(BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append(self.path)
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Index)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = {**latentzoo_env(tmp_path), "PIP_INDEX_URL": f"http://127.0.0.1:{server.server_address[1]}/simple", "PIP_RETRIES": "0"}
        env.pop("HF_HUB_OFFLINE")
        args = ("install", "-q", "latentzoo-no-such-plugin-xyz")
        proc = cli(*args, env={**env, "LATENTZOO_OFFLINE": "1"}, cwd=tmp_path)  # pip's own messages, then our one line
        assert proc.returncode != 0 and "Traceback" not in proc.stderr and "pip install failed" in proc.stderr.splitlines()[-1]
        assert seen == []
        cli(*args, env=env, cwd=tmp_path)  # online, the same command asks the index (so the check above can fail)
        assert seen
    finally:
        server.shutdown()
        server.server_close()
