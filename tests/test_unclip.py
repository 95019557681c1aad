"""unCLIP (plugins/unclip, plugins/clip/embed.py, core/runtime/variations.py) through the installed CLI.

Most tests use a tiny, randomly initialised prior and decoder (written here, not shipped) around
the shipped digits-clip embedder: what they test is the path (prompt -> text embedding -> guided
prior -> image embedding -> stochastic decoder -> image), reproducibility, the sidecar and every
refusal. One test samples the shipped ``digits-unclip`` and reads the digits it draws.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml

torch = pytest.importorskip("torch")

from latentzoo.plugins.unclip.model import UnCLIPDecoder, UnCLIPPrior  # noqa: E402

CLIP_ID = "sha256:df1c74a92f02a38f"
SPACE = {"kind": "continuous", "channels": 64, "factor": 32, "autoencoder": CLIP_ID}
SCHEDULE = {"beta_schedule": "squaredcos_cap_v2", "num_train_timesteps": 1000}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A registry with a tiny random unCLIP prior + decoder, a pipeline of them, and a foreign CLIP of the same width."""
    from latentzoo.core.contract.weights import save_tensors

    root = tmp_path_factory.mktemp("unclip")
    torch.manual_seed(0)
    prior_cfg = {"embedding_dim": 64, "cond_dim": 64, "hidden": 16, "blocks": 1, "training_schedule": SCHEDULE}
    dec_cfg = {"embedding_dim": 64, "hidden": 16, "blocks": 1, "training_schedule": SCHEDULE, "steps": 4, "guidance": 2.0}
    shas = {
        "prior": save_tensors(root / "prior.safetensors", UnCLIPPrior(**prior_cfg).state_dict()),
        "decoder": save_tensors(root / "decoder.safetensors", UnCLIPDecoder(**dec_cfg).state_dict()),
    }
    body = {
        "components": {
            "tiny-unclip-prior": {
                "family": "unclip",
                "class": "unclip.prior",
                "roles": ["prior"],
                "config": prior_cfg,
                "weights": {"path": "prior.safetensors", "sha256": shas["prior"]},
                "latent_space": {**SPACE, "scaling_factor": 8.0, "shift": 0.0},
                "conditioning": {"kind": "clip-text-embedding", "width": 64, "sequence_length": 1, "pooled": True, "encoder": CLIP_ID},
            },
            "tiny-unclip-decoder": {
                "family": "unclip",
                "class": "unclip.decoder",
                "roles": ["decoder"],
                "config": dec_cfg,
                "weights": {"path": "decoder.safetensors", "sha256": shas["decoder"]},
                "latent_space": SPACE,
            },
            # another CLIP embedder: same kind and width, another identity (declarations only; never built)
            "other-clip-embed": {
                "family": "clip",
                "class": "clip.embedder",
                "roles": ["conditioner", "encoder"],
                "config": {},
                "conditioning_space": {
                    "kind": "clip-text-embedding",
                    "width": 64,
                    "sequence_length": 1,
                    "pooled": True,
                    "encoder": "sha256:0123456789abcdef",
                },
                "latent_space": {**SPACE, "autoencoder": "sha256:0123456789abcdef"},
            },
        },
        "pipelines": {
            "tiny-unclip": {
                "encoder": "digits-clip-embed",
                "conditioner": "digits-clip-embed",
                "prior": "tiny-unclip-prior",
                "decoder": "tiny-unclip-decoder",
                "sampler": "ddim",
                "scheduler": "trailing",
                "defaults": {"steps": 3, "guidance": 2.0},
            }
        },
    }
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def digit_pngs(tmp_path_factory) -> dict[str, Path]:
    """A held-out seven and three as 32x32 greyscale PNGs, an RGB JPEG of the seven, a corrupt PNG and a text file."""
    from PIL import Image

    from latentzoo.core.runtime.images import to_uint8
    from latentzoo.plugins.datasets import digits

    root = tmp_path_factory.mktemp("inputs")
    data = digits.load("test")
    out = {}
    for label in (7, 3):
        i = int((data.labels == label).nonzero()[0])
        out[str(label)] = root / f"{label}.png"
        Image.fromarray(to_uint8(data.images[i : i + 1])[0, ..., 0].numpy(), mode="L").save(out[str(label)])
    Image.open(out["7"]).convert("RGB").resize((57, 41)).save(root / "7.jpg")
    out["jpg"] = root / "7.jpg"
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    out["broken"] = root / "broken.png"
    (root / "notes.png").write_text("not an image")
    out["text"] = root / "notes.png"
    return out


@pytest.fixture
def lz(capsys, monkeypatch, tmp_path, helpers):
    """The CLI in this process (torch and the models' code load once): lz(*args) -> conftest's Result."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    return helpers.in_process_cli(capsys)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_prompt_same_seed_same_bytes_and_sidecar(cli, lz, tiny):
    a, b = cli.cwd / "a.png", cli.cwd / "b.png"
    for out in (a, b):
        cli("--registry", str(tiny), "sample", "tiny-unclip", "--prompt", "a seven", "-n", "3", "--seed", "5", "-o", str(out)).assert_ok()
    assert _sha(a) == _sha(b)
    record = json.loads(a.with_suffix(".json").read_text())
    assert record["options"]["prompt"] == "a seven" and record["components"]["conditioner"] == "digits-clip-embed"
    lz("--registry", str(tiny), "sample", "tiny-unclip", "--prompt", "a three", "-n", "3", "--seed", "5", "-o", str(b)).assert_ok()
    assert _sha(a) != _sha(b)  # the prompt reaches the prior


@pytest.mark.parametrize("sampler", ["euler", "dpmpp_2m"])
def test_other_denoiser_samplers_drive_the_prior(lz, tiny, sampler):
    lz("--registry", str(tiny), "sample", "tiny-unclip", "--sampler", sampler, "--prompt", "a one", "-n", "2", "-o", "s.png").assert_ok()


PARTS = {
    "encoder": "digits-clip-embed",
    "conditioner": "digits-clip-embed",
    "prior": "tiny-unclip-prior",
    "decoder": "tiny-unclip-decoder",
    "sampler": "ddim",
    "scheduler": "trailing",
}


def compose_args(**swap: str | None) -> list[str]:
    """`latentzoo compose` flags of the tiny pipeline with some parts swapped (None: left out)."""
    parts = {**PARTS, **swap}
    return [arg for role, name in parts.items() if name for arg in (f"--{role}", name)]


@pytest.mark.parametrize(
    ("swap", "fragments"),
    [
        # another CLIP of the same width (another identity): refused before anything loads
        ({"conditioner": "other-clip-embed"}, ["conditioning does not fit", "other-clip-embed", "tiny-unclip-prior", "encoder"]),
        # the per-token text conditioner of the same CLIP: another kind and shape
        ({"conditioner": "digits-clip"}, ["conditioning does not fit", "digits-clip", "kind"]),
        # the decoder with a prior of another latent space
        ({"prior": "digits-ldm", "conditioner": None}, ["latent spaces do not match", "digits-ldm", "tiny-unclip-decoder"]),
        # the prior with another space's decoder
        ({"decoder": "digits-vqgan", "encoder": None}, ["latent spaces do not match", "tiny-unclip-prior", "digits-vqgan"]),
        # an image encoder of another CLIP feeding this decoder
        ({"encoder": "other-clip-embed"}, ["latent spaces do not match", "other-clip-embed", "autoencoder"]),
        # the prior without its text embedder
        ({"conditioner": None}, ["tiny-unclip-prior", "no conditioner"]),
    ],
)
def test_misfits_are_refused_in_one_line(lz, tiny, swap, fragments):
    lz("--registry", str(tiny), "compose", *compose_args(**swap)).assert_one_line_error(*fragments)


def test_the_tiny_pipeline_composes(lz, tiny):
    assert "tiny-unclip-prior" in lz("--registry", str(tiny), "compose", *compose_args()).assert_ok().stdout


def test_variations_reproducible_and_interpolation(lz, tiny, digit_pngs, tmp_path):
    a, b = tmp_path / "v1.png", tmp_path / "v2.png"
    for out in (a, b):
        r = lz(
            "--registry", str(tiny), "variations", "tiny-unclip", str(digit_pngs["7"]), "-n", "4", "--seed", "3", "-o", str(out), "--json"
        )
        r.assert_ok()
    assert _sha(a) == _sha(b) and r.json()["n"] == 4 and r.json()["edit"] == "variations"
    lz("--registry", str(tiny), "variations", "tiny-unclip", str(digit_pngs["7"]), "-n", "4", "--seed", "4", "-o", str(b)).assert_ok()
    assert _sha(a) != _sha(b)
    r = lz(
        "--registry",
        str(tiny),
        "variations",
        "tiny-unclip",
        str(digit_pngs["7"]),
        "--to",
        str(digit_pngs["3"]),
        "-n",
        "5",
        "-o",
        "m.png",
        "--json",
    )
    assert r.assert_ok().json()["frames"] == 5
    # any user image: an RGB JPEG of another size is converted
    lz("--registry", str(tiny), "variations", "tiny-unclip", str(digit_pngs["jpg"]), "-n", "2", "-o", "j.png").assert_ok()


def test_variations_bad_input_is_one_line(lz, tiny, digit_pngs, tmp_path):
    base = ["--registry", str(tiny), "variations"]
    seven = str(digit_pngs["7"])
    cases = [
        ([*base, "digits", seven], ["digits", "decodes deterministically", "digits-unclip"]),  # no stochastic decoder
        ([*base, "tiny-unclip", str(digit_pngs["broken"])], ["cannot read image", "broken.png"]),
        ([*base, "tiny-unclip", str(digit_pngs["text"])], ["cannot read image", "notes.png"]),
        ([*base, "tiny-unclip", str(tmp_path / "missing.png")], ["cannot read image", "no such file"]),
        ([*base, "tiny-unclip", str(digit_pngs["jpg"]), "--no-fit"], ["7.jpg", "32x32"]),
        ([*base, "tiny-unclip", seven, "-n", "0"], ["-n"]),
        ([*base, "tiny-unclip", seven, "--to", seven, "-n", "1"], ["at least 2"]),
    ]
    for args, fragments in cases:
        out = tmp_path / "never.png"
        lz(*args, "-o", str(out)).assert_one_line_error(*fragments)
        assert not out.exists() and not out.with_suffix(".json").exists()


def test_python_api(tiny, digit_pngs):
    import latentzoo
    from latentzoo.core.runtime.api import load_pipeline

    pipe = load_pipeline("tiny-unclip", extra=[str(tiny)])
    v = latentzoo.variations(pipe, str(digit_pngs["7"]), 3, seed=1)
    assert v.images.shape == (3, 1, 32, 32) and not torch.equal(v.images[0], v.images[1])
    m = latentzoo.interpolate_embeddings(pipe, str(digit_pngs["7"]), str(digit_pngs["3"]), 3, seed=1)
    assert m.images.shape == (3, 1, 32, 32)
    assert torch.equal(latentzoo.variations(pipe, str(digit_pngs["7"]), 3, seed=1).images, v.images)


def test_shipped_digits_unclip_draws_the_prompted_digit_and_keeps_the_class(lz, tmp_path, digit_pngs):
    """End to end on the shipped weights: the classifier reads the prompted digit, and variations keep the input's."""
    from latentzoo.core.runtime.images import load_images
    from latentzoo.plugins.datasets.evaluate import predicted_labels

    def read(folder: Path) -> torch.Tensor:
        return load_images(sorted(folder.glob("*.png")), size=32, channels=1, fit=False, expects="the classifier")

    lz("sample", "digits-unclip", "--prompt", "a seven", "-n", "8", "-o", f"{tmp_path / 's'}/").assert_ok()
    assert (predicted_labels(read(tmp_path / "s")) == 7).sum() >= 7
    lz("variations", "digits-unclip", str(digit_pngs["3"]), "-n", "8", "-o", f"{tmp_path / 'v'}/").assert_ok()
    assert (predicted_labels(read(tmp_path / "v")) == 3).sum() >= 6


def test_train_unclip_publishes_stages_that_compose(lz, tmp_path):
    """`latentzoo train unclip` (public trainer API): each stage publishes a fragment; the two compose and sample."""
    common = ["--data", "digits-captions", "--steps", "2", "--batch-size", "16", "--set", "hidden=16", "--set", "blocks=1"]
    for stage in ("prior", "decoder"):
        lz("train", "unclip", "-o", str(tmp_path / stage), *common, "--set", f"stage={stage}").assert_ok()
    prior = yaml.safe_load((tmp_path / "prior" / "registry.yaml").read_text())["components"]["unclip-prior"]
    assert prior["conditioning"]["kind"] == "clip-text-embedding" and prior["latent_space"]["scaling_factor"] > 1
    regs = ["--registry", str(tmp_path / "prior" / "registry.yaml"), "--registry", str(tmp_path / "decoder" / "registry.yaml")]
    lz(
        *regs, "sample", "digits-unclip", "--prior", "unclip-prior", "--decoder", "unclip-decoder", "--steps", "2", "-o", "t.png"
    ).assert_ok()
    lz("train", "unclip", "-o", str(tmp_path / "bad"), *common, "--set", "stage=both").assert_one_line_error(
        "stage must be prior or decoder"
    )


def test_inpainting_an_embedding_is_refused_in_one_line(lz, tiny, digit_pngs, tmp_path):
    out = tmp_path / "never.png"
    r = lz("--registry", str(tiny), "inpaint", "tiny-unclip", str(digit_pngs["7"]), "--mask", str(digit_pngs["3"]), "-o", str(out))
    r.assert_one_line_error("spatial latent grid", "tiny-unclip-prior")
    assert not out.exists()
