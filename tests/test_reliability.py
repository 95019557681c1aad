"""Reliability and security of the registry, the user layer, weights and plugins (issue 12),
each class driven through the installed CLI as a user runs it.

- hostile YAML (alias bombs, deep nesting, huge, non-UTF-8) is refused in one line, through
  ``--registry``, the user registry and ``sample FILE.yaml``;
- a user registry that does not exist yet is an empty layer, and shadowing a built-in shows;
- concurrent writers of the user registry lose no entry;
- non-finite or mis-shaped weights are refused at load, naming the file and the tensor;
- plugins that misbehave (wrong return types, SystemExit, KeyboardInterrupt, print, torch at
  import, os._exit, hangs) are reported, and every command keeps working.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

HOOKIMPL = "from latentzoo.core.contract.hookspecs import hookimpl"
BUILTIN_REGISTRY = Path(__file__).resolve().parent.parent / "registry.yaml"


def laughs(levels: int) -> str:
    """A "billion laughs" document: each level aliases the previous one nine times."""
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [{','.join([f'*a{i - 1}'] * 9)}]")
    return "\n".join(lines) + "\n"


HOSTILE = {
    # name: (file content, fragment of the one-line error)
    "alias-bomb-9": (laughs(9), "YAML aliases expand to more than"),
    "alias-bomb-in-entry": (
        "components:\n  x:\n    class: diffusion.ddim\n    roles: [sampler]\n    config: {a: *nope}\n",
        "names no anchor",
    ),
    "recursive-alias": ("a: &a [*a]\n", "recursive alias"),
    "deep-flow": ("a: " + "[" * 5000 + "]" * 5000 + "\n", "nested more than 64 levels"),
    "deep-block": ("".join("  " * i + f"k{i}:\n" for i in range(200)) + "  " * 200 + "v: 1\n", "nested more than 64 levels"),
    "non-utf8": (b"components:\n  caf\xe9:\n    class: x\n".decode("latin-1"), "not UTF-8 text"),
    "two-documents": ("components: {}\n---\ncomponents: {}\n", "more than one YAML document"),
}


def write_hostile(path: Path, name: str) -> Path:
    text, _ = HOSTILE[name]
    if name == "non-utf8":
        path.write_bytes(text.encode("latin-1"))
    else:
        path.write_text(text)
    return path


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_yaml_is_refused_in_one_line_everywhere(cli, tmp_path, name):
    path = write_hostile(tmp_path / f"{name}.yaml", name)
    fragment = HOSTILE[name][1]
    cli("--registry", str(path), "list").assert_one_line_error(str(path), fragment)
    cli("list", "--json", env={"LATENTZOO_REGISTRY": str(path)}).assert_one_line_error(str(path), fragment)
    cli("info", "ddim", env={"LATENTZOO_REGISTRY": str(path)}).assert_one_line_error(str(path), fragment)
    cli("sample", str(path), "-o", str(tmp_path / "x.png")).assert_one_line_error(str(path), fragment)
    assert not (tmp_path / "x.png").exists()


def test_oversized_registry_is_refused_without_reading_it_all(cli, tmp_path):
    big = tmp_path / "big.yaml"
    with open(big, "wb") as f:
        f.write(b"components: {}\n# ")
        f.truncate(17 * 1024 * 1024)  # sparse: 17 MiB of NUL
    cli("--registry", str(big), "list").assert_one_line_error(str(big), "larger than 16 MiB")


def test_aliases_within_the_bound_still_work(cli, tmp_path):
    path = tmp_path / "anchors.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            components:
              my-ddim:
                class: diffusion.ddim
                roles: [sampler]
                config: &cfg {eta: 0.25}
              my-ddim-2:
                class: diffusion.ddim
                roles: [sampler]
                config: *cfg
            """
        )
    )
    listed = {e["name"]: e for e in cli("--registry", str(path), "list", "--json").assert_ok().json()}
    assert listed["my-ddim-2"]["config"] == {"eta": 0.25}


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ("[1, 2]", "must be a number, string or boolean, not a list"),
        ("'fifty'", "must be a positive integer"),
        ("0", "must be a positive integer"),
        (".nan", "finite"),
    ],
)
def test_pipeline_defaults_are_schema_checked(cli, tmp_path, steps, message):
    path = tmp_path / "pipe.yaml"
    path.write_text(
        f"pipelines:\n  p:\n    prior: digits-ldm\n    decoder: digits-vqgan\n    sampler: ddim\n    defaults:\n      steps: {steps}\n"
    )
    cli("sample", str(path), "-o", str(tmp_path / "x.png")).assert_one_line_error(f"{path}:7: pipelines.p.defaults.steps", message)
    cli("--registry", str(path), "info", "p").assert_one_line_error(f"{path}:7:", message)


# ---------------------------------------------------------------------------------------
# the user layer


def test_missing_user_registry_is_an_empty_layer_created_on_first_write(cli, tmp_path):
    user = tmp_path / "not" / "yet" / "registry.yaml"
    env = {"LATENTZOO_REGISTRY": str(user)}
    builtin = cli("list", "--json").assert_ok().json()
    assert cli("list", "--json", env=env).assert_ok().json() == builtin
    assert cli("info", "ddim", "--json", env=env).assert_ok().json()["layer"] == "builtin"
    cli("compose", "--prior", "digits-ldm", "--decoder", "digits-vqgan", "--sampler", "ddim", "--scheduler", "scaled-linear", env=env)
    assert not user.exists() and not user.parent.exists()  # reading never creates it

    code = "from latentzoo.core.contract.userregistry import add_entries; add_entries({'mine': {'class': 'diffusion.ddim', 'roles': ['sampler']}})"
    cli.python("-c", code, env=env).assert_ok()
    assert user.is_file()
    assert cli("info", "mine", "--json", env=env).assert_ok().json()["layer"] == "user"


def test_shadowing_a_builtin_is_shown_by_list_and_info(cli, tmp_path):
    user = tmp_path / "user.yaml"
    user.write_text("components:\n  ddim: {class: diffusion.ddim, roles: [sampler], description: not the real one}\n")
    env = {"LATENTZOO_REGISTRY": str(user)}
    builtin_line = next(i for i, line in enumerate(BUILTIN_REGISTRY.read_text().splitlines(), 1) if line == "  ddim:")
    shadows = f"builtin registry.yaml:{builtin_line}"
    listed = cli("list", "--json", env=env).assert_ok()
    entry = next(e for e in listed.json() if e["name"] == "ddim")
    assert entry["shadows"] == shadows and entry["layer"] == "user"
    assert listed.stderr_lines == [f"warning: ddim from user {user.resolve()}:2 shadows {shadows}"]
    assert all("shadows" not in e for e in listed.json() if e["name"] != "ddim")
    table = cli("list", env=env).assert_ok().stdout.splitlines()
    assert table[0].split()[-1] == "SHADOWS"
    assert next(line for line in table if line.startswith("ddim ")).endswith(f"shadows {shadows}")
    info = cli("info", "ddim", "--json", env=env).assert_ok()
    assert info.json()["shadows"] == shadows and "shadows" in info.stderr
    assert "SHADOWS" not in cli("list").assert_ok().stdout  # nothing shadowed, no column


WRITER = """
import sys, time
from pathlib import Path
from latentzoo.core.contract.userregistry import add_entries
go, me = Path(sys.argv[1]), sys.argv[2]
while not go.exists():
    time.sleep(0.001)
for k in range(5):
    add_entries({f"cv{me}-{k}": {"class": "diffusion.ddim", "roles": ["sampler"], "description": "x" * 2000}})
"""


def test_concurrent_writers_lose_no_entry(cli, tmp_path):
    """8 processes add 5 entries each through the API convert and pull use, all at once."""
    user = tmp_path / "shared" / "registry.yaml"
    go = tmp_path / "go"
    env = cli.env(LATENTZOO_REGISTRY=str(user), OMP_NUM_THREADS="1")
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(go), str(i)], env=env, stderr=subprocess.PIPE, text=True) for i in range(8)
    ]
    time.sleep(1.0)  # let every writer import and wait at the line
    go.touch()
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    names = {e["name"] for e in cli("list", "--json", env={"LATENTZOO_REGISTRY": str(user)}).assert_ok().json()}
    assert {f"cv{i}-{k}" for i in range(8) for k in range(5)} <= names
    assert not [p.name for p in user.parent.iterdir() if p.name.endswith(".tmp")]


# ---------------------------------------------------------------------------------------
# weights


def _poisoned_registry(tmp_path: Path, edit) -> Path:
    """A registry naming the built-in KL-VAE's weights changed by ``edit(tensors)``, with a matching sha256."""
    import yaml
    from safetensors.torch import load_file

    from latentzoo.core.contract.registry import Registry
    from latentzoo.core.contract.weights import save_tensors

    entry = Registry.load().get("digits-klvae")
    tensors = load_file(str(entry.weights_path()))
    name = edit(tensors)
    path = tmp_path / "poisoned.safetensors"
    sha = save_tensors(path, tensors)
    data = dict(entry.data)
    data["weights"] = {"path": str(path), "sha256": sha}
    data["latent_space"] = {**data["latent_space"], "autoencoder": f"sha256:{sha[:16]}"}
    reg = tmp_path / "poisoned.yaml"
    reg.write_text(yaml.safe_dump({"components": {"poisoned-vae": data}}))
    return reg, path, name


@pytest.fixture
def digit_png(tmp_path):
    from PIL import Image

    path = tmp_path / "digit.png"
    Image.new("L", (32, 32), 128).save(path)
    return path


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_weights_are_refused_naming_file_and_tensor(cli, tmp_path, digit_png, value):
    def poison(tensors):
        name = sorted(k for k in tensors if k.endswith("weight"))[-1]
        tensors[name].view(-1)[7] = value
        return name

    reg, path, name = _poisoned_registry(tmp_path, poison)
    out = tmp_path / "rec.png"
    cli("--registry", str(reg), "reconstruct", "poisoned-vae", str(digit_png), "-o", str(out)).assert_one_line_error(
        f"weights file {path}", f"tensor {name!r} holds 1 NaN/Inf value(s)"
    )
    assert not out.exists()


def test_wrongly_shaped_weights_name_the_tensor_and_both_shapes(cli, tmp_path, digit_png):
    def reshape(tensors):
        name = sorted(k for k in tensors if k.endswith("weight") and tensors[k].dim() == 4)[0]
        tensors[name] = tensors[name][:, :, :1, :1].contiguous()
        return name

    reg, path, name = _poisoned_registry(tmp_path, reshape)
    line = cli("--registry", str(reg), "reconstruct", "poisoned-vae", str(digit_png), "-o", str(tmp_path / "r.png")).assert_one_line_error(
        f"weights file {path}", f"tensor {name!r} has shape"
    )
    assert "but poisoned-vae expects" in line


def test_decompression_bomb_image_is_one_line(cli, tmp_path):
    from PIL import Image

    bomb = tmp_path / "bomb.png"
    Image.new("1", (20000, 20000)).save(bomb)  # 400 Mpx: over Pillow's decompression-bomb limit
    cli("reconstruct", "digits-klvae", str(bomb), "--fit", "-o", str(tmp_path / "r.png")).assert_one_line_error(
        f"{bomb}", "too large", "pixels"
    )


# ---------------------------------------------------------------------------------------
# plugins


def plugin(dist: str, body: str, extra: dict[str, str] | None = None) -> dict:
    package = dist.replace("-", "_")
    return {"dist": dist, "package": package, "init": f"{HOOKIMPL}\nLATENTZOO_PLUGIN_API = 1\n" + textwrap.dedent(body), "extra": extra}


MISBEHAVING = [
    plugin("returns-42", "@hookimpl\ndef latentzoo_registry():\n    return 42\n"),
    plugin("returns-ints", "@hookimpl\ndef latentzoo_datasets():\n    return [1, 2]\n"),
    plugin("exits-in-hook", "import sys\n@hookimpl\ndef latentzoo_components():\n    sys.exit(0)\n"),
    plugin("ctrl-c-at-import", "raise KeyboardInterrupt\n"),
    plugin(
        "prints",
        """
        print("garbage at import")

        @hookimpl
        def latentzoo_components():
            print("garbage in a hook")
            return [{"name": "prints.thing", "roles": ["scheduler"], "target": "prints:Thing", "family": "prints"}]
        """,
    ),
    plugin(
        "half-broken",
        """
        from pathlib import Path

        @hookimpl
        def latentzoo_components():
            raise RuntimeError("half-broken components")

        @hookimpl
        def latentzoo_registry():
            return [str(Path(__file__).with_name("registry.yaml"))]
        """,
        {"registry.yaml": "components:\n  half-broken-entry: {class: diffusion.ddim, roles: [sampler]}\n"},
    ),
    plugin("imports-torch", "import torch  # noqa: F401\n"),
]


@pytest.fixture(scope="module")
def misbehaving_site(plugin_factory):
    return plugin_factory(*MISBEHAVING)


def test_misbehaving_plugins_are_reported_and_commands_keep_working(cli, misbehaving_site):
    sites = [misbehaving_site]
    listed = cli("list", "--json", sites=sites).assert_ok()
    names = {e["name"] for e in listed.json()}  # stdout is clean JSON: prints went to stderr
    assert {"ddim", "digits"} <= names and "half-broken-entry" not in names
    assert "garbage at import" in listed.stderr

    report = {p["name"]: p for p in cli("plugins", "--json", sites=sites).assert_ok().json()}
    expected = {
        "returns_42": "hook latentzoo_registry returned int 42",
        "returns_ints": "hook latentzoo_datasets returned a list holding int",
        "exits_in_hook": "hook latentzoo_components raised SystemExit: 0",
        "ctrl_c_at_import": "import failed: KeyboardInterrupt",
        "half_broken": "hook latentzoo_components raised RuntimeError: half-broken components",
    }
    for name, error in expected.items():
        assert report[name]["status"] == "broken", report[name]
        assert report[name]["error"].startswith(error), report[name]
    assert report["prints"]["status"] == "ok" and report["prints"]["components"] == ["prints.thing"]
    assert report["imports_torch"]["status"] == "ok"
    assert report["imports_torch"]["warning"].startswith("imports torch at import time: slows every command")
    assert all(p["status"] == "ok" for p in report.values() if p["builtin"])

    helped = cli("--help", sites=sites).assert_ok()
    assert "\n  list " in helped.stdout and "garbage" not in helped.stdout
    info = cli("info", "ddim", "--json", sites=sites).assert_ok().json()
    assert info["layer"] == "builtin"
    strict = cli("plugins", "--strict", sites=sites)
    assert strict.returncode == 1 and "Traceback" not in strict.stderr
    assert strict.stderr_lines[-1].startswith("error: 5 plugin(s) not usable")
    assert "returns_42 (broken)" in strict.stderr_lines[-1] and "ctrl_c_at_import (broken)" in strict.stderr_lines[-1]


def test_a_real_ctrl_c_during_plugin_import_still_interrupts(cli, plugin_factory, tmp_path):
    site = plugin_factory(
        plugin("slow-import", "import os, time\nopen(os.environ['SLOW_MARKER'], 'w').close()\ntime.sleep(60)\n"),
    )
    marker = tmp_path / "importing"
    env = cli.env([site], SLOW_MARKER=str(marker))
    proc = subprocess.Popen(
        [sys.executable, "-m", "latentzoo", "list"], cwd=cli.cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip() in ("interrupted", "aborted") and out == ""


def test_plugins_check_finds_plugins_that_exit_or_hang_at_import(cli, plugin_factory):
    site = plugin_factory(
        plugin("exits-hard", "import os\nos._exit(3)\n"),
        plugin("exits-zero", "import os\nos._exit(0)\n"),
        plugin("hangs", "import time\ntime.sleep(600)\n"),
        plugin("fine", "@hookimpl\ndef latentzoo_components():\n    return []\n"),
    )
    result = cli("plugins", "--check", "--timeout", "10", sites=[site], env={"LATENTZOO_PLUGINS": "exits_hard,exits_zero,hangs,fine"})
    line = result.assert_one_line_error("3 plugin(s) fail the probe", "LATENTZOO_PLUGINS")
    assert "exits_hard (exits)" in line and "exits_zero (exits)" in line and "hangs (hangs)" in line
    rows = {row.split()[0]: row.split()[2] for row in result.stdout.splitlines()[1:]}
    ours = {name: rows.pop(name, None) for name in ("exits_hard", "exits_zero", "hangs", "fine")}
    assert ours == {"exits_hard": "exits", "exits_zero": "exits", "hangs": "hangs", "fine": "ok"}
    # Any other third-party plugin of this environment is left out by the allow-list, and says so.
    assert set(rows.values()) <= {"disabled"}, rows

    probes = {p["name"]: p for p in json.loads(cli("plugins", "--check", "--json", "--timeout", "10", sites=[site]).stdout)}
    assert probes["hangs"]["seconds"] == 10 and probes["fine"]["status"] == "ok" and probes["fine"]["seconds"] < 10
    # The documented way out: leave them out with the allow-list, and every command works again.
    env = {"LATENTZOO_PLUGINS": "fine"}
    assert "ddim" in {e["name"] for e in cli("list", "--json", sites=[site], env=env).assert_ok().json()}
    checked = cli("plugins", "--check", "--timeout", "10", sites=[site], env=env).assert_ok()
    assert "disabled" in checked.stdout


def test_a_slow_plugin_import_is_named_with_the_way_out(cli, plugin_factory):
    """In-process, a hanging import cannot be stopped; after a while the command names the plugin and the fix."""
    site = plugin_factory(plugin("naps", "import time\ntime.sleep(4)\n"))
    result = cli("list", sites=[site], env={"LATENTZOO_PLUGIN_IMPORT_WARN": "1"}, timeout=120)
    assert result.returncode == 0
    assert "warning: plugin naps has been importing for 1 s" in result.stderr and "plugins --check" in result.stderr


if os.name != "posix":  # pragma: no cover
    pytestmark = pytest.mark.skip("POSIX signals and flock")


def test_a_large_registry_is_cached_by_content_and_reparsed_when_it_changes(cli, tmp_path):
    """Large files are parsed once into a JSON cache keyed by their sha256 (linear `list` at 20k
    entries; benchmarks/registry_scale.py); any edit, valid or not, is seen at once."""
    entry = "  c{i:05d}:\n    class: diffusion.ddim\n    roles: [sampler]\n    description: entry {i} {pad}\n"
    path = tmp_path / "big.yaml"
    path.write_text("components:\n" + "".join(entry.format(i=i, pad="x" * 40) for i in range(3000)))
    assert path.stat().st_size > 256 * 1024
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}

    first = cli("--registry", str(path), "list", "--json", env=env).assert_ok().json()
    cached = list((tmp_path / "cache" / "latentzoo" / "registry").glob("*.json"))
    assert len(cached) == 1
    assert cli("--registry", str(path), "list", "--json", env=env).assert_ok().json() == first
    row = next(e for e in first if e["name"] == "c01234")
    assert row["source"] == f"{path.resolve()}:{2 + 4 * 1234}" and row["description"].startswith("entry 1234 ")

    path.write_text(path.read_text().replace("entry 1234 ", "edited 1234 "))
    edited = {e["name"]: e for e in cli("--registry", str(path), "list", "--json", env=env).assert_ok().json()}
    assert edited["c01234"]["description"].startswith("edited 1234 ")
    path.write_text(path.read_text().replace("    roles: [sampler]\n", "    rols: [sampler]\n", 1))
    cli("--registry", str(path), "list", env=env).assert_one_line_error(f"{path}:4: components.c00000.rols: unknown key")
