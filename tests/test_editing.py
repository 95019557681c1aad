"""Editing commands (img2img, inpaint, interpolate) on held-out digits, driven through the installed CLI.

The shipped digit classifier (99.7 % held-out accuracy) judges the inpainted digits; distances
are per-image L2 in [-1, 1] pixels. Numbers measured with benchmarks/editing.py are in
docs/editing.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from latentzoo.plugins.datasets.digits import load as load_digits
from latentzoo.plugins.datasets.evaluate import predicted_labels

from .test_digits_pipeline import read_grid, save_digits

STEPS = ["--steps", "10"]


def read_png(path: Path) -> torch.Tensor:
    return torch.from_numpy(np.asarray(Image.open(path), dtype=np.float32) / 127.5 - 1.0)


def half_mask(path: Path, rows: slice) -> Path:
    arr = np.zeros((32, 32), dtype=np.uint8)
    arr[rows] = 255
    Image.fromarray(arr, mode="L").save(path)
    return path


def test_inpainting_a_masked_half_keeps_the_digit_and_the_unmasked_pixels(cli, tmp_path):
    n = 40
    inputs = save_digits(tmp_path / "in", n)
    labels = load_digits("test").labels[:n]
    mask = half_mask(tmp_path / "mask.png", slice(0, 16))  # repaint the top half, keep the bottom
    out = tmp_path / "inpaint.png"
    record = cli("inpaint", "digits", *map(str, inputs), "--mask", str(mask), "-o", str(out), *STEPS, "--json").assert_ok().json()
    assert record["edit"] == "inpaint" and record["n"] == n and record["steps"] == 10
    result = read_grid(out, n)
    original = torch.stack([read_png(p) for p in inputs])[:, None]
    # The kept half is the original, exactly (pasted back): far below the autoencoder's own error.
    assert (result[..., 16:, :] - original[..., 16:, :]).abs().max() == 0
    assert (result[..., :16, :] - original[..., :16, :]).abs().mean() > 0.01  # the top half was repainted
    rate = float((predicted_labels(result) == labels).float().mean())
    assert rate >= 0.6, rate  # measured 0.875 at 20 steps (chance 0.1)


def test_img2img_departs_from_the_input_monotonically_in_strength(cli, tmp_path):
    inputs = save_digits(tmp_path / "in", 6)
    original = torch.stack([read_png(p) for p in inputs])[:, None]
    distances = []
    for strength in ("0.2", "0.5", "0.8", "1.0"):
        out = tmp_path / f"s{strength}.png"
        record = cli("img2img", "digits", *map(str, inputs), "--strength", strength, "-o", str(out), *STEPS, "--json").assert_ok().json()
        assert record["strength"] == float(strength) and record["denoising_steps"] == round(float(strength) * 10)
        distances.append(float((read_grid(out, 6) - original).flatten(1).norm(dim=1).mean()))
    assert distances == sorted(distances), distances
    assert distances[0] < 4.0 and distances[-1] > 2 * distances[0], distances


def test_img2img_same_seed_same_bytes_other_seed_differs(cli, tmp_path):
    (digit,) = save_digits(tmp_path / "in", 1)
    a, b, c = (tmp_path / f"{k}.png" for k in "abc")
    for out, seed in ((a, "1"), (b, "1"), (c, "2")):
        cli("img2img", "digits", str(digit), "--strength", "0.7", "--seed", seed, "-o", str(out), *STEPS).assert_ok()
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()
    assert json.loads(a.with_suffix(".json").read_text())["seed"] == 1


@pytest.mark.parametrize(
    ("pipeline", "extra"),
    [
        ("digits-flow", []),  # flow prior: x_t = (1 - t) x0 + t eps
        ("digits", ["--sampler", "dpmpp_2m", "--scheduler", "karras"]),  # a k-diffusion sampler starting from the noised latent
        ("digits", ["--sampler", "ddpm", "--set", "variance_type=fixed_large"]),
    ],
)
def test_img2img_low_strength_stays_close_for_other_samplers_and_flow(cli, tmp_path, pipeline, extra):
    inputs = save_digits(tmp_path / "in", 4)
    original = torch.stack([read_png(p) for p in inputs])[:, None]
    out = tmp_path / "o.png"
    record = cli("img2img", pipeline, *map(str, inputs), "--strength", "0.3", "-o", str(out), *STEPS, *extra, "--json").assert_ok().json()
    assert record["pipeline"] == pipeline
    assert (read_grid(out, 4) - original).flatten(1).norm(dim=1).mean() < 4.0


def test_img2img_class_conditional_at_full_strength_draws_the_class(cli, tmp_path):
    inputs = save_digits(tmp_path / "in", 6)
    out = tmp_path / "o.png"
    cli(
        "img2img", "digits-cond", *map(str, inputs), "--strength", "1", "--class", "3", "--guidance", "3", "-o", str(out), *STEPS
    ).assert_ok()
    assert (predicted_labels(read_grid(out, 6)) == 3).float().mean() >= 0.8


def test_interpolate_endpoints_match_reconstructions_and_frames_are_written(cli, tmp_path):
    a, b = save_digits(tmp_path / "in", 2)
    strip = tmp_path / "strip.png"
    record = cli("interpolate", "digits", str(a), str(b), "--frames", "5", "-o", str(strip), "--steps", "20", "--json").assert_ok().json()
    assert record["frames"] == 5 and record["frame_files"] == [f"strip-{i:03d}.png" for i in range(5)]
    assert [read_png(tmp_path / name).shape for name in record["frame_files"]] == [(32, 32)] * 5
    frames = read_grid(strip, 5, nrow=5)
    rec = tmp_path / "rec.png"
    cli("reconstruct", "digits", str(a), str(b), "-o", str(rec)).assert_ok()
    recs = read_grid(rec, 4, nrow=2)[2:]  # bottom row: reconstructions
    assert (frames[0] - recs[0]).abs().mean() < 0.05 and (frames[-1] - recs[1]).abs().mean() < 0.05
    assert (frames[2] - recs[0]).abs().mean() > 0.05 and (frames[2] - recs[1]).abs().mean() > 0.05  # the middle is neither
    out_dir = tmp_path / "frames"
    cli("interpolate", "digits", str(a), str(b), "--frames", "3", "-o", f"{out_dir}/", *STEPS).assert_ok()
    assert sorted(p.name for p in out_dir.iterdir()) == ["0000.png", "0001.png", "0002.png", "samples.json"]


def test_a_mask_of_another_size_is_resized_nearest(cli, tmp_path):
    (digit,) = save_digits(tmp_path / "in", 1)
    big = np.zeros((64, 64), dtype=np.uint8)
    big[32:] = 200  # non-binary: 200/255 >= 0.5 is repaint
    Image.fromarray(big, mode="L").save(tmp_path / "big.png")
    out = tmp_path / "o.png"
    cli("inpaint", "digits", str(digit), "--mask", str(tmp_path / "big.png"), "-o", str(out), *STEPS).assert_ok()
    result, original = read_grid(out, 1)[0, 0], read_png(digit)
    assert (result[:16] == original[:16]).all() and (result[16:] != original[16:]).any()


def _refusals(tmp: Path) -> list[tuple[list[str], list[str]]]:
    (digit,) = save_digits(tmp / "in", 1)
    d = str(digit)
    notes = tmp / "notes.png"
    notes.write_text("hello")
    black = tmp / "black.png"
    Image.new("L", (32, 32)).save(black)
    mask = str(half_mask(tmp / "mask.png", slice(0, 16)))
    return [
        (["img2img", "digits", d, "--strength", "0"], ["--strength must be in (0, 1]"]),
        (["img2img", "digits", d, "--strength", "1.5"], ["--strength must be in (0, 1]"]),
        (["img2img", "digits", d, "--strength", "-0.2"], ["--strength must be in (0, 1]"]),
        (["img2img", "digits", d, "--strength", "nan"], ["--strength must be in (0, 1]"]),
        (["img2img", "digits", str(notes)], ["notes.png", "not an image"]),
        (["img2img", "digits", str(tmp / "missing.png")], ["missing.png", "no such file"]),
        (["img2img", "digits-vqgan-ar", d], ["an autoregressive prior cannot do", "digits-flow"]),
        (["img2img", "digits-dalle", d], ["an autoregressive prior cannot do"]),
        (["inpaint", "digits-vae", d, "--mask", mask], ["an analytic prior cannot do"]),
        (["img2img", "digits", d, "--set", "bogus=1"], ["bogus"]),
        (["img2img", "digits", d, "--class", "3"], ["unconditional"]),
        (["inpaint", "digits", d, "--mask", str(notes)], ["mask", "notes.png"]),
        (["inpaint", "digits", d, "--mask", str(black)], ["nothing to repaint"]),
        (["interpolate", "digits", d, d, "--frames", "1"], ["--frames must be at least 2"]),
        (["interpolate", "digits", d, d, "--frames", "0"], ["--frames must be at least 2"]),
        (["interpolate", "digits-flow", d, d], ["sampler flow-euler cannot invert", "--sampler ddim"]),
        (["interpolate", "digits-vae", d, d], ["cannot invert"]),
    ]


def test_bad_editing_input_is_one_line_and_writes_nothing(cli, tmp_path):
    for args, fragments in _refusals(tmp_path):
        out = tmp_path / "x.png"
        cli(*args, "-o", str(out), *STEPS).assert_one_line_error(*fragments)
        assert not out.exists() and not out.with_suffix(".json").exists(), args
    (digit,) = save_digits(tmp_path / "in", 1)
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    for cmd in (["img2img", "digits", str(digit)], ["interpolate", "digits", str(digit), str(digit)]):
        cli(*cmd, "-o", str(blocker / "o.png"), *STEPS).assert_one_line_error("cannot write")
        cli(*cmd, "-o", "/proc/latentzoo.png", *STEPS).assert_one_line_error("cannot write")


def test_python_api_writes_the_same_bytes_as_the_cli(cli, tmp_path):
    import latentzoo

    inputs = [str(p) for p in save_digits(tmp_path / "in", 2)]
    cli_out, api_out = tmp_path / "cli.png", tmp_path / "api.png"
    cli("img2img", "digits", *inputs, "--strength", "0.5", "--seed", "4", "-o", str(cli_out), *STEPS).assert_ok()
    edit = latentzoo.img2img("digits", inputs, 0.5, seed=4, options={"steps": 10})
    latentzoo.write_edit(edit, str(api_out), inputs=inputs)
    assert api_out.read_bytes() == cli_out.read_bytes()
