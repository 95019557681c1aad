"""Stable Diffusion pipeline folders (diffusers) in and out, with parity against diffusers / transformers.

Tiny random-init pipelines shaped like SD 1.x (PNDM, epsilon, conv projections, quick_gelu CLIP,
legacy eos id) and SD 2.x (DDIM, v-prediction, linear projections, per-block heads,
upcast_attention, gelu CLIP, "!" padding) are saved with save_pretrained (safetensors) and
converted through the CLI. Checked: UNet / VAE / text-encoder outputs within 1e-5 relative;
4-step DDIM and Euler loops with classifier-free guidance against StableDiffusionPipeline given
the same initial latents; the exported folder loads back in diffusers with identical tensors;
VAE swapping by declaration; every fitting sampler and scheduler; bad input refused in one line.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

from sd_tiny import SD1_SCHED, VAE, build_sd, perturb  # noqa: E402

RTOL = 1e-5  # component outputs: max |ours - theirs| / max |theirs|
LOOP_TOL = 1e-4  # full denoising loops
PROMPT, NEGATIVE = "an astronaut riding a horse on the moon", "blurry"


def run_cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "latentzoo", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300)


def one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and len(lines) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def rel_err(got, want) -> float:
    got, want = torch.as_tensor(got).double(), torch.as_tensor(want).double()
    assert got.shape == want.shape, (got.shape, want.shape)
    return float((got - want).abs().max() / want.abs().max())


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """Both layouts built and converted through the CLI into one user registry (set for in-process calls too)."""
    base = tmp_path_factory.mktemp("sd")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LATENTZOO_", "HF_"))}
    env.update(LATENTZOO_REGISTRY=str(base / "user.yaml"), XDG_CONFIG_HOME=str(base / "cfg"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    (base / "user.yaml").write_text("version: 1\n")
    pipes, logs = {}, {}
    for layout in ("sd1", "sd2"):
        pipes[layout] = build_sd(base / layout, layout, seed={"sd1": 0, "sd2": 1}[layout])
    proc = run_cli("convert", "--from", "diffusers", str(base / "sd1"), "--name", "tiny-sd1", env=env, cwd=base)
    assert proc.returncode == 0, proc.stderr
    logs["sd1"] = proc.stderr
    saved = {k: os.environ.get(k) for k in ("LATENTZOO_REGISTRY", "XDG_CONFIG_HOME")}
    os.environ.update(LATENTZOO_REGISTRY=env["LATENTZOO_REGISTRY"], XDG_CONFIG_HOME=env["XDG_CONFIG_HOME"])
    from latentzoo.interop.api import convert

    convert(base / "sd2", "tiny-sd2", from_format="diffusers")  # the Python API does what the CLI does
    yield {"base": base, "env": env, "pipes": pipes, "logs": logs}
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def test_convert_maps_parts_and_says_what_it_ignores(zoo, tmp_path):
    from latentzoo.core.runtime.api import info

    log = zoo["logs"]["sd1"]
    assert "scheduler PNDMScheduler -> sampler tiny-sd1-pndm" in log  # PLMS itself, ending at sigma_min (set_alpha_to_one false)
    assert "skip_prk_steps" not in log  # SD 1's config skips the Runge-Kutta warm-up: nothing approximated, nothing said
    assert "tiny-sd1 (pipeline)" in log and "tiny-sd1-text-encoder (conditioner)" in log
    pipe = info("tiny-sd1").data
    assert pipe["conditioner"] == "tiny-sd1-text-encoder" and pipe["encoder"] == pipe["decoder"] == "tiny-sd1-vae"
    assert pipe["defaults"] == {"steps": 50, "guidance": 7.5}
    assert pipe["sampler"] == "tiny-sd1-pndm" and info("tiny-sd1-pndm").data["config"] == {"set_alpha_to_one": False}
    unet = info("tiny-sd2-unet").data
    assert unet["config"]["prediction_type"] == "v_prediction" and unet["config"]["upcast_attention"] is True
    assert unet["config"]["training_schedule"] == {
        "beta_schedule": "scaled_linear",
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "rescale_betas_zero_snr": False,
    }
    assert info("tiny-sd2-scheduler").data["config"] == {"spacing": "leading", "steps_offset": 1}
    assert info("tiny-sd2-ddim").data["config"] == {"eta": 0.0, "set_alpha_to_one": False}
    te = info("tiny-sd2-text-encoder").data
    assert unet["conditioning"]["encoder"] == te["conditioning_space"]["encoder"]
    assert unet["latent_space"]["autoencoder"] == info("tiny-sd2-vae").data["latent_space"]["autoencoder"]
    # a text_encoder folder alone converts too (its tokenizer from ../tokenizer), to the same encoder identity
    from latentzoo.interop.api import convert

    alone = convert(zoo["base"] / "sd2" / "text_encoder", "tiny-te-alone", from_format="diffusers", register=False, outdir=tmp_path / "te")
    assert alone.components["tiny-te-alone"]["conditioning_space"] == te["conditioning_space"]
    assert (tmp_path / "te" / "tiny-te-alone.tokenizer.json").is_file()
    # a folder that names a safety checker and feature extractor (as the published ones do): converted without them, and said so
    shutil.copytree(zoo["base"] / "sd1", tmp_path / "with-checker")
    index = json.loads((tmp_path / "with-checker" / "model_index.json").read_text())
    index.update(
        safety_checker=["stable_diffusion", "StableDiffusionSafetyChecker"], feature_extractor=["transformers", "CLIPImageProcessor"]
    )
    (tmp_path / "with-checker" / "model_index.json").write_text(json.dumps(index))
    checked = convert(tmp_path / "with-checker", "tiny-checked", from_format="diffusers", register=False, outdir=tmp_path / "checked")
    assert any("not converted: safety_checker, feature_extractor" in note for note in checked.notes), checked.notes


@pytest.mark.parametrize("layout", ["sd1", "sd2"])
def test_components_match_diffusers_and_transformers(zoo, layout):
    from latentzoo.core.runtime.api import build

    theirs = zoo["pipes"][layout]
    name = f"tiny-{layout}"
    g = torch.Generator().manual_seed(3)
    # text encoder: diffusers' prompt embeddings (77 padded tokens, no mask) for prompt and negative prompt
    te = build(f"{name}-text-encoder", "conditioner")
    with torch.no_grad():
        want, want_neg = theirs.encode_prompt(PROMPT, "cpu", 1, True, negative_prompt=NEGATIVE)
    got, got_neg = te.condition([PROMPT]), te.condition([NEGATIVE])
    assert "mask" not in got
    errs = {"text": max(rel_err(got["tokens"], want), rel_err(got_neg["tokens"], want_neg))}
    # UNet
    unet = build(f"{name}-unet", "prior")
    x = torch.randn(2, 4, 8, 8, generator=g)
    context = torch.randn(2, 77, want.shape[-1], generator=g)
    t = torch.tensor([981.0, 21.0])
    with torch.no_grad():
        ref = theirs.unet(x, t, encoder_hidden_states=context).sample
    errs["unet"] = rel_err(unet(x, t, encoder_hidden_states=context), ref)
    # VAE: posterior mean and decoder
    vae = build(f"{name}-vae", "decoder")
    images = torch.rand(2, 3, 16, 16, generator=g) * 2 - 1
    with torch.no_grad():
        errs["vae_encode"] = rel_err(vae.encode(images, sample=False), theirs.vae.encode(images).latent_dist.mean)
        errs["vae_decode"] = rel_err(vae.decode(x), theirs.vae.decode(x).sample)
    print(f"components {layout}: max relative errors " + ", ".join(f"{k} {v:.3g}" for k, v in errs.items()))
    assert all(v < RTOL for v in errs.values()), errs


def diffusers_loop(theirs, scheduler, noise, guidance: float, steps: int = 4):
    """diffusers' loop with ``scheduler``; the pipeline's own scheduler is put back after (the zoo is shared by tests)."""
    own, theirs.scheduler = theirs.scheduler, scheduler
    try:
        with torch.no_grad():
            out = theirs(
                PROMPT, negative_prompt=NEGATIVE, height=16, width=16, num_inference_steps=steps, guidance_scale=guidance,
                latents=noise.clone(), output_type="latent",
            )  # fmt: skip
            latents = out.images
            images = theirs.vae.decode(latents / theirs.vae.config.scaling_factor).sample.clamp(-1, 1)
    finally:
        theirs.scheduler = own
    return latents, images


@pytest.mark.parametrize(
    ("layout", "algorithm"),
    [("sd1", "pndm"), ("sd1", "ddim"), ("sd2", "ddim"), ("sd1", "euler"), ("sd2", "euler"), ("sd1", "dpmpp-2m")],
)
def test_denoising_loop_with_guidance_matches_stable_diffusion_pipeline(zoo, layout, algorithm):
    """4 steps, guidance 5, same initial latents: latentzoo's pipeline vs diffusers' StableDiffusionPipeline."""
    from latentzoo.core.runtime.api import compose, info, load_pipeline

    theirs = zoo["pipes"][layout]
    name = f"tiny-{layout}"
    config = dict(theirs.scheduler.config)
    entry = info(name).data
    extra = {}
    if algorithm == "pndm":  # SD 1's own scheduler: PNDMScheduler (PLMS, skip_prk_steps) -> the converted pndm sampler
        assert type(theirs.scheduler).__name__ == "PNDMScheduler"
        scheduler, sampler = diffusers.PNDMScheduler.from_config(config), entry["sampler"]
    elif algorithm == "ddim":  # DDIM on the folder's timesteps (PNDM does not clip x0; DDIMScheduler's default would)
        scheduler, sampler = diffusers.DDIMScheduler.from_config(config, clip_sample=False), "ddim"
        extra = {"set_alpha_to_one": bool(config["set_alpha_to_one"])}
    elif algorithm == "euler":
        scheduler, sampler = diffusers.EulerDiscreteScheduler.from_config(config, timestep_spacing="leading"), "euler"
    else:  # diffusers' DPM-Solver "leading" spaces timesteps its own way; "trailing" is the same sequence as latentzoo's
        scheduler, sampler = diffusers.DPMSolverMultistepScheduler.from_config(config, timestep_spacing="trailing"), "dpmpp-2m"
    spec = compose(
        conditioner=entry["conditioner"], encoder=entry["encoder"], prior=entry["prior"], decoder=entry["decoder"],
        sampler=sampler, scheduler="trailing" if algorithm == "dpmpp-2m" else entry["scheduler"], name=f"{name}-{algorithm}",
    )  # fmt: skip
    ours = load_pipeline(spec)
    options = {"steps": 4, "prompt": PROMPT, "negative_prompt": NEGATIVE, "guidance": 5.0, **extra}
    latents = ours.sample_latents(1, seed=7, options=options)
    noise = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(7))  # what latentzoo drew
    want, want_images = diffusers_loop(theirs, scheduler, noise, 5.0)
    err = rel_err(latents, want)
    print(f"loop {layout} {algorithm}: latents max relative error {err:.3g}")
    assert err < LOOP_TOL
    assert rel_err(ours.decode(ours.unscale(latents)), want_images) < LOOP_TOL
    # the prompt matters: another one gives other latents
    other = ours.sample_latents(1, seed=7, options={**options, "prompt": "a bowl of fruit"})
    assert float((other - latents).abs().max()) > 1e-3


@pytest.mark.parametrize("steps", [1, 2, 7])
def test_pndm_matches_diffusers_at_any_step_count(zoo, steps):
    """PLMS's warm-up (improved Euler, then Adams-Bashforth 2, 3, 4) and its 1- and 2-step edge cases, against PNDMScheduler."""
    from latentzoo.core.runtime.api import load_pipeline

    theirs = zoo["pipes"]["sd1"]
    ours = load_pipeline("tiny-sd1")
    options = {"steps": steps, "prompt": PROMPT, "negative_prompt": NEGATIVE, "guidance": 5.0}
    latents = ours.sample_latents(1, seed=3, options=options)
    noise = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(3))
    want, _ = diffusers_loop(theirs, diffusers.PNDMScheduler(**SD1_SCHED), noise, 5.0, steps)  # the folder's own config
    err = rel_err(latents, want)
    print(f"pndm {steps} steps: latents max relative error {err:.3g}")
    assert err < LOOP_TOL


def test_sample_cli_same_bytes(zoo, tmp_path):
    args = ["sample", "tiny-sd2", "--prompt", PROMPT, "--steps", "4", "-n", "2", "--no-progress"]
    a = run_cli(*args, "-o", str(tmp_path / "a.png"), env=zoo["env"], cwd=tmp_path)
    assert a.returncode == 0, a.stderr
    from latentzoo.core.runtime.api import sample

    sample("tiny-sd2", 2, output=tmp_path / "b.png", options={"steps": 4, "prompt": PROMPT})  # the API draws the CLI's bytes
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    record = json.loads((tmp_path / "a.json").read_text())
    assert record["components"]["conditioner"] == "tiny-sd2-text-encoder" and record["options"]["guidance"] == 7.5


@pytest.mark.parametrize("layout", ["sd1", "sd2"])
def test_export_loads_back_in_diffusers_with_identical_tensors(zoo, layout, tmp_path):
    proc = run_cli("export", f"tiny-{layout}", "--to", "diffusers", "-o", str(tmp_path / "out"), env=zoo["env"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    back = diffusers.StableDiffusionPipeline.from_pretrained(str(tmp_path / "out"), local_files_only=True)
    theirs = zoo["pipes"][layout]
    for part in ("unet", "vae", "text_encoder"):
        a, b = getattr(theirs, part).state_dict(), getattr(back, part).state_dict()
        assert set(a) == set(b), part
        for key in a:
            assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), (part, key)
    prompts = [PROMPT, "", "Café naïve, 12345!"]
    for p in prompts:
        assert (
            back.tokenizer(p, padding="max_length", max_length=77).input_ids
            == theirs.tokenizer(p, padding="max_length", max_length=77).input_ids
        )
    assert back.scheduler.config.prediction_type == theirs.scheduler.config.prediction_type
    assert back.scheduler.config.steps_offset == 1 and back.scheduler.config.timestep_spacing == "leading"
    assert back.vae.config.scaling_factor == theirs.vae.config.scaling_factor
    assert back.unet.config.use_linear_projection == theirs.unet.config.use_linear_projection
    assert back.unet.config.upcast_attention == theirs.unet.config.upcast_attention
    assert back.safety_checker is None


def test_every_fitting_sampler_and_scheduler_composes(zoo):
    """The converted SD UNet with each denoiser sampler (on the pipeline's scheduler) and each sigma scheduler (with euler)."""
    from latentzoo.core.contract.registry import Registry
    from latentzoo.core.runtime.api import compose, list_entries
    from latentzoo.core.runtime.build import Builder

    reg = Registry.load()
    builder = Builder(reg)  # builds each part once
    samplers = [e.name for e in list_entries("sampler") if "denoiser" in (reg.declaration(e).get("drives") or [])]
    schedulers = [e.name for e in list_entries("scheduler") if (reg.declaration(e).get("levels") or "sigma") == "sigma"]
    assert {"ddim", "euler", "euler-ancestral", "dpmpp-2m", "lms", "karras", "normal"} <= set(samplers) | set(schedulers)
    parts = {"conditioner": "tiny-sd1-text-encoder", "prior": "tiny-sd1-unet", "decoder": "tiny-sd1-vae"}
    combos = [(s, "tiny-sd1-scheduler") for s in samplers] + [("euler", s) for s in schedulers]
    for sampler, scheduler in combos:
        spec = compose(**parts, sampler=sampler, scheduler=scheduler, name="combo")
        latents = builder.pipeline(spec).sample_latents(1, seed=0, options={"steps": 2, "prompt": "a cat", "guidance": 3.0})
        assert latents.shape == (1, 4, 8, 8) and bool(torch.isfinite(latents).all()), (sampler, scheduler)


def finetuned_vae(folder: Path) -> None:
    torch.manual_seed(5)
    perturb(diffusers.AutoencoderKL(**VAE), 5).save_pretrained(folder, safe_serialization=True)


def test_a_finetuned_vae_declared_for_the_space_swaps_in(zoo, tmp_path):
    from latentzoo.core.contract.errors import ContractError
    from latentzoo.core.runtime.api import compose, info, load_pipeline

    env, base = zoo["env"], zoo["base"]
    finetuned_vae(base / "ft-vae")
    parts = {"conditioner": "tiny-sd1-text-encoder", "prior": "tiny-sd1-unet", "sampler": "euler", "scheduler": "tiny-sd1-scheduler"}
    # declared as decoding tiny-sd1's latent space: composes without --allow-mismatch
    proc = run_cli("convert", "--from", "diffusers", str(base / "ft-vae"), "--name", "tiny-ft-mse", "--latent-space-of", "tiny-sd1", env=env, cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    entry = info("tiny-ft-mse").data
    assert entry["roles"] == ["decoder"] and info("tiny-ft-mse").latent_space == info("tiny-sd1-vae").latent_space
    pipe = load_pipeline(compose(**parts, decoder="tiny-ft-mse", name="swapped"))
    images = pipe.sample(1, seed=0, options={"steps": 2, "prompt": "a cat"})
    original = load_pipeline(compose(**parts, decoder="tiny-sd1-vae", name="original")).sample(
        1, seed=0, options={"steps": 2, "prompt": "a cat"}
    )
    assert images.shape == original.shape and float((images - original).abs().max()) > 1e-3  # another decoder ran
    # the same VAE without the declaration is another space: refused in one line naming both parts
    from latentzoo.interop.api import convert

    convert(base / "ft-vae", "tiny-other-vae", from_format="diffusers")
    for decoder in ("tiny-other-vae", "digits-klvae"):
        with pytest.raises(ContractError, match=f"latent spaces do not match: prior tiny-sd1-unet vs decoder {decoder}") as exc:
            compose(**parts, decoder=decoder)
        assert "\n" not in str(exc.value)
    proc = run_cli("compose", "--conditioner", "tiny-sd1-text-encoder", "--prior", "tiny-sd1-unet", "--decoder", "digits-klvae",
                   "--sampler", "euler", "--scheduler", "karras", env=env, cwd=tmp_path)  # fmt: skip
    one_line_error(proc, "digits-klvae", "autoencoder")
    # a declaration that does not fit the VAE (another shape) is refused, nothing written
    proc = run_cli("convert", "--from", "diffusers", str(base / "ft-vae"), "--name", "tiny-bad-vae", "--latent-space-of", "digits-klvae", env=env, cwd=tmp_path)  # fmt: skip
    one_line_error(proc, "does not fit the latent space", "channels 4 != 3")
    assert (
        "tiny-bad-vae" not in (base / "user.yaml").read_text() and not (base / "cfg" / "latentzoo" / "converted" / "tiny-bad-vae").exists()
    )


def _break(folder: Path, case: str) -> list[str]:
    """Damage a copy of a pipeline folder; return what the one-line error must name."""
    if case == "pickle-only":
        (folder / "unet" / "diffusion_pytorch_model.safetensors").rename(folder / "unet" / "diffusion_pytorch_model.bin")
        return ["diffusion_pytorch_model.bin", "pickle"]
    if case == "pickle-text-encoder":
        (folder / "text_encoder" / "model.safetensors").rename(folder / "text_encoder" / "pytorch_model.bin")
        return ["pytorch_model.bin", "safe_serialization"]
    if case == "missing-subfolder":
        shutil.rmtree(folder / "text_encoder")
        return ["text_encoder/", "StableDiffusionPipeline"]
    if case == "text-config-disagrees":
        cfg = json.loads((folder / "text_encoder" / "config.json").read_text())
        (folder / "text_encoder" / "config.json").write_text(json.dumps({**cfg, "intermediate_size": cfg["intermediate_size"] + 8}))
        return ["tensor 'text_model.encoder.layers.0.mlp.fc1.", "shape"]
    if case == "unet-config-disagrees":
        cfg = json.loads((folder / "unet" / "config.json").read_text())
        (folder / "unet" / "config.json").write_text(json.dumps({**cfg, "layers_per_block": 2}))
        return ["unet", "has shape"]
    if case == "unknown-pipeline":
        index = json.loads((folder / "model_index.json").read_text())
        (folder / "model_index.json").write_text(json.dumps({**index, "_class_name": "StableDiffusion3Pipeline"}))
        return ["StableDiffusion3Pipeline", "not supported"]
    if case == "unknown-scheduler":
        cfg = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
        (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps({**cfg, "_class_name": "UniPCMultistepScheduler"}))
        return ["UniPCMultistepScheduler", "not supported"]
    if case == "truncated-weights":
        path = folder / "vae" / "diffusion_pytorch_model.safetensors"
        path.write_bytes(path.read_bytes()[:1000])
        return ["vae", "not a readable safetensors file"]
    raise AssertionError(case)


BAD = ["pickle-only", "pickle-text-encoder", "missing-subfolder", "text-config-disagrees", "unet-config-disagrees",
       "unknown-pipeline", "unknown-scheduler", "truncated-weights"]  # fmt: skip


def test_bad_folders_are_refused_in_one_line_and_nothing_is_written(zoo, tmp_path):
    from latentzoo.core.contract.errors import LatentzooError
    from latentzoo.interop.api import convert

    user = zoo["base"] / "user.yaml"
    before = user.read_text()
    for case in BAD:
        folder = tmp_path / case
        shutil.copytree(zoo["base"] / "sd1", folder)
        fragments = _break(folder, case)
        out = tmp_path / f"out-{case}"
        with pytest.raises(LatentzooError) as exc:
            convert(folder, f"bad-{case}", from_format="diffusers", outdir=out)
        message = str(exc.value)
        assert "\n" not in message and all(f in message for f in fragments), (case, message)
        assert not out.exists(), case
        assert user.read_text() == before, case
    # through the CLI: one line, no traceback, and a name the registry has is refused before anything is written
    proc = run_cli("convert", "--from", "diffusers", str(tmp_path / "unknown-pipeline"), "--name", "x", env=zoo["env"], cwd=tmp_path)
    one_line_error(proc, "StableDiffusion3Pipeline")
    proc = run_cli("convert", "--from", "diffusers", str(zoo["base"] / "sd1"), "--name", "tiny-sd1", "-o", str(tmp_path / "again"), env=zoo["env"], cwd=tmp_path)  # fmt: skip
    one_line_error(proc, "already names tiny-sd1")
    assert not (tmp_path / "again").exists() and user.read_text() == before


SD15_UNET = {
    "sample_size": 64, "cross_attention_dim": 768, "attention_head_dim": 8, "block_out_channels": [320, 640, 1280, 1280],
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}  # fmt: skip
SD21_UNET = {**SD15_UNET, "sample_size": 96, "cross_attention_dim": 1024, "attention_head_dim": [5, 10, 20, 20],
             "use_linear_projection": True, "upcast_attention": True}  # fmt: skip
SD_VAE = {"block_out_channels": [128, 256, 512, 512], "down_block_types": ["DownEncoderBlock2D"] * 4,
          "up_block_types": ["UpDecoderBlock2D"] * 4, "layers_per_block": 2, "latent_channels": 4, "sample_size": 512}  # fmt: skip
TEXT = {"sd15": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, hidden_act="quick_gelu"),
        "sd21": dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16, hidden_act="gelu")}  # fmt: skip


@pytest.mark.parametrize("layout", ["sd15", "sd21"])
def test_full_size_published_configs_map_key_for_key(layout):
    """SD 1.5's and SD 2.1's exact published configs: every tensor name and shape equals diffusers' / transformers' (on meta, no memory)."""
    from latentzoo.core.contract.weights import parameters_on_meta
    from latentzoo.plugins.clip.diffusers import text_config
    from latentzoo.plugins.clip.model import CLIPTextEncoder, hf_state_dict
    from latentzoo.plugins.diffusers.folders import ReadContext
    from latentzoo.plugins.diffusion.sd import unet_config
    from latentzoo.plugins.diffusion.unet_cond import UNetCondPrior
    from latentzoo.plugins.vae.diffusers import kl_config
    from latentzoo.plugins.vae.model import KLAutoencoder

    ctx = ReadContext(layout, Path("."), Path("."))
    schedule = {"training_schedule": {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}}
    raw_unet = SD15_UNET if layout == "sd15" else SD21_UNET
    text = {**TEXT[layout], "vocab_size": 49408, "max_position_embeddings": 77}
    with torch.device("meta"):
        theirs = {
            "unet": diffusers.UNet2DConditionModel(**raw_unet).state_dict(),
            "vae": diffusers.AutoencoderKL(**SD_VAE).state_dict(),
            "text": hf_state_dict(transformers.CLIPTextModel(transformers.CLIPTextConfig(**text)).state_dict()),
        }
    with parameters_on_meta():
        ours = {
            "unet": UNetCondPrior(**unet_config(ctx, "unet", raw_unet), **schedule).state_dict(),
            "vae": KLAutoencoder(**kl_config(ctx, "vae", SD_VAE)).state_dict(),
            "text": CLIPTextEncoder(text_config("te", {"architectures": ["CLIPTextModel"], **text}), use_attention_mask=False).state_dict(),
        }
    for part, want in theirs.items():
        assert {k: tuple(v.shape) for k, v in ours[part].items()} == {k: tuple(v.shape) for k, v in want.items()}, part
    params = sum(v.numel() for v in ours["unet"].values())
    assert params == {"sd15": 859_520_964, "sd21": 865_910_724}[layout], params
