"""SD 1.x / 2.x inpainting checkpoints (a 9-channel UNet: latents + mask + masked-image latents).

A tiny SD 1.x-shaped StableDiffusionInpaintPipeline folder converts and exports back (every tensor);
``inpaint`` feeds the mask and the masked image's latents as extra channels and matches diffusers'
StableDiffusionInpaintPipeline (4 Euler steps with guidance, same noise, the masked image encoded with
the posterior mean on both sides) to 1e-4 inside the mask; outside it the original pixels are kept. A
plain checkpoint keeps latent blending; the 9-channel UNet refuses plain sampling and img2img in one line.
"""

from __future__ import annotations

import os

import pytest

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

from sd_tiny import SD1_UNET, build_sd  # noqa: E402
from test_sd_folders import rel_err  # noqa: E402

PROMPT = "a red door"


@pytest.fixture(scope="module")
def inpainting(tmp_path_factory):
    base = tmp_path_factory.mktemp("sd-inpaint")
    (base / "user.yaml").write_text("version: 1\n")
    saved = {k: os.environ.get(k) for k in ("LATENTZOO_REGISTRY", "XDG_CONFIG_HOME")}
    os.environ.update(LATENTZOO_REGISTRY=str(base / "user.yaml"), XDG_CONFIG_HOME=str(base / "cfg"))
    plain = build_sd(base / "plain", "sd1", seed=4)
    torch.manual_seed(5)
    unet = diffusers.UNet2DConditionModel(**{**SD1_UNET, "in_channels": 9})
    from sd_tiny import perturb

    perturb(unet, 55)
    pipe = diffusers.StableDiffusionInpaintPipeline(
        vae=plain.vae, text_encoder=plain.text_encoder, tokenizer=plain.tokenizer, unet=unet,
        scheduler=diffusers.EulerDiscreteScheduler.from_config(plain.scheduler.config, timestep_spacing="leading"),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip
    pipe.save_pretrained(base / "inpaint", safe_serialization=True)
    from latentzoo.interop.api import convert

    convert(base / "inpaint", "tiny-inpaint", from_format="diffusers")
    convert(base / "plain", "tiny-plain", from_format="diffusers")
    yield {"base": base, "pipe": pipe}
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _image_and_mask():
    g = torch.Generator().manual_seed(1)
    image = torch.rand(1, 3, 16, 16, generator=g) * 2 - 1
    mask = torch.zeros(1, 1, 16, 16, dtype=torch.bool)
    mask[..., 4:12, 6:14] = True
    return image, mask


def test_inpainting_unet_matches_diffusers_inpaint_pipeline(inpainting, monkeypatch):
    from latentzoo.core.runtime.api import info, load_pipeline
    from latentzoo.core.runtime.editing import inpaint

    assert "inpainting" in info("tiny-inpaint").data["description"]
    assert info("tiny-inpaint-unet").data["config"]["in_channels"] == 9
    image, mask = _image_and_mask()
    ours = load_pipeline("tiny-inpaint")
    edit = inpaint(ours, image, mask, seed=3, options={"steps": 4, "prompt": PROMPT, "guidance": 5.0})
    assert "mask-conditioned" in edit.record["method"]
    from latentzoo.core.runtime import seeding
    from latentzoo.core.runtime.editing import edit_generators

    noise = seeding.randn((1, 4, 8, 8), edit_generators(3, [0]))  # what latentzoo drew: output 0's noise, keyed (seed 3, index 0)
    from diffusers.pipelines.stable_diffusion import pipeline_stable_diffusion_inpaint as module

    # the masked image encoded with the posterior mean, as latentzoo does (diffusers samples it by default)
    monkeypatch.setattr(module, "retrieve_latents", lambda out, generator=None, sample_mode="sample": out.latent_dist.mode())
    theirs = inpainting["pipe"]
    with torch.no_grad():
        latents = theirs(
            PROMPT, image=(image + 1) / 2, mask_image=mask.float(), height=16, width=16, num_inference_steps=4, guidance_scale=5.0,
            latents=noise.clone(), output_type="latent", strength=1.0,
        ).images  # fmt: skip
        want = theirs.vae.decode(latents / theirs.vae.config.scaling_factor).sample.clamp(-1, 1)
    inside = mask.expand_as(want)
    err = rel_err(edit.images[inside], want[inside])
    print(f"inpainting UNet vs diffusers: relative error inside the mask {err:.3g}")
    assert err < 1e-4
    assert torch.equal(edit.images[~inside], image[~inside])  # outside: the original pixels


def test_plain_checkpoint_keeps_blending_and_inpainting_unet_refuses_the_rest(inpainting, tmp_path):
    from latentzoo.core.contract.errors import LatentzooError
    from latentzoo.core.runtime.api import load_pipeline
    from latentzoo.core.runtime.editing import img2img, inpaint

    image, mask = _image_and_mask()
    edit = inpaint(load_pipeline("tiny-plain"), image, mask, seed=0, options={"steps": 2, "prompt": PROMPT})
    assert edit.record["method"] == "latent blending at each model evaluation"
    pipe = load_pipeline("tiny-inpaint")
    for run in (
        lambda: pipe.sample(1, seed=0, options={"steps": 1, "prompt": PROMPT}),
        lambda: img2img(pipe, image, 0.5, options={"steps": 2}),
    ):
        with pytest.raises(LatentzooError) as err:
            run()
        assert "inpainting UNet" in str(err.value) and "\n" not in str(err.value)


def test_inpainting_folder_exports_back(inpainting, tmp_path):
    from latentzoo.interop.api import export

    export("tiny-inpaint", tmp_path / "out", to_format="diffusers")
    back = diffusers.StableDiffusionInpaintPipeline.from_pretrained(str(tmp_path / "out"), local_files_only=True)
    theirs = inpainting["pipe"]
    for part in ("unet", "vae", "text_encoder"):
        a, b = getattr(theirs, part).state_dict(), getattr(back, part).state_dict()
        assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a), part


def test_inpainting_single_file_gives_the_folders_weights(inpainting, tmp_path):
    """An SD 1.x inpainting checkpoint as an original single file (9-channel input_blocks.0.0) converts to the folder's weights."""
    import yaml
    from safetensors.torch import save_file

    from latentzoo.core.runtime.api import info
    from latentzoo.interop.api import convert

    save_file({k: v.contiguous() for k, v in _original(inpainting["pipe"]).items()}, str(tmp_path / "inpaint.safetensors"))
    out = tmp_path / "out"
    tok = inpainting["base"] / "plain-tok"
    convert(tmp_path / "inpaint.safetensors", "inp-file", from_format="single-file", tokenizer=str(tok), register=False, outdir=out)
    frag = yaml.safe_load((out / "registry.yaml").read_text())
    assert frag["components"]["inp-file-unet"]["config"]["in_channels"] == 9
    assert "inpainting" in frag["pipelines"]["inp-file"]["description"]
    for part in ("unet", "vae", "text-encoder"):
        assert frag["components"][f"inp-file-{part}"]["weights"]["sha256"] == info(f"tiny-inpaint-{part}").data["weights"]["sha256"], part


def _original(pipe) -> dict:
    """The pipeline's tensors under the original single-file names."""
    from latentzoo.plugins.checkpoints import keys

    ups = [t.startswith("CrossAttn") for t in pipe.unet.config.up_block_types]
    ckpt = {keys.UNET + k: v for k, v in keys.unet_to_original(pipe.unet.state_dict(), 1, ups).items()}
    ckpt |= {keys.VAE + k: v for k, v in keys.ae_to_original(pipe.vae.state_dict(), 2).items()}
    return ckpt | {keys.CLIP + k: v for k, v in pipe.text_encoder.state_dict().items() if "position_ids" not in k}


def test_inpainting_exports_as_a_single_file_and_back(inpainting, tmp_path):
    """export --to single-file of the 9-channel pipeline: the original tensors (input_blocks.0.0 with 9 inputs); back to the same weights."""
    import yaml
    from safetensors.torch import load_file

    from latentzoo.core.runtime.api import info
    from latentzoo.interop.api import convert, export

    out = tmp_path / "file"
    export("tiny-inpaint", out, to_format="single-file")
    written = load_file(str(out / "tiny-inpaint.safetensors"))
    clip = "cond_stage_model.transformer."
    want = {(k.replace(clip, clip + "text_model.") if "text_model." not in k else k): v for k, v in _original(inpainting["pipe"]).items()}
    assert set(written) == set(want) and all(torch.equal(written[k], want[k]) for k in want)
    assert written["model.diffusion_model.input_blocks.0.0.weight"].shape[1] == 9
    back = tmp_path / "back"
    convert(out / "tiny-inpaint.safetensors", "inp-back", from_format="single-file", config=str(out / "tiny-inpaint.yaml"),
            tokenizer=str(out / "tiny-inpaint-tokenizer"), register=False, outdir=back)  # fmt: skip
    frag = yaml.safe_load((back / "registry.yaml").read_text())["components"]
    for part in ("unet", "vae", "text-encoder"):
        assert frag[f"inp-back-{part}"]["weights"]["sha256"] == info(f"tiny-inpaint-{part}").data["weights"]["sha256"], part
