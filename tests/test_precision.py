"""``sample --precision bf16``: the models under bfloat16 autocast, as users of diffusers / ComfyUI
expect a half-precision switch; ``bf16-weights``: the same with the weights held in bfloat16 (half
their memory). Same seed, same bytes; close to fp32 (a few grey levels on a text-to-image and a
latent-diffusion pipeline); recorded in the sidecar; codes (integer latents) pass through
untouched; any other value is refused naming the choices."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("torch")

FAST = ["-n", "4", "--steps", "4", "--seed", "5", "--no-progress"]


def grey(path) -> np.ndarray:
    return np.asarray(Image.open(path), dtype=np.float64)


@pytest.mark.parametrize("precision", ["bf16", "bf16-weights"])
@pytest.mark.parametrize("pipeline,extra", [("digits", []), ("digits-t2i", ["--prompt", "a thick seven"])])
def test_bf16_is_reproducible_close_to_fp32_and_recorded(cli, pipeline, extra, precision):
    out = {}
    for name, value in (("a", precision), ("b", precision), ("f", "fp32")):
        cli("sample", pipeline, *FAST, *extra, "--precision", value, "-o", f"{name}.png").assert_ok()
        out[name] = cli.cwd / f"{name}.png"
    assert out["a"].read_bytes() == out["b"].read_bytes()  # same seed, same bytes in bf16 too
    diff = np.abs(grey(out["a"]) - grey(out["f"]))
    assert 0 < diff.mean() < 4, diff.mean()  # really ran in bf16, and still the same images
    assert json.loads((cli.cwd / "a.json").read_text())["precision"] == precision
    assert json.loads((cli.cwd / "f.json").read_text())["precision"] == "fp32"


def test_bf16_weights_are_held_in_bf16_cast_from_the_file_and_refuse_fp32_after(tmp_path):
    """Every floating parameter becomes bfloat16 (buffers keep their precision); a weight adopted from its
    file is cast from the file's values; the pipeline then refuses fp32 sampling in one line."""
    import torch

    import latentzoo
    from latentzoo.core.contract.errors import LatentzooError

    pipe = latentzoo.load_pipeline("digits-t2i")
    before = {n: p.detach().clone() for n, p in pipe.prior.named_parameters()}
    buffers = {n: b.dtype for m in pipe.modules() for n, b in m.named_buffers()}
    images = pipe.sample(2, seed=1, prompt="a two", precision="bf16-weights")
    assert images.dtype == torch.float32 and images.shape[0] == 2
    for m in pipe.modules():
        assert {p.dtype for p in m.parameters() if p.is_floating_point()} == {torch.bfloat16}
    assert {n: b.dtype for m in pipe.modules() for n, b in m.named_buffers()} == buffers
    for n, p in pipe.prior.named_parameters():
        assert torch.equal(p, before[n].to(torch.bfloat16)), n
    with pytest.raises(LatentzooError, match=r"holds bfloat16 weights.*--precision bf16-weights"):
        pipe.sample(1, seed=1, prompt="a two")
    again = pipe.sample(2, seed=1, prompt="a two", precision="bf16-weights")
    assert torch.equal(again, images)


def test_bf16_passes_codes_untouched(cli):
    """A code prior's latents are integer indices: autocast must not turn them into floats."""
    cli("sample", "digits-vqgan-ar", "-n", "2", "--no-progress", "--precision", "bf16", "-o", "codes.png").assert_ok()
    assert grey(cli.cwd / "codes.png").std() > 10


@pytest.mark.parametrize("value", ["fp8", "half", ""])  # fp16 is a choice, CUDA only: tests/test_devices.py
def test_other_precisions_are_refused_naming_the_choices(cli, value):
    result = cli("sample", "digits", "-n", "1", "--precision", value, "-o", "x.png")
    # click's usage error, as for every choice option (tests/test_error_table.py): names the option and the choices
    assert result.returncode == 2 and "Traceback" not in result.stderr, str(result)
    assert "--precision" in result.stderr and "'fp32', 'bf16', 'bf16-weights'" in result.stderr, str(result)
    assert not (cli.cwd / "x.png").exists()


def test_api_refuses_an_unknown_precision_before_loading(tmp_path):
    import latentzoo
    from latentzoo.core.contract.errors import LatentzooError

    with pytest.raises(LatentzooError, match="precision 'fp8'"):
        latentzoo.sample("digits", 1, output=tmp_path / "x.png", precision="fp8")
    assert not (tmp_path / "x.png").exists()
