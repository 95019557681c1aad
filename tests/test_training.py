"""Training: exact resume, run directories, data loading, and the CLI's training errors.

Models are tiny so each run takes a second or two; the assertions are on weights and
files, not on "it ran".
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file

from latentzoo.core.contract.errors import LatentzooError
from latentzoo.core.contract.registry import parse_file
from latentzoo.core.runtime.data import folder_dataset, load_dataset
from latentzoo.core.training import TrainOptions
from latentzoo.plugins.datasets.digits import load as load_digits

TINY = {
    "vqgan": {"block_out_channels": [8, 8], "norm_num_groups": 4, "num_vq_embeddings": 16, "disc_start": 2, "disc_width": 8},
    "vae": {"block_out_channels": [8, 8], "norm_num_groups": 4},
    "diffusion": {
        "block_out_channels": [8, 16],
        "norm_num_groups": 4,
        "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
        "up_block_types": ["AttnUpBlock2D", "UpBlock2D"],
        "num_class_embeds": 11,
    },
}


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def trainer(family: str):
    from importlib import import_module

    return import_module(f"latentzoo.plugins.{family}.train").train


def run(family: str, out: Path, steps: int, resume: bool = False) -> dict:
    options = TrainOptions(
        out=out,
        steps=steps,
        batch_size=8,
        lr=1e-3,
        seed=3,
        checkpoint_every=2,
        resume=resume,
        name=f"tiny-{family}",
        config=dict(TINY[family]),
        progress=False,
    )
    return trainer(family)(options)


@pytest.mark.parametrize("family", ["vqgan", "vae", "diffusion"])
def test_resume_matches_an_uninterrupted_run(tmp_path, family):
    straight = run(family, tmp_path / "straight", steps=4)
    run(family, tmp_path / "split", steps=2)
    resumed = run(family, tmp_path / "split", steps=4, resume=True)
    a, b = load_file(str(tmp_path / "straight" / "model.safetensors")), load_file(str(tmp_path / "split" / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert straight["weights"]["sha256"] == resumed["weights"]["sha256"]


def test_run_directory_is_a_usable_registry_fragment(tmp_path):
    entry = run("vae", tmp_path / "run", steps=2)
    files = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"model.safetensors", "config.json", "metrics.json", "registry.yaml", "checkpoints"} <= files
    assert not [f for f in files if f.endswith(".tmp")]
    (step,) = (tmp_path / "run" / "checkpoints").iterdir()  # one atomic unit per checkpoint
    assert step.name == "step-00000002"
    assert {p.name for p in step.iterdir()} == {"checkpoint.safetensors", "state.json", "manifest.json"}
    (parsed,) = parse_file(tmp_path / "run" / "registry.yaml", "cli")
    assert parsed.name == "tiny-vae" and parsed.weights_path() == (tmp_path / "run" / "model.safetensors").resolve()
    assert parsed.latent_space.autoencoder == "sha256:" + entry["weights"]["sha256"][:16]
    from latentzoo.core.contract.registry import Registry
    from latentzoo.core.runtime.build import Builder

    model = Builder(Registry.load([tmp_path / "run" / "registry.yaml"])).component("tiny-vae", "encoder")
    assert model.encode(torch.zeros(1, 1, 32, 32)).shape == (1, 3, 16, 16)


def test_prior_on_frozen_encoder_records_measured_scaling(tmp_path):
    run("vae", tmp_path / "ae", steps=2)
    options = TrainOptions(
        out=tmp_path / "prior",
        steps=2,
        batch_size=8,
        seed=0,
        progress=False,
        name="tiny-prior",
        config=dict(TINY["diffusion"]),
        extra={"encoder": "tiny-vae", "registry_files": [tmp_path / "ae" / "registry.yaml"]},
    )
    entry = trainer("diffusion")(options)
    ae = yaml.safe_load((tmp_path / "ae" / "registry.yaml").read_text())["components"]["tiny-vae"]
    space = entry["latent_space"]
    assert space["autoencoder"] == ae["latent_space"]["autoencoder"]
    from latentzoo.plugins.vae.model import KLAutoencoder

    model = KLAutoencoder(**ae["config"])
    model.load_state_dict(load_file(str(tmp_path / "ae" / "model.safetensors")))
    with torch.inference_mode():
        z = model.encode(load_digits("train").images)
    assert space["shift"] == pytest.approx(float(z.mean()), rel=1e-4)
    assert space["scaling_factor"] == pytest.approx(1 / float((z - z.mean()).std()), rel=1e-4)


def test_folder_dataset_resizes_crops_and_skips_unreadable(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(tmp_path / "wide.png")
    Image.fromarray(rng.integers(0, 255, (20, 20), dtype=np.uint8), mode="L").save(tmp_path / "small.jpg")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    (tmp_path / "notes.txt").write_text("ignored: not an image suffix")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = folder_dataset(tmp_path, size=32, channels=1)
    assert data.images.shape == (2, 1, 32, 32)
    assert data.images.min() >= -1 and data.images.max() <= 1
    assert any("skipped 1 unreadable" in str(w.message) and "broken.png" in str(w.message) for w in caught)
    assert load_dataset(str(tmp_path), channels=3).images.shape == (2, 3, 32, 32)


def test_bundled_digits_match_scikit_learn():
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    reference = sklearn_datasets.load_digits()
    data = load_file(str(Path(load_digits.__globals__["FILE"])))
    assert np.array_equal(data["images"].numpy(), reference.images.astype(np.uint8))
    assert np.array_equal(data["labels"].numpy(), reference.target)
    train, test = load_digits("train"), load_digits("test")
    assert len(train) + len(test) == 1797 and len(test) == 360


def test_training_errors_are_one_line(cli, tmp_path):
    cli("train", "nosuch", "-o", str(tmp_path / "r")).assert_one_line_error("no trainer for family 'nosuch'", "vqgan")
    cli("train", "vae", "-o", str(tmp_path / "r"), "--set", "widths=3").assert_one_line_error("unknown vae option(s) widths")
    cli("train", "vae", "-o", str(tmp_path / "r"), "--resume").assert_one_line_error("no complete checkpoint")
    cli("train", "vae", "-o", str(tmp_path / "r"), "--data", str(tmp_path / "missing")).assert_one_line_error("no dataset or folder")
    cli("train", "vae", "-o", str(tmp_path / "r"), "--steps", "0").assert_one_line_error("--steps must be a positive integer")
    cli("train", "diffusion", "-o", str(tmp_path / "r"), "--encoder", "digits-vqgn").assert_one_line_error("did you mean digits-vqgan")


def test_training_refuses_to_overwrite_a_run(tmp_path):
    run("vae", tmp_path / "r", steps=2)
    with pytest.raises(LatentzooError, match="already holds a run"):
        run("vae", tmp_path / "r", steps=2)
