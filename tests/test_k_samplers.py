"""Euler / Heun / DPM-Solver++(2M) over sigma levels: exactness on a Gaussian toy, DDIM equivalence, schedulers, diffusers parity."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from unets import noise_schedule, tiny_unet

from latentzoo.core.contract.denoising import Denoiser, NoiseSchedule, make_betas
from latentzoo.core.contract.errors import LatentzooError
from latentzoo.core.contract.interfaces import Scheduler
from latentzoo.plugins.diffusion.samplers import DDIMSampler, DDPMSampler
from latentzoo.plugins.diffusion.unet import UNetPrior
from latentzoo.plugins.ksampling.levels import (
    RAMP_SIGMA_MAX,
    ExponentialScheduler,
    KarrasScheduler,
    SigmoidScheduler,
    TimestepScheduler,
    karras_sigmas,
    sigmoid_sigmas,
)
from latentzoo.plugins.ksampling.ode import sample_dpmpp_2m, sample_euler, sample_heun
from latentzoo.plugins.ksampling.samplers import DPMSolverPP2MSampler, EulerSampler, HeunSampler

SHAPE = (2, 2, 4, 4)
SCHEDULES = {"linear": "linear", "scaled_linear": "scaled_linear", "cosine": "squaredcos_cap_v2", "sigmoid": "sigmoid"}
SAMPLERS = {"euler": EulerSampler, "heun": HeunSampler, "dpmpp-2m": DPMSolverPP2MSampler}
SCHEDULERS = {
    "leading": lambda: TimestepScheduler(spacing="leading"),
    "trailing": lambda: TimestepScheduler(spacing="trailing"),
    "linspace": lambda: TimestepScheduler(spacing="linspace"),
    "karras": KarrasScheduler,
    "sigmoid": SigmoidScheduler,
    "exponential": ExponentialScheduler,
}
KINDS = ("trailing", "karras", "sigmoid", "exponential")


def make_schedule(name: str = "scaled_linear", zsnr: bool = False) -> NoiseSchedule:
    return noise_schedule(SCHEDULES[name], rescale_betas_zero_snr=zsnr)


def levels(prior, steps: int, kind: str = "leading") -> list[float]:
    """The levels the registry's scheduler ``kind`` picks for ``prior``."""
    return SCHEDULERS[kind]().schedule(prior, steps)


def noise(seed: int = 123, shape: tuple[int, ...] = SHAPE, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def unet() -> UNetPrior:
    return tiny_unet()


class GaussianPrior:
    """The exact denoiser prior of data ~ N(mu, s^2) per element, at any fractional timestep.

    D(x; sigma) = mu + s^2 / (s^2 + sigma^2) (x - mu) in the VE form x = x0 + sigma eps; the prior
    sees x_vp = x / sqrt(1 + sigma^2) and returns epsilon, v or x0 as trained.
    """

    num_classes = None

    def __init__(self, sched: NoiseSchedule, mu: float, s: float, prediction_type: str = "epsilon") -> None:
        self.noise_schedule, self.mu, self.s, self.prediction_type = sched, mu, s, prediction_type
        self.num_train_timesteps = sched.num_train_timesteps

    def __call__(self, x_vp: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        sigma = self.noise_schedule.sigma(float(t))
        a = 1 / (1 + sigma**2)
        x = x_vp / math.sqrt(a)
        x0 = self.mu + self.s**2 / (self.s**2 + sigma**2) * (x - self.mu)
        eps = (x - x0) / sigma
        return {"epsilon": eps, "sample": x0, "v_prediction": math.sqrt(a) * eps - math.sqrt(1 - a) * x0}[self.prediction_type]

    def exact(self, x_T: torch.Tensor, sigma_0: float, sigma_last: float) -> torch.Tensor:
        """The probability-flow ODE from sigma_0 to sigma_last, x - mu ~ sqrt(s^2 + sigma^2), then D(x; sigma_last).

        Every sampler's last step (sigma_last -> 0) returns D itself, so this is what they all approximate.
        """
        return self.mu + self.s**2 / math.sqrt((self.s**2 + sigma_last**2) * (self.s**2 + sigma_0**2)) * (x_T - self.mu)


def toy_run(sampler, prior: GaussianPrior, kind: str, steps: int, z: torch.Tensor, **kw) -> tuple[torch.Tensor, torch.Tensor]:
    """(sampled, exact ODE solution) from the same noise."""
    sigmas = levels(prior, steps, kind)
    out = sampler.sample(prior, z, levels=sigmas, generator=gen(0), **kw)
    return out, prior.exact(z * math.sqrt(sigmas[0] ** 2 + 1), sigmas[0], sigmas[-2])


# --- sigma sequences ----------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 10, 50])
def test_karras_sigmas_follow_eq5(n: int) -> None:
    sigma_min, sigma_max, rho = 0.0292, 14.6, 7.0
    got = karras_sigmas(n, sigma_min, sigma_max, rho)
    assert len(got) == n + 1 and got[-1] == 0.0
    assert got[0] == pytest.approx(sigma_max, rel=1e-12)
    if n > 1:
        i = np.arange(n)
        eq5 = (sigma_max ** (1 / rho) + i / (n - 1) * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
        np.testing.assert_allclose(got[:-1], eq5, rtol=1e-12)
        assert got[-2] == pytest.approx(sigma_min, rel=1e-12)
    assert all(b < a for a, b in itertools.pairwise(got))
    # rho = 7 concentrates the levels near sigma_min: the steps sigma_i - sigma_{i+1} shrink towards the clean end
    if n >= 10:
        gaps = [a - b for a, b in itertools.pairwise(got[:-1])]
        assert all(b < a for a, b in itertools.pairwise(gaps))


def test_sigmoid_sigmas_are_an_s_curve() -> None:
    got = sigmoid_sigmas(20, 0.03, 14.6)
    assert len(got) == 21 and got[-1] == 0.0
    assert got[0] == pytest.approx(14.6) and got[-2] == pytest.approx(0.03)
    logs = np.log(got[:-1])
    steps = -np.diff(logs)
    assert np.all(steps > 0)
    # an S-curve: small steps in log sigma at both ends, the largest in the middle
    assert steps.argmax() in (9, 10) and steps[0] < steps[9] / 3 and steps[-1] < steps[9] / 3


@pytest.mark.parametrize("name", list(SCHEDULES))
@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
def test_timestep_levels_are_the_schedules_sigmas(name: str, spacing: str) -> None:
    prior = GaussianPrior(make_schedule(name), 0.0, 1.0)
    ab = prior.noise_schedule.alphas_cumprod.double()
    ts = TimestepScheduler(spacing=spacing).timesteps(prior, 8)
    expected = [float(((1 - ab[t]) / ab[t]).sqrt()) for t in ts] + [0.0]
    np.testing.assert_allclose(levels(prior, 8, spacing), expected, rtol=1e-12)


@pytest.mark.parametrize("kind", ["karras", "sigmoid", "exponential"])
def test_ramps_span_the_schedule_and_handle_zero_terminal_snr(kind: str) -> None:
    plain_prior = GaussianPrior(make_schedule("scaled_linear"), 0.0, 1.0)
    plain, grid = levels(plain_prior, 10, kind), plain_prior.noise_schedule
    assert len(plain) == 11 and plain[-1] == 0.0
    assert plain[0] == pytest.approx(grid.sigma_max) and plain[-2] == pytest.approx(grid.sigma_min)
    assert grid.sigma_max < RAMP_SIGMA_MAX  # 14.6: the plain ramp, no extra first step
    z = GaussianPrior(make_schedule("scaled_linear", zsnr=True), 0.0, 1.0)
    seq = levels(z, 10, kind)
    assert z.noise_schedule.sigma_max > 1000  # abar_{T-1} ~ 0
    # start at the true terminal level (an x0-prediction step), then the ramp from 80
    assert len(seq) == 11 and seq[0] == pytest.approx(z.noise_schedule.sigma_max) and seq[1] == pytest.approx(RAMP_SIGMA_MAX)
    assert all(b < a for a, b in itertools.pairwise(seq)) and seq[-1] == 0.0
    assert levels(z, 1, kind) == pytest.approx([z.noise_schedule.sigma_max, 0.0])


# --- fractional timesteps -----------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SCHEDULES))
@pytest.mark.parametrize("zsnr", [False, True])
def test_timestep_interpolation_exact_on_grid(name: str, zsnr: bool) -> None:
    grid = make_schedule(name, zsnr)
    ab = grid.alphas_cumprod
    for t in range(grid.num_train_timesteps):
        sigma = math.sqrt((1 - float(ab[t])) / float(ab[t]))
        assert grid.timestep(sigma) == float(t)
    # between grid points: linear in log sigma, inverse of grid.sigma, monotone, clamped outside
    for t in (0.25, 17.5, 500.125, 998.75):
        assert grid.timestep(grid.sigma(t)) == pytest.approx(t, abs=1e-9)
    lo, hi = grid.sigma(10.0), grid.sigma(11.0)
    assert grid.timestep(math.sqrt(lo * hi)) == pytest.approx(10.5, abs=1e-9)
    assert grid.timestep(grid.sigma_min / 2) == 0.0 and grid.timestep(grid.sigma_max * 2) == 999.0


def test_unet_accepts_fractional_timesteps(unet: UNetPrior) -> None:
    x = noise()
    with torch.inference_mode():
        a = unet(x, torch.tensor(500))
        b = unet(x, torch.tensor(500.0, dtype=torch.float64))
        c = unet(x, torch.tensor(500.5, dtype=torch.float64))
        d = unet(x, torch.tensor(501))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert (c - a).abs().max() > 0 and (c - d).abs().max() > 0


def test_infinite_terminal_sigma_is_replaced() -> None:
    ab = make_schedule("scaled_linear").alphas_cumprod.clone()
    ab[-1] = 0.0
    grid = NoiseSchedule(ab)
    assert math.isfinite(grid.sigma_max) and grid.sigma_max == pytest.approx(2 * grid.sigma(998.0))
    prior = GaussianPrior(grid, 0.0, 0.5, "v_prediction")
    for cls in SAMPLERS.values():
        out = cls().sample(prior, noise(dtype=torch.float64), levels=levels(prior, 5, "trailing"), generator=gen(0))
        assert torch.isfinite(out).all()


# --- the Gaussian toy: the exact answer is known ----------------------------------------------------


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_ode_samplers_map_noise_to_the_data_distribution(prediction_type: str) -> None:
    """Zero-terminal-SNR schedule (sigma_0 ~ 4e3), 25 Karras steps: noise -> N(mu, s^2), each sample close to the exact ODE map."""
    mu, s = 0.7, 0.5
    prior = GaussianPrior(make_schedule("scaled_linear", zsnr=True), mu, s, prediction_type)
    z = noise(seed=1, shape=(4000, 1, 2, 2), dtype=torch.float64)
    errors, stds = {}, {}
    for name, cls in SAMPLERS.items():
        out, exact = toy_run(cls(), prior, "karras", 25, z)
        assert out.mean().item() == pytest.approx(mu, abs=0.01), name  # no mean shift: the terminal SNR really is ~0
        stds[name], errors[name] = out.std().item(), (out - exact).abs().max().item()
    # measured: std 0.448 (Euler), 0.509 (Heun), 0.509 (DPM++); max map error 0.23, 0.052, 0.049
    assert stds["euler"] == pytest.approx(s, rel=0.15)
    assert stds["heun"] == pytest.approx(s, rel=0.03) and stds["dpmpp-2m"] == pytest.approx(s, rel=0.03)
    assert errors["heun"] < errors["euler"] / 3 and errors["dpmpp-2m"] < errors["euler"] / 3


def max_error(name: str, steps: int, kind: str = "karras") -> float:
    prior = GaussianPrior(make_schedule("scaled_linear"), 0.7, 0.5)
    out, exact = toy_run(SAMPLERS[name](), prior, kind, steps, noise(seed=2, shape=(256, 1, 2, 2), dtype=torch.float64))
    return (out - exact).abs().max().item()


@pytest.mark.parametrize("kind", ["trailing", "karras"])
def test_second_order_beats_euler_at_equal_model_evaluations(kind: str) -> None:
    euler = max_error("euler", 39, kind)  # 39 evaluations
    heun = max_error("heun", 20, kind)  # 2 * 20 - 1 = 39 evaluations
    dpm = max_error("dpmpp-2m", 39, kind)
    # measured (timesteps, karras): Euler 0.054, 0.073; Heun 0.0098, 0.025; DPM++ 0.0070, 0.0060
    assert heun < euler / 2 and dpm < euler / 4, (euler, heun, dpm)


def test_orders_of_convergence() -> None:
    """Doubling the steps halves Euler's error (1st order) and quarters Heun's and DPM-Solver++(2M)'s (2nd order)."""
    for name, order in (("euler", 1), ("heun", 2), ("dpmpp-2m", 2)):
        ratio = max_error(name, 20) / max_error(name, 40)  # measured: 2.01, 4.36, 4.38
        assert 2**order * 0.8 < ratio < 2**order * 1.3, (name, ratio)


def test_dpmpp_2m_one_step_is_x0_prediction() -> None:
    prior = GaussianPrior(make_schedule("scaled_linear"), 0.7, 0.5)
    z = noise(dtype=torch.float64)
    sigma = prior.noise_schedule.sigma_max
    x = z * math.sqrt(sigma**2 + 1)
    expected = 0.7 + 0.25 / (0.25 + sigma**2) * (x - 0.7)
    for cls in SAMPLERS.values():
        torch.testing.assert_close(cls().sample(prior, z, levels=levels(prior, 1, "trailing"), generator=gen(0)), expected)


def test_solvers_by_hand_on_a_linear_denoiser() -> None:
    """The three update rules, written out for D(x; sigma) = x / (1 + sigma^2) on sigmas [2, 1, 0.5, 0]."""
    sigmas = [2.0, 1.0, 0.5, 0.0]

    def model(x: torch.Tensor, sigma: float) -> torch.Tensor:
        return x / (1 + sigma**2)

    x0 = torch.tensor([1.0, -2.0], dtype=torch.float64)
    # Euler: x <- x + (sigma' - sigma) (x - D) / sigma
    e = x0.clone()
    for s, s1 in itertools.pairwise(sigmas):
        e = e + (s1 - s) * (e - model(e, s)) / s
    torch.testing.assert_close(sample_euler(model, x0, sigmas), e)
    # Heun: trapezoid except into 0
    h = x0.clone()
    for s, s1 in itertools.pairwise(sigmas):
        d = (h - model(h, s)) / s
        p = h + (s1 - s) * d
        h = p if s1 == 0 else h + (s1 - s) * (d + (p - model(p, s1)) / s1) / 2
    torch.testing.assert_close(sample_heun(model, x0, sigmas), h)
    # DPM-Solver++(2M): first order, then the 2nd-order multistep correction, then x = D into 0
    d0 = model(x0, 2.0)
    x1 = 0.5 * x0 + (1 - 0.5) * d0  # h = log 2, e^{-h} = 1/2
    d1 = model(x1, 1.0)
    r = 1.0  # h_last = h = log 2
    x2 = 0.5 * x1 + 0.5 * ((1 + 1 / (2 * r)) * d1 - 1 / (2 * r) * d0)
    torch.testing.assert_close(sample_dpmpp_2m(model, x0, sigmas), model(x2, 0.5))


# --- DDIM equivalence (Euler on the scheduler's own timesteps is DDIM at eta = 0) ----------------------


@pytest.mark.parametrize("name", ["linear", "scaled_linear", "cosine"])
@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
def test_euler_on_timesteps_is_ddim(name: str, spacing: str) -> None:
    unet = tiny_unet(schedule=SCHEDULES[name])
    sigmas = levels(unet, 6, spacing)
    a = EulerSampler().sample(unet, noise(), levels=sigmas, generator=gen(0))
    b = DDIMSampler(eta=0.0).sample(unet, noise(), levels=sigmas, generator=gen(0))
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert (a - noise()).abs().max() > 0.1


def test_euler_is_ddim_on_zero_terminal_snr_v_prediction() -> None:
    prior = tiny_unet(seed=4, prediction_type="v_prediction", zsnr=True)
    sigmas = levels(prior, 8, "trailing")
    a = EulerSampler().sample(prior, noise(), levels=sigmas, generator=gen(0))
    b = DDIMSampler().sample(prior, noise(), levels=sigmas, generator=gen(0))
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


# --- any sampler on any scheduler ---------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SAMPLERS))
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("schedule", list(SCHEDULES))
@pytest.mark.parametrize("zsnr", [False, True], ids=["plain", "zsnr"])
def test_any_sampler_any_schedule(name: str, kind: str, schedule: str, zsnr: bool) -> None:
    prior = tiny_unet(prediction_type="v_prediction" if zsnr else "epsilon", schedule=SCHEDULES[schedule], zsnr=zsnr)
    out = SAMPLERS[name]().sample(prior, noise(), levels=levels(prior, 4, kind), generator=gen(0))
    assert out.shape == SHAPE and out.dtype == torch.float32
    assert torch.isfinite(out).all()


class HandMade(Scheduler):
    """A third-party scheduler: plain levels, no knowledge of the samplers."""

    levels = "sigma"

    def schedule(self, prior, steps: int, **options) -> list[float]:
        return [14.0, 6.0, 2.5, 1.0, 0.3, 0.0][-(steps + 1) :]


def test_a_third_party_scheduler_drives_the_built_in_samplers() -> None:
    """A scheduler defined here drives ddim, euler and dpmpp-2m on the shipped digits-ldm prior through Sampler.sample."""
    import latentzoo

    prior = latentzoo.build("digits-ldm", "prior")
    sigmas = HandMade().schedule(prior, 5)
    z = torch.randn((2, *prior.latent_shape), generator=gen(0))
    outs = {}
    for name in ("ddim", "euler", "dpmpp-2m"):
        sampler = latentzoo.build(name, "sampler")
        calls: list[tuple[int, int]] = []
        outs[name] = sampler.sample(prior, z, levels=sigmas, generator=gen(0), progress=lambda i, n, c=calls: c.append((i, n)))
        assert calls[-1] == (5, 5) and torch.isfinite(outs[name]).all()
    # deterministic ODE samplers on the same levels land near each other (DDIM is Euler in the VP form) and far from the noise
    ddim_ve = outs["ddim"]  # at sigma 0 the VP and VE forms coincide
    assert (ddim_ve - outs["euler"]).abs().max() < 1e-3
    assert (outs["dpmpp-2m"] - z).abs().mean() > 0.3
    # and the levels really were used: other levels give other latents
    other = latentzoo.build("euler", "sampler").sample(prior, z, levels=[14.0, 1.0, 0.0], generator=gen(0))
    assert (other - outs["euler"]).abs().max() > 1e-2


# --- determinism, options, guidance -------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_deterministic_and_noise_dependent(unet: UNetPrior, name: str) -> None:
    sampler, s = SAMPLERS[name](), levels(unet, 5, "karras")
    a = sampler.sample(unet, noise(), levels=s, generator=gen(1))
    b = sampler.sample(unet, noise(), levels=s, generator=gen(2))  # an ODE: the generator is unused
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    c = sampler.sample(unet, noise(seed=9), levels=s, generator=gen(1))
    assert (a - c).abs().max() > 1e-3


def test_model_evaluations_and_progress(unet: UNetPrior) -> None:
    calls: list[float] = []

    def counting(x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        calls.append(float(t))
        return unet(x, t, labels)

    counting.prediction_type, counting.num_train_timesteps, counting.num_classes = "epsilon", 1000, None
    counting.noise_schedule = unet.noise_schedule
    for name, evals in (("euler", 7), ("heun", 13), ("dpmpp-2m", 7)):
        calls.clear()
        seen: list[tuple[int, int]] = []

        def progress(i: int, n: int, seen: list[tuple[int, int]] = seen) -> None:
            seen.append((i, n))

        SAMPLERS[name]().sample(counting, noise(), levels=levels(unet, 7), generator=gen(0), progress=progress)
        assert len(calls) == evals, name
        assert seen == [(i, 7) for i in range(1, 8)]
    calls.clear()
    EulerSampler().sample(counting, noise(), levels=levels(unet, 4, "trailing"), generator=gen(0))
    assert calls == [999.0, 749.0, 499.0, 249.0]


@pytest.fixture(scope="module")
def class_unet() -> UNetPrior:
    return tiny_unet(seed=3, num_class_embeds=11)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_classifier_free_guidance(class_unet: UNetPrior, name: str) -> None:
    s, labels = levels(class_unet, 4), torch.tensor([2, 7])
    sampler = SAMPLERS[name]()
    g1 = sampler.sample(class_unet, noise(), levels=s, generator=gen(0), class_labels=labels, guidance=1.0)
    g3 = sampler.sample(class_unet, noise(), levels=s, generator=gen(0), class_labels=labels, guidance=3.0)
    assert (g1 - g3).abs().max() > 1e-3
    # without labels: the null class (num_classes - 1)
    null = sampler.sample(class_unet, noise(), levels=s, generator=gen(0))
    explicit = sampler.sample(class_unet, noise(), levels=s, generator=gen(0), class_labels=torch.tensor([10, 10]))
    torch.testing.assert_close(null, explicit, rtol=0, atol=0)
    # the denoiser applies eps_uncond + g (eps_cond - eps_uncond) (Ho & Salimans 2022, eq. 6), then splits x0
    grid, sigma = class_unet.noise_schedule, 3.0
    x = noise() * math.sqrt(sigma**2 + 1)
    t = grid.timestep(sigma)
    with torch.inference_mode():
        D = Denoiser(class_unet, class_labels=labels, guidance=3.0)(x, sigma)
        xv, tt = x / math.sqrt(sigma**2 + 1), torch.tensor(t, dtype=torch.float64)
        cond, uncond = class_unet(xv, tt, labels), class_unet(xv, tt, torch.full_like(labels, 10))
    eps = uncond + 3.0 * (cond - uncond)
    torch.testing.assert_close(D, x - sigma * eps, rtol=1e-4, atol=1e-4)


def test_guided_euler_is_guided_ddim(class_unet: UNetPrior) -> None:
    s, labels = levels(class_unet, 5, "trailing"), torch.tensor([2, 7])
    a = EulerSampler().sample(class_unet, noise(), levels=s, generator=gen(0), class_labels=labels, guidance=2.5)
    b = DDIMSampler().sample(class_unet, noise(), levels=s, generator=gen(0), class_labels=labels, guidance=2.5)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_thresholding_reaches_the_k_samplers() -> None:
    class Huge:
        prediction_type, num_train_timesteps, num_classes = "sample", 1000, None
        noise_schedule = make_schedule()

        def __call__(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
            return torch.full_like(x, 25.0)

    s = levels(Huge(), 3)
    for cls in SAMPLERS.values():
        assert cls().sample(Huge(), noise(), levels=s, generator=gen(0)).abs().max() > 20
        assert cls(clip_sample=True).sample(Huge(), noise(), levels=s, generator=gen(0)).abs().max() <= 1.0 + 1e-5
        assert cls().sample(Huge(), noise(), levels=s, generator=gen(0), clip_sample=True).abs().max() <= 1.0 + 1e-5


def test_contract_errors(unet: UNetPrior) -> None:
    for cls in SAMPLERS.values():
        with pytest.raises(LatentzooError, match=f"sampler {cls.name} walks sigma levels; compose it with a scheduler"):
            cls().sample(unet, noise(), levels=None, generator=gen(0))
        with pytest.raises(LatentzooError, match="strictly decreasing"):
            cls().sample(unet, noise(), levels=[1.0, 2.0, 0.0], generator=gen(0))


def test_runs_under_inference_mode(unet: UNetPrior) -> None:
    x = noise().requires_grad_(True)
    for cls in SAMPLERS.values():
        out = cls().sample(unet, x, levels=levels(unet, 2), generator=gen(0))
        assert out.is_inference() and not out.requires_grad


# --- registry and the sigmoid beta schedule ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("ddim", DDIMSampler),
        ("ddpm", DDPMSampler),
        ("ddpm-large", DDPMSampler),
        ("euler", EulerSampler),
        ("heun", HeunSampler),
        ("dpmpp-2m", DPMSolverPP2MSampler),
    ],
)
def test_registry_samplers_build(name: str, cls: type) -> None:
    import latentzoo

    sampler = latentzoo.build(name, "sampler")
    assert type(sampler) is cls and sampler.levels == "sigma" and sampler.drives == ("denoiser",)


def test_registry_schedulers_build_and_pick_levels() -> None:
    import latentzoo

    prior = latentzoo.build("digits-ldm", "prior")
    for name in ("leading", "trailing", "linspace", "karras", "sigmoid", "exponential"):
        sched = latentzoo.build(name, "scheduler")
        got = sched.schedule(prior, 10)
        assert sched.levels == "sigma" and len(got) == 11 and got[-1] == 0.0, name
    assert latentzoo.build("trailing", "scheduler").schedule(prior, 4)[0] == prior.noise_schedule.sigma_max
    assert latentzoo.build("leading", "scheduler").schedule(prior, 4)[-2] == prior.noise_schedule.sigma_min


def test_removed_presets_are_gone() -> None:
    """euler-karras & co. were a sampler fixing a sigma schedule: now --sampler euler --scheduler karras."""
    from latentzoo.core.contract.registry import Registry

    names = set(Registry.load().entries)
    for gone in ("euler-karras", "heun-karras", "dpmpp-2m-karras", "dpmpp-2m-sigmoid", "scaled-linear", "cosine", "scaled-linear-zsnr"):
        assert gone not in names


def test_sigmoid_betas_match_diffusers_formula() -> None:
    betas = make_betas("sigmoid", 1000, 0.0001, 0.02)
    expected = 1 / (1 + np.exp(-np.linspace(-6, 6, 1000))) * (0.02 - 0.0001) + 0.0001
    np.testing.assert_allclose(betas.numpy(), expected, rtol=1e-12)
    assert betas.dtype == torch.float64 and np.all(np.diff(betas.numpy()) > 0)
    # S-shaped: slow at both ends, fastest in the middle
    growth = np.diff(betas.numpy())
    assert growth.argmax() in (499, 500) and growth[0] < growth[500] / 50


# --- parity with diffusers (test-only dependency) ---------------------------------------------------------


def diffusers_loop(scheduler, prior: UNetPrior, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        for t in scheduler.timesteps:
            inp = scheduler.scale_model_input(x, t)
            x = scheduler.step(prior(inp, t.to(torch.float64)), t, x).prev_sample
    return x


@pytest.mark.parametrize(
    ("name", "kind", "cls_name", "extra"),
    [
        ("euler", "trailing", "EulerDiscreteScheduler", {}),
        ("euler", "karras", "EulerDiscreteScheduler", {"use_karras_sigmas": True}),
        ("heun", "trailing", "HeunDiscreteScheduler", {}),
        ("heun", "karras", "HeunDiscreteScheduler", {"use_karras_sigmas": True}),
        ("dpmpp-2m", "trailing", "DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    ],
)
def test_matches_diffusers(name: str, kind: str, cls_name: str, extra: dict) -> None:
    diffusers = pytest.importorskip("diffusers")
    prior = tiny_unet(seed=1)
    # diffusers' Karras ramp ends at the smallest sigma of its own spacing; linspace includes t = 0 (our sigma_min)
    spacing = "linspace" if kind == "karras" else "trailing"
    theirs = getattr(diffusers, cls_name)(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        timestep_spacing=spacing,
        prediction_type="epsilon",
        **extra,
    )
    theirs.set_timesteps(8)
    sampler = SAMPLERS[name]()
    ours_sigmas = levels(prior, 8, kind)
    if name == "dpmpp-2m":  # diffusers' DPM-Solver runs in the variance-preserving form: compare sigma = sqrt(1 - abar) / sqrt(abar)
        theirs_sigmas = [float(theirs.sigmas[i]) for i in range(9)]
        start = noise()
    else:  # Heun repeats each intermediate level (two evaluations); Euler's and Heun's latents are VE: x_T = noise sqrt(sigma^2 + 1)
        theirs_sigmas = sorted(set(theirs.sigmas.double().tolist()), reverse=True)
        start = noise() * math.sqrt(ours_sigmas[0] ** 2 + 1)
    np.testing.assert_allclose(ours_sigmas, theirs_sigmas, rtol=5e-5)  # diffusers keeps alphas_cumprod in float32
    out = sampler.sample(prior, noise(), levels=ours_sigmas, generator=gen(0))
    ref = diffusers_loop(theirs, prior, start)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
