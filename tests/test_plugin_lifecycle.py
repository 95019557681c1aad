"""A third party's plugin, end to end, in a fresh environment: install, inspect, compose, sample, uninstall.

A throwaway venv inherits torch and latentzoo from the environment running the tests (no
downloads). ``latentzoo install`` puts the example plugin (examples/latentzoo-example-plugin)
and a plugin that crashes on import into it, offline; then that venv's latentzoo is driven
by subprocess like a user would. Takes about half a minute.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "latentzoo-example-plugin"


def make_venv(path: Path) -> Path:
    """A venv that sees the running environment's packages: --system-site-packages when that is
    the system one, else a .pth that adds this venv's site-packages (editable installs included)."""
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(path)], check=True, timeout=120)
    python = path / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    if sys.prefix != sys.base_prefix:
        site_dir = subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], capture_output=True, text=True, check=True
        ).stdout.strip()
        parents = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
        lines = "".join(f"import site; site.addsitedir({p!r})\n" for p in parents)
        Path(site_dir, "_latentzoo_tests_parent_env.pth").write_text(lines)
    return python


@dataclass
class Venv:
    python: Path
    cwd: Path
    config: Path
    helpers: Any  # tests/conftest.py

    def env(self, **extra: str) -> dict[str, str]:
        """Clean (no PYTHONPATH, no user registry) and offline, pip included."""
        offline = {"PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
        return self.helpers.clean_env(self.config, **offline, **extra)

    def __call__(self, *args: str, input: str | None = None, env: Mapping[str, str] | None = None, timeout: float = 180) -> Any:
        environ = self.env(**(env or {}))
        proc = subprocess.run(
            [str(self.python), "-m", "latentzoo", *args],
            cwd=self.cwd,
            env=environ,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return self.helpers.Result(list(args), proc.returncode, proc.stdout, proc.stderr)

    def pip_show(self, dist: str) -> bool:
        proc = subprocess.run([str(self.python), "-m", "pip", "show", "-q", dist], capture_output=True, env=self.env())
        return proc.returncode == 0


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory, helpers: Any) -> Venv:
    base = tmp_path_factory.mktemp("lifecycle")
    (base / "cwd").mkdir()
    (base / "config").mkdir()
    return Venv(make_venv(base / "venv"), base / "cwd", base / "config", helpers)


@pytest.fixture(scope="module")
def installed(venv: Venv, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Both plugins installed with `latentzoo install`; the install commands' results."""
    wheel = venv.helpers.BROKEN_IMPORT[0].wheel(tmp_path_factory.mktemp("wheels"))  # raise-on-import
    offline = ["-q", "--no-deps", "--no-build-isolation"]
    return {
        "example": venv("install", *offline, "-e", str(EXAMPLE)).assert_ok(),
        "broken": venv("install", *offline, str(wheel)).assert_ok(),
    }


@pytest.fixture(scope="module")
def digits(venv: Venv, installed: dict[str, Any]) -> dict:
    """The shipped digits pipeline's registry entry."""
    return venv("info", "digits", "--json").assert_ok().json()


def test_install_reports_what_was_registered(installed):
    example = installed["example"]
    lines = example.stdout.splitlines()
    row = next(line for line in lines if line.startswith("example "))
    assert row.split()[:4] == ["example", "latentzoo-example-plugin", "0.1.0", "ok"], example
    assert row.endswith("example.plms, example.preview")
    assert not any(line.startswith("raise_on_import") for line in lines)  # only what this install added

    broken = installed["broken"]
    row = next(line for line in broken.stdout.splitlines() if line.startswith("raise_on_import "))
    assert row.split()[:4] == ["raise_on_import", "raise-on-import", "1.0.0", "broken"], broken
    assert "warning: plugin raise_on_import is broken: import failed: RuntimeError: kaboom while importing raise_on_import" in broken.stderr


def test_plugins_shows_both(venv, installed):
    table = venv.helpers.plugin_rows(venv("plugins").assert_ok())
    assert table["example"] == {
        "distribution": "latentzoo-example-plugin 0.1.0",
        "status": "ok",
        "provides": "example.plms, example.preview",
        "error": "",
    }
    assert table["raise_on_import"]["status"] == "broken"
    assert table["raise_on_import"]["error"] == "import failed: RuntimeError: kaboom while importing raise_on_import"

    report = {p["name"]: p for p in venv("plugins", "--json").assert_ok().json()}
    example = report["example"]
    assert example["location"] == str(EXAMPLE / "src" / "latentzoo_example" / "__init__.py")  # editable: loaded from the source tree
    assert (example["hooks"], example["api"], example["builtin"]) == (["latentzoo_components", "latentzoo_registry"], 1, False)
    assert report["raise_on_import"]["location"] is None

    verbose = venv("plugins", "-v").assert_ok().stdout
    block = verbose.split("\n\n")
    broken = next(b for b in block if b.startswith("raise_on_import\n"))
    assert "status:       broken: import failed: RuntimeError: kaboom" in broken
    assert f"installed in: {venv.python.parents[1]}" in broken and "(not imported)" in broken
    ok = next(b for b in block if b.startswith("example\n"))
    assert "hooks:        components, registry" in ok and f"loaded from:  {EXAMPLE}" in ok

    venv("plugins", "--strict").assert_one_line_error("1 plugin(s) not usable: raise_on_import (broken)")


def test_list_shows_the_example_components(venv, installed):
    entries = {e["name"]: e for e in venv("list", "--json", "--family", "example").assert_ok().json()}
    assert set(entries) == {"plms", "digits-preview"}
    assert entries["plms"]["roles"] == ["sampler"] and entries["digits-preview"]["roles"] == ["decoder"]
    assert entries["digits-preview"]["source"].startswith(str(EXAMPLE / "src" / "latentzoo_example" / "registry.yaml"))
    assert "plms" in venv("list", "--role", "sampler").assert_ok().stdout


def read_tiles(path: Path, n: int, size: int = 32, padding: int = 2) -> Any:
    """The (n, 1, size, size) images of a `sample` grid PNG (default layout), in [-1, 1]."""
    import numpy as np
    import torch

    with Image.open(path) as image:
        arr = np.asarray(image.convert("L"), dtype=np.float32) / 127.5 - 1.0
    nrow = int(np.ceil(np.sqrt(n)))
    tiles = []
    for i in range(n):
        r, k = divmod(i, nrow)
        top, left = padding + r * (size + padding), padding + k * (size + padding)
        tiles.append(arr[top : top + size, left : left + size])
    return torch.from_numpy(np.stack(tiles))[:, None]


def test_example_sampler_samples_the_digits_pipeline(venv, installed, digits):
    out = venv.cwd / "plms.png"
    venv("sample", "digits", "--sampler", "plms", "-n", "4", "--steps", "10", "--no-progress", "-o", str(out)).assert_ok()
    record = json.loads(out.with_suffix(".json").read_text())
    assert (record["sampler"], record["steps"], record["n"]) == ("plms", 10, 4)
    assert record["components"]["sampler"] == "plms" and record["components"]["prior"] == digits["prior"]
    with Image.open(out) as image:
        assert image.size == (2 * 34 + 2, 2 * 34 + 2)

    # Ten PLMS steps of the shipped prior give digits the shipped classifier recognises.
    import torch

    from latentzoo.plugins.datasets.evaluate import classifier_logits

    with torch.inference_mode():
        confidence = classifier_logits(read_tiles(out, 4)).softmax(-1).max(-1).values
    assert (confidence > 0.8).sum() >= 3, confidence


def test_example_decoder_decodes_the_digits_latents(venv, installed, digits):
    spec = venv.cwd / "preview.yaml"
    parts = ["--prior", digits["prior"], "--decoder", "digits-preview", "--sampler", "plms", "--scheduler", digits["scheduler"]]
    venv("compose", *parts, "--name", "digits-with-preview", "-o", str(spec)).assert_ok()
    assert "decoder: digits-preview" in spec.read_text()

    # Same seed, same sampler: the preview and the VQ-GAN decode the same latents.
    common = ["-n", "4", "--steps", "10", "--seed", "3", "--no-progress", "--nrow", "4"]
    venv("sample", str(spec), *common, "-o", str(venv.cwd / "preview.png")).assert_ok()
    venv("sample", "digits", "--sampler", "plms", *common, "-o", str(venv.cwd / "full.png")).assert_ok()
    venv("sample", "digits", "--decoder", "digits-preview", "--sampler", "plms", *common, "-o", str(venv.cwd / "preview2.png")).assert_ok()

    def pixels(name: str) -> Any:
        import numpy as np

        with Image.open(venv.cwd / name) as image:
            return np.asarray(image.convert("L"), dtype=np.float64) / 255

    preview, full, again = pixels("preview.png"), pixels("full.png"), pixels("preview2.png")
    assert (preview == again).all()  # the composed file and --decoder on the pipeline are the same pipeline
    mse = ((preview - full) ** 2).mean()
    assert mse < 0.25 * full.var(), (mse, full.var())  # the preview explains most of what the real decoder draws


def test_example_own_tests_pass_in_the_venv(venv, installed):
    proc = subprocess.run(
        [str(venv.python), "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLE / "tests")],
        cwd=venv.cwd,
        env=venv.env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert " passed" in proc.stdout and "skipped" not in proc.stdout


def test_contract_refuses_the_preview_with_another_space(venv, installed):
    space = venv("info", "digits-preview", "--json").assert_ok().json()["latent_space"]
    other = {**space, "autoencoder": "sha256:00000000deadbeef", "scaling_factor": 1.0}
    registry = venv.cwd / "other.yaml"
    registry.write_text(
        textwrap.dedent(
            f"""\
            components:
              other-ldm:
                class: diffusion.unet
                roles: [prior]
                latent_space: {json.dumps(other)}
            """
        )
    )
    parts = ["--prior", "other-ldm", "--decoder", "digits-preview", "--sampler", "plms", "--scheduler", "leading"]
    venv("--registry", str(registry), "compose", *parts).assert_one_line_error(
        "latent spaces do not match: prior other-ldm vs decoder digits-preview: autoencoder 'sha256:00000000deadbeef' != "
        f"'{space['autoencoder']}'"
    )
    # The example sampler's side of the contract: PLMS drives denoisers, not the built-in analytic prior.
    gaussian = venv.cwd / "gaussian.yaml"
    gaussian.write_text(f"components:\n  gauss:\n    class: vae.gaussian\n    roles: [prior]\n    latent_space: {json.dumps(space)}\n")
    venv(
        "--registry", str(gaussian), "compose", "--prior", "gauss", "--decoder", "digits-preview", "--sampler", "plms"
    ).assert_one_line_error("sampler plms drives denoiser priors, but gauss is analytic")


def test_new_plugin_installs_and_its_generated_test_passes(venv, installed):
    project = venv.cwd / "new-plugin"
    made = venv("new-plugin", "latentzoo-lifecycle-euler", "-o", str(project)).assert_ok()
    assert "sampler lifecycle-euler" in made.stdout
    assert sorted(str(p.relative_to(project)) for p in project.rglob("*") if p.is_file()) == [
        "README.md",
        "pyproject.toml",
        "src/latentzoo_lifecycle_euler/__init__.py",
        "src/latentzoo_lifecycle_euler/registry.yaml",
        "src/latentzoo_lifecycle_euler/sampler.py",
        "tests/test_plugin.py",
    ]
    venv("new-plugin", "latentzoo-lifecycle-euler", "-o", str(project)).assert_one_line_error("is not empty; refusing to overwrite it")
    venv("new-plugin", "9lives").assert_one_line_error("'9lives' gives the package name '9lives', which Python cannot import")
    venv("new-plugin", "bad name!").assert_one_line_error("'bad name!' is not a valid distribution name")
    venv("new-plugin", "ddim").assert_one_line_error("which the built-in registry already has")

    installed_row = venv("install", "-q", "--no-deps", "--no-build-isolation", "-e", str(project)).assert_ok().stdout
    assert "lifecycle-euler  latentzoo-lifecycle-euler 0.1.0  ok" in installed_row
    entry = next(e for e in venv("list", "--json", "--role", "sampler").assert_ok().json() if e["name"] == "lifecycle-euler")
    assert entry["class"] == "lifecycle-euler.euler" and entry["layer"] == "plugin:lifecycle-euler"

    env = venv.env()
    proc = subprocess.run(
        [str(venv.python), "-m", "pytest", "-q", "-p", "no:cacheprovider", str(project / "tests")],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "5 passed" in proc.stdout
    venv("uninstall", "-y", "latentzoo-lifecycle-euler").assert_ok()
    assert "lifecycle-euler" not in {e["name"] for e in venv("list", "--json").assert_ok().json()}


def test_uninstall_works_while_the_plugin_is_broken(venv, installed):
    assert venv.pip_show("raise-on-import")
    venv("uninstall", "raise-on-import", input="n\n").assert_one_line_error("aborted")
    assert venv.pip_show("raise-on-import")  # said no: still there

    venv("uninstall", "-y", "raise-on-import").assert_ok()
    assert not venv.pip_show("raise-on-import")
    report = {p["name"]: p for p in venv("plugins", "--json").assert_ok().json()}
    assert "raise_on_import" not in report and report["example"]["status"] == "ok"
    venv("plugins", "--strict").assert_ok()

    venv("uninstall", "-y", "raise-on-import").assert_one_line_error("raise-on-import is not installed in", "see `latentzoo plugins`")

    # A plugin that calls os._exit on import is contained (reported broken): every command keeps working.
    killer = venv.helpers.PluginSpec(dist="kills-on-import", package="kills_on_import", init="import os\n\nos._exit(3)\n")
    wheel = killer.wheel(venv.cwd / "wheels")
    assert "os._exit(3)" in venv("install", "-q", "--no-deps", str(wheel)).assert_ok().stderr
    venv("list").assert_ok()
    venv("uninstall", "-y", "kills-on-import").assert_ok()
    venv("list").assert_ok()
    venv("uninstall", "latentzoo").assert_one_line_error("refusing to uninstall latentzoo itself")
    venv("install").assert_one_line_error("name at least one package")


def test_a_misspelt_hook_is_reported_not_ignored(cli, plugin_factory):
    site = plugin_factory(
        {
            "dist": "typo-plugin",
            "package": "typo_plugin",
            "init": """
                from latentzoo.core.contract.hookspecs import hookimpl

                LATENTZOO_PLUGIN_API = 1


                @hookimpl
                def latentzoo_component():
                    return [{"name": "typo.thing", "roles": ["scheduler"], "target": "typo_plugin:Thing"}]
            """,
        }
    )
    item = next(p for p in cli("plugins", "--json", sites=[site]).assert_ok().json() if p["name"] == "typo_plugin")
    assert item["status"] == "broken"
    assert item["error"] == "unknown hook latentzoo_component; did you mean latentzoo_components?"
    assert item["components"] == []
    cli("list", sites=[site]).assert_ok()
