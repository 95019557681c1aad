"""diffusers interop: converted models and exported folders match diffusers numerically (fp32, CPU).

Random-init diffusers models shaped like the public checkpoints but scaled down:
- CompVis/ldm-celebahq-256 (LDMPipeline): VQModel (3 DownEncoderBlock2D, 2 layers, 3 latent
  channels) + UNet2DModel (DownBlock2D then AttnDownBlock2D x3, attention heads) + DDIMScheduler
  (scaled_linear 0.0015..0.0195, steps_offset 1, set_alpha_to_one false). Like the real vqvae
  config, ours states no scaling_factor, so conversion must be told one.
- google/ddpm-cifar10-32 (DDPMPipeline): UNet2DModel with one attention block, no attention
  heads, downsample_padding 0, flip_sin_to_cos false, freq_shift 1, norm_eps 1e-6 + DDPMScheduler
  (linear, clip_sample).
They are saved with save_pretrained (safetensors), converted through the CLI, and compared with
diffusers' own modules and with loops written exactly as DDIMPipeline / DDPMPipeline /
LDMPipeline run them (same CPU generator); the exported folders are loaded back by diffusers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

diffusers = pytest.importorskip("diffusers")
torch = pytest.importorskip("torch")

import latentzoo  # noqa: E402
from latentzoo.core.contract.registry import Registry  # noqa: E402

TOL = 1e-4
SCALE = 0.6
STEPS = 10
ERRORS: dict[str, float] = {}  # max abs error per comparison (printed with -s)


def run_cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "latentzoo", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=600)


def max_err(name: str, a, b) -> float:
    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    assert a.shape == b.shape, (name, a.shape, b.shape)
    err = float((a - b).abs().max())
    ERRORS[name] = max(err, ERRORS.get(name, 0.0))
    print(f"parity {name}: max abs error {err:.3g} (reference max |x| {float(b.abs().max()):.3g})")
    return err


def ldm_parts():
    torch.manual_seed(0)
    vq = diffusers.VQModel(
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 3,
        up_block_types=["UpDecoderBlock2D"] * 3,
        block_out_channels=[16, 32, 32],
        layers_per_block=2,
        latent_channels=3,
        num_vq_embeddings=64,
        norm_num_groups=8,
        sample_size=32,
    )
    with torch.no_grad():  # a spread-out codebook, so quantisation is not trivial
        vq.quantize.embedding.weight.normal_()
    unet = diffusers.UNet2DModel(
        sample_size=8,
        in_channels=3,
        out_channels=3,
        block_out_channels=[16, 32, 32, 48],
        down_block_types=["DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"],
        up_block_types=["AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
        layers_per_block=2,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    sched = diffusers.DDIMScheduler(
        beta_start=0.0015, beta_end=0.0195, beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False, steps_offset=1
    )
    return vq.eval(), unet.eval(), sched


def ddpm_parts():
    torch.manual_seed(1)
    unet = diffusers.UNet2DModel(
        sample_size=16,
        in_channels=3,
        out_channels=3,
        block_out_channels=[16, 32, 32, 32],
        down_block_types=["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
        up_block_types=["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
        layers_per_block=2,
        attention_head_dim=None,
        norm_num_groups=8,
        norm_eps=1e-6,
        downsample_padding=0,
        flip_sin_to_cos=False,
        freq_shift=1,
        dropout=0.1,
    )
    sched = diffusers.DDPMScheduler(beta_start=0.0001, beta_end=0.02, beta_schedule="linear", clip_sample=True, variance_type="fixed_small")
    return unet.eval(), sched


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    base = tmp_path_factory.mktemp("parity")
    e = {k: v for k, v in os.environ.items() if not k.startswith("LATENTZOO_")}
    e.update(LATENTZOO_REGISTRY=str(base / "user.yaml"), XDG_CONFIG_HOME=str(base / "config"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    return {"base": base, "env": e}


@pytest.fixture(scope="module")
def ldm(env):
    base = env["base"]
    vq, unet, sched = ldm_parts()
    folder = base / "ldm-celebahq-tiny"
    diffusers.LDMPipeline(vqvae=vq, unet=unet, scheduler=sched).save_pretrained(folder, safe_serialization=True)
    cfg_path = folder / "vqvae" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.pop("scaling_factor")  # as in the public CompVis config
    cfg_path.write_text(json.dumps(cfg))
    proc = run_cli(
        "convert", "--from", "diffusers", str(folder), "--name", "tiny-ldm", "--scaling-factor", str(SCALE), env=env["env"], cwd=base
    )
    assert proc.returncode == 0, proc.stderr
    assert "scaling_factor 0.6 from --scaling-factor" in proc.stderr
    user = Path(env["env"]["LATENTZOO_REGISTRY"])
    return {
        "vq": vq,
        "unet": unet,
        "sched": sched,
        "folder": folder,
        "registry": user,
        "pipe": latentzoo.load_pipeline("tiny-ldm", extra=[user]),
    }


@pytest.fixture(scope="module")
def ddpm(env):
    base = env["base"]
    unet, sched = ddpm_parts()
    folder = base / "ddpm-cifar10-tiny"
    diffusers.DDPMPipeline(unet=unet, scheduler=sched).save_pretrained(folder, safe_serialization=True)
    proc = run_cli("convert", "--from", "diffusers", str(folder), "--name", "tiny-ddpm", env=env["env"], cwd=base)
    assert proc.returncode == 0, proc.stderr
    user = Path(env["env"]["LATENTZOO_REGISTRY"])
    return {"unet": unet, "sched": sched, "folder": folder, "registry": user, "pipe": latentzoo.load_pipeline("tiny-ddpm", extra=[user])}


# ---------------------------------------------------------------------------------------
# loops written as diffusers' pipelines run them


def batch_drawn(pipe, n: int, *, seed: int, **options) -> torch.Tensor:
    """The pipeline's images with the whole batch drawn from one torch.Generator(seed), diffusers'
    convention (``pipe.sample`` seeds each sample by its index, core.runtime.seeding): sample_latents, decode."""
    return pipe.decode(pipe.unscale(pipe.sample_latents(n, seed=seed, **options)))


@torch.no_grad()
def diffusers_ldm_latents(unet, sched, *, n, seed, steps, eta):
    """LDMPipeline.__call__ up to the decode, with the generator also passed to step (as DDIMPipeline does)."""
    from diffusers.utils.torch_utils import randn_tensor

    gen = torch.Generator().manual_seed(seed)
    size = unet.config.sample_size
    latents = randn_tensor((n, unet.config.in_channels, size, size), generator=gen) * sched.init_noise_sigma
    sched.set_timesteps(steps)
    for t in sched.timesteps:
        out = unet(sched.scale_model_input(latents, t), t).sample
        latents = sched.step(out, t, latents, eta=eta, generator=gen).prev_sample
    return latents


@torch.no_grad()
def diffusers_ddpm_images(unet, sched, *, n, seed, steps):
    """DDPMPipeline.__call__ before its [0, 1] post-processing."""
    from diffusers.utils.torch_utils import randn_tensor

    gen = torch.Generator().manual_seed(seed)
    size = unet.config.sample_size
    image = randn_tensor((n, unet.config.in_channels, size, size), generator=gen)
    sched.set_timesteps(steps)
    for t in sched.timesteps:
        image = sched.step(unet(image, t).sample, t, image, generator=gen).prev_sample
    return image


# ---------------------------------------------------------------------------------------
# converted models


def test_converted_fragment_names_the_autoencoder_space(ldm):
    reg = Registry.load([ldm["registry"]])
    vq, prior = reg.get("tiny-ldm-vqvae"), reg.get("tiny-ldm-unet")
    from latentzoo.core.contract.weights import sha256_file, space_identity

    sha = vq.data["weights"]["sha256"]
    assert sha256_file(vq.weights_path()) == sha
    assert prior.latent_space.autoencoder == space_identity(sha) == vq.latent_space.autoencoder
    assert prior.latent_space.scaling_factor == SCALE and prior.latent_space.shift == 0.0
    # the scheduler config splits three ways: the training schedule goes to the prior, the
    # spacing to a timesteps scheduler, set_alpha_to_one / clipping to the sampler
    config = prior.data["config"]
    assert config["prediction_type"] == "epsilon" and config["num_train_timesteps"] == 1000
    assert config["training_schedule"] == {
        "beta_schedule": "scaled_linear",
        "beta_start": 0.0015,
        "beta_end": 0.0195,
        "rescale_betas_zero_snr": False,
    }
    pipeline = reg.get("tiny-ldm").data
    assert pipeline["scheduler"] == "tiny-ldm-scheduler" and pipeline["sampler"] == "tiny-ldm-ddim"
    sched = reg.get("tiny-ldm-scheduler").data
    assert sched["class"] == "diffusion.timesteps" and sched["config"] == {"spacing": "leading", "steps_offset": 1}
    sampler = reg.get("tiny-ldm-ddim").data["config"]
    assert sampler["set_alpha_to_one"] is False and sampler["clip_sample"] is False and sampler["eta"] == 0.0


@torch.no_grad()
def test_unet_forward_parity(ldm, ddpm):
    for tag, ours, theirs in (("ldm", ldm["pipe"].prior, ldm["unet"]), ("ddpm", ddpm["pipe"].prior, ddpm["unet"])):
        gen = torch.Generator().manual_seed(3)
        size, ch = theirs.config.sample_size, theirs.config.in_channels
        x = torch.randn(2, ch, size, size, generator=gen)
        for t in (0, 1, 421, 999):
            assert max_err(f"unet forward ({tag})", ours(x, torch.tensor(t)), theirs(x, t).sample) < TOL


@torch.no_grad()
def test_vq_encode_decode_parity(ldm):
    gen = torch.Generator().manual_seed(4)
    x = torch.rand(2, 3, 32, 32, generator=gen) * 2 - 1
    ours, theirs = ldm["pipe"].encoder, ldm["vq"]
    h = ours.encode(x)
    assert max_err("vq encode (pre-quant h)", h, theirs.encode(x).latents) < TOL
    assert max_err("vq decode", ours.decode(h), theirs.decode(h).sample) < TOL


@pytest.mark.parametrize("eta", [0.0, 0.5])
def test_ddim_loop_parity(ldm, eta):
    pipe = ldm["pipe"]
    ours = pipe.sample_latents(2, seed=7, steps=STEPS, eta=eta)
    theirs = diffusers_ldm_latents(ldm["unet"], ldm["sched"], n=2, seed=7, steps=STEPS, eta=eta)
    assert max_err(f"ddim loop latents (eta {eta})", ours, theirs) < TOL
    with torch.no_grad():
        assert (
            max_err(f"ldm images (eta {eta})", pipe.decode(pipe.unscale(ours)), ldm["vq"].decode(theirs / SCALE).sample.clamp(-1, 1)) < TOL
        )


def test_ldm_pipeline_call_parity(ldm):
    """diffusers' own LDMPipeline (eta 0: it does not pass its generator to the scheduler step) against ours."""
    pipe = ldm["pipe"]
    folder = ldm["folder"]
    theirs = diffusers.LDMPipeline.from_pretrained(folder)
    theirs.vqvae.register_to_config(scaling_factor=SCALE)
    theirs.set_progress_bar_config(disable=True)
    out = theirs(batch_size=2, generator=torch.Generator().manual_seed(7), num_inference_steps=STEPS, output_type="np").images
    ours = (batch_drawn(pipe, 2, seed=7, steps=STEPS) / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1)
    assert max_err("LDMPipeline call images", ours, torch.from_numpy(out)) < TOL


def test_ddpm_loop_parity(ddpm):
    pipe = ddpm["pipe"]
    ours = pipe.sample_latents(2, seed=5, steps=STEPS)
    theirs = diffusers_ddpm_images(ddpm["unet"], ddpm["sched"], n=2, seed=5, steps=STEPS)
    assert max_err("ddpm loop (leading spacing)", ours, theirs) < TOL
    official = diffusers.DDPMPipeline(unet=ddpm["unet"], scheduler=ddpm["sched"])
    official.set_progress_bar_config(disable=True)
    out = official(batch_size=2, generator=torch.Generator().manual_seed(5), num_inference_steps=STEPS, output_type="np").images
    assert (
        max_err("DDPMPipeline call images", (batch_drawn(pipe, 2, seed=5, steps=STEPS) / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1), out)
        < TOL
    )


def test_ddim_on_ddpm_schedule_parity(ddpm):
    """A DDIM sampler on the converted DDPM schedule against diffusers' DDIMScheduler from the same config."""
    pipe = ddpm["pipe"]
    from latentzoo.plugins.diffusion.samplers import DDIMSampler

    ddim = DDIMSampler(clip_sample=True)  # the converted schedule's clip_sample, as diffusers' DDIMScheduler reads it
    sched = diffusers.DDIMScheduler.from_config(ddpm["sched"].config)
    gen = torch.Generator().manual_seed(9)
    noise = torch.randn(2, 3, 16, 16, generator=gen)
    ours = ddim.sample(pipe.prior, noise, levels=pipe.scheduler.schedule(pipe.prior, STEPS), generator=gen, eta=1.0)
    gen = torch.Generator().manual_seed(9)
    x = torch.randn(2, 3, 16, 16, generator=gen)
    sched.set_timesteps(STEPS)
    with torch.no_grad():
        for t in sched.timesteps:
            x = sched.step(ddpm["unet"](x, t).sample, t, x, eta=1.0, generator=gen).prev_sample
    assert max_err("ddim loop on ddpm schedule (eta 1, clip_sample)", ours, x) < TOL


def test_ddim_pipeline_v_prediction_trailing_parity(env):
    """A pixel DDIMPipeline with prediction_type v_prediction and trailing spacing: both map onto the converted parts."""
    base = env["base"]
    unet, _ = ddpm_parts()
    sched = diffusers.DDIMScheduler(
        beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction", timestep_spacing="trailing", clip_sample=False
    )
    folder = base / "ddim-v"
    diffusers.DDIMPipeline(unet=unet, scheduler=sched).save_pretrained(folder, safe_serialization=True)
    proc = run_cli("convert", "--from", "diffusers", str(folder), "--name", "tiny-v", env=env["env"], cwd=base)
    assert proc.returncode == 0, proc.stderr
    user = Path(env["env"]["LATENTZOO_REGISTRY"])
    reg = Registry.load([user])
    assert reg.get("tiny-v-unet").data["config"]["prediction_type"] == "v_prediction"
    assert reg.get("tiny-v").data["scheduler"] == "trailing"  # the built-in spacing (steps_offset 0): no copy
    assert "tiny-v-scheduler" not in reg.entries
    # the beta schedule went to the prior: it owns its training schedule
    assert reg.get("tiny-v-unet").data["config"]["training_schedule"] == {
        "beta_schedule": "squaredcos_cap_v2",
        "rescale_betas_zero_snr": False,
    }
    assert reg.get("tiny-v").data["decoder"] == "tiny-v-pixels"
    pipe = latentzoo.load_pipeline("tiny-v", extra=[user])
    ours = pipe.sample_latents(2, seed=3, steps=STEPS, eta=0.3)
    theirs = diffusers_ldm_latents(unet, sched, n=2, seed=3, steps=STEPS, eta=0.3)
    assert max_err("ddim loop v_prediction trailing cosine (eta 0.3)", ours, theirs) < TOL


def test_standalone_scheduler_and_unet_folders(env, ddpm):
    base = env["base"]
    sched = diffusers.DDPMScheduler(variance_type="fixed_large", beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    sched.save_pretrained(base / "sched-only")
    proc = run_cli("convert", "--from", "diffusers", str(base / "sched-only"), "--name", "sl", env=env["env"], cwd=base)
    assert proc.returncode == 0, proc.stderr
    assert "scaled_linear training schedule belong to a prior" in proc.stderr
    reg = Registry.load([Path(env["env"]["LATENTZOO_REGISTRY"])])
    assert reg.get("sl").roles == ["scheduler"] and reg.get("sl").data["config"] == {"spacing": "leading", "steps_offset": 0}
    assert reg.get("sl-ddpm").data["config"]["variance_type"] == "fixed_large"
    proc = run_cli("convert", "--from", "diffusers", str(ddpm["folder"] / "unet"), "--name", "u", env=env["env"], cwd=base)
    assert proc.returncode == 0, proc.stderr
    assert "prediction_type epsilon and training schedule from" in proc.stderr and "latent space: pixels" in proc.stderr
    assert (
        reg.get("tiny-ddpm-unet").data["config"]["training_schedule"]
        == Registry.load([Path(env["env"]["LATENTZOO_REGISTRY"])]).get("u").data["config"]["training_schedule"]
    )
    # a UNet folder without its pipeline's scheduler config: the training schedule is never guessed
    lone = base / "lone-unet"
    ddpm["unet"].save_pretrained(lone / "unet", safe_serialization=True)
    one_line_error(
        run_cli("convert", "--from", "diffusers", str(lone / "unet"), "--name", "lone", env=env["env"], cwd=base), "never guesses"
    )


# ---------------------------------------------------------------------------------------
# exported folders, loaded back by diffusers


def test_exported_ldm_loads_in_diffusers_and_matches(ldm, env):
    base = env["base"]
    out = base / "export-ldm"
    proc = run_cli("export", "tiny-ldm", "--to", "diffusers", "-o", str(out), env=env["env"], cwd=base)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "model_index.json").read_text())["_class_name"] == "LDMPipeline"
    back = diffusers.LDMPipeline.from_pretrained(out)
    assert back.vqvae.config.scaling_factor == SCALE
    assert back.scheduler.config.steps_offset == 1 and back.scheduler.config.set_alpha_to_one is False
    pipe = ldm["pipe"]
    with torch.no_grad():
        x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
        assert max_err("exported unet forward", back.unet(x, 500).sample, pipe.prior(x, torch.tensor(500))) < TOL
        img = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2)) * 2 - 1
        h = back.vqvae.encode(img).latents
        assert max_err("exported vq encode", h, pipe.encoder.encode(img)) < TOL
        assert max_err("exported vq decode", back.vqvae.decode(h).sample, pipe.decoder.decode(h)) < TOL
    for eta in (0.0, 0.5):
        theirs = diffusers_ldm_latents(back.unet, back.scheduler, n=2, seed=11, steps=STEPS, eta=eta)
        assert max_err(f"exported ddim loop (eta {eta})", theirs, pipe.sample_latents(2, seed=11, steps=STEPS, eta=eta)) < TOL
    back.set_progress_bar_config(disable=True)
    images = back(batch_size=2, generator=torch.Generator().manual_seed(3), num_inference_steps=STEPS, output_type="np").images
    ours = (batch_drawn(pipe, 2, seed=3, steps=STEPS) / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1)
    assert max_err("exported LDMPipeline call", ours, images) < TOL


def test_exported_ddpm_and_components_load_in_diffusers(ddpm, ldm, env):
    base = env["base"]
    out = base / "export-ddpm"
    assert run_cli("export", "tiny-ddpm", "--to", "diffusers", "-o", str(out), env=env["env"], cwd=base).returncode == 0
    back = diffusers.DDPMPipeline.from_pretrained(out)
    assert type(back.scheduler).__name__ == "DDPMScheduler" and back.scheduler.config.clip_sample is True
    pipe = ddpm["pipe"]
    theirs = diffusers_ddpm_images(back.unet, back.scheduler, n=2, seed=13, steps=STEPS)
    assert max_err("exported ddpm loop", theirs, pipe.sample_latents(2, seed=13, steps=STEPS)) < TOL
    # single components -> model folders
    unet_dir, vq_dir = base / "export-unet", base / "export-vq"
    assert run_cli("export", "tiny-ddpm-unet", "--to", "diffusers", "-o", str(unet_dir), env=env["env"], cwd=base).returncode == 0
    assert run_cli("export", "tiny-ldm-vqvae", "--to", "diffusers", "-o", str(vq_dir), env=env["env"], cwd=base).returncode == 0
    assert sorted(p.name for p in unet_dir.iterdir()) == [".latentzoo-export.json", "config.json", "diffusion_pytorch_model.safetensors"]
    unet = diffusers.UNet2DModel.from_pretrained(unet_dir)
    vq = diffusers.VQModel.from_pretrained(vq_dir)
    assert vq.config.scaling_factor == SCALE
    with torch.no_grad():
        x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
        assert max_err("exported UNet2DModel (cifar-shaped) forward", unet(x, 10).sample, pipe.prior(x, torch.tensor(10))) < TOL
        img = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
        assert (
            max_err(
                "exported VQModel decode",
                vq.decode(vq.encode(img).latents).sample,
                ldm["pipe"].decoder.decode(ldm["pipe"].encoder.encode(img)),
            )
            < TOL
        )


def test_export_folds_a_latent_shift_into_the_vq_weights(ldm, env):
    """latentzoo priors trained here have a shift (the latent mean); LDMPipeline only scales, so export folds it in."""
    import yaml

    base = env["base"]
    reg = yaml.safe_load(ldm["registry"].read_text())
    comps = reg["components"]
    vq = dict(comps["tiny-ldm-vqvae"])
    vq["weights"] = {**vq["weights"], "path": str(ldm["registry"].parent / vq["weights"]["path"])}
    vq["latent_space"] = {k: v for k, v in vq["latent_space"].items() if k not in ("scaling_factor", "shift")}
    prior = dict(comps["tiny-ldm-unet"])
    prior["weights"] = {**prior["weights"], "path": str(ldm["registry"].parent / prior["weights"]["path"])}
    prior["latent_space"] = {**prior["latent_space"], "shift": 0.3}
    frag = base / "shifted.yaml"
    pipeline = {"encoder": "s-vq", "prior": "s-unet", "decoder": "s-vq", "sampler": "tiny-ldm-ddim", "scheduler": "tiny-ldm-scheduler"}
    frag.write_text(yaml.safe_dump({"components": {"s-vq": vq, "s-unet": prior}, "pipelines": {"shifted": pipeline}}))
    out = base / "export-shifted"
    proc = run_cli("--registry", str(frag), "export", "shifted", "--to", "diffusers", "-o", str(out), env=env["env"], cwd=base)
    assert proc.returncode == 0, proc.stderr
    assert "folded" in proc.stderr
    back = diffusers.LDMPipeline.from_pretrained(out)
    ours = latentzoo.load_pipeline("shifted", extra=[ldm["registry"], frag])
    z = ours.sample_latents(2, seed=1, steps=STEPS)
    theirs = diffusers_ldm_latents(back.unet, back.scheduler, n=2, seed=1, steps=STEPS, eta=0.0)
    assert max_err("shift-folded ldm latents", z, theirs) < TOL
    with torch.no_grad():
        assert max_err("shift-folded ldm images", ours.decode(ours.unscale(z)), back.vqvae.decode(theirs / SCALE).sample.clamp(-1, 1)) < TOL


def test_export_force_never_deletes_what_it_did_not_write(ldm, env):
    """-o ., /, ~ and unrelated non-empty folders are refused (with or without --force); --force replaces only an export."""
    base = env["base"] / "export-safety"
    cwd = base / "work"
    cwd.mkdir(parents=True)
    (cwd / "keep.txt").write_text("mine")
    e = {**env["env"], "HOME": str(base)}

    def export(out: str, *flags: str) -> subprocess.CompletedProcess:
        return run_cli("export", "tiny-ldm-vqvae", "--to", "diffusers", "-o", out, *flags, env=e, cwd=cwd)

    for out, what in ((".", "current directory"), ("/", "root directory"), (str(base), "home directory"), ("../..", "above")):
        for flags in ((), ("--force",)):
            one_line_error(export(out, *flags), what, "new folder")
    assert (cwd / "keep.txt").read_text() == "mine"
    unrelated = cwd / "unrelated"
    unrelated.mkdir()
    (unrelated / "notes.md").write_text("mine")
    one_line_error(export("unrelated", "--force"), "not a latentzoo export")
    one_line_error(export("keep.txt"), "is a file")
    assert (unrelated / "notes.md").read_text() == "mine" and (cwd / "keep.txt").read_text() == "mine"
    # a previous export: refused without --force, replaced with it; a file it did not write blocks the replacement
    assert export("vq").returncode == 0
    manifest = json.loads((cwd / "vq" / ".latentzoo-export.json").read_text())
    assert manifest["files"] == ["config.json", "diffusion_pytorch_model.safetensors"] and manifest["format"] == "diffusers"
    one_line_error(export("vq"), "previous export", "--force")
    (cwd / "vq" / "config.json").write_text("{}")
    assert export("vq", "--force").returncode == 0
    assert json.loads((cwd / "vq" / "config.json").read_text())["_class_name"] == "VQModel"
    (cwd / "vq" / "mine.txt").write_text("mine")
    one_line_error(export("vq", "--force"), "mine.txt", "did not write")
    assert (cwd / "vq" / "mine.txt").read_text() == "mine"
    # a failed export leaves nothing behind
    one_line_error(run_cli("export", "no-such-thing", "--to", "diffusers", "-o", "new", env=e, cwd=cwd), "no-such-thing")
    assert sorted(p.name for p in cwd.iterdir()) == ["keep.txt", "unrelated", "vq"]


def test_unknown_formats_are_one_line_errors_listing_the_known_ones(env):
    base = env["base"]
    line = one_line_error(run_cli("convert", "--from", "onnx", str(base), "--name", "x", env=env["env"], cwd=base), "--from onnx")
    assert "diffusers" in line
    line = one_line_error(run_cli("export", "digits", "--to", "gguf", "-o", str(base / "g"), env=env["env"], cwd=base), "--to gguf")
    assert "diffusers" in line and not (base / "g").exists()
    proc = run_cli("formats", "--json", env=env["env"], cwd=base)
    assert {"name": "diffusers", "plugin": "diffusers", "convert": True, "export": True}.items() <= json.loads(proc.stdout)[0].items()


# ---------------------------------------------------------------------------------------
# the scaling factor is never defaulted; unsupported inputs are refused in one line


def one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and len(lines) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def test_missing_scaling_factor_is_a_one_line_error(ldm, env):
    base = env["base"]
    proc = run_cli(
        "convert", "--from", "diffusers", str(ldm["folder"]), "--name", "no-scale", "-o", str(base / "ns"), env=env["env"], cwd=base
    )
    one_line_error(proc, "states no scaling_factor", "--scaling-factor", "--calibrate")
    assert not (base / "ns").exists()
    vq_only = run_cli("convert", "--from", "diffusers", str(ldm["folder"] / "vqvae"), "--name", "vq-ns", env=env["env"], cwd=base)
    one_line_error(vq_only, "states no scaling_factor")


def test_converting_over_a_taken_name_needs_force(ldm, env):
    base = env["base"]
    args = ("convert", "--from", "diffusers", str(ldm["folder"]), "--name", "tiny-ldm", "--scaling-factor", "0.6")
    one_line_error(run_cli(*args, "-o", str(base / "again"), env=env["env"], cwd=base), "tiny-ldm", "--force")
    assert not (base / "again").exists()
    user = Path(env["env"]["LATENTZOO_REGISTRY"])
    before = Registry.load([user]).get("tiny-ldm-vqvae").data["weights"]["sha256"]
    proc = run_cli(*args, "-o", str(base / "again"), "--force", env=env["env"], cwd=base)
    assert proc.returncode == 0, proc.stderr
    assert Registry.load([user]).get("tiny-ldm-vqvae").data["weights"]["sha256"] == before  # same weights, same sha256


def test_diffusers_default_scaling_factor_is_not_taken_as_measured(env):
    base = env["base"]
    vq, _, _ = ldm_parts()
    folder = base / "vq-default"
    vq.save_pretrained(folder, safe_serialization=True)  # writes diffusers' default scaling_factor 0.18215
    proc = run_cli("convert", "--from", "diffusers", str(folder), "--name", "vq-default", env=env["env"], cwd=base)
    one_line_error(proc, "0.18215", "--calibrate", "--scaling-factor 0.18215")


def test_calibrate_measures_one_over_std_of_the_latents(ldm, env):
    from PIL import Image

    base = env["base"]
    images = base / "calib"
    images.mkdir()
    gen = torch.Generator().manual_seed(0)
    for i in range(6):
        arr = (torch.rand(32, 32, 3, generator=gen) * 255).to(torch.uint8).numpy()
        Image.fromarray(arr, mode="RGB").save(images / f"{i}.png")
    out = base / "calibrated"
    proc = run_cli(
        "convert", "--from", "diffusers", str(ldm["folder"]), "--name", "cal", "-o", str(out), "--calibrate", str(images), "--no-register",
        env=env["env"], cwd=base,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert f"calibrated on {images}" in proc.stderr and "--registry" in proc.stderr
    from latentzoo.core.runtime.data import folder_dataset

    x = folder_dataset(images, size=32, channels=3).images
    with torch.no_grad():
        expected = 1.0 / float(ldm["vq"].encode(x).latents.double().std())
    space = Registry.load([out / "registry.yaml"]).get("cal-unet").latent_space
    assert space.scaling_factor == pytest.approx(expected, rel=1e-5)
    user = Registry.load([Path(env["env"]["LATENTZOO_REGISTRY"])]).entries
    assert "cal" not in user and "cal-unet" not in user  # --no-register left the user registry alone


def test_unsupported_and_pickled_inputs_are_refused(env):
    base = env["base"]
    cond = base / "cond"
    cond.mkdir()
    (cond / "config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel"}))
    one_line_error(run_cli("convert", "--from", "diffusers", str(cond), "--name", "c", env=env["env"], cwd=base), "UNet2DConditionModel")
    pickled = base / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel", "sample_size": 8}))
    (pickled / "diffusion_pytorch_model.bin").write_bytes(b"\x80\x04not-loaded")
    one_line_error(
        run_cli("convert", "--from", "diffusers", str(pickled), "--name", "pk", env=env["env"], cwd=base), "pickle", "safetensors"
    )
    attn = base / "time-shift"
    attn.mkdir()
    (attn / "config.json").write_text(
        json.dumps({"_class_name": "UNet2DModel", "sample_size": 8, "resnet_time_scale_shift": "scale_shift"})
    )
    one_line_error(
        run_cli("convert", "--from", "diffusers", str(attn), "--name", "ts", env=env["env"], cwd=base), "resnet_time_scale_shift"
    )


@torch.no_grad()
def test_autoencoder_kl_converts_and_exports_with_parity(env):
    """The KL-VAE family (plugins/vae): AutoencoderKL <-> vae.autoencoder, shift_factor <-> shift."""
    from latentzoo.core.contract.plugins import get_manager

    if "vae.autoencoder" not in get_manager().components():
        pytest.skip("the KL-VAE family (vae.autoencoder) is not registered in this install")
    base = env["base"]
    torch.manual_seed(2)
    kl = diffusers.AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 3,
        up_block_types=["UpDecoderBlock2D"] * 3,
        block_out_channels=[16, 32, 32],
        layers_per_block=2,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=32,
        scaling_factor=0.4,
        shift_factor=0.1,
    ).eval()
    folder = base / "kl-f4"
    kl.save_pretrained(folder, safe_serialization=True)
    proc = run_cli("convert", "--from", "diffusers", str(folder), "--name", "tiny-kl", env=env["env"], cwd=base)
    assert proc.returncode == 0, proc.stderr
    assert "scaling_factor 0.4 from config.json" in proc.stderr
    user = Path(env["env"]["LATENTZOO_REGISTRY"])
    space = Registry.load([user]).get("tiny-kl").latent_space
    assert (space.scaling_factor, space.shift, space.channels, space.factor) == (0.4, 0.1, 4, 4)
    ours = latentzoo.build("tiny-kl", "encoder", extra=[user])
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    mean = ours.encode(x)
    assert max_err("kl encode (posterior mean)", mean, kl.encode(x).latent_dist.mean) < TOL
    assert max_err("kl decode", ours.decode(mean), kl.decode(mean).sample) < TOL
    out = base / "export-kl"
    assert run_cli("export", "tiny-kl", "--to", "diffusers", "-o", str(out), env=env["env"], cwd=base).returncode == 0
    back = diffusers.AutoencoderKL.from_pretrained(out)
    assert (back.config.scaling_factor, back.config.shift_factor) == (0.4, 0.1)
    assert max_err("exported kl encode", back.encode(x).latent_dist.mean, mean) < TOL
    assert max_err("exported kl decode", back.decode(mean).sample, ours.decode(mean)) < TOL


def test_report_errors():
    """Summary of the max abs errors above (run with -s to see them)."""
    for name, err in sorted(ERRORS.items()):
        print(f"{name:55s} {err:.3g}")
    assert all(err < TOL for err in ERRORS.values())
