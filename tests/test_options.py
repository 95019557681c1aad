"""Declared options, open prior kinds and levels, and the sample run record, through the installed CLI.

Refusals are tested as classes (tables of bad values per option type and per flag), each
a one-line error with nothing written. The out-of-tree plugin at the end adds a prior kind
(``toy``), a sampler and a scheduler of its own levels (``toy-levels``) and options, and
shows that only the right pairings compose.
"""

from __future__ import annotations

import inspect
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from latentzoo.core.contract.options import Option, OptionError, parse_options, resolve
from latentzoo.core.contract.registry import Registry

# --------------------------------------------------------------------------------------
# declarations and values (the parser itself)

TEMPERATURE = {"name": "temperature", "type": "float", "default": 1.0, "min": 0.0, "min_exclusive": True}


@pytest.mark.parametrize(
    ("decl", "fragment"),
    [
        ("temperature", "must be a dict"),
        ({"type": "float"}, "identifier"),
        ({"name": "a.b", "type": "float"}, "identifier"),
        ({"name": "x", "type": "double"}, "type must be one of float, int, bool, str"),
        ({"name": "x", "type": "float", "min": float("nan")}, "min must be a finite number"),
        ({"name": "x", "type": "float", "max": "1"}, "max must be a finite number"),
        ({"name": "x", "type": "str", "min": 0}, "only for int and float"),
        ({"name": "x", "type": "int", "min": 5, "max": 1}, "above max"),
        ({"name": "x", "type": "float", "default": 2.0, "max": 1.0}, "default 2.0 is not accepted"),
        ({"name": "x", "type": "int", "default": 1.5}, "default 1.5 is not accepted"),
        ({"name": "x", "type": "str", "choices": []}, "choices must be a non-empty list"),
        ({"name": "x", "type": "float", "choices": ["a"]}, "choices must be a non-empty list"),
        ({"name": "x", "type": "str", "default": "c", "choices": ["a", "b"]}, "default 'c' is not accepted"),
        ({"name": "x", "type": "float", "colour": "red"}, "unknown key(s) colour"),
        ({"name": "x", "type": "bool", "min_exclusive": "yes"}, "min_exclusive must be true or false"),
        ({"name": "steps", "type": "int", "default": 5}, "belongs to the pipeline"),
        ({"name": "x", "type": "float", "help": 3}, "help must be a string"),
    ],
)
def test_bad_option_declarations_are_refused_naming_the_component(decl, fragment):
    with pytest.raises(OptionError) as info:
        parse_options([decl], "component 'acme.thing'")
    assert fragment in str(info.value) and "acme.thing" in str(info.value)
    assert "\n" not in str(info.value)


def test_duplicate_and_non_list_declarations_are_refused():
    with pytest.raises(OptionError, match="declared twice"):
        parse_options([TEMPERATURE, TEMPERATURE], "c")
    with pytest.raises(OptionError, match="must be a list"):
        parse_options({"temperature": 1.0}, "c")


FLOAT = Option.from_declaration({"name": "t", "type": "float", "default": 1.0, "min": 0.0, "min_exclusive": True, "max": 2.0}, "c")
INT = Option.from_declaration({"name": "k", "type": "int", "default": None, "min": 1}, "c")
BOOL = Option.from_declaration({"name": "b", "type": "bool", "default": False}, "c")
STR = Option.from_declaration({"name": "s", "type": "str", "default": "a", "choices": ["a", "bb"]}, "c")


@pytest.mark.parametrize(
    ("option", "text", "value"),
    [
        (FLOAT, "0.5", 0.5),
        (FLOAT, "2", 2.0),
        (FLOAT, "1e-3", 1e-3),
        (INT, "3", 3),
        (INT, "null", None),
        (BOOL, "true", True),
        (BOOL, "false", False),
        (STR, "bb", "bb"),
    ],
)
def test_command_line_strings_become_typed_values(option, text, value):
    got = option.coerce(text, text=True)
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize(
    ("option", "value", "fragment"),
    [
        (FLOAT, "nan", "finite"),
        (FLOAT, "inf", "finite"),
        (FLOAT, "-inf", "finite"),
        (FLOAT, ".nan", "finite"),
        (FLOAT, "0", "must be > 0"),
        (FLOAT, "2.5", "must be <= 2"),
        (FLOAT, "abc", "must be a number"),
        (FLOAT, "true", "must be a number"),
        (FLOAT, "null", "needs a value"),
        (FLOAT, "[1, 2]", "must be a number"),
        (INT, "0", "must be >= 1"),
        (INT, "1.5", "must be an integer"),
        (INT, "2.0", "write 2"),
        (INT, "x", "must be an integer"),
        (INT, "true", "must be an integer"),
        (BOOL, "1", "true or false"),
        (BOOL, "yes please", "true or false"),
        (STR, "c", "must be one of a, bb"),
    ],
)
def test_bad_values_are_one_line_naming_the_accepted_range(option, value, fragment):
    with pytest.raises(OptionError) as info:
        option.coerce(value, text=True)
    message = str(info.value)
    assert fragment in message and "\n" not in message
    assert f"accepted: {option.signature()}" in message


@pytest.mark.parametrize("value", [float("nan"), float("inf"), math.inf, "1.0", True, [1.0]])
def test_yaml_values_of_the_wrong_kind_are_refused(value):
    with pytest.raises(OptionError):
        FLOAT.coerce(value)


def test_resolve_routes_keys_to_roles_and_requires_qualified_names_when_ambiguous():
    shared = {"name": "strength", "type": "float", "default": 1.0}
    declared = {
        "prior": parse_options([{"name": "class_label", "type": "int", "min": 0}], "p"),
        "sampler": parse_options([TEMPERATURE, shared], "s"),
        "scheduler": parse_options([shared], "k"),
    }
    steps, per_role = resolve(declared, {"temperature": "0.5", "sampler.strength": "2", "steps": "7"}, where="pipeline p", text=True)
    assert steps == 7 and per_role == {"prior": {}, "sampler": {"temperature": 0.5, "strength": 2.0}, "scheduler": {}}
    with pytest.raises(OptionError, match=r"write one of sampler\.strength, scheduler\.strength"):
        resolve(declared, {"strength": 1.0}, where="pipeline p")
    with pytest.raises(OptionError) as info:
        resolve(declared, {"temprature": 1.0}, where="pipeline p")
    message = str(info.value)
    assert "did you mean temperature?" in message
    for accepted in ("steps=int[1, inf)", "class_label=int[0, inf) or null", "temperature=float(0, inf)", "sampler.strength=float"):
        assert accepted in message
    with pytest.raises(OptionError, match="--steps must be at least 1"):
        resolve(declared, {"steps": -5}, where="pipeline p")


# --------------------------------------------------------------------------------------
# the CLI: --set, shortcuts, refusals, info


def sample(cli, tmp_path: Path, name: str, *args: str, target: str = "digits-vqgan-ar"):
    out = tmp_path / f"{name}.png"
    return out, cli("sample", target, "-n", "4", "--seed", "1", "-o", str(out), "--no-progress", *args)


SHORTCUT_EQUIVALENTS = [
    (["--temperature", "0.7"], ["--set", "temperature=0.7"]),
    (["--top-k", "5"], ["--set", "top_k=5"]),
    (["--top-p", "0.5"], ["--set", "top_p=0.5"]),
    (["--class", "3", "--guidance", "2"], ["--set", "class_label=3", "--set", "guidance=2.0"]),
]


def test_set_and_shortcut_flags_give_identical_bytes(cli, tmp_path):
    plain, result = sample(cli, tmp_path, "plain")
    result.assert_ok()
    for i, (shortcut, setting) in enumerate(SHORTCUT_EQUIVALENTS):
        a, ra = sample(cli, tmp_path, f"shortcut{i}", *shortcut)
        b, rb = sample(cli, tmp_path, f"set{i}", *setting)
        ra.assert_ok(), rb.assert_ok()
        assert a.read_bytes() == b.read_bytes(), shortcut
        assert a.read_bytes() != plain.read_bytes(), shortcut  # the option reached the sampler / prior
        recorded = json.loads(a.with_suffix(".json").read_text())["options"]
        assert recorded == json.loads(b.with_suffix(".json").read_text())["options"]
        assert recorded and set(recorded) <= {"temperature", "top_k", "top_p", "class_label", "guidance", "random_class"}


def test_pipeline_defaults_reach_the_sampler_and_an_explicit_value_overrides_them(cli, tmp_path):
    """digits-vqgan-ar's defaults say temperature 0.9: --set temperature=0.9 changes nothing, 1.0 does."""
    default, r1 = sample(cli, tmp_path, "default", target="digits-vqgan-ar")
    same, r2 = sample(cli, tmp_path, "same", "--set", "temperature=0.9", target="digits-vqgan-ar")
    other, r3 = sample(cli, tmp_path, "other", "--temperature", "1.0", target="digits-vqgan-ar")
    for result in (r1, r2, r3):
        result.assert_ok()
    assert default.read_bytes() == same.read_bytes() != other.read_bytes()
    assert json.loads(default.with_suffix(".json").read_text())["options"] == {"temperature": 0.9, "random_class": True, "guidance": 1.25}


@pytest.mark.parametrize(
    ("target", "args", "fragments"),
    [
        (
            "digits-vqgan-ar",
            ["--set", "nonsense=1"],
            ["unknown option 'nonsense'", "temperature=float(0, inf)", "top_k=int[1, inf) or null"],
        ),
        ("digits-vqgan-ar", ["--eta", "0.5"], ["unknown option 'eta'", "digits-vqgan-ar", "accepted: steps=int[1, inf)"]),
        ("digits-vae", ["--top-k", "3"], ["unknown option 'top_k'", "temperature=float(0, inf)"]),
        ("digits-vae", ["--class", "3"], ["unknown option 'class_label'", "digits-vae"]),
        ("digits-vqgan-ar", ["--set", "temperature"], ["--set 'temperature'", "KEY=VALUE"]),
        ("digits-vqgan-ar", ["--set", "temperature=0.5", "--temperature", "0.7"], ["temperature is given twice"]),
        ("digits-vqgan-ar", ["--temperature", "nan"], ["temperature", "finite", "accepted: temperature=float(0, inf)"]),
        ("digits-vqgan-ar", ["--temperature", "inf"], ["temperature", "finite"]),
        ("digits-vqgan-ar", ["--temperature", "0"], ["temperature must be > 0"]),
        ("digits-vqgan-ar", ["--temperature", "-1"], ["temperature must be > 0"]),
        ("digits-vqgan-ar", ["--temperature", "hot"], ["temperature must be a number"]),
        ("digits-vae", ["--temperature", ".nan"], ["temperature", "finite"]),
        ("digits-vqgan-ar", ["--top-k", "0"], ["top_k must be >= 1"]),
        ("digits-vqgan-ar", ["--top-k", "2.5"], ["top_k must be an integer"]),
        ("digits-vqgan-ar", ["--top-p", "0"], ["top_p must be > 0"]),
        ("digits-vqgan-ar", ["--top-p", "1.5"], ["top_p must be <= 1"]),
        ("digits-vqgan-ar", ["--guidance", "nan"], ["guidance", "finite"]),
        ("digits-vqgan-ar", ["--guidance", "2", "--set", "random_class=false"], ["--guidance needs --class"]),
        ("digits-vqgan-ar", ["--class", "10"], ["--class must be between 0 and 9"]),
        ("digits-vqgan-ar", ["--class", "-1"], ["class_label must be >= 0"]),
        ("digits-vqgan-ar", ["--class", "three"], ["class_label must be an integer"]),
        ("digits-vqgan-ar", ["--steps", "0"], ["--steps must be at least 1"]),
        ("digits-vqgan-ar", ["--steps", "many"], ["steps must be an integer"]),
        ("digits-vae", ["--seed", "-1"], ["--seed must be between 0 and 2**63-1"]),
        ("digits-vae", ["--seed", str(2**70)], ["--seed must be between 0 and 2**63-1"]),
        ("digits-vae", ["--seed", str(2**63)], ["--seed must be between 0 and 2**63-1"]),
        ("digits-vae", ["--nrow", "0"], ["--nrow must be at least 1"]),
        ("digits-vae", ["--nrow", "-1"], ["--nrow must be at least 1"]),
        ("digits-vae", ["-n", "0"], ["-n must be at least 1"]),
        ("digits-vae", ["-n", "-3"], ["-n must be at least 1"]),
        ("digits-vae", ["--batch-size", "0"], ["--batch-size must be at least 1"]),
    ],
)
def test_bad_sampling_options_are_one_line_and_write_nothing(cli, tmp_path, target, args, fragments):
    out = tmp_path / "x.png"
    cli("sample", target, "-o", str(out), "--no-progress", *args).assert_one_line_error(*fragments)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config", "cwd"]


def test_largest_seed_is_accepted(cli, tmp_path):
    out, result = sample(cli, tmp_path, "big", "--seed", str(2**63 - 1), target="digits-vae")
    result.assert_ok()
    assert json.loads(out.with_suffix(".json").read_text())["seed"] == 2**63 - 1


def test_info_shows_declared_options_without_torch(cli):
    probe = (
        "import runpy, sys\n"
        "sys.argv = ['latentzoo', *sys.argv[1:]]\n"
        "try:\n    runpy.run_module('latentzoo', run_name='__main__', alter_sys=True)\n"
        "finally:\n    print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', file=sys.stderr)\n"
    )
    result = cli.python("-c", probe, "info", "digits-vqgan-ar", "--json")
    assert result.returncode == 0 and result.stderr.strip().endswith("NO-TORCH"), str(result)
    options = result.json()["options"]
    sampler = {o["name"]: o for o in options["sampler tokens"]}
    assert sampler["temperature"]["type"] == "float" and sampler["temperature"]["range"] == "(0, inf)"
    assert sampler["temperature"]["default"] == 0.9  # the pipeline's default, not the declared 1.0
    assert sampler["random_class"]["default"] is True
    assert sampler["top_k"]["range"] == "[1, inf) or null" and sampler["top_p"]["range"] == "(0, 1] or null"
    assert all(o["help"] for o in sampler.values())
    prior = {o["name"] for o in options["prior digits-vqgan-ar-prior"]}
    assert prior == {"class_label", "guidance"}
    text = cli("info", "tokens").assert_ok().stdout
    assert "temperature" in text and "(0, inf)" in text and "Divide the logits" in text
    assert cli("info", "analytic", "--json").assert_ok().json()["options"][0]["name"] == "temperature"


# --------------------------------------------------------------------------------------
# compose --set and pipeline defaults


def test_compose_set_stores_validated_typed_defaults(cli, tmp_path):
    out = tmp_path / "p.yaml"
    parts = ["--encoder", "digits-vqgan-k16", "--prior", "digits-vqgan-ar-prior", "--decoder", "digits-vqgan-k16", "--sampler", "tokens"]
    cli(
        "compose", *parts, "--set", "temperature=0.8", "--set", "top_k=20", "--set", "random_class=true", "--steps", "3", "-o", str(out)
    ).assert_ok()
    import yaml

    defaults = yaml.safe_load(out.read_text())["pipelines"]["composed"]["defaults"]
    assert defaults == {"steps": 3, "temperature": 0.8, "top_k": 20, "random_class": True}
    assert isinstance(defaults["top_k"], int)
    a, ra = sample(cli, tmp_path, "file", target=str(out))
    b, rb = sample(cli, tmp_path, "flags", "--temperature", "0.8", "--top-k", "20", "--guidance", "1")  # the file has no guidance default
    ra.assert_ok(), rb.assert_ok()
    assert a.read_bytes() == b.read_bytes()
    for bad, fragment in (
        (["--set", "top_k=0"], "top_k must be >= 1"),
        (["--set", "nonsense=1"], "unknown option 'nonsense'"),
        (["--eta", "0.1"], "unknown option 'eta'"),
        (["--steps", "-5"], "--steps must be at least 1"),
        (["--set", "temperature=.inf"], "finite"),
    ):
        cli("compose", *parts, *bad).assert_one_line_error(fragment)


def test_typod_default_in_a_registry_pipeline_is_one_line_naming_pipeline_key_and_accepted(cli, tmp_path):
    registry = tmp_path / "typo.yaml"
    registry.write_text(
        "pipelines:\n"
        "  typo-ar:\n"
        "    {encoder: digits-vqgan-k16, prior: digits-vqgan-ar-prior, decoder: digits-vqgan-k16, sampler: tokens,\n"
        "     defaults: {temprature: 0.5}}\n"
    )
    cli("--registry", str(registry), "sample", "typo-ar", "-o", str(tmp_path / "x.png")).assert_one_line_error(
        "pipeline typo-ar (its defaults)", "'temprature'", "did you mean temperature?", "temperature=float(0, inf)"
    )
    info = cli("--registry", str(registry), "info", "typo-ar", "--json").assert_ok().json()
    assert info["composes"]["ok"] is False and "temprature" in info["composes"]["error"]
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize(
    ("space", "fragment"),
    [
        ("scaling_factor: 0", "scaling_factor must be a finite number > 0"),
        ("scaling_factor: -1.5", "scaling_factor must be a finite number > 0"),
        ("scaling_factor: .nan", "scaling_factor must be a finite number > 0"),
        ("scaling_factor: .inf", "scaling_factor must be a finite number > 0"),
        ("scaling_factor: 1.0, shift: .nan", "shift must be a finite number"),
        ("scaling_factor: 1.0, shift: -.inf", "shift must be a finite number"),
    ],
)
def test_bad_latent_scaling_is_refused_at_parse_time(cli, tmp_path, space, fragment):
    registry = tmp_path / "scale.yaml"
    registry.write_text(
        "components:\n"
        "  bad-prior:\n"
        "    class: vae.gaussian\n"
        "    roles: [prior]\n"
        "    config: {channels: 2, size: 4}\n"
        f"    latent_space: {{kind: continuous, channels: 2, factor: 8, autoencoder: 'sha256:d348eef455448691', {space}}}\n"
    )
    line = cli("--registry", str(registry), "list").assert_one_line_error(fragment, "bad-prior", "latent_space")
    assert f"{registry}:6" in line


# --------------------------------------------------------------------------------------
# the run record: sidecar content and atomicity


def test_sidecar_records_the_run_and_is_strict_json(cli, tmp_path):
    out, result = sample(cli, tmp_path, "rec", "--top-p", "0.9", "--class", "4", "--batch-size", "3")
    result.assert_ok()
    text = out.with_suffix(".json").read_text()
    record = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c} in the sidecar"))
    assert record["format"] == "latentzoo.samples/1"
    assert record["pipeline"] == "digits-vqgan-ar" and record["sampler"] == "tokens" and record["scheduler"] is None
    assert record["seed"] == 1 and record["n"] == 4 and record["batch_size"] == 3 and record["steps"] is None
    assert record["options"] == {"temperature": 0.9, "random_class": True, "guidance": 1.25, "top_p": 0.9, "class_label": 4}
    assert set(record["sha256"]) == {"digits-vqgan-k16", "digits-vqgan-ar-prior"}
    assert record["files"] == ["rec.png"] and {"latentzoo", "torch", "python"} <= set(record["versions"])


def test_an_unrelated_json_beside_the_png_is_never_overwritten(cli, tmp_path):
    out = tmp_path / "x.png"
    for content in ('{"my": "notes"}', "not json at all", "[1, 2]"):
        out.with_suffix(".json").write_text(content)
        cli("sample", "digits-vae", "-n", "2", "-o", str(out), "--no-progress").assert_one_line_error(
            "refusing to overwrite", "x.json", "not a latentzoo sample record"
        )
        assert out.with_suffix(".json").read_text() == content
        assert not out.exists()
    out.with_suffix(".json").unlink()
    cli("sample", "digits-vae", "-n", "2", "-o", str(out), "--no-progress").assert_ok()
    first = out.read_bytes()
    cli("sample", "digits-vae", "-n", "2", "--seed", "5", "-o", str(out), "--no-progress").assert_ok()  # its own sidecar: replaced
    assert out.read_bytes() != first and json.loads(out.with_suffix(".json").read_text())["seed"] == 5
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "samples.json").write_text("{}")
    cli("sample", "digits-vae", "-n", "2", "-o", f"{tmp_path / 'd'}/", "--no-progress").assert_one_line_error("samples.json")
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["samples.json"]


def test_an_unwritable_sidecar_leaves_no_png(cli, tmp_path):
    out = tmp_path / "y.png"
    out.with_suffix(".json").mkdir()
    cli("sample", "digits-vae", "-n", "2", "-o", str(out), "--no-progress").assert_one_line_error("y.json", "is a directory")
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config", "cwd", "y.json"]


@pytest.mark.parametrize("per_sample", [False, True])
def test_a_failed_rename_rolls_back_to_the_previous_files(tmp_path, monkeypatch, per_sample):
    """The sidecar's rename fails after the PNG(s) were renamed: the earlier result is restored, no temporaries remain."""
    import os

    import latentzoo
    from latentzoo.core.contract.errors import LatentzooError

    monkeypatch.delenv("LATENTZOO_REGISTRY", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    output = f"{tmp_path / 'out'}/" if per_sample else str(tmp_path / "out.png")
    latentzoo.sample("digits-vae", 3, seed=0, output=output)
    before = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    real = os.replace

    def failing(src, dst):
        if str(dst).endswith(".json") and not str(src).endswith(".bak"):  # the sidecar's commit, not its restore
            raise PermissionError(13, "Permission denied", str(dst))
        return real(src, dst)

    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(LatentzooError, match="nothing was written"):
        latentzoo.sample("digits-vae", 3, seed=9, output=output)
    monkeypatch.setattr(os, "replace", real)
    after = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before


def test_a_failing_sampler_writes_nothing(tmp_path, monkeypatch):
    """Non-finite latents stop the run with one line naming the sampler; no file, no folder is left."""
    import latentzoo
    from latentzoo.core.contract.errors import LatentzooError
    from latentzoo.plugins.vae.model import AnalyticSampler

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setattr(AnalyticSampler, "sample", lambda self, prior, noise, **kw: noise * float("nan"))
    for output in (f"{tmp_path / 'new' / 'dir'}/", str(tmp_path / "sub" / "g.png")):
        with pytest.raises(LatentzooError, match="sampler analytic produced non-finite latents from prior digits-vae-prior"):
            latentzoo.sample("digits-vae", 70, output=output, batch_size=64)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------
# batches: reproducible, and the first batch is the unbatched draw


def tiles(path: Path, n: int, size: int = 32, padding: int = 2) -> list[bytes]:
    arr = np.asarray(Image.open(path))
    nrow = math.ceil(math.sqrt(n))
    out = []
    for i in range(n):
        r, k = divmod(i, nrow)
        top, left = padding + r * (size + padding), padding + k * (size + padding)
        out.append(arr[top : top + size, left : left + size].tobytes())
    return out


def test_batches_are_reproducible_and_a_sample_follows_its_index(cli, tmp_path):
    """Per-index seeds (core.runtime.seeding): sample i is the same draw whatever the batch size and -n."""

    def run(name: str, *args: str) -> Path:
        out = tmp_path / f"{name}.png"
        cli("sample", "digits-dalle", "--seed", "7", "-o", str(out), "--no-progress", *args).assert_ok()
        return out

    one = run("one", "-n", "5")
    again = run("again", "-n", "5", "--batch-size", "5")
    split = run("split", "-n", "5", "--batch-size", "2")
    split2 = run("split2", "-n", "5", "--batch-size", "2")
    assert one.read_bytes() == again.read_bytes()
    assert split.read_bytes() == split2.read_bytes()  # same seed and batch size: identical bytes
    two = run("two", "-n", "2")
    a, b = tiles(one, 5), tiles(split, 5)
    assert b[:2] == tiles(two, 2)  # -n 2 is the first 2 of -n 5 (same batch shape: bit-identical)
    diff = max(int(np.abs(np.frombuffer(x, np.uint8).astype(int) - np.frombuffer(y, np.uint8)).max()) for x, y in zip(a, b, strict=True))
    assert diff <= 1  # another batch size: the same draws, within one grey level
    assert len(set(b)) == 5  # every index draws a fresh sample, not a copy
    each = tmp_path / "each"
    cli("sample", "digits-dalle", "--seed", "7", "-n", "5", "--batch-size", "2", "-o", f"{each}/", "--no-progress").assert_ok()
    assert sorted(p.name for p in each.iterdir()) == [f"{i:04d}.png" for i in range(5)] + ["samples.json"]
    assert [np.asarray(Image.open(each / f"{i:04d}.png")).tobytes() for i in range(5)] == b
    assert json.loads((each / "samples.json").read_text())["files"] == [f"{i:04d}.png" for i in range(5)]


# --------------------------------------------------------------------------------------
# an out-of-tree plugin with a new prior kind, its own levels, a scheduler and options

TOY_INIT = '''
    """A new prior kind (toy), a sampler and a scheduler of toy-levels, and their options."""
    from pathlib import Path

    from latentzoo.core.contract.hookspecs import hookimpl

    LATENTZOO_PLUGIN_API = 1


    @hookimpl
    def latentzoo_components():
        strength = {"name": "strength", "type": "float", "default": 1.0, "min": 0.0, "max": 4.0, "help": "Scale"}
        return [
            {"name": "toy.prior", "roles": ["prior"], "kind": "toy", "scaled_latents": True, "family": "toy",
             "target": "toy_zoo.model:ToyPrior",
             "options": [{"name": "offset", "type": "float", "default": 0.0, "min": -1.0, "max": 1.0, "help": "Latent mean"}]},
            {"name": "toy.sampler", "roles": ["sampler"], "drives": ["toy"], "levels": "toy-levels", "family": "toy",
             "target": "toy_zoo.model:ToySampler",
             "options": [{"name": "shrink", "type": "float", "default": 1.0, "min": 0.0, "max": 2.0, "help": "Scale of the draw"},
                         strength]},
            {"name": "toy.scheduler", "roles": ["scheduler"], "levels": "toy-levels", "family": "toy",
             "target": "toy_zoo.model:ToyScheduler",
             "options": [{"name": "spacing", "type": "str", "default": "linear", "choices": ["linear", "quadratic"],
                          "help": "How levels fall"}, strength]},
            {"name": "toy.plain", "roles": ["sampler"], "drives": ["toy"], "levels": "toy-levels", "family": "toy",
             "target": "toy_zoo.model:ToySampler", "description": "The toy sampler without declared options"},
            {"name": "toy.sigmas", "roles": ["scheduler"], "levels": "sigma", "family": "toy",
             "target": "toy_zoo.model:ToySigmas", "description": "Log-spaced sigmas of the prior's training schedule"},
        ]


    @hookimpl
    def latentzoo_registry():
        return [str(Path(__file__).with_name("registry.yaml"))]
'''

TOY_MODEL = """
    import math

    import torch

    from latentzoo.core.contract.interfaces import Prior, Sampler, Scheduler


    class ToyPrior(Prior):
        kind = "toy"

        def __init__(self, *, channels, size):
            self.channels, self.size = channels, size

        @property
        def latent_shape(self):
            return (self.channels, self.size, self.size)


    class ToyScheduler(Scheduler):
        levels = "toy-levels"

        def schedule(self, prior, steps, *, spacing="linear", strength=1.0):
            t = [1.0 - i / steps for i in range(steps)]
            return [strength * (x * x if spacing == "quadratic" else x) for x in t] + [0.0]


    class ToySigmas(Scheduler):
        levels = "sigma"

        def schedule(self, prior, steps):
            schedule = prior.noise_schedule
            sigmas = getattr(schedule, "sigmas", None)
            if sigmas is None:
                a = torch.as_tensor(schedule.alphas_cumprod, dtype=torch.float64)
                sigmas = ((1 - a) / a).sqrt()
            hi, lo = float(max(sigmas)), float(min(sigmas))
            return [math.exp(math.log(hi) + (math.log(lo) - math.log(hi)) * i / max(steps - 1, 1)) for i in range(steps)] + [0.0]


    class ToySampler(Sampler):
        drives = ("toy",)
        levels = "toy-levels"

        def __init__(self, *, shrink=1.0):
            self.shrink = shrink

        def sample(self, prior, noise, *, levels, generator, progress=None, shrink=None, strength=1.0, offset=0.0, **options):
            assert levels[-1] == 0.0 and all(a > b for a, b in zip(levels, levels[1:])), levels
            x = noise
            for i, level in enumerate(levels[:-1]):
                x = x * (1.0 - 0.1 * level) + 0.01 * torch.randn(x.shape, generator=generator)
                if progress:
                    progress(i + 1, len(levels) - 1)
            return x * (self.shrink if shrink is None else shrink) * strength + offset
"""

TOY_REGISTRY = """
    components:
      toy-prior:
        family: toy
        class: toy.prior
        roles: [prior]
        config: {channels: 2, size: 4}
        latent_space: {kind: continuous, channels: 2, factor: 8, autoencoder: 'sha256:d348eef455448691', scaling_factor: 1.0, shift: 0.0}
      toy-prior-unscaled:
        family: toy
        class: toy.prior
        roles: [prior]
        config: {channels: 2, size: 4}
        latent_space: {kind: continuous, channels: 2, factor: 8, autoencoder: 'sha256:d348eef455448691'}
      toy-sampler: {family: toy, class: toy.sampler, roles: [sampler], config: {shrink: 1.0}}
      toy-plain: {family: toy, class: toy.plain, roles: [sampler]}
      toy-sched: {family: toy, class: toy.scheduler, roles: [scheduler]}
      toy-sigmas: {family: toy, class: toy.sigmas, roles: [scheduler]}
    pipelines:
      toy-digits:
        {encoder: digits-klvae-f8, prior: toy-prior, decoder: digits-klvae-f8, sampler: toy-sampler, scheduler: toy-sched,
         defaults: {steps: 3}}
      toy-shrunk:
        {encoder: digits-klvae-f8, prior: toy-prior, decoder: digits-klvae-f8, sampler: toy-sampler, scheduler: toy-sched,
         defaults: {steps: 3, shrink: 0.5}}
"""


@pytest.fixture(scope="module")
def toy_site(plugin_factory, helpers):
    spec = helpers.PluginSpec(
        dist="toy-zoo", package="toy_zoo", init=TOY_INIT, extra={"model.py": TOY_MODEL, "registry.yaml": TOY_REGISTRY}
    )
    return plugin_factory(spec)


# Any shipped scheduler (they all pick sigma levels), whatever the diffusion family names them.
SIGMA_SCHEDULER = next(e.name for e in Registry.load().list(role="scheduler") if e.layer == "builtin")
TOY_PARTS = ["--prior", "toy-prior", "--decoder", "digits-klvae-f8", "--sampler", "toy-sampler", "--scheduler", "toy-sched"]


def test_toy_plugin_loads_with_its_new_kind_and_levels(cli, toy_site):
    plugins = {p["name"]: p for p in cli("plugins", "--json", sites=[toy_site]).assert_ok().json()}
    assert plugins["toy_zoo"]["status"] == "ok", plugins["toy_zoo"]
    assert plugins["toy_zoo"]["components"] == ["toy.prior", "toy.sampler", "toy.scheduler", "toy.plain", "toy.sigmas"]
    info = cli("info", "toy-digits", "--json", sites=[toy_site]).assert_ok().json()
    assert info["composes"]["ok"] is True
    assert [o["name"] for o in info["options"]["scheduler toy-sched"]] == ["spacing", "strength"]
    assert info["options"]["scheduler toy-sched"][0]["range"] == "{linear,quadratic}"


def test_toy_right_pairing_composes_and_samples(cli, tmp_path, toy_site):
    composed = tmp_path / "toy.yaml"
    cli("compose", *TOY_PARTS, "--set", "shrink=0.5", "--steps", "4", "-o", str(composed), sites=[toy_site]).assert_ok()

    def run(name: str, *args: str) -> bytes:
        out = tmp_path / f"{name}.png"
        cli("sample", *args, "-n", "4", "-o", str(out), "--no-progress", sites=[toy_site]).assert_ok()
        return out.read_bytes()

    base = run("base", "toy-digits")
    record = json.loads((tmp_path / "base.json").read_text())
    assert record["scheduler"] == "toy-sched" and record["steps"] == 3 and record["options"] == {}
    assert run("again", "toy-digits") == base
    assert run("composed", str(composed)) == run("flags", "toy-digits", "--steps", "4", "--set", "shrink=0.5")
    changed = {
        "steps": run("steps", "toy-digits", "--steps", "5"),  # the scheduler got steps, the sampler walked them
        "spacing": run("spacing", "toy-digits", "--set", "spacing=quadratic"),  # a scheduler option
        "offset": run("offset", "toy-digits", "--set", "offset=0.5"),  # a prior option
        "shrink": run("shrink", "toy-digits", "--set", "shrink=0.2"),  # a sampler option
        "strength": run("strength", "toy-digits", "--set", "sampler.strength=0.5"),  # qualified: both declare it
    }
    assert all(value != base for value in changed.values()), [k for k, v in changed.items() if v == base]
    assert json.loads((tmp_path / "strength.json").read_text())["options"] == {"sampler.strength": 0.5}


def test_swapping_a_part_drops_the_defaults_that_no_longer_apply(cli, tmp_path, toy_site):
    """toy-shrunk's default shrink belongs to toy-sampler: with --sampler toy-plain it is dropped, silently
    (the user never set it: a warning on every swap was noise, issue 28); the sidecar's defaults show what applied."""
    swapped, plain = tmp_path / "swapped.png", tmp_path / "plain.png"
    result = cli("sample", "toy-shrunk", "--sampler", "toy-plain", "-n", "2", "-o", str(swapped), "--no-progress", sites=[toy_site])
    result.assert_ok()
    assert not any("warning" in line for line in result.stderr_lines), str(result)
    assert "shrink" not in json.loads(swapped.with_suffix(".json").read_text())["defaults"]
    cli("sample", "toy-digits", "--sampler", "toy-plain", "-n", "2", "-o", str(plain), "--no-progress", sites=[toy_site]).assert_ok()
    assert swapped.read_bytes() == plain.read_bytes()
    cli("sample", "toy-digits", "--sampler", "toy-plain", "--set", "shrink=0.5", sites=[toy_site]).assert_one_line_error(
        "unknown option 'shrink'"
    )


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--set", "shrink=3"], ["shrink must be <= 2", "accepted: shrink=float[0, 2]"]),
        (["--set", "shrink=nan"], ["shrink", "finite"]),
        (["--set", "spacing=cubic"], ["spacing must be one of linear, quadratic", "spacing=str{linear,quadratic}"]),
        (["--set", "offset=2"], ["offset must be <= 1"]),
        (["--set", "strength=1"], ["write one of sampler.strength, scheduler.strength"]),
        (
            ["--set", "nonsense=1"],
            ["unknown option 'nonsense'", "shrink=float[0, 2]", "offset=float[-1, 1]", "spacing=str{linear,quadratic}"],
        ),
        (["--eta", "0.1"], ["unknown option 'eta'", "toy-digits"]),
    ],
)
def test_toy_options_are_validated(cli, tmp_path, toy_site, args, fragments):
    out = tmp_path / "x.png"
    cli("sample", "toy-digits", "-o", str(out), "--no-progress", *args, sites=[toy_site]).assert_one_line_error(*fragments)
    assert not out.exists()


@pytest.mark.parametrize(
    ("parts", "fragments"),
    [
        # its sampler on an autoregressive prior
        (
            ["--prior", "digits-vqgan-ar-prior", "--decoder", "digits-vqgan-k16", "--sampler", "toy-sampler", "--scheduler", "toy-sched"],
            ["toy-sampler", "digits-vqgan-ar-prior", "toy", "autoregressive"],
        ),
        # the token sampler on its prior
        (
            ["--prior", "toy-prior", "--decoder", "digits-klvae-f8", "--sampler", "tokens"],
            ["tokens", "toy-prior", "autoregressive", "is toy"],
        ),
        # the analytic sampler on its prior
        (["--prior", "toy-prior", "--decoder", "digits-klvae-f8", "--sampler", "analytic"], ["analytic", "toy-prior"]),
        # its sampler without a scheduler
        (
            ["--prior", "toy-prior", "--decoder", "digits-klvae-f8", "--sampler", "toy-sampler"],
            ["toy-sampler", "toy-levels", "no scheduler"],
        ),
        # its scheduler with a sigma sampler
        (
            ["--prior", "digits-ldm", "--decoder", "digits-vqgan", "--sampler", "ddim", "--scheduler", "toy-sched"],
            ["toy-sched", "ddim", "toy-levels"],
        ),
        # a built-in (sigma) scheduler with its sampler
        (
            ["--prior", "toy-prior", "--decoder", "digits-klvae-f8", "--sampler", "toy-sampler", "--scheduler", SIGMA_SCHEDULER],
            [SIGMA_SCHEDULER, "toy-sampler", "sigma levels", "toy-levels"],
        ),
        # a scheduler for a sampler that walks no levels
        (
            ["--prior", "digits-vae-prior", "--decoder", "digits-klvae-f8", "--sampler", "analytic", "--scheduler", "toy-sched"],
            ["analytic", "toy-sched", "drop the scheduler"],
        ),
        # its prior models scaled latents: an instance without scaling_factor is refused
        (
            ["--prior", "toy-prior-unscaled", "--decoder", "digits-klvae-f8", "--sampler", "toy-sampler", "--scheduler", "toy-sched"],
            ["toy-prior-unscaled", "scaling_factor"],
        ),
    ],
)
def test_toy_wrong_pairings_are_refused_at_compose_time(cli, toy_site, parts, fragments):
    cli("compose", *parts, sites=[toy_site]).assert_one_line_error(*fragments)


def _diffusion_samplers_on_new_contract() -> bool:
    from latentzoo.plugins.diffusion.samplers import DDIMSampler

    return "levels" in inspect.signature(DDIMSampler.sample).parameters


@pytest.mark.skipif(
    not _diffusion_samplers_on_new_contract(), reason="diffusion samplers not yet on the new contract (DDIMSampler.sample has no levels)"
)
def test_builtin_ddim_runs_on_a_plugin_sigma_scheduler(cli, tmp_path, toy_site):
    from latentzoo.plugins.datasets.evaluate import classifier_logits

    out = tmp_path / "ddim.png"
    cli(
        "sample", "digits", "--scheduler", "toy-sigmas", "--steps", "20", "-n", "16", "-o", str(out), "--no-progress", sites=[toy_site]
    ).assert_ok()
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["sampler"] == "ddim" and record["scheduler"] == "toy-sigmas" and record["steps"] == 20
    arr = np.asarray(Image.open(out), dtype=np.float32) / 127.5 - 1.0
    import torch

    grid = torch.from_numpy(np.stack([arr[2 + r * 34 : 34 + r * 34, 2 + k * 34 : 34 + k * 34] for r in range(4) for k in range(4)]))[
        :, None
    ]
    with torch.inference_mode():
        probs = classifier_logits(grid).softmax(-1)
    assert (probs.max(-1).values > 0.8).float().mean() >= 0.6, probs.max(-1).values


# --------------------------------------------------------------------------------------
# a bad declaration breaks only its own plugin

BAD_DECLARATIONS = {
    "empty-kind": ({"roles": ["prior"], "kind": ""}, "must declare kind"),
    "kind-not-string": ({"roles": ["prior"], "kind": 3}, "must declare kind"),
    "no-drives": ({"roles": ["sampler"]}, "must declare drives"),
    "drives-string": ({"roles": ["sampler"], "drives": "toy"}, "must declare drives"),
    "drives-empty": ({"roles": ["sampler"], "drives": []}, "must declare drives"),
    "levels-number": ({"roles": ["sampler"], "drives": ["toy"], "levels": 1}, "levels must be a non-empty string"),
    "scheduler-levels-empty": ({"roles": ["scheduler"], "levels": ""}, "levels must be a non-empty string"),
    "scaled-latents-string": ({"roles": ["prior"], "kind": "toy", "scaled_latents": "yes"}, "scaled_latents must be true or false"),
    "options-dict": ({"roles": ["scheduler"], "options": {"eta": 0.0}}, "options must be a list"),
    "option-type": ({"roles": ["scheduler"], "options": [{"name": "eta", "type": "number"}]}, "type must be one of"),
    "option-default": (
        {"roles": ["sampler"], "drives": ["toy"], "options": [{"name": "eta", "type": "float", "default": -1.0, "min": 0.0}]},
        "default -1.0 is not accepted",
    ),
}


@pytest.fixture(scope="module")
def bad_declaration_site(plugin_factory, helpers):
    specs = []
    for name, (decl, _) in BAD_DECLARATIONS.items():
        package = "bad_" + name.replace("-", "_")
        body = {"name": f"{package}.thing", "target": f"{package}:Thing", **decl}
        init = f"""
            from latentzoo.core.contract.hookspecs import hookimpl

            LATENTZOO_PLUGIN_API = 1


            @hookimpl
            def latentzoo_components():
                return [{body!r}]
        """
        specs.append(helpers.PluginSpec(dist=f"bad-{name}", package=package, init=init))
    return plugin_factory(*specs)


def test_a_bad_declaration_breaks_only_its_plugin_naming_it(cli, bad_declaration_site):
    report = {p["name"]: p for p in cli("plugins", "--json", sites=[bad_declaration_site]).assert_ok().json()}
    for name, (_, fragment) in BAD_DECLARATIONS.items():
        package = "bad_" + name.replace("-", "_")
        plugin = report[package]
        assert plugin["status"] == "broken", plugin
        assert fragment in plugin["error"] and f"{package}.thing" in plugin["error"], plugin["error"]
    assert all(p["status"] == "ok" for p in report.values() if p["builtin"])
    parts = ["--encoder", "digits-klvae-f8", "--prior", "digits-vae-prior", "--decoder", "digits-klvae-f8", "--sampler", "analytic"]
    assert "sampler: analytic" in cli("compose", *parts, sites=[bad_declaration_site]).assert_ok().stdout
