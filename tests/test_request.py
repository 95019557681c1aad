"""One way in (issue 28): the CLI and ``latentzoo.sample`` build the same SampleRequest, so for
one request they write the same bytes and refuse with the same line (the API's LatentzooError
carries the CLI's line without ``error: ``)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

pytest.importorskip("torch")

import latentzoo
from latentzoo.core.contract.errors import LatentzooError
from latentzoo.core.runtime.request import SampleRequest, validate

HERE = Path(__file__).resolve().parent


def _error_table():
    spec = importlib.util.spec_from_file_location("error_table", HERE / "test_error_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TABLE = _error_table()


def _row(row) -> tuple[str, list[str]]:
    values = row.values if hasattr(row, "values") else row
    return values[0], values[1]


# The error table's sample rows (by id) as API calls, plus more classes of bad request:
# (id, argv after `latentzoo`, positional args and keywords of latentzoo.sample). "{out}" is a fresh folder.
API_ROWS: dict[str, tuple[list[str] | None, tuple, dict]] = {
    "sample-steps-list": (None, ("{steps.yaml}",), {"output": "{out}/x.png"}),
    "sample-steps-str": (None, ("{steps-str.yaml}",), {"output": "{out}/x.png"}),
    "sample-nrow": (None, ("digits",), {"nrow": -1, "output": "{out}/x.png"}),
    "sample-seed": (None, ("digits",), {"seed": 2**70, "output": "{out}/x.png"}),
    "sample-guidance": (None, ("digits",), {"guidance": math.nan, "class_label": 1}),
    "steps-zero": (["sample", "digits", "--steps", "0"], ("digits",), {"steps": 0}),
    "steps-word": (["sample", "digits", "--steps", "many"], ("digits",), {"steps": "many"}),
    "n-zero": (["sample", "digits", "-n", "0"], ("digits", 0), {}),
    "batch-zero": (["sample", "digits", "--batch-size", "0"], ("digits",), {"batch_size": 0}),
    "unknown-option": (["sample", "digits", "--set", "etaa=1"], ("digits",), {"options": {"etaa": 1}}),
    "eta-range": (["sample", "digits", "--eta", "-1"], ("digits",), {"options": {"eta": -1}}),
    "twice": (["sample", "digits", "--guidance", "2", "--set", "guidance=3"], ("digits",), {"guidance": 2, "options": {"guidance": 3}}),
    "unknown-pipeline": (["sample", "digitz"], ("digitz",), {}),
    "wrong-sampler": (["sample", "digits", "--sampler", "tokens"], ("digits",), {"sampler": "tokens"}),
    "sampler-eta": (
        ["sample", "digits", "--sampler", "euler", "--scheduler", "karras", "--eta", "0.5"],
        ("digits",),
        {"sampler": "euler", "scheduler": "karras", "options": {"eta": 0.5}},
    ),
    "prompt-no-text": (["sample", "digits", "--prompt", "a seven"], ("digits",), {"prompt": "a seven"}),
    "negative-no-text": (["sample", "digits-cond", "--negative-prompt", "x"], ("digits-cond",), {"negative_prompt": "x"}),
    "class-unconditional": (["sample", "digits", "--class", "3", "-n", "1", "--steps", "1"], ("digits", 1), {"class_label": 3, "steps": 1}),
    "candidates-zero": (["sample", "digits-dalle", "--candidates", "0"], ("digits-dalle",), {"candidates": 0}),
    "candidates-no-scorer": (["sample", "digits", "--candidates", "2"], ("digits",), {"candidates": 2}),
    "prompt-and-prompts": (
        ["sample", "digits-t2i", "--prompt", "a", "--prompts-file", "{prompts.txt}"],
        ("digits-t2i",),
        {"prompt": "a", "prompts_file": "{prompts.txt}"},
    ),
    "prompts-missing": (["sample", "digits-t2i", "--prompts-file", "{out}/none.txt"], ("digits-t2i",), {"prompts_file": "{out}/none.txt"}),
    "output-json": (["sample", "digits", "-o", "{out}/x.json"], ("digits",), {"output": "{out}/x.json"}),
    "output-file-as-dir": (["sample", "digits", "-o", "{prompts.txt}/"], ("digits",), {"output": "{prompts.txt}/"}),
    "compose-missing-parts": (["sample", "--prior", "digits-ldm"], (None,), {"prior": "digits-ldm"}),
}


def test_every_sample_row_of_the_error_table_has_an_api_twin():
    sample_rows = {name for name, argv in map(_row, TABLE.ROWS) if argv[0] == "sample"}
    assert sample_rows <= set(API_ROWS), f"add API twins for {sorted(sample_rows - set(API_ROWS))}"


def _fill(value, files):
    if isinstance(value, str):
        for key, path in files.items():
            value = value.replace("{" + key + "}", path)
    return value


@pytest.mark.parametrize("key", sorted(API_ROWS))
def test_cli_and_api_refuse_with_the_same_line(key, capsys, tmp_path, monkeypatch, helpers):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    files = TABLE._files(tmp_path)
    (tmp_path / "prompts.txt").write_text("a one\na two\n")
    files["prompts.txt"] = str(tmp_path / "prompts.txt")
    argv, args, kwargs = API_ROWS[key]
    if argv is None:
        argv = dict(map(_row, TABLE.ROWS))[key]
    argv = [_fill(a, files) for a in argv]
    kwargs = {"output": str(tmp_path / "out" / "default.png"), **{k: _fill(v, files) for k, v in kwargs.items()}}
    result = helpers.in_process_cli(capsys)(*argv, "--no-progress", *([] if "-o" in argv else ["-o", kwargs["output"]]))
    line = result.assert_one_line_error()
    with pytest.raises(LatentzooError) as caught:
        latentzoo.sample(*[_fill(a, files) for a in args], **kwargs)
    assert line == f"error: {caught.value}"
    assert not list((tmp_path / "out").glob("*.png")), "a refused request wrote a file"


SAME_BYTES = {
    "swap": (
        ["digits", "--sampler", "euler", "--scheduler", "karras", "--steps", "2", "-n", "2"],
        ("digits", 2),
        {"sampler": "euler", "scheduler": "karras", "steps": 2},
    ),
    "text": (
        ["digits-t2i", "--prompt", "a seven", "--negative-prompt", "a one", "--guidance", "3", "--steps", "2", "-n", "1"],
        ("digits-t2i", 1),
        {"prompt": "a seven", "negative_prompt": "a one", "guidance": 3.0, "steps": 2},
    ),
    "class": (
        ["digits-cond", "--class", "4", "--guidance", "2", "--steps", "2", "-n", "2", "--eta", "0.5"],
        ("digits-cond", 2),
        {"class_label": 4, "guidance": 2, "steps": 2, "options": {"eta": 0.5}},
    ),
    "rerank": (
        ["digits-dalle", "--prompt", "a two", "--candidates", "2", "-n", "1"],
        ("digits-dalle", 1),
        {"prompt": "a two", "candidates": 2},
    ),
}


@pytest.mark.parametrize("key", sorted(SAME_BYTES))
def test_cli_and_api_write_the_same_bytes(key, capsys, tmp_path, monkeypatch, helpers):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    argv, args, kwargs = SAME_BYTES[key]
    cli_out, api_out = tmp_path / "cli.png", tmp_path / "api.png"
    result = helpers.in_process_cli(capsys)("sample", *argv, "--no-progress", "-o", str(cli_out))
    assert result.returncode == 0, result.stderr
    record = latentzoo.sample(*args, **kwargs, output=api_out)
    assert cli_out.read_bytes() == api_out.read_bytes()
    assert record["files"] == [api_out.name] or record.get("files")


def test_prompts_from_python_write_one_output_each(tmp_path):
    records = latentzoo.sample("digits-t2i", 1, prompts=["a one", "a two"], steps=1, output=tmp_path / "x.png")
    assert [r["options"]["prompt"] for r in records] == ["a one", "a two"]
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["x-000.png", "x-001.png"]


def test_a_swap_drops_the_old_parts_defaults_silently(recwarn):
    plan = validate(SampleRequest("digits", sampler="dpmpp-2m", scheduler="karras", steps=2))
    assert "eta" not in plan.spec.defaults and plan.spec.sampler == "dpmpp-2m"
    assert not recwarn.list


def test_the_request_is_frozen():
    request = SampleRequest("digits")
    with pytest.raises(AttributeError):
        request.n = 3  # type: ignore[misc]


# -- what a newcomer hit (issue 28, item 7) --------------------------------------------------


def test_one_image_is_written_at_the_models_size_and_chains_into_img2img(capsys, tmp_path, monkeypatch, helpers):
    from PIL import Image

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    lz = helpers.in_process_cli(capsys)
    one, grid, edit = tmp_path / "one.png", tmp_path / "grid.png", tmp_path / "edit.png"
    lz("sample", "digits", "-n", "1", "--steps", "2", "--no-progress", "-o", str(one)).assert_ok()
    assert Image.open(one).size == (32, 32)
    lz("img2img", "digits", str(one), "--steps", "2", "-o", str(edit)).assert_ok()
    assert Image.open(edit).size == (32, 32)
    lz("sample", "digits", "-n", "4", "--steps", "1", "--no-progress", "-o", str(grid)).assert_ok()
    lz("img2img", "digits", str(grid), "-o", str(edit)).assert_one_line_error("is 70x70: a grid of 2x2", "-o DIR/")


def test_info_of_an_unconditional_prior_lists_no_class_options(capsys, tmp_path, monkeypatch, helpers):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    lz = helpers.in_process_cli(capsys)
    shown = lz("info", "digits")
    assert shown.returncode == 0 and "class_label" not in shown.stdout and "guidance" not in shown.stdout
    assert "class_label" in lz("info", "digits-cond").stdout
    lz("sample", "digits", "--class", "3").assert_one_line_error("digits-ldm is unconditional", "class_label")


def test_the_wrong_sampler_refusal_lists_the_samplers_that_fit():
    with pytest.raises(LatentzooError, match=r"samplers for flow priors: flow-euler, flow-heun \(see"):
        validate(SampleRequest("digits-flow", sampler="euler"))


def test_sample_help_keeps_the_examples_apart(capsys, helpers):
    text = helpers.in_process_cli(capsys)("sample", "--help").stdout
    example = next(line for line in text.splitlines() if "--prompts-file prompts.txt" in line)
    assert "--candidates" not in example


def test_load_pipeline_with_a_swapped_sampler_drops_the_defaults_that_do_not_apply():
    """benchmarks/quality.py digits --sampler dpmpp-2m failed with "unknown option 'eta'" (DDIM's default)."""
    pipe = latentzoo.load_pipeline("digits", sampler="dpmpp-2m", scheduler="karras")
    assert "eta" not in pipe.options(steps=2) and pipe.spec.sampler == "dpmpp-2m"


# -- the editing commands through the same request ----------------------------------------------


def test_editing_commands_run_through_the_request(capsys, tmp_path, monkeypatch, helpers):
    from latentzoo.core.runtime.request import run

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    lz = helpers.in_process_cli(capsys)
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    lz("sample", "digits", "-n", "1", "--steps", "2", "--no-progress", "-o", str(a)).assert_ok()
    lz("sample", "digits", "-n", "1", "--steps", "2", "--seed", "1", "--no-progress", "-o", str(b)).assert_ok()
    cli_out, api_out = tmp_path / "cli.png", tmp_path / "api.png"
    lz("img2img", "digits", str(a), "--steps", "4", "--strength", "0.5", "--seed", "3", "-o", str(cli_out)).assert_ok()
    run(SampleRequest("digits", command="img2img", images=(str(a),), strength=0.5, steps=4, seed=3, output=str(api_out)))
    assert cli_out.read_bytes() == api_out.read_bytes()
    lz("interpolate", "digits", str(a), str(b), "--steps", "3", "--frames", "3", "-o", str(cli_out)).assert_ok()
    run(SampleRequest("digits", command="interpolate", images=(str(a), str(b)), steps=3, frames=3, output=str(api_out)))
    assert cli_out.read_bytes() == api_out.read_bytes()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"command": "img2img"}, "img2img takes at least 1 input image(s), not 0"),
        ({"command": "interpolate", "images": ("a.png",)}, "interpolate takes 2 input image(s), not 1"),
        ({"command": "interpolate", "images": ("a.png", "b.png"), "frames": 1}, "--frames must be at least 2, not 1"),
        ({"command": "inpaint", "images": ("a.png",)}, "inpaint needs --mask"),
        ({"command": "sample", "images": ("a.png",)}, "sample takes no input image(s), not 1"),
        ({"command": "img2img", "images": ("a.png",), "candidates": 2}, "--candidates re-ranks samples; img2img takes none"),
        ({"command": "upscale"}, "command 'upscale' is not one of sample, img2img"),
    ],
)
def test_a_bad_editing_request_is_refused_before_anything_loads(fields, message):
    with pytest.raises(LatentzooError, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate(SampleRequest("digits", **fields))
