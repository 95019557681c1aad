"""The shipped `digits` latent-diffusion pipeline, driven through the installed CLI.

Samples are judged by the shipped digit classifier (99.7 % held-out accuracy), so these
tests fail if the weights, the sampler or the contract plumbing break, not only if a
command crashes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from latentzoo.core.contract.registry import BUILTIN
from latentzoo.plugins.datasets.digits import load as load_digits
from latentzoo.plugins.datasets.evaluate import predicted_labels

FAST = ["--steps", "10", "--no-progress"]


def read_grid(path: Path, n: int, size: int = 32, padding: int = 2, nrow: int | None = None) -> torch.Tensor:
    """Split a grid PNG back into (n, 1, size, size) tensors in [-1, 1]."""
    arr = np.asarray(Image.open(path), dtype=np.float32) / 127.5 - 1.0
    padding = 0 if n == 1 else padding  # one image is written as itself, unpadded
    nrow = nrow or int(np.ceil(np.sqrt(n)))
    tiles = []
    for i in range(n):
        r, k = divmod(i, nrow)
        top, left = padding + r * (size + padding), padding + k * (size + padding)
        tiles.append(arr[top : top + size, left : left + size])
    return torch.from_numpy(np.stack(tiles))[:, None]


def save_digits(directory: Path, count: int) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    images = load_digits("test").images[:count]
    paths = []
    for i, image in enumerate(images):
        path = directory / f"digit{i}.png"
        Image.fromarray(((image[0].numpy() + 1) * 127.5).round().astype(np.uint8), mode="L").save(path)
        paths.append(path)
    return paths


def test_sample_grid_is_recognisable_digits_with_sidecar(cli, tmp_path):
    out = tmp_path / "samples.png"
    cli("sample", "digits", "-n", "16", "--seed", "0", "-o", str(out), "--no-progress").assert_ok()
    image = Image.open(out)
    assert image.mode == "L" and image.size == (4 * 34 + 2, 4 * 34 + 2)
    samples = read_grid(out, 16)
    with torch.inference_mode():
        from latentzoo.plugins.datasets.evaluate import classifier_logits

        probs = classifier_logits(samples).softmax(-1)
    # Recognisable: the classifier is confident on most samples, and they are varied.
    assert (probs.max(-1).values > 0.8).float().mean() >= 0.75, probs.max(-1).values
    assert len(set(probs.argmax(-1).tolist())) >= 6
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["pipeline"] == "digits" and sidecar["seed"] == 0 and sidecar["steps"] == 50
    assert sidecar["sampler"] == "ddim" and sidecar["scheduler"] == "leading"
    assert set(sidecar["sha256"]) == {"digits-vqgan", "digits-ldm"}
    assert all(len(h) == 64 for h in sidecar["sha256"].values())
    assert {"latentzoo", "torch", "python"} <= set(sidecar["versions"])


def test_same_seed_gives_identical_bytes_and_other_seeds_differ(cli, tmp_path):
    a, b, c = (tmp_path / f"{k}.png" for k in "abc")
    for path, seed in ((a, "3"), (b, "3"), (c, "4")):
        cli("sample", "digits", "-n", "4", "--seed", seed, "-o", str(path), *FAST).assert_ok()
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


def test_directory_output_writes_one_png_per_sample(cli, tmp_path):
    out = tmp_path / "many"
    cli("sample", "digits", "-n", "3", "-o", f"{out}/", *FAST).assert_ok()
    assert sorted(p.name for p in out.iterdir()) == ["0000.png", "0001.png", "0002.png", "samples.json"]
    assert Image.open(out / "0001.png").size == (32, 32)


@pytest.mark.parametrize(
    "options",
    [
        ["--sampler", "ddpm"],
        ["--eta", "1.0"],
        ["--scheduler", "trailing"],
        ["--sampler", "euler", "--scheduler", "karras"],
        ["--steps", "20"],
        ["--sampler", "ddpm-large"],
    ],
)
def test_sampling_options_change_the_draw_without_retraining(cli, tmp_path, options):
    base, other = tmp_path / "base.png", tmp_path / "other.png"
    cli("sample", "digits", "-n", "4", "-o", str(base), *FAST).assert_ok()
    cli("sample", "digits", "-n", "4", "-o", str(other), *FAST, *options).assert_ok()
    assert base.read_bytes() != other.read_bytes()
    sidecar = json.loads(other.with_suffix(".json").read_text())
    if "--sampler" in options:
        assert sidecar["sampler"] == options[1]
    probs = predicted_labels(read_grid(other, 4))
    assert probs.shape == (4,)


def test_reconstruct_held_out_digits(cli, tmp_path):
    inputs = save_digits(tmp_path / "in", 4)
    out = tmp_path / "rec.png"
    result = cli("reconstruct", "digits", *map(str, inputs), "-o", str(out), "--json").assert_ok()
    scores = result.json()["psnr_db"]
    assert len(scores) == 4 and min(scores.values()) > 18.0, scores
    grid = read_grid(out, 8, nrow=4)
    assert (grid[:4] - grid[4:]).abs().mean() < 0.15  # reconstructions sit under their inputs


def test_encode_decode_round_trip_matches_reconstruct(cli, tmp_path):
    inputs = save_digits(tmp_path / "in", 3)
    latents, decoded, rec = tmp_path / "z.safetensors", tmp_path / "dec.png", tmp_path / "rec.png"
    cli("encode", "digits", *map(str, inputs), "-o", str(latents)).assert_ok()
    from safetensors.torch import load_file

    z = load_file(str(latents))["latents"]
    assert z.shape == (3, 3, 8, 8)
    cli("decode", "digits", str(latents), "-o", str(decoded)).assert_ok()
    cli("reconstruct", "digits", *map(str, inputs), "-o", str(rec)).assert_ok()
    assert torch.equal(read_grid(decoded, 3, nrow=2), read_grid(rec, 6, nrow=3)[3:])


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["sample", "digts"], ["digts", "did you mean digits"]),
        (["sample", "digits", "-n", "0"], ["-n must be at least 1"]),
        (["sample", "digits", "--steps", "0"], ["--steps must be at least 1"]),
        (["sample", "digits", "--steps", "5000"], ["scheduler leading takes 1 to 1000 steps"]),
        (["sample", "digits", "--eta", "-1"], ["eta must be >= 0"]),
        (["sample", "digits", "--sampler", "karras"], ["karras is a scheduler, not a sampler"]),
        (["sample", "digits", "--prior", "digits-vqgan"], ["digits-vqgan is a encoder/decoder, not a prior"]),
        (["sample", "digits", "--class", "3"], ["unconditional"]),
        (["sample", "--prior", "digits-ldm", "--decoder", "digits-vqgan"], ["--sampler"]),
    ],
)
def test_bad_sampling_input_is_one_line(cli, tmp_path, args, fragments):
    cli(*args, "-o", str(tmp_path / "x.png"), "--no-progress").assert_one_line_error(*fragments)
    assert not (tmp_path / "x.png").exists()


def test_wrong_image_size_and_mode_are_refused_or_fitted(cli, tmp_path):
    big = tmp_path / "big.png"
    Image.new("L", (64, 48)).save(big)
    cli("reconstruct", "digits", str(big), "-o", str(tmp_path / "r.png")).assert_one_line_error("64x48", "32x32", "--fit")
    from skimage import data

    photo = tmp_path / "astronaut.png"
    Image.fromarray(data.astronaut()).resize((32, 32)).save(photo)
    cli("reconstruct", "digits", str(photo), "-o", str(tmp_path / "r.png")).assert_one_line_error("mode RGB", "L (1-channel)", "--fit")
    cli("reconstruct", "digits", str(photo), str(big), "--fit", "-o", str(tmp_path / "r.png")).assert_ok()
    not_image = tmp_path / "notes.png"
    not_image.write_text("hello")
    cli("encode", "digits", str(not_image), "-o", str(tmp_path / "z.safetensors")).assert_one_line_error("notes.png")
    assert not (tmp_path / "z.safetensors").exists()


def test_unwritable_output_leaves_nothing(cli, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    cli("sample", "digits", "-n", "2", "-o", str(blocker / "out.png"), *FAST).assert_one_line_error("cannot write")
    cli("sample", "digits", "-n", "2", "-o", "/proc/latentzoo.png", *FAST).assert_one_line_error("cannot write")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config", "cwd", "file"]


def _registry_with_weights(tmp_path: Path, weights: Path) -> Path:
    entry = yaml.safe_load(BUILTIN.read_text())["components"]["digits-vqgan"]
    entry["weights"]["path"] = str(weights)
    path = tmp_path / "override.yaml"
    path.write_text(yaml.safe_dump({"components": {"digits-vqgan": entry}}))
    return path


def test_tampered_or_truncated_weights_are_refused(cli, tmp_path):
    original = BUILTIN.parent / yaml.safe_load(BUILTIN.read_text())["components"]["digits-vqgan"]["weights"]["path"]
    tampered = tmp_path / "tampered.safetensors"
    data = bytearray(original.read_bytes())
    data[-1] ^= 0xFF
    tampered.write_bytes(bytes(data))
    registry = _registry_with_weights(tmp_path, tampered)
    cli("--registry", str(registry), "sample", "digits", "-o", str(tmp_path / "x.png"), *FAST).assert_one_line_error(
        "tampered.safetensors", "sha256"
    )
    truncated = tmp_path / "truncated.safetensors"
    shutil.copy(original, truncated)
    with open(truncated, "r+b") as f:
        f.truncate(original.stat().st_size // 2)
    cli("--registry", str(_registry_with_weights(tmp_path, truncated)), "reconstruct", "digits", "x.png").assert_one_line_error(
        "truncated.safetensors", "sha256"
    )
    assert not (tmp_path / "x.png").exists()
