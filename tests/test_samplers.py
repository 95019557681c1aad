"""DDPM / DDIM samplers on sigma levels (the prior's own timesteps), with a tiny random UNetPrior and analytic toy priors;
the Denoiser wrapper (prediction types, guidance, null class, thresholding, finiteness) they share."""

from __future__ import annotations

import math

import pytest
import torch
from unets import noise_schedule, tiny_unet

from latentzoo.core.contract.denoising import Denoiser, NoiseSchedule, dynamic_threshold, split_prediction, training_target
from latentzoo.core.contract.errors import LatentzooError
from latentzoo.plugins.diffusion.samplers import DDIMSampler, DDPMSampler
from latentzoo.plugins.diffusion.unet import UNetPrior
from latentzoo.plugins.ksampling.levels import TimestepScheduler

SHAPE = (2, 2, 4, 4)
SCHEDULES = {"linear": "linear", "scaled_linear": "scaled_linear", "cosine": "squaredcos_cap_v2"}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors: one intra-op thread avoids thread contention on a busy machine (restored afterwards)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def unet() -> UNetPrior:
    return tiny_unet()


def make_schedule(name: str = "scaled_linear", zsnr: bool = False) -> NoiseSchedule:
    return noise_schedule(SCHEDULES[name], rescale_betas_zero_snr=zsnr)


def levels(prior, steps: int, spacing: str = "leading") -> list[float]:
    """The prior's own timesteps at ``spacing`` as sigma levels (the leading / trailing / linspace schedulers)."""
    return TimestepScheduler(spacing=spacing).schedule(prior, steps)


def timesteps(prior, steps: int, spacing: str = "leading") -> list[int]:
    return TimestepScheduler(spacing=spacing).timesteps(prior, steps)


def abar(prior, t: int) -> float:
    """alpha_bar at training timestep t; t = -1 is the clean end."""
    return 1.0 if t < 0 else float(prior.noise_schedule.alphas_cumprod[t])


def noise(seed: int = 123, shape: tuple[int, ...] = SHAPE, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class LinearEps:
    """eps = 0.1 x: a smooth, deterministic toy denoiser."""

    prediction_type = "epsilon"
    num_train_timesteps = 1000
    num_classes = None

    def __init__(self, schedule: NoiseSchedule | None = None) -> None:
        self.noise_schedule = schedule or noise_schedule("scaled_linear")

    def __call__(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        return 0.1 * x


class GaussianEps:
    """The exact eps-predictor for data ~ N(0, s^2 I): eps = sqrt(1-a) x / (a s^2 + 1 - a)."""

    prediction_type = "epsilon"
    num_classes = None

    def __init__(self, sched: NoiseSchedule, s: float) -> None:
        self.noise_schedule, self.s = sched, s
        self.ab, self.num_train_timesteps = sched.alphas_cumprod, sched.num_train_timesteps

    def __call__(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        a = float(self.ab[int(t)])
        return math.sqrt(1 - a) * x / (a * self.s**2 + 1 - a)


class Constant:
    """Returns a fixed (large) output, for thresholding."""

    num_train_timesteps = 1000
    num_classes = None

    def __init__(self, value: torch.Tensor, prediction_type: str = "sample", schedule: NoiseSchedule | None = None) -> None:
        self.value, self.prediction_type = value, prediction_type
        self.noise_schedule = schedule or noise_schedule("linear")

    def __call__(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        return self.value.clone()


# --- split_prediction ---------------------------------------------------------------------


@pytest.mark.parametrize("alpha_bar", [0.9999, 0.7, 0.3, 0.01])
def test_split_prediction_recovers_x0_and_eps(alpha_bar: float) -> None:
    g = gen(0)
    x0 = torch.randn(3, 2, 4, 4, generator=g, dtype=torch.float64)
    eps = torch.randn(3, 2, 4, 4, generator=g, dtype=torch.float64)
    sa, sb = math.sqrt(alpha_bar), math.sqrt(1 - alpha_bar)
    x_t = sa * x0 + sb * eps
    targets = {"epsilon": eps, "v_prediction": sa * eps - sb * x0, "sample": x0}
    for prediction_type, target in targets.items():
        got_x0, got_eps = split_prediction(target, x_t, alpha_bar, prediction_type)
        torch.testing.assert_close(got_x0, x0, rtol=1e-9, atol=1e-9, msg=prediction_type)
        torch.testing.assert_close(got_eps, eps, rtol=1e-9, atol=1e-9, msg=prediction_type)
        # and training_target is its inverse: what the trainer asks the model to output
        torch.testing.assert_close(training_target(prediction_type, x0, eps, sa, sb), target, rtol=1e-9, atol=1e-9)
    # the three targets really are different tensors, so the test distinguishes the branches
    assert not torch.allclose(targets["epsilon"], targets["v_prediction"])


def test_split_prediction_unknown_type() -> None:
    with pytest.raises(LatentzooError, match="prediction_type"):
        split_prediction(torch.zeros(1), torch.zeros(1), 0.5, "score")


# --- determinism and noise ------------------------------------------------------------------


def test_ddim_eta0_is_deterministic(unet: UNetPrior) -> None:
    s = "leading"
    a = DDIMSampler(eta=0.0).sample(unet, noise(), levels=levels(unet, 5, s), generator=gen(1))
    b = DDIMSampler(eta=0.0).sample(unet, noise(), levels=levels(unet, 5, s), generator=gen(2))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, noise())  # it actually changed the latents


def test_ddim_eta_positive_uses_the_generator(unet: UNetPrior) -> None:
    s = "leading"
    sampler = DDIMSampler(eta=1.0)
    a = sampler.sample(unet, noise(), levels=levels(unet, 5, s), generator=gen(1))
    b = sampler.sample(unet, noise(), levels=levels(unet, 5, s), generator=gen(1))
    c = sampler.sample(unet, noise(), levels=levels(unet, 5, s), generator=gen(2))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert (a - c).abs().max() > 1e-3
    # the eta argument overrides the sampler's default
    d = DDIMSampler(eta=0.0).sample(unet, noise(), levels=levels(unet, 5, s), generator=gen(2), eta=1.0)
    torch.testing.assert_close(d, c, rtol=0, atol=0)
    e = sampler.sample(unet, noise(), levels=levels(unet, 5, s), generator=gen(2), eta=0.0)
    assert (e - c).abs().max() > 1e-3


def test_ddim_negative_eta_raises(unet: UNetPrior) -> None:
    with pytest.raises(LatentzooError, match="eta"):
        DDIMSampler(eta=-0.5).sample(unet, noise(), levels=levels(unet, 2), generator=gen(0))


def test_ddpm_same_seed_identical_and_variance_types_differ(unet: UNetPrior) -> None:
    s = "leading"
    small = DDPMSampler(variance_type="fixed_small")
    large = DDPMSampler(variance_type="fixed_large")
    a = small.sample(unet, noise(), levels=levels(unet, 5, s), generator=gen(7))
    b = small.sample(unet, noise(), levels=levels(unet, 5, s), generator=gen(7))
    c = large.sample(unet, noise(), levels=levels(unet, 5, s), generator=gen(7))
    d = large.sample(unet, noise(), levels=levels(unet, 5, s), generator=gen(7))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(c, d, rtol=0, atol=0)
    assert (a - c).abs().max() > 1e-3
    e = small.sample(unet, noise(), levels=levels(unet, 5, s), generator=gen(8))
    assert (a - e).abs().max() > 1e-3


def test_ddpm_bad_variance_type() -> None:
    with pytest.raises(LatentzooError, match="variance_type"):
        DDPMSampler(variance_type="learned")


def test_ddpm_one_step_is_x0_prediction() -> None:
    """With one step from t to the clean end, DDPM returns x0 exactly (no noise on the final step)."""
    s = "trailing"
    prior = LinearEps(make_schedule("linear"))
    x = noise(dtype=torch.float64)
    a = abar(prior, 999)
    expected = (x - math.sqrt(1 - a) * 0.1 * x) / math.sqrt(a)
    for variance_type in ("fixed_small", "fixed_large"):
        out = DDPMSampler(variance_type=variance_type).sample(prior, x, levels=levels(prior, 1, s), generator=gen(0))
        torch.testing.assert_close(out, expected)


def test_ddim_step_matches_eq12() -> None:
    """Two DDIM steps (eta = 0) by hand, with the non-uniform trailing pairs."""
    s = "trailing"
    prior = LinearEps(make_schedule("scaled_linear"))
    x = noise(dtype=torch.float64)
    ref = x.clone()
    ts = timesteps(prior, 7, s)
    for t, t_prev in zip(ts, [*ts[1:], -1], strict=True):
        a, a_prev = abar(prior, t), abar(prior, t_prev)
        eps = 0.1 * ref
        x0 = (ref - math.sqrt(1 - a) * eps) / math.sqrt(a)
        ref = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev) * eps
    out = DDIMSampler().sample(prior, x, levels=levels(prior, 7, s), generator=gen(0))
    torch.testing.assert_close(out, ref)


# --- any sampler on any scheduler ---------------------------------------------------------------


@pytest.mark.parametrize("schedule", list(SCHEDULES))
@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize(
    "sampler",
    [DDIMSampler(eta=0.0), DDIMSampler(eta=1.0), DDPMSampler(variance_type="fixed_small"), DDPMSampler(variance_type="fixed_large")],
    ids=["ddim0", "ddim1", "ddpm-small", "ddpm-large"],
)
def test_any_sampler_any_scheduler(schedule: str, spacing: str, sampler) -> None:
    unet = tiny_unet(schedule=SCHEDULES[schedule])
    out = sampler.sample(unet, noise(), levels=levels(unet, 4, spacing), generator=gen(0))
    assert out.shape == SHAPE
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


@pytest.mark.parametrize(
    "sampler",
    [DDIMSampler(eta=0.0), DDIMSampler(eta=1.0), DDPMSampler(variance_type="fixed_small"), DDPMSampler(variance_type="fixed_large")],
    ids=["ddim0", "ddim1", "ddpm-small", "ddpm-large"],
)
@pytest.mark.parametrize("schedule", list(SCHEDULES))
def test_zero_terminal_snr_all_training_timesteps(sampler, schedule: str) -> None:
    """Every training timestep (including 999 -> 998) on a zero-terminal-SNR schedule, v-prediction."""
    prior = LinearEps(make_schedule(schedule, zsnr=True))
    prior.prediction_type = "v_prediction"
    s = "trailing"
    out = sampler.sample(prior, noise(shape=(1, 1, 2, 2)), levels=levels(prior, 1000, s), generator=gen(0))
    assert torch.isfinite(out).all()


# --- DDIM inversion ---------------------------------------------------------------------------


@pytest.mark.parametrize("schedule", list(SCHEDULES))
def test_ddim_inversion_reconstructs(schedule: str) -> None:
    s = "leading"
    std = 0.5
    prior = GaussianEps(make_schedule(schedule), std)
    x0 = std * noise(seed=5, shape=(4, 2, 4, 4), dtype=torch.float64)
    sampler = DDIMSampler(eta=0.0)
    z = sampler.invert(prior, x0, levels=levels(prior, 50, s))
    # inversion really maps to noise: the probability-flow ODE of N(0, s^2) scales x by sigma_T / s
    a_T = abar(prior, timesteps(prior, 50, s)[0])
    scale = math.sqrt(a_T * std**2 + 1 - a_T) / std
    assert (z.std() / x0.std()).item() == pytest.approx(scale, rel=0.05)
    rec = sampler.sample(prior, z, levels=levels(prior, 50, s), generator=gen(0))
    err50 = ((rec - x0).abs().max() / x0.abs().max()).item()
    assert err50 < 0.08
    # first-order scheme: more steps, smaller error
    z200 = sampler.invert(prior, x0, levels=levels(prior, 200, s))
    err200 = ((sampler.sample(prior, z200, levels=levels(prior, 200, s), generator=gen(0)) - x0).abs().max() / x0.abs().max()).item()
    assert err200 < err50 / 2
    # and sampling from some other noise does not give x0 back
    other = sampler.sample(
        prior, scale * std * noise(seed=6, shape=(4, 2, 4, 4), dtype=torch.float64), levels=levels(prior, 50, s), generator=gen(0)
    )
    assert ((other - x0).abs().max() / x0.abs().max()).item() > 0.5


def test_ddim_inversion_linear_toy_prior() -> None:
    s = "leading"
    prior = LinearEps()
    x0 = noise(seed=9, dtype=torch.float64)
    sampler = DDIMSampler(eta=0.0)
    z = sampler.invert(prior, x0, levels=levels(prior, 50, s))
    assert (z - x0).abs().max() > 0.5  # it moved
    rec = sampler.sample(prior, z, levels=levels(prior, 50, s), generator=gen(0))
    assert ((rec - x0).abs().max() / x0.abs().max()).item() < 0.05


# --- contract checks inside the samplers ---------------------------------------------------------


@pytest.mark.parametrize("sampler", [DDIMSampler(), DDPMSampler()], ids=["ddim", "ddpm"])
def test_levels_are_checked_in_one_line(unet: UNetPrior, sampler) -> None:
    """The samplers take any scheduler's levels, and refuse levels that are not sigmas then 0."""
    for bad in (
        None,
        [],
        [5.0],
        [1.0, 2.0, 0.0],
        [3.0, 3.0, 0.0],
        [float("nan"), 0.0],
        [float("inf"), 1.0, 0.0],
        [2.0, -1.0, 0.0],
        [2.0, 1.0],
    ):
        with pytest.raises(LatentzooError) as info:
            sampler.sample(unet, noise(), levels=bad, generator=gen(0))
        assert sampler.name in str(info.value) and "\n" not in str(info.value)
    # a hand-made sigma list (no scheduler object at all) is fine
    assert torch.isfinite(sampler.sample(unet, noise(), levels=[14.6, 3.0, 0.5, 0.0], generator=gen(0))).all()


def test_prior_without_noise_schedule_is_refused(unet: UNetPrior) -> None:
    class Bare:
        prediction_type, num_classes = "epsilon", None

        def __call__(self, x, t, labels):
            return x

    with pytest.raises(LatentzooError, match="Bare has no noise_schedule"):
        DDIMSampler().sample(Bare(), noise(), levels=[1.0, 0.0], generator=gen(0))


@pytest.mark.parametrize("sampler", [DDIMSampler(), DDPMSampler()], ids=["ddim", "ddpm"])
def test_non_finite_model_output_names_prior_and_level(sampler) -> None:
    prior = Constant(torch.full(SHAPE, float("nan")), "epsilon")
    with pytest.raises(LatentzooError) as info:
        sampler.sample(prior, noise(), levels=levels(prior, 3), generator=gen(0))
    msg = str(info.value)
    assert "Constant" in msg and "non-finite" in msg and "sigma" in msg and "\n" not in msg


# --- classifier-free guidance ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def class_unet() -> UNetPrior:
    return tiny_unet(seed=3, num_class_embeds=11)


def test_guidance_one_is_plain_conditional_call(class_unet: UNetPrior) -> None:
    x, t, labels = noise(), torch.tensor(500), torch.tensor([2, 7])
    sigma = class_unet.noise_schedule.sigmas[500]
    with torch.no_grad():
        cond = class_unet(x, t, labels)
        uncond = class_unet(x, t, torch.full_like(labels, 10))
    _, eps1 = Denoiser(class_unet, class_labels=labels, guidance=1.0).predict(x, sigma)
    torch.testing.assert_close(eps1, cond)
    _, eps3 = Denoiser(class_unet, class_labels=labels, guidance=3.0).predict(x, sigma)
    torch.testing.assert_close(eps3, uncond + 3.0 * (cond - uncond), rtol=1e-4, atol=1e-5)
    assert (eps3 - eps1).abs().max() > 1e-3
    assert (cond - uncond).abs().max() > 1e-3  # labels matter, so guidance can matter


def test_guidance_in_sampling(class_unet: UNetPrior) -> None:
    s = "leading"
    labels = torch.tensor([2, 7])
    sampler = DDIMSampler()
    g1 = sampler.sample(class_unet, noise(), levels=levels(class_unet, 4, s), generator=gen(0), class_labels=labels, guidance=1.0)
    g3 = sampler.sample(class_unet, noise(), levels=levels(class_unet, 4, s), generator=gen(0), class_labels=labels, guidance=3.0)
    assert (g1 - g3).abs().max() > 1e-3
    # guidance = 1 is exactly the conditional DDIM chain, computed by hand
    x = noise()
    ts = timesteps(class_unet, 4)
    with torch.no_grad():
        for t, t_prev in zip(ts, [*ts[1:], -1], strict=True):
            a, a_prev = abar(class_unet, t), abar(class_unet, t_prev)
            eps = class_unet(x, torch.tensor(t), labels)
            x0 = (x - math.sqrt(1 - a) * eps) / math.sqrt(a)
            x = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev) * eps
    torch.testing.assert_close(g1, x, rtol=1e-4, atol=1e-5)
    # without labels a class-conditional prior samples the null class (num_classes - 1)
    null = sampler.sample(class_unet, noise(), levels=levels(class_unet, 4, s), generator=gen(0))
    explicit = sampler.sample(class_unet, noise(), levels=levels(class_unet, 4, s), generator=gen(0), class_labels=torch.tensor([10, 10]))
    torch.testing.assert_close(null, explicit, rtol=0, atol=0)
    # and a conditional Denoiser needs to know the batch to make the null labels; an unconditional prior refuses labels
    with pytest.raises(LatentzooError, match="class-conditional"):
        Denoiser(class_unet)
    with pytest.raises(LatentzooError, match="unconditional"):
        Denoiser(tiny_unet(), class_labels=labels)
    with pytest.raises(LatentzooError, match="guidance"):
        Denoiser(class_unet, class_labels=labels, guidance=-1.0)


# --- thresholding / clipping ---------------------------------------------------------------------


def test_dynamic_threshold_bounds_and_scaling() -> None:
    x0 = torch.stack([torch.linspace(-4, 4, 33), torch.linspace(-0.5, 0.5, 33)]).view(2, 1, 3, 11)
    out = dynamic_threshold(x0, 0.5, 10.0)
    assert out.abs().max() <= 1.0
    # first sample: s = median |x| = 2, so x is clamped to [-2, 2] and divided by 2
    torch.testing.assert_close(out[0], x0[0].clamp(-2, 2) / 2)
    # second sample: s is floored at 1, values already inside are untouched
    torch.testing.assert_close(out[1], x0[1])
    # max_value caps s
    capped = dynamic_threshold(x0 * 10, 0.5, 3.0)
    torch.testing.assert_close(capped[0], (x0[0] * 10).clamp(-3, 3) / 3)


@pytest.mark.parametrize("prediction_type", ["sample", "epsilon", "v_prediction"])
def test_thresholding_keeps_x0_in_unit_range(prediction_type: str) -> None:
    big = 25.0 * noise(seed=4)
    prior = Constant(big, prediction_type)
    x, sigma = noise(), math.sqrt(0.6 / 0.4)  # abar = 0.4
    x0_plain, _ = Denoiser(prior).predict(x, sigma)
    x0_thr, _ = Denoiser(prior, thresholding=True, dynamic_thresholding_ratio=0.9, sample_max_value=8.0).predict(x, sigma)
    assert x0_plain.abs().max() > 1.0
    assert x0_thr.abs().max() <= 1.0 + 1e-6
    x0_clip, _ = Denoiser(prior, clip_sample=True, clip_sample_range=0.5).predict(x, sigma)
    assert x0_clip.abs().max() <= 0.5
    torch.testing.assert_close(x0_clip, x0_plain.clamp(-0.5, 0.5))


def test_thresholding_in_sampling_bounds_the_result() -> None:
    """One DDIM step to the clean end returns x0 itself, so the output must lie in [-1, 1]."""
    prior = Constant(25.0 * noise(seed=4))
    s = "trailing"
    out = DDIMSampler(thresholding=True).sample(prior, noise(), levels=levels(prior, 1, s), generator=gen(0))
    assert out.abs().max() <= 1.0 + 1e-6
    plain = DDIMSampler().sample(prior, noise(), levels=levels(prior, 1, s), generator=gen(0))
    assert plain.abs().max() > 1.0
    # an option passed at sample time overrides the sampler's default
    torch.testing.assert_close(DDIMSampler().sample(prior, noise(), levels=levels(prior, 1, s), generator=gen(0), thresholding=True), out)


# --- inference mode ---------------------------------------------------------------------------------


def test_sampling_runs_under_inference_mode(unet: UNetPrior) -> None:
    assert any(p.requires_grad for p in unet.parameters())
    x = noise().requires_grad_(True)
    out = DDIMSampler().sample(unet, x, levels=levels(unet, 2), generator=gen(0))
    assert out.requires_grad is False
    assert out.is_inference()
    out = DDPMSampler().sample(unet, x, levels=levels(unet, 2), generator=gen(0))
    assert out.requires_grad is False
    inv = DDIMSampler().invert(unet, x, levels=levels(unet, 2))
    assert inv.requires_grad is False
    assert x.grad is None


# --- parity with diffusers (test-only dependency) ---------------------------------------------------


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_matches_diffusers_leading(prediction_type: str, eta: float) -> None:
    diffusers = pytest.importorskip("diffusers")
    prior = tiny_unet(seed=1, prediction_type=prediction_type)
    ours = "leading"
    theirs = diffusers.DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        timestep_spacing="leading",
        prediction_type=prediction_type,
        clip_sample=False,
        set_alpha_to_one=True,
    )
    theirs.set_timesteps(6)
    x = noise()
    g = gen(11)
    with torch.no_grad():
        for t in theirs.timesteps:
            x = theirs.step(prior(x, t), t, x, eta=eta, generator=g).prev_sample
    out = DDIMSampler(eta=eta).sample(prior, noise(), levels=levels(prior, 6, ours), generator=gen(11))
    torch.testing.assert_close(out, x, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large"])
def test_ddpm_matches_diffusers_leading(variance_type: str) -> None:
    diffusers = pytest.importorskip("diffusers")
    prior = tiny_unet(seed=2, schedule="linear")
    theirs = diffusers.DDPMScheduler(
        num_train_timesteps=1000,
        beta_start=0.0001,
        beta_end=0.02,
        beta_schedule="linear",
        timestep_spacing="leading",
        variance_type=variance_type,
        clip_sample=False,
    )
    theirs.set_timesteps(5)
    x = noise()
    g = gen(13)
    with torch.no_grad():
        for t in theirs.timesteps:
            x = theirs.step(prior(x, t), t, x, generator=g).prev_sample
    out = DDPMSampler(variance_type=variance_type).sample(prior, noise(), levels=levels(prior, 5), generator=gen(13))
    torch.testing.assert_close(out, x, rtol=1e-4, atol=1e-4)
