"""Reliability round 3, the rest (issue 22): batched edits, grid shapes, convert --force on a full disk.

- ``interpolate --frames``, ``variations -n`` (and ``--to``) and ``sample --candidates`` make their
  images ``--batch-size`` at a time and write each batch as it comes: the model never sees more
  rows than the batch size, and the bytes do not depend on the batch size (benchmarks/edit_memory.py
  measures the flat peak memory).
- ``--nrow`` that no grid can honour is refused up front, by the CLI and the API alike.
- ``convert --force`` that fails at any step (ENOSPC at a rename, at the user registry, a signal)
  leaves the earlier conversion and its registry entry complete, and nothing else.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

torch = pytest.importorskip("torch")

import latentzoo  # noqa: E402
from latentzoo.core.contract.errors import LatentzooError  # noqa: E402

from .test_digits_pipeline import save_digits  # noqa: E402


def tiles(path: Path, n: int, nrow: int, size: int = 32, padding: int = 2) -> list[np.ndarray]:
    """The n tiles of a grid PNG (an image of one tile is that image)."""
    arr = np.asarray(Image.open(path))
    if n == 1:
        return [arr]
    out = []
    for i in range(n):
        r, k = divmod(i, nrow)
        top, left = padding + r * (size + padding), padding + k * (size + padding)
        out.append(arr[top : top + size, left : left + size])
    return out


@pytest.fixture
def digits_in(tmp_path: Path) -> list[str]:
    return [str(p) for p in save_digits(tmp_path / "in", 2)]


class RowCounter:
    """Wraps a callable and records the batch (first dimension) of every call."""

    def __init__(self, target: object, name: str) -> None:
        self.rows: list[int] = []
        self.original = getattr(target, name)

    def __call__(self, x: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        self.rows.append(int(x.shape[0]))
        return self.original(x, *args, **kwargs)


# -- 1: edits made batch by batch, the same bytes at every batch size ----------------------------


@pytest.mark.parametrize("batch", ["5", "2", "1"])
def test_interpolate_frames_are_the_same_bytes_at_any_batch_size(cli, tmp_path, digits_in, batch):
    common = ["interpolate", "digits", *digits_in, "--frames", "5", "--steps", "3"]
    whole, split = tmp_path / "whole.png", tmp_path / f"b{batch}.png"
    cli(*common, "--batch-size", "5", "-o", str(whole)).assert_ok()
    record = cli(*common, "--batch-size", batch, "-o", str(split), "--json").assert_ok().json()
    assert split.read_bytes() == whole.read_bytes()
    assert record["frames"] == 5 and len(record["frame_files"]) == 5
    for i in range(5):  # each frame file beside the strip is its tile, whatever the batch
        frame = np.asarray(Image.open(tmp_path / f"b{batch}-{i:03d}.png"))
        assert np.array_equal(frame, tiles(split, 5, 5)[i])
    assert len({t.tobytes() for t in tiles(split, 5, 5)}) == 5  # a morph, not copies


@pytest.mark.parametrize("to", [False, True], ids=["variations", "embedding-interpolation"])
def test_variations_are_the_same_bytes_at_any_batch_size_and_n(cli, tmp_path, digits_in, to):
    extra = ["--to", digits_in[1]] if to else []
    outs = {}
    for n, batch in (("6", "6"), ("6", "4"), ("6", "1"), ("3", "2")):
        out = tmp_path / f"v{n}-{batch}"
        cli("variations", "digits-unclip", digits_in[0], *extra, "-n", n, "--batch-size", batch, "-o", f"{out}/").assert_ok()
        files = json.loads((out / "samples.json").read_text())["files"]
        outs[(n, batch)] = [(out / f).read_bytes() for f in files]
    assert outs[("6", "4")] == outs[("6", "6")] == outs[("6", "1")]
    if not to:  # variation i is keyed (seed, i): -n 3 is the first 3 of -n 6
        assert outs[("3", "2")] == outs[("6", "6")][:3]
    assert len(set(outs[("6", "6")])) == 6


@pytest.mark.parametrize("prompt", [["--prompt", "a seven"], []], ids=["prompt", "drawn-captions"])
def test_reranking_is_the_same_bytes_and_scores_at_any_batch_size(cli, tmp_path, prompt):
    runs = {}
    for batch in ("8", "3", "1"):
        out = tmp_path / f"r{batch}.png"
        cli("sample", "digits-dalle", "-n", "2", "--candidates", "4", *prompt, "--batch-size", batch, "-o", str(out), "--no-progress")
        runs[batch] = (out.read_bytes(), json.loads(out.with_suffix(".json").read_text())["reranking"])
    assert runs["3"][0] == runs["8"][0] == runs["1"][0]
    # the scorer's floats round by batch shape in the last digit; the kept images are the same bytes
    np.testing.assert_allclose(runs["3"][1]["scores"], runs["8"][1]["scores"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(runs["1"][1]["scores"], runs["8"][1]["scores"], atol=1e-5, rtol=0)
    assert runs["3"][1].get("captions") == runs["8"][1].get("captions")


def test_interpolate_and_variations_never_run_more_rows_than_the_batch_size(tmp_path, digits_in, monkeypatch):
    pipe = latentzoo.load_pipeline("digits")
    counter = RowCounter(pipe.decoder, "decode")
    monkeypatch.setattr(pipe.decoder, "decode", counter)
    from latentzoo.core.runtime.editing import interpolate_stream

    edit = interpolate_stream(pipe, digits_in[:1], digits_in[1:], 7, options={"steps": 2}, batch_size=3)
    assert counter.rows == []  # nothing is sampled until the stream is read
    record = latentzoo.write_edit(edit, str(tmp_path / "strip.png"), nrow=7)
    assert counter.rows == [3, 3, 1] and record["n"] == 7

    from latentzoo.core.runtime.variations import variations_stream

    unclip = latentzoo.load_pipeline("digits-unclip")
    counter = RowCounter(unclip.decoder, "decode")
    monkeypatch.setattr(unclip.decoder, "decode", counter)
    batches = variations_stream(unclip, digits_in[0], 5, batch_size=2).batches
    assert [len(b) for b in batches] == [2, 2, 1] and counter.rows == [2, 2, 1]


def test_reranking_never_draws_more_candidates_at_once_than_the_batch_size(monkeypatch):
    pipe = latentzoo.load_pipeline("digits-dalle")
    counter = RowCounter(pipe.scorer, "similarity")
    monkeypatch.setattr(pipe.scorer, "similarity", counter)
    scores: list[float] = []
    images = pipe.sample(2, seed=0, prompt="a seven", candidates=5, batch_size=2, scores=scores)
    assert images.shape[0] == 2 and len(scores) == 2
    assert counter.rows == [2, 2, 2, 2, 2]  # 10 candidates, 2 at a time: flat in --candidates
    # the same outputs and scores as all 10 candidates in one batch
    whole: list[float] = []
    assert torch.equal(pipe.sample(2, seed=0, prompt="a seven", candidates=5, batch_size=64, scores=whole), images)
    np.testing.assert_allclose(whole, scores, atol=1e-5, rtol=0)


def test_edit_counts_are_bounded_before_anything_loads():
    from latentzoo.core.runtime.request import SampleRequest, validate

    for request, fragment in (
        (SampleRequest("digits", command="interpolate", images=("a", "b"), frames=10**9), "--frames must be at most 10000"),
        (SampleRequest("digits-unclip", command="variations", images=("a",), n=10**9), "-n must be at most 10000"),
        (SampleRequest("digits-unclip", command="variations", images=("a",), n=2, batch_size=0), "--batch-size must be at least 1"),
        (SampleRequest("digits-dalle", candidates=10**6, prompt="a"), "--candidates must be a whole number from 1 to 1024"),
    ):
        with pytest.raises(LatentzooError, match=fragment):
            validate(request)


# -- 3: grid shapes refused up front, CLI and API alike -------------------------------------------

GRID_NONSENSE = [
    # (id, CLI argv after the pipeline, API keywords of latentzoo.sample, fragment)
    ("nrow-over-n", ["-n", "4", "--nrow", "5", "-o", "{out}/g.png"], {"n": 4, "nrow": 5, "output": "{out}/g.png"}, "--nrow 5 is more than"),
    ("nrow-huge", ["-n", "4", "--nrow", "1000000", "-o", "{out}/g.png"], {"n": 4, "nrow": 10**6, "output": "{out}/g.png"}, "from 1 to 4"),
    ("nrow-dir", ["-n", "4", "--nrow", "2", "-o", "{out}/d/"], {"n": 4, "nrow": 2, "output": "{out}/d/"}, "writes one PNG per image"),
    ("nrow-zero", ["-n", "4", "--nrow", "0", "-o", "{out}/g.png"], {"n": 4, "nrow": 0, "output": "{out}/g.png"}, "at least 1"),
    ("nrow-one-of-one", ["-n", "1", "--nrow", "2", "-o", "{out}/g.png"], {"n": 1, "nrow": 2, "output": "{out}/g.png"}, "from 1 to 1"),
]


@pytest.mark.parametrize(("name", "argv", "api", "fragment"), GRID_NONSENSE, ids=[r[0] for r in GRID_NONSENSE])
def test_grid_shape_nonsense_is_one_line_from_cli_and_api(cli, tmp_path, name, argv, api, fragment):
    out = str(tmp_path / "out")
    result = cli("sample", "digits", "--steps", "1", "--no-progress", *[a.replace("{out}", out) for a in argv])
    line = result.assert_one_line_error(fragment)
    with pytest.raises(LatentzooError) as caught:
        latentzoo.sample("digits", steps=1, **{k: v.replace("{out}", out) if isinstance(v, str) else v for k, v in api.items()})
    assert str(caught.value) == line.removeprefix("error: ")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "request_fields",
    [
        {"pipeline": "digits", "command": "interpolate", "images": ("a.png", "b.png"), "nrow": 2},
        {"pipeline": "digits", "command": "img2img", "images": ("a.png",), "nrow": 1},
        {"pipeline": "digits-unclip", "command": "variations", "images": ("a.png",), "to": "b.png", "n": 4, "nrow": 2},
    ],
    ids=["interpolate", "img2img", "variations-to"],
)
def test_nrow_on_a_command_that_lays_out_its_own_grid_is_refused(request_fields):
    from latentzoo.core.runtime.request import SampleRequest, validate

    with pytest.raises(LatentzooError, match="lays out its own: drop --nrow"):
        validate(SampleRequest(**request_fields))


# -- 7: convert --force when the disk fills -------------------------------------------------------


def _fake_converter(src: Path, name: str, stage: Path, **_: object) -> dict:
    """A format whose 'model' is one tensor of the value in SRC/value.txt, plus a file shipped beside it."""
    from latentzoo.core.contract.weights import save_tensors

    value = float((src / "value.txt").read_text())
    sha = save_tensors(stage / f"{name}.safetensors", {"w.weight": torch.full((4,), value)})
    (stage / f"{name}-notes.txt").write_text(f"value {value}\n")
    entry = {"class": "diffusion.ddim", "roles": ["sampler"], "weights": {"path": f"{name}.safetensors", "sha256": sha}}
    return {"components": {name: entry}, "notes": []}


@pytest.fixture
def fake_format(monkeypatch):
    from latentzoo.interop import formats

    real = formats.get_format
    monkeypatch.setattr(formats, "get_format", lambda name, action: _fake_converter if name == "fake" else real(name, action))


def _convert(cli, tmp_path: Path, value: float):
    src = tmp_path / f"src-{value}"
    src.mkdir(exist_ok=True)
    (src / "value.txt").write_text(str(value))
    return cli("convert", str(src), "--from", "fake", "--name", "cv", "-o", str(tmp_path / "conv"), "--force")


def _entry_value(cli) -> float:
    """The registered entry's value, after checking that it is complete (its file has its sha256)."""
    from safetensors.torch import load_file

    user = cli.config_home / "latentzoo" / "registry.yaml"
    weights = yaml.safe_load(user.read_text())["components"]["cv"]["weights"]
    path = (user.parent / weights["path"]).resolve()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == weights["sha256"], "the registered entry is broken"
    fragment = yaml.safe_load((path.parent / "registry.yaml").read_text())["components"]["cv"]["weights"]
    assert fragment["sha256"] == weights["sha256"], "the folder's fragment and the user registry disagree"
    return float(load_file(path)["w.weight"][0])


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


REAL_REPLACE = os.replace


def _enospc_when(monkeypatch, hit) -> None:
    real = REAL_REPLACE

    def replace(src, dst, *args, **kwargs):
        if hit(Path(src), Path(dst)):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)


FULL_DISK_AT = {
    # the staged weights renamed over the earlier weights
    "weights-rename": lambda src, dst: dst.name == "cv.safetensors" and src.parent != dst.parent,
    # the file shipped beside them
    "extra-rename": lambda src, dst: dst.name == "cv-notes.txt" and src.parent != dst.parent,
    # the earlier fragment set aside
    "backup-rename": lambda src, dst: dst.name.startswith(".registry.yaml.") and dst.suffix == ".bak",
    # the fragment that names the weights, last in the folder
    "fragment-rename": lambda src, dst: dst.name == "registry.yaml" and src.parent.name.startswith(".cv."),
    # the user registry's atomic write, after everything is in the folder
    "user-registry": lambda src, dst: dst.name == "registry.yaml" and dst.parent.name == "latentzoo",
}


@pytest.mark.parametrize("where", list(FULL_DISK_AT))
def test_convert_force_on_a_full_disk_keeps_the_earlier_entry_complete(cli, tmp_path, fake_format, monkeypatch, where):
    _convert(cli, tmp_path, 1.0).assert_ok()
    assert _entry_value(cli) == 1.0
    before = {"conv": _tree(tmp_path / "conv"), "user": _tree(cli.config_home)}
    _enospc_when(monkeypatch, FULL_DISK_AT[where])
    result = _convert(cli, tmp_path, 2.0)
    result.assert_one_line_error("No space left on device")
    assert _entry_value(cli) == 1.0  # the earlier entry, complete
    assert {"conv": _tree(tmp_path / "conv"), "user": _tree(cli.config_home)} == before  # nothing added, nothing lost
    monkeypatch.setattr(os, "replace", REAL_REPLACE)
    _convert(cli, tmp_path, 3.0).assert_ok()  # the disk has room again: the new entry, complete, no leftovers
    assert _entry_value(cli) == 3.0
    assert sorted(_tree(tmp_path / "conv")) == ["cv-notes.txt", "cv.safetensors", "registry.yaml"]


def test_convert_force_interrupted_while_registering_keeps_the_earlier_entry(tmp_path, fake_format, monkeypatch):
    """A signal (SIGTERM unwinds as KeyboardInterrupt) at the user registry's write puts the earlier files back."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    from latentzoo.core.contract import userregistry
    from latentzoo.interop.formats import convert

    src = tmp_path / "src"
    src.mkdir()
    (src / "value.txt").write_text("1.0")
    convert(src, "cv", fmt="fake", outdir=tmp_path / "conv")
    before = _tree(tmp_path)
    (src / "value.txt").write_text("2.0")

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(userregistry, "_merge", interrupted)
    with pytest.raises(KeyboardInterrupt):
        convert(src, "cv", fmt="fake", outdir=tmp_path / "conv", force=True)
    after = {k: v for k, v in _tree(tmp_path).items() if k != "src/value.txt"}
    assert after == {k: v for k, v in before.items() if k != "src/value.txt"}


# -- found by tools/redteam22.py: an entry without a latent space, a constant decode ---------------


def _klvae_entry(**changes: object) -> dict:
    root = Path(latentzoo.__file__).parent
    entry = dict(yaml.safe_load((root / "registry.yaml").read_text())["components"]["digits-klvae"])
    entry["weights"] = {**entry["weights"], "path": str(root / entry["weights"]["path"])}
    entry.pop("aliases", None)
    entry.update(changes)
    return entry


@pytest.mark.parametrize("command", ["encode", "decode", "reconstruct"])
def test_an_autoencoder_entry_without_a_latent_space_is_refused_in_one_line(cli, tmp_path, command):
    entry = _klvae_entry()
    del entry["latent_space"]
    (tmp_path / "nospace.yaml").write_text(yaml.safe_dump({"components": {"nospace": entry}}))
    digit = save_digits(tmp_path / "in", 1)[0]
    latents = tmp_path / "z.safetensors"
    cli("encode", "digits-klvae", str(digit), "-o", str(latents)).assert_ok()
    source = str(latents) if command == "decode" else str(digit)
    out = tmp_path / "out" / ("z.safetensors" if command == "encode" else "x.png")
    result = cli("--registry", str(tmp_path / "nospace.yaml"), command, "nospace", source, "-o", str(out))
    result.assert_one_line_error("nospace states no latent_space", "nospace.yaml:2")
    assert not out.parent.exists()


def test_decoding_with_an_all_zero_decoder_warns_that_the_output_is_constant(cli, tmp_path):
    from latentzoo.core.contract.weights import load_tensors, save_tensors

    weights = Path(_klvae_entry()["weights"]["path"])
    sha = save_tensors(tmp_path / "zero.safetensors", {k: torch.zeros_like(v) for k, v in load_tensors(weights).items()})
    space = {**_klvae_entry()["latent_space"], "autoencoder": f"sha256:{sha[:16]}"}
    entry = _klvae_entry(weights={"path": str(tmp_path / "zero.safetensors"), "sha256": sha}, latent_space=space)
    (tmp_path / "zero.yaml").write_text(yaml.safe_dump({"components": {"zerovae": entry}}))
    digit = save_digits(tmp_path / "in", 1)[0]
    cli("encode", "digits-klvae", str(digit), "-o", str(tmp_path / "z.safetensors")).assert_ok()
    args = ["--registry", str(tmp_path / "zero.yaml"), "decode", "zerovae", str(tmp_path / "z.safetensors"), "--allow-mismatch"]
    result = cli(*args, "-o", str(tmp_path / "d.png")).assert_ok()
    assert any(line.startswith("warning: every pixel of") and "the output is constant" in line for line in result.stderr_lines), str(result)
    normal = cli("decode", "digits-klvae", str(tmp_path / "z.safetensors"), "-o", str(tmp_path / "n.png")).assert_ok()
    assert "constant" not in normal.stderr
    # reconstruct draws the inputs above the reconstructions: the reconstructions are named
    zero = ["--registry", str(tmp_path / "zero.yaml"), "reconstruct", "zerovae", str(digit), "-o", str(tmp_path / "r.png")]
    result = cli(*zero).assert_ok()
    assert any("every pixel of the reconstructions in" in line and "constant" in line for line in result.stderr_lines), str(result)
    assert "constant" not in cli("reconstruct", "digits-klvae", str(digit), "-o", str(tmp_path / "r2.png")).assert_ok().stderr
