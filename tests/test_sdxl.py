"""Stable Diffusion XL pipeline folders (diffusers) in and out, with parity against diffusers / transformers.

Tiny random-init SDXL base (two text encoders, text_time UNet with per-level transformer depth,
KL VAE at 0.13025, Euler) and refiner (text_encoder_2 only, aesthetic-score time ids) folders are
saved with save_pretrained (safetensors) and converted in-process. Checked: both text encoders
(concatenated penultimate states, pooled projection, zeros for the empty negative) and the UNet
within 1e-5 relative; a 5-step Euler loop with guidance against StableDiffusionXLPipeline from the
same latents within 1e-4; export loads back in diffusers with identical tensors; bad input refused
in one line (a refiner as a base, a missing text encoder, an SD 1.x text encoder on the SDXL UNet,
size conditioning that is not a positive multiple of 8).
"""

from __future__ import annotations

import json
import os
import shutil

import pytest

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

from sdxl_tiny import build_sdxl  # noqa: E402
from test_sd_folders import rel_err  # noqa: E402

RTOL, LOOP_TOL = 1e-5, 1e-4
PROMPT = "an astronaut riding a horse on the moon"


@pytest.fixture(scope="module")
def xl(tmp_path_factory):
    """A base and a refiner built and converted into one user registry (set for in-process calls)."""
    base = tmp_path_factory.mktemp("sdxl")
    (base / "user.yaml").write_text("version: 1\n")
    saved = {k: os.environ.get(k) for k in ("LATENTZOO_REGISTRY", "XDG_CONFIG_HOME")}
    os.environ.update(LATENTZOO_REGISTRY=str(base / "user.yaml"), XDG_CONFIG_HOME=str(base / "cfg"))
    from latentzoo.interop.api import convert

    pipes = {"base": build_sdxl(base / "xl", seed=2)}
    pipes["refiner"] = build_sdxl(base / "refiner", seed=3, refiner=True, vae=pipes["base"].vae)  # one latent space
    logs = {
        "base": convert(base / "xl", "tiny-xl", from_format="diffusers").notes,
        "refiner": convert(base / "refiner", "tiny-xl-refiner", from_format="diffusers").notes,
    }
    yield {"base": base, "pipes": pipes, "logs": logs}
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def test_convert_maps_both_text_encoders_and_the_text_time_unet(xl):
    from latentzoo.core.runtime.api import info

    pipe = info("tiny-xl").data
    assert pipe["conditioner"] == "tiny-xl-text-encoder" and pipe["defaults"] == {"steps": 50, "guidance": 5.0}
    assert pipe["sampler"] == "euler"
    te = info("tiny-xl-text-encoder").data
    assert te["class"] == "clip.text_encoders" and len(te["config"]["encoders"]) == 2
    assert te["config"]["force_zeros_for_empty_prompt"] is True
    space = te["conditioning_space"]
    assert (space["width"], space["pooled"], space["pooled_width"]) == (64, True, 32)
    unet = info("tiny-xl-unet").data
    assert unet["config"]["addition_embed_type"] == "text_time" and unet["config"]["transformer_layers_per_block"] == [1, 2]
    assert unet["conditioning"]["pooled_width"] == 32 and unet["conditioning"]["encoder"] == space["encoder"]
    assert info("tiny-xl-vae").data["latent_space"]["scaling_factor"] == 0.13025
    ref = info("tiny-xl-refiner-text-encoder").data
    assert len(ref["config"]["encoders"]) == 1 and ref["config"]["force_zeros_for_empty_prompt"] is False
    assert info("tiny-xl-refiner-unet").data["config"]["aesthetic_score"] is True


@pytest.mark.parametrize("which", ["base", "refiner"])
def test_text_encoders_and_unet_match_diffusers(xl, which):
    from latentzoo.core.runtime.api import build

    theirs = xl["pipes"][which]
    name = "tiny-xl" if which == "base" else "tiny-xl-refiner"
    te = build(f"{name}-text-encoder", "conditioner")
    with torch.no_grad():
        want, want_neg, want_pooled, want_neg_pooled = theirs.encode_prompt(PROMPT, device="cpu", do_classifier_free_guidance=True)
    got, got_neg = te.condition([PROMPT]), te.condition([""])
    errs = {"tokens": rel_err(got["tokens"], want), "pooled": rel_err(got["pooled"], want_pooled)}
    if which == "base":  # force_zeros_for_empty_prompt: the absent negative prompt is zeros
        assert float(want_neg.abs().max()) == 0 and float(got_neg["tokens"].abs().max()) == 0
        assert float(got_neg["pooled"].abs().max()) == 0 and float(want_neg_pooled.abs().max()) == 0
    else:
        errs["negative"] = rel_err(got_neg["tokens"], want_neg)
        errs["negative_pooled"] = rel_err(got_neg["pooled"], want_neg_pooled)
    unet = build(f"{name}-unet", "prior")
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 4, 8, 8, generator=g)
    context = torch.randn(2, 77, want.shape[-1], generator=g)
    pooled = torch.randn(2, 32, generator=g)
    time_ids = torch.tensor([[64.0, 64, 0, 0, 64, 64], [128, 96, 8, 16, 64, 64]])[:, : 5 if which == "refiner" else 6]
    t = torch.tensor([981.0, 21.0])
    with torch.no_grad():
        ref = theirs.unet(x, t, encoder_hidden_states=context, added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids}).sample
    errs["unet"] = rel_err(unet(x, t, encoder_hidden_states=context, pooled=pooled, time_ids=time_ids), ref)
    print(f"sdxl {which}: max relative errors " + ", ".join(f"{k} {v:.3g}" for k, v in errs.items()))
    assert all(v < RTOL for v in errs.values()), errs


@pytest.mark.parametrize("size", [None, (32, 48)])
def test_euler_loop_with_guidance_matches_sdxl_pipeline(xl, size):
    """5 Euler steps, guidance 5, same initial latents (and, second case, other original / target sizes and a crop)."""
    from latentzoo.core.runtime.api import load_pipeline

    theirs = xl["pipes"]["base"]
    ours = load_pipeline("tiny-xl")
    options = {"steps": 5, "prompt": PROMPT, "guidance": 5.0}
    kwargs = {}
    if size:
        options.update(original_size="32,48", crops_coords_top_left="8,0", target_size="48,32")
        kwargs = dict(original_size=(32, 48), crops_coords_top_left=(8, 0), target_size=(48, 32))
    latents = ours.sample_latents(1, seed=7, options=options)
    noise = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        want = theirs(
            PROMPT, height=16, width=16, num_inference_steps=5, guidance_scale=5.0, latents=noise.clone(), output_type="latent", **kwargs
        ).images
    err = rel_err(latents, want)
    print(f"sdxl euler loop {size}: latents max relative error {err:.3g}")
    assert err < LOOP_TOL


def test_sample_and_export_give_back_every_tensor(xl, tmp_path):
    from latentzoo.core.runtime.api import sample
    from latentzoo.interop.api import export

    sample("tiny-xl", 1, output=tmp_path / "x.png", options={"steps": 2, "prompt": PROMPT})
    assert (tmp_path / "x.png").is_file()
    for which, name, cls in (
        ("base", "tiny-xl", "StableDiffusionXLPipeline"),
        ("refiner", "tiny-xl-refiner", "StableDiffusionXLImg2ImgPipeline"),
    ):
        out = tmp_path / which
        export(name, out, to_format="diffusers")
        assert json.loads((out / "model_index.json").read_text())["_class_name"] == cls
        back = getattr(diffusers, cls).from_pretrained(str(out), local_files_only=True)
        theirs = xl["pipes"][which]
        parts = ("unet", "vae", "text_encoder_2") + (("text_encoder",) if which == "base" else ())
        for part in parts:
            a, b = getattr(theirs, part).state_dict(), getattr(back, part).state_dict()
            assert set(a) == set(b), part
            assert all(torch.equal(a[k], b[k]) for k in a), part
        for tok in ("tokenizer", "tokenizer_2"):
            if getattr(theirs, tok) is not None:
                assert (
                    getattr(back, tok)(PROMPT, padding="max_length", max_length=77).input_ids
                    == getattr(theirs, tok)(PROMPT, padding="max_length", max_length=77).input_ids
                )
        assert back.config.force_zeros_for_empty_prompt == theirs.config.force_zeros_for_empty_prompt
        assert type(back.scheduler).__name__ == "EulerDiscreteScheduler" and back.scheduler.config.steps_offset == 1


def _relabel(src, dst, **index):
    shutil.copytree(src, dst)
    data = json.loads((dst / "model_index.json").read_text())
    data.update(index)
    (dst / "model_index.json").write_text(json.dumps(data))
    return dst


def test_bad_sdxl_folders_are_refused_in_one_line(xl, tmp_path):
    """A refiner given as a base, a base given as a refiner, a base missing a text encoder: one line each, nothing written."""
    from latentzoo.core.contract.errors import LatentzooError
    from latentzoo.interop.api import convert

    base, refiner = xl["base"] / "xl", xl["base"] / "refiner"
    as_base = _relabel(refiner, tmp_path / "refiner-as-base", _class_name="StableDiffusionXLPipeline", requires_aesthetics_score=False,
                       text_encoder=["transformers", "CLIPTextModel"], tokenizer=["transformers", "CLIPTokenizer"])  # fmt: skip
    for part in ("text_encoder", "tokenizer"):
        shutil.copytree(base / part, as_base / part)
    as_refiner = _relabel(
        base, tmp_path / "base-as-refiner", _class_name="StableDiffusionXLImg2ImgPipeline", requires_aesthetics_score=True
    )
    missing = _relabel(base, tmp_path / "missing", text_encoder=[None, None])
    cases = {
        as_base: ["refiner's (5: with aesthetic score) time ids", "pipeline is a base model"],
        as_refiner: ["base model's (6: with target size) time ids", "pipeline is a refiner"],
        missing: ["needs a text_encoder/ subfolder"],
    }
    for folder, fragments in cases.items():
        out = tmp_path / f"{folder.name}-out"
        with pytest.raises(LatentzooError) as err:
            convert(folder, "bad-xl", from_format="diffusers", register=False, outdir=out)
        line = str(err.value)
        assert "\n" not in line and all(f in line for f in fragments), line
        assert not out.exists() or not any(out.iterdir())


def test_contract_and_size_conditioning_refusals(xl, tmp_path, capsys, helpers):
    """An SD 1.x-shaped text encoder (or the refiner's) on the SDXL UNet, and size conditioning that is not a positive multiple of 8."""
    from sd_tiny import build_sd

    from latentzoo.core.contract.errors import ContractError
    from latentzoo.core.runtime.api import compose
    from latentzoo.interop.api import convert

    build_sd(tmp_path / "sd1", "sd1")
    convert(tmp_path / "sd1" / "text_encoder", "tiny-sd1-te-for-xl", from_format="diffusers")
    parts = {"prior": "tiny-xl-unet", "decoder": "tiny-xl-vae", "sampler": "euler", "scheduler": "tiny-xl-scheduler"}
    for conditioner, fragment in (("tiny-sd1-te-for-xl", "width 32 != 64"), ("tiny-xl-refiner-text-encoder", "width 32 != 64")):
        with pytest.raises(ContractError) as err:
            compose(conditioner=conditioner, **parts, name="mixed")
        assert "\n" not in str(err.value) and fragment in str(err.value) and conditioner in str(err.value), str(err.value)
    # an SD 1.x VAE (another latent space: scaling 0.18215, another autoencoder) as the SDXL decoder
    convert(tmp_path / "sd1" / "vae", "tiny-sd1-vae-for-xl", from_format="diffusers")
    with pytest.raises(ContractError) as err:
        compose(conditioner="tiny-xl-text-encoder", **{**parts, "decoder": "tiny-sd1-vae-for-xl"}, name="mixed-vae")
    assert "\n" not in str(err.value) and "tiny-sd1-vae-for-xl" in str(err.value) and "scaling_factor" in str(err.value), str(err.value)
    run = helpers.in_process_cli(capsys)
    for option in ("original_size=30,30", "target_size=0,64", "original_size=64", "crops_coords_top_left=-8,0", "target_size=a,b"):
        out = tmp_path / "never.png"
        result = run("sample", "tiny-xl", "--prompt", PROMPT, "--steps", "1", "--set", option, "-o", str(out), "--no-progress")
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode != 0 and len(lines) == 1 and option.split("=")[0] in lines[0], result.stderr
        assert not out.exists()
    result = run("sample", "tiny-xl", "--prompt", PROMPT, "--steps", "1", "--set", "aesthetic_score=6", "-o", str(tmp_path / "n.png"))
    assert result.returncode != 0 and "only the SDXL refiner" in result.stderr


def _single_file(pipe, path, *, refiner: bool, drop: str | None = None):
    """The pipeline's weights as an original SDXL single file (sgm names), written with safetensors."""
    from safetensors.torch import save_file

    from latentzoo.plugins.checkpoints import keys

    unet_cfg = pipe.unet.config
    ups = [t.startswith("CrossAttn") for t in unet_cfg.up_block_types]
    ckpt = {keys.UNET + k: v for k, v in keys.unet_to_original(pipe.unet.state_dict(), unet_cfg.layers_per_block, ups).items()}
    ckpt |= {keys.VAE + k: v for k, v in keys.ae_to_original(pipe.vae.state_dict(), len(pipe.vae.config.block_out_channels)).items()}
    big = keys.openclip_to_original({k: v for k, v in pipe.text_encoder_2.state_dict().items() if "position_ids" not in k})
    if refiner:
        ckpt |= {"conditioner.embedders.0.model." + k: v for k, v in big.items()}
    else:
        ckpt |= {
            "conditioner.embedders.0.transformer." + k: v for k, v in pipe.text_encoder.state_dict().items() if "position_ids" not in k
        }
        ckpt |= {"conditioner.embedders.1.model." + k: v for k, v in big.items()}
    if drop:
        ckpt = {k: v for k, v in ckpt.items() if not k.startswith(drop)}
    save_file({k: v.contiguous() for k, v in ckpt.items()}, str(path))
    return path


def test_single_files_give_the_folders_component_weights(xl, tmp_path):
    """A base and a refiner as original single files convert to byte-identical component weights; a file missing one text encoder is refused."""
    import yaml

    from latentzoo.core.contract.errors import LatentzooError
    from latentzoo.core.runtime.api import info
    from latentzoo.interop.api import convert

    (tmp_path / "tiny.yaml").write_text(
        "model:\n  params:\n    unet_config:\n      params:\n        num_head_channels: 16\n        image_size: 8\n"
    )
    for which, name in (("base", "tiny-xl"), ("refiner", "tiny-xl-refiner")):
        single = _single_file(xl["pipes"][which], tmp_path / f"{which}.safetensors", refiner=which == "refiner")
        out = tmp_path / f"{which}-out"
        result = convert(
            single,
            f"{which}-file",
            from_format="single-file",
            config=str(tmp_path / "tiny.yaml"),
            tokenizer=str(xl["base"] / "xl-tok"),
            register=False,
            outdir=out,
        )
        assert any(("Stable Diffusion XL " + ("refiner" if which == "refiner" else "base")) in n for n in result.notes), result.notes
        frag = yaml.safe_load((out / "registry.yaml").read_text())["components"]
        for part in ("unet", "vae", "text-encoder"):
            assert frag[f"{which}-file-{part}"]["weights"]["sha256"] == info(f"{name}-{part}").data["weights"]["sha256"], (which, part)
        assert frag[f"{which}-file-unet"]["config"]["addition_time_embed_dim"] == 8
    single = _single_file(xl["pipes"]["base"], tmp_path / "no-clip-l.safetensors", refiner=False, drop="conditioner.embedders.0.")
    with pytest.raises(LatentzooError) as err:
        convert(
            single, "broken", from_format="single-file", tokenizer=str(xl["base"] / "xl-tok"), register=False, outdir=tmp_path / "broken"
        )
    assert "missing a text encoder" in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "broken").exists() or not any((tmp_path / "broken").iterdir())


def test_base_plus_refiner_matches_diffusers_and_is_recorded(xl, tmp_path, capsys, helpers):
    """sample --refiner: the base's 4 steps to the switch (0.8), the refiner's last step, as diffusers' denoising_end / _start."""

    from latentzoo.core.runtime.api import load_pipeline
    from latentzoo.core.runtime.refine import attach

    base = load_pipeline("tiny-xl")
    attach(base, load_pipeline("tiny-xl-refiner"), 0.8)
    latents = base.sample_latents(1, seed=5, options={"steps": 5, "prompt": PROMPT, "guidance": 5.0})
    noise = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        mid = xl["pipes"]["base"](
            PROMPT, height=16, width=16, num_inference_steps=5, guidance_scale=5.0, latents=noise.clone(), output_type="latent",
            denoising_end=0.8,
        ).images  # fmt: skip
        want = xl["pipes"]["refiner"](
            PROMPT, image=mid, num_inference_steps=5, guidance_scale=5.0, denoising_start=0.8, output_type="latent"
        ).images
    err = rel_err(latents, want)
    with capsys.disabled():
        print(f"sdxl base + refiner (switch 0.8): latents max relative error {err:.3g}")
    assert err < LOOP_TOL
    run = helpers.in_process_cli(capsys)
    out = tmp_path / "refined.png"
    args = ["sample", "tiny-xl", "--prompt", PROMPT, "--steps", "5", "-n", "1", "--no-progress", "-o", str(out)]
    result = run(*args, "--refiner", "tiny-xl-refiner", "--refiner-switch", "0.8")
    assert result.returncode == 0, result.stderr
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["refiner"]["pipeline"] == "tiny-xl-refiner" and record["refiner"]["switch"] == 0.8
    # a refiner as the base, a base as the refiner, a switch outside (0, 1): one line each, nothing written
    bad = tmp_path / "bad.png"
    cases = {
        ("sample", "tiny-xl-refiner"): "is a refiner",
        ("sample", "tiny-xl", "--refiner", "tiny-xl"): "is not a refiner",
        ("sample", "tiny-xl", "--refiner", "tiny-xl-refiner", "--refiner-switch", "1.5"): "--refiner-switch",
    }
    for args, fragment in cases.items():
        result = run(*args, "--prompt", PROMPT, "--steps", "2", "--no-progress", "-o", str(bad))
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode != 0 and len(lines) == 1 and fragment in lines[0], result.stderr
        assert not bad.exists()


def test_euler_ancestral_folder_and_refiner_img2img_with_aesthetic_score(xl, tmp_path):
    """An EulerAncestralDiscreteScheduler folder maps to euler-ancestral; the refiner refines an image (img2img), its aesthetic score steering it."""
    from latentzoo.core.runtime.api import info, load_pipeline
    from latentzoo.core.runtime.editing import img2img
    from latentzoo.interop.api import convert

    build_sdxl(tmp_path / "ancestral", seed=9, scheduler="EulerAncestralDiscreteScheduler")
    result = convert(tmp_path / "ancestral", "tiny-xl-ancestral", from_format="diffusers", register=False, outdir=tmp_path / "a")
    assert result.pipelines["tiny-xl-ancestral"]["sampler"] == "euler-ancestral"
    assert info("tiny-xl-refiner").data["sampler"] == "euler"
    refiner = load_pipeline("tiny-xl-refiner")
    images = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    opts = {"steps": 4, "prompt": PROMPT, "guidance": 5.0}
    a = img2img(refiner, images, 0.3, seed=0, options=opts)
    b = img2img(refiner, images, 0.3, seed=0, options={**opts, "aesthetic_score": 2.0})
    assert bool(torch.isfinite(a.images).all()) and float((a.images - b.images).abs().max()) > 1e-5


def test_an_sd1_lora_on_sdxl_is_refused_in_one_line(xl, tmp_path, capsys, helpers):
    """A LoRA made for an SD 1.x UNet (its attention in the first level, which SDXL's lacks) is refused on the SDXL pipeline."""
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(0)
    key = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    lora = {f"{key}.lora_down.weight": torch.randn(4, 32, generator=g), f"{key}.lora_up.weight": torch.randn(32, 4, generator=g)}
    save_file({**lora, f"{key}.alpha": torch.tensor(4.0)}, str(tmp_path / "sd1-lora.safetensors"))
    run = helpers.in_process_cli(capsys)
    out = tmp_path / "never.png"
    result = run("sample", "tiny-xl", "--prompt", PROMPT, "--steps", "1", "--lora", str(tmp_path / "sd1-lora.safetensors"), "-o", str(out))
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode != 0 and len(lines) == 1 and "sd1-lora" in lines[0], result.stderr
    assert not out.exists()


def _file_tensors(path):
    from safetensors.torch import load_file

    return load_file(str(path))


def test_single_file_export_round_trips_base_and_refiner(xl, tmp_path, capsys, helpers):
    """export --to single-file: every tensor of the original SDXL file (sgm names), and in -> out -> in gives the same weights."""
    import yaml

    from latentzoo.core.runtime.api import info
    from latentzoo.interop.api import convert

    run = helpers.in_process_cli(capsys)
    for which, name in (("base", "tiny-xl"), ("refiner", "tiny-xl-refiner")):
        original = _file_tensors(_single_file(xl["pipes"][which], tmp_path / f"{which}-in.safetensors", refiner=which == "refiner"))
        out = tmp_path / f"{which}-single"
        result = run("export", name, "--to", "single-file", "-o", str(out))
        assert result.returncode == 0, result.stderr
        clip = "conditioner.embedders.0.transformer."  # as published SDXL files name it: with transformers' text_model. level
        original = {k.replace(clip, clip + "text_model.") if k.startswith(clip) and "text_model." not in k else k: v
                    for k, v in original.items()}  # fmt: skip
        written = _file_tensors(out / f"{name}.safetensors")
        assert set(written) == set(original), sorted(set(written) ^ set(original))[:5]
        assert all(torch.equal(written[k], original[k]) for k in original), which
        embedders = {k.split(".")[2] + "." + k.split(".")[3] for k in written if k.startswith("conditioner.")}
        assert embedders == ({"0.model"} if which == "refiner" else {"0.transformer", "1.model"}), embedders
        back = convert(
            out / f"{name}.safetensors", f"{which}-back", from_format="single-file", config=str(out / f"{name}.yaml"),
            tokenizer=str(out / f"{name}-tokenizer"), register=False, outdir=tmp_path / f"{which}-back",
        )  # fmt: skip
        frag = yaml.safe_load((tmp_path / f"{which}-back" / "registry.yaml").read_text())["components"]
        for part in ("unet", "vae", "text-encoder"):
            ours = info(f"{name}-{part}").data
            assert frag[f"{which}-back-{part}"]["weights"]["sha256"] == ours["weights"]["sha256"], (which, part)
        # what the original format cannot state: its UNets normalise over 32 groups (the tiny one over 16), said in a note
        assert any("32 norm groups" in n for n in result.stderr.splitlines()), result.stderr
        want = {**info(f"{name}-unet").data["config"], "norm_num_groups": 32, "transformer_layers_per_block": 2}
        assert frag[f"{which}-back-unet"]["config"] == want, which  # depth 2 at the one attending level: the same model
        assert back.pipelines[f"{which}-back"]["sampler"] == "euler"


def test_single_file_export_of_sd1_round_trips_and_sd2_is_refused(xl, tmp_path, capsys, helpers):
    """An SD 1.x pipeline goes out as cond_stage_model.transformer.* and back to the same weights; SD 2.x and a component are refused."""
    import yaml
    from sd_tiny import build_sd

    from latentzoo.core.runtime.api import info
    from latentzoo.interop.api import convert

    for layout in ("sd1", "sd2"):
        build_sd(tmp_path / layout, layout, seed=4)
        convert(tmp_path / layout, f"xp-{layout}", from_format="diffusers")
    run = helpers.in_process_cli(capsys)
    out = tmp_path / "sd1-single"
    result = run("export", "xp-sd1", "--to", "single-file", "-o", str(out))
    assert result.returncode == 0, result.stderr
    written = _file_tensors(out / "xp-sd1.safetensors")
    assert {k.split(".")[0] for k in written} == {"model", "first_stage_model", "cond_stage_model"}
    convert(out / "xp-sd1.safetensors", "sd1-back", from_format="single-file", config=str(out / "xp-sd1.yaml"),
            tokenizer=str(out / "xp-sd1-tokenizer"), register=False, outdir=tmp_path / "sd1-back")  # fmt: skip
    frag = yaml.safe_load((tmp_path / "sd1-back" / "registry.yaml").read_text())["components"]
    for part in ("unet", "vae", "text-encoder"):
        assert frag[f"sd1-back-{part}"]["weights"]["sha256"] == info(f"xp-sd1-{part}").data["weights"]["sha256"], part
    for args, fragment in (
        (("export", "xp-sd2", "--to", "single-file"), "2 of OpenCLIP's 3 blocks"),
        (("export", "xp-sd1-unet", "--to", "single-file"), "is a component"),
    ):
        never = tmp_path / f"never-{args[1]}"
        result = run(*args, "-o", str(never))
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode != 0 and len(lines) == 1 and fragment in lines[0], result.stderr
        assert not never.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")], list(tmp_path.iterdir())


@pytest.mark.parametrize("score", [None, (7.5, 1.5)])
def test_refiner_img2img_matches_sdxl_img2img_pipeline(xl, score):
    """The refiner alone refining an image: 4 Euler steps at strength 0.5 (2 denoising steps) with guidance 5 and the
    aesthetic-score time ids (defaults 6 / 2.5, then others), from the same image latents and noise, as
    StableDiffusionXLImg2ImgPipeline. diffusers takes 4-channel input as latents; the noise is both sides' first draw
    from output 0's generator of seed 3 (core.runtime.seeding); both latents are decoded by the same VAE (the edit returns images)."""
    from latentzoo.core.runtime.api import load_pipeline
    from latentzoo.core.runtime.editing import img2img
    from latentzoo.core.runtime.seeding import index_seed  # output 0's noise: its own generator, keyed (seed 3, index 0)

    theirs = xl["pipes"]["refiner"]
    ours = load_pipeline("tiny-xl-refiner")
    images = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    options = {"steps": 4, "prompt": PROMPT, "guidance": 5.0}
    kwargs = {}
    if score:
        options.update(aesthetic_score=score[0], negative_aesthetic_score=score[1])
        kwargs = dict(aesthetic_score=score[0], negative_aesthetic_score=score[1])
    edit = img2img(ours, images, 0.5, seed=3, options=options)
    assert edit.record["denoising_steps"] == 2
    with torch.no_grad():
        x0 = ours.scale(ours.encode(images))
        want = theirs(
            PROMPT, image=x0, strength=0.5, num_inference_steps=4, guidance_scale=5.0, output_type="latent",
            generator=torch.Generator().manual_seed(index_seed(3, 0, stream="edit")), **kwargs,
        ).images  # fmt: skip
        want_images = ours.decode(ours.unscale(want))  # both latents through the same decoder: the edit returns images
    err = rel_err(edit.images, want_images)
    print(f"sdxl refiner img2img (aesthetic {score or 'default'}): decoded images max relative error {err:.3g}")
    assert err < LOOP_TOL
