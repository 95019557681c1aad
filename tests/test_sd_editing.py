"""Editing on converted Stable Diffusion pipelines (SD 1.x-, 2.x- and XL-shaped, tiny, random init), with prompts.

img2img (SDEdit), inpaint (latent blending) and interpolate (DDIM inversion under the prompt, slerp, sampling
back) run on each; the same seed gives the same bytes, the prompt changes the result, inpainting keeps the
pixels outside the mask exactly. Variations need an image encoder these pipelines lack: refused in one line.
"""

from __future__ import annotations

import os

import pytest

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

from sd_tiny import build_sd  # noqa: E402
from sdxl_tiny import build_sdxl  # noqa: E402

PROMPT, OTHER = "a lighthouse at dusk", "a bowl of fruit"
NAMES = {"sd1": "ed-sd15", "sd2": "ed-sd21", "sdxl": "ed-sdxl"}


@pytest.fixture(scope="module")
def pipes(tmp_path_factory):
    base = tmp_path_factory.mktemp("sd-editing")
    (base / "user.yaml").write_text("version: 1\n")
    saved = {k: os.environ.get(k) for k in ("LATENTZOO_REGISTRY", "XDG_CONFIG_HOME")}
    os.environ.update(LATENTZOO_REGISTRY=str(base / "user.yaml"), XDG_CONFIG_HOME=str(base / "cfg"))
    from latentzoo.core.runtime.api import load_pipeline
    from latentzoo.interop.api import convert

    build_sd(base / "sd1", "sd1", seed=6)
    build_sd(base / "sd2", "sd2", seed=7)
    build_sdxl(base / "sdxl", seed=8)
    loaded = {}
    for layout, name in NAMES.items():
        convert(base / layout, name, from_format="diffusers")
        loaded[layout] = load_pipeline(name)
    yield loaded
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _images(n: int = 1, seed: int = 0):
    return torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.mark.parametrize("layout", ["sd1", "sd2", "sdxl"])
def test_img2img_and_inpaint_with_prompts(pipes, layout):
    from latentzoo.core.runtime.editing import img2img, inpaint

    pipe, images = pipes[layout], _images()
    opts = {"steps": 4, "prompt": PROMPT, "guidance": 4.0}
    a = img2img(pipe, images, 0.6, seed=1, options=opts)
    assert a.images.shape == images.shape and bool(torch.isfinite(a.images).all())
    assert torch.equal(a.images, img2img(pipe, images, 0.6, seed=1, options=opts).images)  # same seed, same bytes
    assert float((img2img(pipe, images, 0.6, seed=1, options={**opts, "prompt": OTHER}).images - a.images).abs().max()) > 1e-4
    assert a.record["denoising_steps"] == 3  # ceil(0.6 * 4)
    mask = torch.zeros(1, 1, 16, 16, dtype=torch.bool)
    mask[..., 2:10, 4:12] = True
    edit = inpaint(pipe, images, mask, seed=2, options=opts)
    assert torch.equal(edit.images[~mask.expand_as(images)], images[~mask.expand_as(images)])
    assert float((edit.images - images)[mask.expand_as(images)].abs().max()) > 1e-3


@pytest.mark.parametrize("layout", ["sd1", "sd2", "sdxl"])
def test_interpolate_under_the_prompt_and_variations_refused(pipes, layout):
    from latentzoo.core.contract.errors import LatentzooError
    from latentzoo.core.runtime.api import compose, info, load_pipeline
    from latentzoo.core.runtime.editing import interpolate
    from latentzoo.core.runtime.variations import variations

    entry = info(NAMES[layout]).data
    parts = {k: entry[k] for k in ("conditioner", "encoder", "prior", "decoder", "scheduler")}
    pipe = load_pipeline(compose(**parts, sampler="ddim", name=f"{NAMES[layout]}-ddim"))
    opts = {"steps": 3, "prompt": PROMPT, "guidance": 1.0}
    edit = interpolate(pipe, _images(1, 3), _images(1, 4), 3, seed=0, options=opts)
    assert edit.images.shape == (3, 3, 16, 16) and bool(torch.isfinite(edit.images).all())
    assert torch.equal(edit.images, interpolate(pipe, _images(1, 3), _images(1, 4), 3, seed=0, options=opts).images)
    with pytest.raises(LatentzooError) as err:
        variations(pipes[layout], _images(), 2)
    assert "\n" not in str(err.value)
