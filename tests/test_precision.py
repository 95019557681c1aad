"""``sample --precision bf16``: the models under bfloat16 autocast, as users of diffusers / ComfyUI
expect a half-precision switch. Same seed, same bytes; close to fp32 (a few grey levels on a
text-to-image and a latent-diffusion pipeline); recorded in the sidecar; codes (integer
latents) pass through untouched; any other value is refused naming the choices."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("torch")

FAST = ["-n", "4", "--steps", "4", "--seed", "5", "--no-progress"]


def grey(path) -> np.ndarray:
    return np.asarray(Image.open(path), dtype=np.float64)


@pytest.mark.parametrize("pipeline,extra", [("digits", []), ("digits-t2i", ["--prompt", "a thick seven"])])
def test_bf16_is_reproducible_close_to_fp32_and_recorded(cli, pipeline, extra):
    out = {}
    for name, precision in (("a", "bf16"), ("b", "bf16"), ("f", "fp32")):
        cli("sample", pipeline, *FAST, *extra, "--precision", precision, "-o", f"{name}.png").assert_ok()
        out[name] = cli.cwd / f"{name}.png"
    assert out["a"].read_bytes() == out["b"].read_bytes()  # same seed, same bytes in bf16 too
    diff = np.abs(grey(out["a"]) - grey(out["f"]))
    assert 0 < diff.mean() < 4, diff.mean()  # really ran in bf16, and still the same images
    assert json.loads((cli.cwd / "a.json").read_text())["precision"] == "bf16"
    assert json.loads((cli.cwd / "f.json").read_text())["precision"] == "fp32"


def test_bf16_passes_codes_untouched(cli):
    """A code prior's latents are integer indices: autocast must not turn them into floats."""
    cli("sample", "digits-vqgan-ar", "-n", "2", "--no-progress", "--precision", "bf16", "-o", "codes.png").assert_ok()
    assert grey(cli.cwd / "codes.png").std() > 10


@pytest.mark.parametrize("value", ["fp16", "half", ""])
def test_other_precisions_are_refused_naming_the_choices(cli, value):
    result = cli("sample", "digits", "-n", "1", "--precision", value, "-o", "x.png")
    # click's usage error, as for every choice option (tests/test_error_table.py): names the option and the choices
    assert result.returncode == 2 and "Traceback" not in result.stderr, str(result)
    assert "--precision" in result.stderr and "'fp32', 'bf16'" in result.stderr, str(result)
    assert not (cli.cwd / "x.png").exists()


def test_api_refuses_an_unknown_precision_before_loading(tmp_path):
    import latentzoo
    from latentzoo.core.errors import LatentzooError

    with pytest.raises(LatentzooError, match="precision 'fp8'"):
        latentzoo.sample("digits", 1, output=tmp_path / "x.png", precision="fp8")
    assert not (tmp_path / "x.png").exists()
