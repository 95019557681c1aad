"""Text-to-image sampling through the CLI on a tiny, randomly initialised t2i pipeline (written here, not shipped).

digits-clip (shipped) encodes the prompt; a small diffusion.unet_cond prior cross-attends to its
tokens in digits-vqgan's latent space; digits-vqgan decodes. The weights are random, so the
images mean nothing: what is tested is the path (prompt -> tokens -> guided denoiser ->
image), the sidecar, reproducibility and the refusals.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from latentzoo.core.contract.registry import Registry  # noqa: E402
from latentzoo.plugins.diffusion.unet_cond import UNetCondPrior  # noqa: E402

CONFIG = dict(
    sample_size=8,
    in_channels=3,
    out_channels=3,
    block_out_channels=[16, 32],
    layers_per_block=1,
    down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"],
    cross_attention_dim=64,
    attention_head_dim=4,
    norm_num_groups=8,
    training_schedule={"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012},
)


@pytest.fixture(scope="module")
def t2i_registry(tmp_path_factory) -> Path:
    from safetensors.torch import save_file

    out = tmp_path_factory.mktemp("t2i")
    torch.manual_seed(0)
    prior = UNetCondPrior.from_config(dict(CONFIG))
    weights = out / "tiny-t2i.safetensors"
    save_file({k: v.contiguous() for k, v in prior.state_dict().items()}, str(weights))
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()
    shipped = Registry.load([]).entries
    clip = shipped["digits-clip"].data["conditioning_space"]
    body = {
        "components": {
            "tiny-t2i-prior": {
                "class": "diffusion.unet_cond",
                "roles": ["prior"],
                "config": CONFIG,
                "weights": {"path": weights.name, "sha256": sha},
                "latent_space": shipped["digits-ldm"].data["latent_space"],
                "conditioning": {k: clip[k] for k in ("kind", "width", "sequence_length", "encoder")},
            }
        },
        "pipelines": {
            "tiny-t2i": {
                "conditioner": "digits-clip",
                "prior": "tiny-t2i-prior",
                "decoder": "digits-vqgan",
                "sampler": "ddim",
                "scheduler": "leading",
                "defaults": {"steps": 3},
            }
        },
    }
    path = out / "t2i.yaml"
    path.write_text(json.dumps(body))  # JSON is YAML
    return path


def sample(cli, registry: Path, out: Path, *args: str):
    return cli("--registry", str(registry), "sample", "tiny-t2i", "-n", "2", "--no-progress", "-o", str(out), *args, timeout=300)


def test_prompt_guidance_sidecar_and_same_bytes(cli, t2i_registry, tmp_path):
    args = ["--prompt", "a thick seven", "--negative-prompt", "slanted", "--guidance", "4"]
    first, again, other = tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png"
    for out, extra in ((first, args), (again, args), (other, ["--prompt", "a thin upright two", "--guidance", "4"])):
        result = sample(cli, t2i_registry, out, *extra)
        assert result.returncode == 0, result
    assert first.read_bytes() == again.read_bytes()
    assert first.read_bytes() != other.read_bytes()
    record = json.loads(first.with_suffix(".json").read_text())
    assert record["options"]["prompt"] == "a thick seven"
    assert record["options"]["negative_prompt"] == "slanted"
    assert record["options"]["guidance"] == 4.0
    assert record["components"]["conditioner"] == "digits-clip"
    assert "digits-clip" in record["sha256"] and "tiny-t2i-prior" in record["sha256"]


@pytest.mark.parametrize("pipeline", ["digits", "digits-cond", "digits-vqgan-ar"])
@pytest.mark.parametrize("flag", ["--prompt", "--negative-prompt"])
def test_prompt_on_a_prior_without_text_is_refused(cli, tmp_path, pipeline, flag):
    result = cli("sample", pipeline, flag, "a seven", "-n", "1", "--steps", "2", "-o", str(tmp_path / "x.png"))
    assert result.returncode != 0 and len(result.stderr.strip().splitlines()) == 1, result
    assert f"of pipeline {pipeline} takes no text" in result.stderr and flag in result.stderr, result
    assert not (tmp_path / "x.png").exists()
