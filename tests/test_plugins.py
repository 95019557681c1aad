"""Real plugin distributions, installed with pip, driving the installed CLI in subprocesses.

The fixtures (conftest.py) zip wheels by hand and ``pip install --target`` them offline;
every command here runs ``python -m latentzoo`` with PYTHONPATH pointing at those dirs.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

BUILTIN_REGISTRY = Path(__file__).resolve().parent.parent / "registry.yaml"
BUILTIN_ENTRIES = ("ddim", "ddpm", "karras", "leading")
BUILTIN_COMPONENT_CLASSES = {
    "datasets": [],
    "diffusion": ["diffusion.unet", "diffusion.unet_cond", "diffusion.ddim", "diffusion.pndm", "diffusion.ddpm", "diffusion.pixels"],
    "vqgan": ["vqgan.autoencoder"],
}


def by_name(report: list[dict]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for item in report:
        assert item["name"] not in out, f"plugin {item['name']} reported twice: {report}"
        out[item["name"]] = item
    return out


def list_names(result) -> list[str]:
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NAME", "ROLE", "FAMILY", "DESCRIPTION"], str(result)
    return [line.split()[0] for line in lines[1:]]


def assert_builtins_ok(report: dict[str, dict]) -> None:
    for name, components in BUILTIN_COMPONENT_CLASSES.items():
        assert report[name]["status"] == "ok", report[name]
        assert report[name]["builtin"] is True
        assert report[name]["distribution"] == "latentzoo"
        assert report[name]["components"] == components


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def line_of(path: Path, needle: str) -> int:
    """1-based line number of the first line of ``path`` containing ``needle``."""
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(f"{needle!r} not in {path}")


# ---------------------------------------------------------------------------------------
# broken plugins never break commands


@pytest.fixture
def broken_sites(good_site, broken_import_site, hook_raiser_site, incompatible_site):
    """Every kind of bad plugin installed next to a good one."""
    return [good_site, broken_import_site, hook_raiser_site, incompatible_site]


@pytest.mark.parametrize("site_fixture", ["broken_import_site", "hook_raiser_site", "incompatible_site"])
def test_commands_survive_bad_plugins(cli, rows, request, good_site, site_fixture, compose_args):
    sites = [request.getfixturevalue(site_fixture), good_site]

    listed = cli("list", sites=sites).assert_ok()
    assert {*BUILTIN_ENTRIES, "acme-flow"} <= set(list_names(listed))

    info = cli("info", "ddim", "--json", sites=sites).assert_ok().json()
    assert info["layer"] == "builtin"
    assert info["class_declaration"]["target"] == "latentzoo.plugins.diffusion.samplers:DDIMSampler"
    assert info["class_declaration"]["plugin"] == "diffusion"

    helped = cli("--help", sites=sites).assert_ok()
    for command in ("list", "info", "plugins", "compose", "sample"):
        assert f"\n  {command} " in helped.stdout, helped
    assert "acme-hello" in helped.stdout  # the good plugin's command is still added

    composed = cli(*compose_args, sites=sites).assert_ok()
    assert "pipelines:" in composed.stdout and "sampler: ddim" in composed.stdout

    table = rows(cli("plugins", sites=sites).assert_ok())
    assert table["acme"]["status"] == "ok"
    assert {name: table[name]["status"] for name in BUILTIN_COMPONENT_CLASSES} == dict.fromkeys(BUILTIN_COMPONENT_CLASSES, "ok")
    assert sum(row["status"] in ("broken", "incompatible") for row in table.values()) >= 1


def test_import_failures_are_reported_broken(cli, rows, broken_import_site, good_site):
    sites = [broken_import_site, good_site]
    table = rows(cli("plugins", sites=sites).assert_ok())
    expected = {
        "raise_on_import": "import failed: RuntimeError: kaboom while importing raise_on_import",
        "missing_dep": "import failed: ModuleNotFoundError: No module named 'latentzoo_no_such_dependency_xyz'",
        "exits_on_import": "import failed: SystemExit: exits_on_import called sys.exit",
    }
    for name, error in expected.items():
        assert table[name] == {"distribution": f"{name.replace('_', '-')} 1.0.0", "status": "broken", "provides": "-", "error": error}
    assert table["acme"] == {"distribution": "acme-zoo 2.3.4", "status": "ok", "provides": "acme.flow", "error": ""}

    report = by_name(cli("plugins", "--json", sites=sites).assert_ok().json())
    assert_builtins_ok(report)
    for name, error in expected.items():
        item = report[name]
        assert item["status"] == "broken" and item["error"] == error
        assert item["builtin"] is False and item["version"] == "1.0.0"
        assert item["distribution"] == name.replace("_", "-")
        assert item["hooks"] == [] and item["components"] == [] and item["location"] is None
    assert report["acme"]["status"] == "ok"


def test_strict_fails_in_one_line(cli, broken_sites):
    result = cli("plugins", "--strict", sites=broken_sites)
    line = result.assert_one_line_error("error: 7 plugin(s) not usable")
    for name, status in [
        ("raise_on_import", "broken"),
        ("missing_dep", "broken"),
        ("exits_on_import", "broken"),
        ("bad_components", "broken"),
        ("bad_registry_hook", "broken"),
        ("bad_commands", "broken"),
        ("future_plugin", "incompatible"),
    ]:
        assert f"{name} ({status})" in line
    assert "acme" not in line and "bad_fragment" not in line
    assert "PLUGIN" in result.stdout  # the table is still printed before the verdict

    json_result = cli("plugins", "--json", "--strict", sites=broken_sites)
    json_result.assert_one_line_error("7 plugin(s) not usable")
    installed = len(cli("plugins", "--json").assert_ok().json())  # built-ins, plus any plugin installed in this environment
    assert len(json_result.json()) == installed + 1 + 3 + 4 + 1  # + good, import failures, hook raisers, incompatible


def test_strict_passes_with_good_plugins_only(cli, good_site):
    result = cli("plugins", "--strict", sites=[good_site]).assert_ok()
    assert result.stderr == ""
    assert cli("plugins", "--strict").assert_ok().stderr == ""


def test_raising_hooks_are_reported_broken(cli, hook_raiser_site, good_site):
    sites = [hook_raiser_site, good_site]
    report = by_name(cli("plugins", "--json", sites=sites).assert_ok().json())
    assert_builtins_ok(report)  # other plugins' components are still declared
    assert report["acme"]["status"] == "ok" and report["acme"]["components"] == ["acme.flow"]
    for name, hook in [
        ("bad_components", "latentzoo_components"),
        ("bad_registry_hook", "latentzoo_registry"),
        ("bad_commands", "latentzoo_commands"),
    ]:
        item = report[name]
        assert item["status"] == "broken", item
        assert item["error"] == f"hook {hook} raised RuntimeError: boom in {name}.{hook}"
        assert item["hooks"] == [hook]  # it did load and register; only its hook failed
        assert item["location"] == str(hook_raiser_site / name / "__init__.py")

    components = cli("info", "diffusion.ddpm", "--json", sites=sites).assert_ok().json()
    assert components["class_declaration"]["target"] == "latentzoo.plugins.diffusion.samplers:DDPMSampler"


def test_bad_registry_fragment_is_a_warning(cli, hook_raiser_site):
    fragment = hook_raiser_site / "bad_fragment" / "registry.yaml"
    result = cli("list", sites=[hook_raiser_site]).assert_ok()
    assert set(BUILTIN_ENTRIES) <= set(list_names(result))
    assert "fragment-thing" not in result.stdout
    assert result.stderr_lines == [
        f"warning: plugin bad_fragment: {fragment}:{line_of(fragment, 'colour')}: components.fragment-thing.colour: unknown key"
    ]


def test_incompatible_plugin(cli, rows, incompatible_site):
    sites = [incompatible_site]
    assert rows(cli("plugins", sites=sites).assert_ok())["future_plugin"]["status"] == "incompatible"
    item = by_name(cli("plugins", "--json", sites=sites).assert_ok().json())["future_plugin"]
    assert item["status"] == "incompatible"
    assert item["api"] == 99
    assert "plugin API 99" in item["error"] and "provides 1" in item["error"]
    assert item["components"] == [] and item["hooks"] == []  # not registered, so never called
    # Its component class is therefore unknown to latentzoo.
    cli("info", "future.thing", sites=sites).assert_one_line_error("no component or pipeline named 'future.thing'")
    cli("plugins", "--strict", sites=sites).assert_one_line_error("1 plugin(s) not usable: future_plugin (incompatible)")


# ---------------------------------------------------------------------------------------
# a good third-party plugin


def test_good_plugin_in_list_and_plugins(cli, rows, good_site):
    sites = [good_site]
    listed = cli("list", sites=sites).assert_ok()
    row = next(line for line in listed.stdout.splitlines() if line.startswith("acme-flow "))
    assert row.split()[:3] == ["acme-flow", "prior", "acme"] and "ACME flow prior from the acme-zoo plugin" in row

    entry = next(e for e in cli("list", "--json", "--role", "prior", sites=sites).assert_ok().json() if e["name"] == "acme-flow")
    fragment = good_site / "acme_zoo" / "registry.yaml"
    assert entry["layer"] == "plugin:acme"
    assert entry["source"] == f"{fragment}:{line_of(fragment, 'acme-flow:')}"
    assert entry["class"] == "acme.flow"

    item = by_name(cli("plugins", "--json", sites=sites).assert_ok().json())["acme"]
    assert item == {
        "name": "acme",
        "module": "acme_zoo",
        "distribution": "acme-zoo",
        "version": "2.3.4",
        "builtin": False,
        "location": str(good_site / "acme_zoo" / "__init__.py"),
        "status": "ok",
        "error": None,
        "hooks": ["latentzoo_commands", "latentzoo_components", "latentzoo_registry"],
        "components": ["acme.flow"],
        "datasets": [],
        "kinds": [],
        "api": 1,
        "warning": None,
        "formats": [],
    }
    table = rows(cli("plugins", sites=sites).assert_ok())
    assert table["acme"] == {"distribution": "acme-zoo 2.3.4", "status": "ok", "provides": "acme.flow", "error": ""}

    info = cli("info", "acme-flow", "--json", sites=sites).assert_ok().json()
    assert info["class_declaration"]["target"] == "acme_zoo.model:FlowPrior"
    assert info["class_declaration"]["plugin"] == "acme"

    assert cli("acme-hello", sites=sites).assert_ok().stdout == "hello from acme-zoo\n"


def test_plugin_cannot_displace_builtins(cli, plugin_factory):
    def thief(dist: str, entry_point: str | None = None) -> dict[str, str]:
        package = dist.replace("-", "_")
        init = f"""
            from latentzoo.core.contract.hookspecs import hookimpl


            @hookimpl
            def latentzoo_components():
                return [{{"name": "vqgan.autoencoder", "roles": ["decoder"], "target": "{package}:Fake"}}]
        """
        return {"dist": dist, "package": package, "entry_point": entry_point, "init": init}

    # One reuses a built-in entry-point name, the other a built-in component name. PYTHONPATH
    # puts both before site-packages, so they are found before latentzoo's own entry points.
    site = plugin_factory(thief("vq-name-thief", entry_point="vqgan"), thief("vq-class-thief"))
    report = cli("plugins", "--json", sites=[site]).assert_ok().json()
    builtin_vq = [p for p in report if p["name"] == "vqgan" and p["builtin"]]
    assert len(builtin_vq) == 1 and builtin_vq[0]["status"] == "ok" and builtin_vq[0]["components"] == ["vqgan.autoencoder"]
    name_thief = next(p for p in report if p["distribution"] == "vq-name-thief")
    assert name_thief["status"] == "broken" and name_thief["error"] == "entry point name 'vqgan' is already used by latentzoo"
    class_thief = next(p for p in report if p["distribution"] == "vq-class-thief")
    assert class_thief["status"] == "broken"
    assert class_thief["error"] == "bad component declaration: component 'vqgan.autoencoder' is already declared by plugin vqgan"

    info = cli("info", "vqgan.autoencoder", "--json", sites=[site]).assert_ok().json()
    assert info["class_declaration"]["target"] == "latentzoo.plugins.vqgan.model:VQAutoencoder"
    # Even with third-party plugins switched off, the built-in keeps its name.
    off = by_name([p for p in cli("plugins", "--json", sites=[site], env={"LATENTZOO_PLUGINS": ""}).assert_ok().json() if p["builtin"]])
    assert_builtins_ok(off)


# ---------------------------------------------------------------------------------------
# LATENTZOO_PLUGINS


def test_plugins_env_empty_means_builtins_only(cli, good_site, broken_import_site):
    sites = [good_site, broken_import_site]
    env = {"LATENTZOO_PLUGINS": ""}
    report = by_name(cli("plugins", "--json", sites=sites, env=env).assert_ok().json())
    assert_builtins_ok(report)
    for name in ("acme", "raise_on_import", "missing_dep", "exits_on_import"):
        assert report[name]["status"] == "disabled", report[name]
        assert report[name]["error"] == "not in LATENTZOO_PLUGINS"
        assert report[name]["location"] is None and report[name]["components"] == []
    assert "acme-flow" not in list_names(cli("list", sites=sites, env=env).assert_ok())
    # Disabled plugins are not failures.
    cli("plugins", "--strict", sites=sites, env=env).assert_ok()
    cli("info", "acme-flow", sites=sites, env=env).assert_one_line_error("no component or pipeline named 'acme-flow'")


@pytest.mark.parametrize("selector", ["acme", "acme-zoo", " acme , some-other-plugin "])
def test_plugins_env_selects(cli, good_site, broken_import_site, selector):
    sites = [good_site, broken_import_site]
    env = {"LATENTZOO_PLUGINS": selector}
    report = by_name(cli("plugins", "--json", sites=sites, env=env).assert_ok().json())
    assert_builtins_ok(report)
    assert report["acme"]["status"] == "ok" and report["acme"]["components"] == ["acme.flow"]
    assert {report[n]["status"] for n in ("raise_on_import", "missing_dep", "exits_on_import")} == {"disabled"}
    assert "acme-flow" in list_names(cli("list", sites=sites, env=env).assert_ok())
    cli("plugins", "--strict", sites=sites, env=env).assert_ok()


def test_plugins_env_can_select_a_broken_plugin(cli, good_site, broken_import_site):
    sites = [good_site, broken_import_site]
    report = by_name(cli("plugins", "--json", sites=sites, env={"LATENTZOO_PLUGINS": "raise_on_import"}).assert_ok().json())
    assert report["raise_on_import"]["status"] == "broken"
    assert report["acme"]["status"] == "disabled" and report["missing_dep"]["status"] == "disabled"


# ---------------------------------------------------------------------------------------
# laziness: inspecting never imports torch (nor a plugin's model code)


# Runs the real CLI (``python -m latentzoo`` via runpy) and reports sys.modules at exit on stderr.
# (``-X importtime`` would miss modules loaded with importlib.import_module, as entry points are.)
RUN_AND_REPORT_MODULES = """
import atexit, json, runpy, sys
atexit.register(lambda: sys.stderr.write("\\nMODULES " + json.dumps(sorted(sys.modules)) + "\\n"))
sys.argv = ["latentzoo", *sys.argv[1:]]
runpy.run_module("latentzoo", run_name="__main__", alter_sys=True)
"""


def run_reporting_modules(cli, *args: str, **kwargs) -> tuple[object, set[str]]:
    result = cli.python("-c", RUN_AND_REPORT_MODULES, *args, **kwargs)
    marker = [line for line in result.stderr.splitlines() if line.startswith("MODULES ")]
    assert len(marker) == 1, str(result)
    return result, set(json.loads(marker[0][len("MODULES ") :]))


def torch_modules(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m == "torch" or m.startswith("torch."))


@pytest.mark.parametrize(
    "args",
    [["list"], ["info", "ddim"], ["info", "acme-flow", "--json"], ["plugins"], ["plugins", "--json"], ["--help"], ["acme-hello"]],
    ids=lambda a: " ".join(a),
)
def test_inspecting_does_not_import_torch(cli, broken_sites, args):
    result, modules = run_reporting_modules(cli, *args, sites=broken_sites)
    assert result.returncode == 0, str(result)
    assert {
        "latentzoo.cli",
        "latentzoo.core.contract.plugins",
        "acme_zoo",
        "latentzoo.plugins.diffusion",
    } <= modules  # plugins were loaded ...
    assert torch_modules(modules) == [], f"latentzoo {' '.join(args)} imported torch"
    assert "acme_zoo.model" not in modules  # ... but not their model code
    model_code = sorted(m for m in modules if m.startswith("latentzoo.plugins.") and m.count(".") > 2)
    assert model_code == []


def test_compose_does_not_import_torch(cli, compose_args):
    result, modules = run_reporting_modules(cli, *compose_args)
    assert result.returncode == 0 and "sampler: ddim" in result.stdout, str(result)
    assert "latentzoo.core.contract.compose" in modules
    assert torch_modules(modules) == []


def test_module_report_does_see_torch(cli, good_site):
    """Control: the probe notices torch when model code is imported (else the tests above prove nothing)."""
    result, modules = run_reporting_modules(cli, "acme-build", sites=[good_site])
    assert result.returncode == 0 and result.stdout == "FlowPrior\n", str(result)
    assert {"acme_zoo.model", "torch"} <= modules


def test_cli_runner_in_process_does_not_import_torch(cli, good_site):
    """The same check through click's CliRunner, in one fresh interpreter per command."""
    code = textwrap.dedent(
        """
        import json, sys
        from click.testing import CliRunner
        from latentzoo.cli import cli
        result = CliRunner().invoke(cli, sys.argv[1:], catch_exceptions=False)
        print(json.dumps({"exit": result.exit_code, "torch": "torch" in sys.modules, "output": result.output}))
        """
    )
    for args in (
        ["list"],
        ["list", "--role", "sampler"],
        ["list", "--role", "scheduler", "--json"],
        ["info", "ddim"],
        ["plugins"],
        ["--help"],
    ):
        result = cli.python("-c", code, *args, sites=[good_site])
        assert result.returncode == 0, str(result)
        out = json.loads(result.stdout)
        assert out["exit"] == 0 and out["torch"] is False, (args, out)
        assert out["output"].strip(), args


# ---------------------------------------------------------------------------------------
# registry layering and schema errors through the CLI


def test_registry_unknown_key_names_file_line_and_key(cli, tmp_path):
    bad = write(
        tmp_path / "bad-key.yaml",
        """
        components:
          my-sampler:
            family: diffusion
            class: diffusion.ddim
            roles: [sampler]
            descripton: a typo
        """,
    )
    for args in (["--registry", str(bad), "list"], ["--registry", str(bad), "info", "ddim"]):
        cli(*args).assert_one_line_error(f"error: {bad}:6: components.my-sampler.descripton: unknown key", "did you mean description?")


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("components:\n  a:\n    class: x\n   roles: [sampler]\n", 4, "invalid YAML"),
        ("components:\n  a:\n    class: x\n    roles: [sampler\n  b:\n    class: y\n", 5, "invalid YAML"),
        ("components:\n  ddim:\n    class: diffusion.ddim\n    roles: sampler\n", 4, "components.ddim.roles: must be a list, not str"),
        ("components:\n  a:\n    class: x\n    roles: [sampler]\n  a:\n    class: y\n", 5, "duplicate key 'a'"),
        ("componets:\n  a: {class: x, roles: [sampler]}\n", 1, "componets: unknown section; did you mean components?"),
        ("components:\n  a:\n    class: x\n", 2, "components.a: missing required key 'roles'"),
    ],
    ids=["indent", "unclosed-list", "type", "duplicate", "section", "required"],
)
def test_registry_errors_report_the_line(cli, tmp_path, text, line, message):
    path = tmp_path / "reg.yaml"
    path.write_text(text)
    cli("--registry", str(path), "list").assert_one_line_error(f"error: {path}:{line}: ", message)


def test_unknown_name_suggests_close_names(cli, compose_args):
    cli("info", "ddmi").assert_one_line_error("no component or pipeline named 'ddmi'", "did you mean", "ddim")
    cli("info", "karas").assert_one_line_error("no component or pipeline named 'karas'; did you mean karras")
    typo = [("ddiim" if a == "ddim" else a) for a in compose_args]
    cli(*typo).assert_one_line_error("no component or pipeline named 'ddiim'", "did you mean", "ddim")


def test_user_layer_overrides_builtin(cli, tmp_path):
    user = write(
        tmp_path / "user.yaml",
        """
        # my own ddim
        components:
          ddim:
            family: diffusion
            class: diffusion.ddim
            roles: [sampler]
            config: {eta: 0.5}
            description: my stochastic ddim
        """,
    )
    env = {"LATENTZOO_REGISTRY": str(user)}
    info = cli("info", "ddim", "--json", env=env).assert_ok().json()
    assert info["description"] == "my stochastic ddim"
    assert info["config"] == {"eta": 0.5}
    assert info["layer"] == "user"
    assert info["source"] == f"{user.resolve()}:3"
    assert info["class_declaration"]["plugin"] == "diffusion"
    assert info["shadows"] == f"builtin registry.yaml:{line_of(BUILTIN_REGISTRY, '  ddim:')}"
    listed = cli("list", env=env).assert_ok()
    row = next(line for line in listed.stdout.splitlines() if line.startswith("ddim "))
    assert "my stochastic ddim" in row and row.endswith(f"shadows {info['shadows']}")
    assert listed.stderr_lines == [f"warning: ddim from user {user.resolve()}:3 shadows {info['shadows']}"]
    # Without the variable the built-in entry is back.
    assert cli("info", "ddim", "--json").assert_ok().json()["layer"] == "builtin"

    # --registry is layered on top of the user file.
    cli_file = write(tmp_path / "cli.yaml", "components:\n  ddim: {class: diffusion.ddim, roles: [sampler], description: from cli}\n")
    top = cli("--registry", str(cli_file), "info", "ddim", "--json", env=env).assert_ok().json()
    assert (top["layer"], top["description"], top.get("config")) == ("cli", "from cli", None)


def test_user_layer_default_location_and_errors(cli, tmp_path):
    default = write(
        cli.config_home / "latentzoo" / "registry.yaml",
        "components:\n  ddim: {class: diffusion.ddim, roles: [sampler], description: from the config dir}\n",
    )
    info = cli("info", "ddim", "--json").assert_ok().json()
    assert (info["layer"], info["description"], info["source"]) == ("user", "from the config dir", f"{default.resolve()}:2")

    broken = write(tmp_path / "broken-user.yaml", "components:\n  ddim:\n    class: diffusion.ddim\n    role: [sampler]\n")
    cli("list", env={"LATENTZOO_REGISTRY": str(broken)}).assert_one_line_error(
        f"{broken}:4: components.ddim.role: unknown key; did you mean roles?"
    )
    unreadable = tmp_path / "a-directory.yaml"
    unreadable.mkdir()
    cli("list", env={"LATENTZOO_REGISTRY": str(unreadable)}).assert_one_line_error(f"registry file {unreadable} is a directory")


def test_plugin_fragment_layer_sits_between_builtin_and_user(cli, good_site, tmp_path):
    user = write(tmp_path / "user.yaml", "components:\n  acme-flow: {class: acme.flow, roles: [prior], description: user acme}\n")
    plugin_entry = cli("info", "acme-flow", "--json", sites=[good_site]).assert_ok().json()
    assert plugin_entry["layer"] == "plugin:acme"
    user_entry = cli("info", "acme-flow", "--json", sites=[good_site], env={"LATENTZOO_REGISTRY": str(user)}).assert_ok().json()
    assert (user_entry["layer"], user_entry["description"]) == ("user", "user acme")


# ---------------------------------------------------------------------------------------
# the repository root is not importable as top-level packages


@pytest.mark.parametrize("module", ["core", "plugins", "cli"])
def test_top_level_names_are_not_importable(cli, module):
    result = cli.python("-c", f"import {module}")
    assert result.returncode != 0
    assert f"ModuleNotFoundError: No module named '{module}'" in result.stderr
    ok = cli.python("-c", f"import latentzoo.{module} as m; print(m.__name__)")
    assert ok.returncode == 0 and ok.stdout.strip() == f"latentzoo.{module}", str(ok)


def test_json_names_each_plugins_kinds_and_formats(cli):
    """`plugins --json` says which plugin owns each prior kind and format, as the table does."""
    report = by_name(cli("plugins", "--json").assert_ok().json())
    kinds = {name: item["kinds"] for name, item in report.items() if item["kinds"]}
    assert kinds == {"diffusion": ["denoiser"], "flow": ["flow"], "transformer": ["autoregressive"], "vae": ["analytic"]}
    assert report["diffusers"]["formats"] == ["diffusers"] and report["adapters"]["formats"] == ["kohya-lora", "peft-lora"]
    assert report["vqgan"]["kinds"] == [] and report["vqgan"]["formats"] == []
    table = cli("plugins").assert_ok().stdout
    row = next(line for line in table.splitlines() if line.startswith("flow "))
    assert "kind flow" in row
    verbose = cli("plugins", "-v").assert_ok().stdout
    assert "kinds:        denoiser" in verbose
