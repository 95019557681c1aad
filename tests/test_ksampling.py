"""The ksampling family: k-diffusion / ComfyUI samplers and schedulers, and registry aliases.

* agreement with k-diffusion's own sampling.py (test-only reference, see tests/kdiffusion_ref.py)
  on a fixed random UNet, sigma sequence and Brownian noise, to 1e-5;
* convergence order on the closed-form Gaussian denoiser, and the right distribution for the
  stochastic samplers;
* the Brownian tree's law and determinism;
* the schedulers against ComfyUI's formulas written out here;
* aliases (ComfyUI names) through the registry and the installed CLI;
* every new sampler x four schedulers sampling the shipped digits pipeline.
"""

from __future__ import annotations

import itertools
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import kdiffusion_ref
import numpy as np
import pytest
import torch
from unets import OnSchedule, noise_schedule, tiny_unet

import latentzoo
from latentzoo.core.contract.denoising import Denoiser
from latentzoo.core.contract.errors import LatentzooError, RegistryError
from latentzoo.core.contract.registry import Registry
from latentzoo.plugins.ksampling import ALL_SAMPLERS, SAMPLERS, SCHEDULERS, solvers
from latentzoo.plugins.ksampling import samplers as ks
from latentzoo.plugins.ksampling import schedulers as sch
from latentzoo.plugins.ksampling.brownian import BrownianNoise, BrownianTree
from latentzoo.plugins.ksampling.levels import ExponentialScheduler, KarrasScheduler

K, K_MISSING = kdiffusion_ref.load()
needs_kdiffusion = pytest.mark.skipif(K is None, reason=K_MISSING or "")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


SD = OnSchedule(noise_schedule("scaled_linear"))  # Stable Diffusion's (and the digits prior's) training schedule


def karras(n: int) -> list[float]:
    return KarrasScheduler().schedule(SD, n)


# --- the Brownian tree ---------------------------------------------------------------------------------


def test_brownian_tree_is_a_deterministic_function_of_seed_and_time() -> None:
    a, b = BrownianTree(0.03, 14.6, (3, 5), seed=7), BrownianTree(0.03, 14.6, (3, 5), seed=7)
    for t in (14.6, 3.0, 0.5, 0.03, 7.123456):
        torch.testing.assert_close(a(t), b(t), rtol=0, atol=0)
    assert torch.equal(a(0.03), torch.zeros(3, 5))  # W(t0) = 0
    assert not torch.equal(a(3.0), BrownianTree(0.03, 14.6, (3, 5), seed=8)(3.0))
    # queries in any order see the same path
    forward = [a(t) for t in (1.0, 2.0, 3.0)]
    backward = [b(t) for t in (3.0, 2.0, 1.0)][::-1]
    for x, y in zip(forward, backward, strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


def test_brownian_increments_are_independent_standard_normals() -> None:
    """(W(s') - W(s)) / sqrt(|s' - s|) ~ N(0, 1) for any cut of the interval, uncorrelated across disjoint pieces."""
    x = torch.zeros(20_000, dtype=torch.float64)
    noise = BrownianNoise(x, 0.03, 14.6, seed=3)
    cuts = [14.6, 9.0, 2.5, 2.4, 0.5, 0.03]
    pieces = [noise(s, s_next) for s, s_next in itertools.pairwise(cuts)]
    for p in pieces:
        assert abs(p.mean().item()) < 0.03 and abs(p.std().item() - 1) < 0.03
    corr = np.corrcoef(torch.stack(pieces).numpy())
    assert np.abs(corr - np.eye(len(pieces))).max() < 0.04
    # the whole interval is the sum of its pieces (one path), scaled back
    whole = noise(14.6, 0.03) * math.sqrt(14.6 - 0.03)
    parts = sum(p * math.sqrt(a - b) for p, (a, b) in zip(pieces, itertools.pairwise(cuts), strict=True))
    torch.testing.assert_close(whole, parts)
    # the direction sets the sign, as k-diffusion's BatchedBrownianTree
    torch.testing.assert_close(noise(0.5, 2.5), -noise(2.5, 0.5))


# --- agreement with k-diffusion ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fixed() -> tuple:
    """A fixed random UNet as D(x; sigma) in float64, Karras sigmas over its schedule, a start point and Brownian noise."""
    unet = tiny_unet().double()
    model = Denoiser(unet, batch_size=2)
    sigmas = KarrasScheduler().schedule(unet, 8)
    x = torch.randn(2, 2, 4, 4, generator=gen(0), dtype=torch.float64) * math.sqrt(sigmas[0] ** 2 + 1)
    return model, sigmas, x


def brownian(x: torch.Tensor, sigmas: list[float]) -> BrownianNoise:
    return BrownianNoise(x, sigmas[-2], sigmas[0], seed=1234)


# name -> (ours, k-diffusion's) as functions of (model, sigmas, x, noise, kd_model, K)
AGREEMENT = {
    "euler_ancestral": (
        lambda m, s, x, n: solvers.sample_euler_ancestral(m, x, s, noise=n),
        lambda m, s, x, n, km: K.sample_euler_ancestral(km, x, torch.tensor(s, dtype=torch.float64), noise_sampler=n, disable=True),
    ),
    "dpm_2": (
        lambda m, s, x, n: solvers.sample_dpm2(m, x, s),
        lambda m, s, x, n, km: K.sample_dpm_2(km, x, torch.tensor(s, dtype=torch.float64), disable=True),
    ),
    "dpm_2_ancestral": (
        lambda m, s, x, n: solvers.sample_dpm2_ancestral(m, x, s, noise=n),
        lambda m, s, x, n, km: K.sample_dpm_2_ancestral(km, x, torch.tensor(s, dtype=torch.float64), noise_sampler=n, disable=True),
    ),
    "lms": (
        lambda m, s, x, n: solvers.sample_lms(m, x, s),
        lambda m, s, x, n, km: K.sample_lms(km, x, torch.tensor(s, dtype=torch.float64), disable=True),
    ),
    "dpmpp_2s_ancestral": (
        lambda m, s, x, n: solvers.sample_dpmpp_2s_ancestral(m, x, s, noise=n),
        lambda m, s, x, n, km: K.sample_dpmpp_2s_ancestral(km, x, torch.tensor(s, dtype=torch.float64), noise_sampler=n, disable=True),
    ),
    "dpmpp_sde": (
        lambda m, s, x, n: solvers.sample_dpmpp_sde(m, x, s, noise=n),
        lambda m, s, x, n, km: K.sample_dpmpp_sde(km, x, torch.tensor(s, dtype=torch.float64), noise_sampler=n, disable=True),
    ),
    "dpmpp_2m_sde": (
        lambda m, s, x, n: solvers.sample_dpmpp_2m_sde(m, x, s, noise=n),
        lambda m, s, x, n, km: K.sample_dpmpp_2m_sde(km, x, torch.tensor(s, dtype=torch.float64), noise_sampler=n, disable=True),
    ),
    "dpmpp_2m_sde_heun": (
        lambda m, s, x, n: solvers.sample_dpmpp_2m_sde(m, x, s, noise=n, solver_type="heun"),
        lambda m, s, x, n, km: K.sample_dpmpp_2m_sde(
            km, x, torch.tensor(s, dtype=torch.float64), noise_sampler=n, solver_type="heun", disable=True
        ),
    ),
    "dpmpp_3m_sde": (
        lambda m, s, x, n: solvers.sample_dpmpp_3m_sde(m, x, s, noise=n),
        lambda m, s, x, n, km: K.sample_dpmpp_3m_sde(km, x, torch.tensor(s, dtype=torch.float64), noise_sampler=n, disable=True),
    ),
    # DPM-fast / -adaptive walk from sigmas[0] to the smallest positive sigma (as ComfyUI calls them), then ours adds D(x; sigma_min)
    "dpm_fast": (
        lambda m, s, x, n: solvers.sample_dpm_fast(m, x, s),
        lambda m, s, x, n, km: m(K.sample_dpm_fast(km, x, s[-2], s[0], len(s) - 1, disable=True), s[-2]),
    ),
    "dpm_fast_eta": (
        lambda m, s, x, n: solvers.sample_dpm_fast(m, x, s, eta=1.0, noise=n),
        lambda m, s, x, n, km: m(K.sample_dpm_fast(km, x, s[-2], s[0], len(s) - 1, eta=1.0, noise_sampler=n, disable=True), s[-2]),
    ),
    "dpm_adaptive": (
        lambda m, s, x, n: solvers.sample_dpm_adaptive(m, x, s),
        lambda m, s, x, n, km: m(K.sample_dpm_adaptive(km, x, s[-2], s[0], disable=True), s[-2]),
    ),
    "dpm_adaptive_order2_eta": (
        lambda m, s, x, n: solvers.sample_dpm_adaptive(m, x, s, order=2, eta=1.0, noise=n),
        lambda m, s, x, n, km: m(K.sample_dpm_adaptive(km, x, s[-2], s[0], order=2, eta=1.0, noise_sampler=n, disable=True), s[-2]),
    ),
}


@needs_kdiffusion
@pytest.mark.parametrize("name", list(AGREEMENT))
def test_agrees_with_k_diffusion(fixed, name: str) -> None:
    """Same model, sigmas, start point and noise sampler: the same sample to 1e-5 (measured: 1e-8 or better)."""
    model, sigmas, x = fixed
    ours, theirs = AGREEMENT[name]
    km = lambda x_, sigma: model(x_, float(sigma[0]))  # noqa: E731  k-diffusion passes sigma * ones(batch)
    with torch.no_grad():
        a = ours(model, sigmas, x, brownian(x, sigmas))
        # k-diffusion's DPM-Solver builds its lambda grid with torch.linspace / torch.tensor in the default dtype:
        # float64 here, so both run in the same precision
        before = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)
        try:
            b = theirs(model, sigmas, x, brownian(x, sigmas), km)
        finally:
            torch.set_default_dtype(before)
    assert b.abs().max() > 1  # a real trajectory, not zeros
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


@needs_kdiffusion
def test_karras_and_exponential_match_k_diffusion() -> None:
    sched = SD.noise_schedule
    for n in (1, 5, 20):
        for ours, theirs in (
            (KarrasScheduler().schedule(SD, n), K.get_sigmas_karras(n, sched.sigma_min, sched.sigma_max)),
            (ExponentialScheduler().schedule(SD, n), K.get_sigmas_exponential(n, sched.sigma_min, sched.sigma_max)),
        ):
            if n > 1:  # k-diffusion's 1-step ramp is sigma_min (linspace(0, 1, 1) = [0]); ours starts at sigma_max
                np.testing.assert_allclose(ours, theirs.double().numpy(), rtol=1e-6)
        if n > 1:
            for rho in (1.0, 2.5):
                got = sch.PolyExponentialScheduler(rho=rho).schedule(SD, n)
                np.testing.assert_allclose(
                    got, K.get_sigmas_polyexponential(n, sched.sigma_min, sched.sigma_max, rho).double().numpy(), rtol=1e-6
                )


@pytest.mark.parametrize("variant", ["bh1", "bh2"])
@pytest.mark.parametrize("steps", [3, 6, 25])
def test_unipc_agrees_with_diffusers(variant: str, steps: int) -> None:
    """k-diffusion has no UniPC: diffusers' UniPCMultistepScheduler (order 3, data prediction, lower_order_final) is the reference.

    Its sigmas are set to ours in float64; its last sigma is 1e-10 instead of 0, where its bh1
    update is 0 * inf = NaN. Measured difference: 1e-10 (the size of that last sigma times x).
    """
    from diffusers import UniPCMultistepScheduler

    unet = tiny_unet().double()
    ref = UniPCMultistepScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        solver_order=3,
        solver_type=variant,
        lower_order_final=True,
        predict_x0=True,
        prediction_type="epsilon",
    )
    ref.set_timesteps(steps)
    levels = [unet.noise_schedule.sigmas[int(t)] for t in ref.timesteps] + [0.0]
    ref.sigmas = torch.tensor([*levels[:-1], 1e-10], dtype=torch.float64)
    z = torch.randn(2, 2, 4, 4, generator=gen(0), dtype=torch.float64)
    x = z.clone()
    with torch.no_grad():
        for t in ref.timesteps:
            x = ref.step(unet(x, t.to(torch.float64)), t, x).prev_sample
        ours = solvers.sample_unipc(Denoiser(unet, batch_size=2), z * math.sqrt(levels[0] ** 2 + 1), levels, variant=variant)
    assert x.abs().max() > 1
    torch.testing.assert_close(ours, x, rtol=0, atol=1e-8)


# --- the Gaussian toy: convergence order -------------------------------------------------------------

MU, S = 0.7, 0.5


def gaussian(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """The exact D(x; sigma) of data ~ N(MU, S^2)."""
    return MU + S**2 / (S**2 + sigma**2) * (x - MU)


def exact_map(x_T: torch.Tensor, sigma_0: float, sigma_end: float) -> torch.Tensor:
    """The probability-flow ODE from sigma_0 to sigma_end (x - MU grows like sqrt(S^2 + sigma^2)); sigma_end = 0 is the data end."""
    return MU + math.sqrt((S**2 + sigma_end**2) / (S**2 + sigma_0**2)) * (x_T - MU)


# name -> (solver at eta = 0 where it has one, what it approximates: "D" = D(ODE(sigma_last); sigma_last), "0" = ODE to sigma = 0, order)
DETERMINISTIC = {
    "euler_ancestral": (lambda x, s: solvers.sample_euler_ancestral(gaussian, x, s, noise=None, eta=0.0), "D", 1),
    "dpm2": (lambda x, s: solvers.sample_dpm2(gaussian, x, s), "D", 2),
    "dpm2_ancestral": (lambda x, s: solvers.sample_dpm2_ancestral(gaussian, x, s, noise=None, eta=0.0), "D", 2),
    "dpmpp_2s_ancestral": (lambda x, s: solvers.sample_dpmpp_2s_ancestral(gaussian, x, s, noise=None, eta=0.0), "D", 2),
    "dpmpp_sde": (lambda x, s: solvers.sample_dpmpp_sde(gaussian, x, s, noise=None, eta=0.0), "D", 2),
    "dpmpp_2m_sde": (lambda x, s: solvers.sample_dpmpp_2m_sde(gaussian, x, s, noise=None, eta=0.0), "D", 2),
    "dpmpp_2m_sde_heun": (lambda x, s: solvers.sample_dpmpp_2m_sde(gaussian, x, s, noise=None, eta=0.0, solver_type="heun"), "D", 2),
    # 3M: the 1st- and 2nd-order warm-up steps cap the global order at 2 on this grid (measured ratio 3.3-3.6)
    "dpmpp_3m_sde": (lambda x, s: solvers.sample_dpmpp_3m_sde(gaussian, x, s, noise=None, eta=0.0), "D", 1.6),
    "lms": (lambda x, s: solvers.sample_lms(gaussian, x, s), "0", 3),
    "ipndm": (lambda x, s: solvers.sample_ipndm(gaussian, x, s), "D", 2),  # fixed Adams-Bashforth weights on a non-uniform grid
    "deis": (lambda x, s: solvers.sample_deis(gaussian, x, s), "D", 2.5),
    "uni_pc": (lambda x, s: solvers.sample_unipc(gaussian, x, s, variant="bh1"), "D", 3),
    "uni_pc_bh2": (lambda x, s: solvers.sample_unipc(gaussian, x, s, variant="bh2"), "D", 3),
    "dpm_fast": (lambda x, s: solvers.sample_dpm_fast(gaussian, x, s), "D", 2.5),
}


def toy_error(name: str, steps: int) -> float:
    sigmas = karras(steps)
    x = torch.randn(256, 4, generator=gen(2), dtype=torch.float64) * math.sqrt(sigmas[0] ** 2 + 1)
    run, target, _ = DETERMINISTIC[name]
    out = run(x, sigmas)
    exact = gaussian(exact_map(x, sigmas[0], sigmas[-2]), sigmas[-2]) if target == "D" else exact_map(x, sigmas[0], 0.0)
    return (out - exact).abs().max().item()


@pytest.mark.parametrize("name", list(DETERMINISTIC))
def test_convergence_order_on_the_gaussian(name: str) -> None:
    """Doubling the Karras steps 20 -> 40 -> 80 divides the error by about 2^order (both doublings)."""
    e20, e40, e80 = (toy_error(name, n) for n in (20, 40, 80))
    order = DETERMINISTIC[name][2]
    assert e80 < (0.05 if order == 1 else 0.01), (name, e80)
    for ratio in (e20 / e40, e40 / e80):
        assert ratio > 2**order * 0.8, (name, e20, e40, e80)
    if order == 1:
        assert e20 / e40 < 2.5


def test_dpm_adaptive_error_follows_its_tolerance() -> None:
    sigmas = karras(10)
    x = torch.randn(256, 4, generator=gen(2), dtype=torch.float64) * math.sqrt(sigmas[0] ** 2 + 1)
    exact = gaussian(exact_map(x, sigmas[0], sigmas[-2]), sigmas[-2])
    errors, nfes = [], []
    for rtol in (0.05, 0.005, 0.0005):
        info: dict = {}
        out = solvers.sample_dpm_adaptive(gaussian, x, sigmas, rtol=rtol, atol=rtol / 6, info=info)
        errors.append((out - exact).abs().max().item())
        nfes.append(info["nfe"])
    # measured: errors 0.043, 0.011, 0.0006; evaluations 30 -> 57 -> 108
    assert errors[0] > errors[1] > errors[2] and errors[2] < 2e-3, errors
    assert nfes[0] < nfes[1] < nfes[2], nfes
    with pytest.raises(RuntimeError, match="more than 6 model evaluations"):
        solvers.sample_dpm_adaptive(gaussian, x, sigmas, max_evaluations=6)


def test_multistep_weights_integrate_polynomials_exactly() -> None:
    """LMS / DEIS weights: sum_j c_j p(t_j) = int p for polynomials of degree < order (the Adams-Bashforth construction)."""
    nodes, a, b = [3.0, 4.5, 7.0, 9.0], 3.0, 1.2
    for degree in range(4):
        c = [solvers.lagrange_integral(nodes, j, a, b) for j in range(4)]
        assert sum(cj * t**degree for cj, t in zip(c, nodes, strict=True)) == pytest.approx(
            (b ** (degree + 1) - a ** (degree + 1)) / (degree + 1)
        )
    # DEIS: the weights against d sigma / dt in VP time sum to the sigma step, and t(sigma) inverts sigma(t)
    ts = [solvers.vp_time(s) for s in (14.6, 9.0, 5.0)]
    c = [solvers.lagrange_integral(ts[::-1], j, ts[-1], solvers.vp_time(3.0), solvers.vp_dsigma_dt) for j in range(3)]
    assert sum(c) == pytest.approx(3.0 - 5.0, rel=1e-10)
    for sigma in (0.03, 1.0, 14.6):
        t = solvers.vp_time(sigma)
        assert math.sqrt(math.exp(solvers._VP_BETA_D * t**2 / 2 + solvers._VP_BETA_MIN * t) - 1) == pytest.approx(sigma, rel=1e-12)


STOCHASTIC = ["euler_ancestral", "dpm2_ancestral", "dpmpp_2s_ancestral", "dpmpp_sde", "dpmpp_2m_sde", "dpmpp_3m_sde"]


@pytest.mark.parametrize("key", STOCHASTIC)
def test_stochastic_samplers_draw_the_data_distribution(key: str) -> None:
    """eta = 1 on the exact Gaussian denoiser, 30 Karras steps: samples have mean MU and std S (not the ODE's map of the noise)."""
    cls = next(c for c in vars(ks).values() if isinstance(c, type) and getattr(c, "key", None) == key)
    prior = GaussianPrior()
    z = torch.randn(20_000, 1, 1, 1, generator=gen(5), dtype=torch.float64)
    levels = karras(30)
    out = cls().sample(prior, z, levels=levels, generator=gen(0))
    # measured std: 0.443 (Euler ancestral, first order), 0.491-0.506 (the others); mean 0.698-0.700
    tolerance = 0.15 if key == "euler_ancestral" else 0.03
    assert out.mean().item() == pytest.approx(MU, abs=0.01), out.mean()
    assert out.std().item() == pytest.approx(S, rel=tolerance), out.std()
    # the noise really was added: the sample is not the ODE's map of z (measured mean |difference| 0.52-0.56)
    ode = exact_map(z * math.sqrt(levels[0] ** 2 + 1), levels[0], 0.0)
    assert (out - ode).abs().mean() > 0.1


class GaussianPrior:
    """A denoiser prior (epsilon prediction) whose D is ``gaussian``, on Stable Diffusion's schedule."""

    num_classes = None
    prediction_type = "epsilon"
    name = "gaussian"

    def __init__(self) -> None:
        self.noise_schedule = SD.noise_schedule

    def __call__(self, x_vp: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        sigma = self.noise_schedule.sigma(float(t))
        x = x_vp * math.sqrt(1 + sigma**2)
        return (x - gaussian(x, sigma)) / sigma


# --- the sampler components ----------------------------------------------------------------------------

SAMPLER_CLASSES = {c.key: c for c in vars(ks).values() if isinstance(c, type) and issubclass(c, ks.KSampler) and c is not ks.KSampler}


def test_every_declared_sampler_has_a_class() -> None:
    assert set(SAMPLER_CLASSES) == set(ALL_SAMPLERS)  # the ComfyUI samplers and the first three (euler, heun, dpmpp_2m)


@pytest.mark.parametrize("key", sorted(SAMPLERS))
def test_same_seed_same_bytes_and_options_override(key: str) -> None:
    unet = tiny_unet()
    cls = SAMPLER_CLASSES[key]
    z = torch.randn(2, 2, 4, 4, generator=gen(1))
    levels = karras(6)
    a = cls().sample(unet, z, levels=levels, generator=gen(3))
    b = cls().sample(unet, z, levels=levels, generator=gen(3))
    assert torch.isfinite(a).all() and torch.equal(a, b)
    c = cls().sample(unet, z, levels=levels, generator=gen(4))
    if cls.noise and (key not in ("dpm2", "dpm_fast", "dpm_adaptive")):  # those draw noise only with churn / eta > 0
        assert not torch.equal(a, c)
        if "eta" not in cls().specs:  # lcm: fresh noise each step is the algorithm, not an option
            return
        # eta = 0 at sample time overrides the default eta = 1: deterministic, so the seed no longer matters
        d0 = cls().sample(unet, z, levels=levels, generator=gen(3), eta=0.0)
        d1 = cls().sample(unet, z, levels=levels, generator=gen(4), eta=0.0)
        assert torch.equal(d0, d1) and not torch.equal(d0, a)
    else:
        assert torch.equal(a, c)


@pytest.mark.parametrize(
    ("key", "options", "message"),
    [
        ("euler_ancestral", {"eta": -1.0}, "option eta must be >= 0"),
        ("dpmpp_2m_sde", {"eta": float("nan")}, "option eta must be a finite number"),
        ("dpmpp_2m_sde", {"solver_type": "rk4"}, "option solver_type must be one of midpoint, heun"),
        ("uni_pc", {"variant": "bh3"}, "option variant must be one of bh1, bh2"),
        ("lms", {"order": 5}, "option order must be <= 4"),
        ("lms", {"order": 2.5}, "option order must be an integer"),
        ("dpm_adaptive", {"rtol": 0.0}, "option rtol must be >= 1e-06"),
        ("ipndm", {"max_order": True}, "option max_order must be an integer"),
    ],
)
def test_bad_options_are_refused_in_one_line(key: str, options: dict, message: str) -> None:
    for make in (
        lambda: SAMPLER_CLASSES[key](**options),
        lambda: SAMPLER_CLASSES[key]().sample(tiny_unet(), torch.zeros(1, 2, 4, 4), levels=karras(3), generator=gen(0), **options),
    ):
        with pytest.raises(LatentzooError, match=message) as info:
            make()
        assert "\n" not in str(info.value) and key.replace("_", "-") in str(info.value)
    with pytest.raises(LatentzooError, match="unknown option"):
        SAMPLER_CLASSES[key](bogus=1)


def test_samplers_refuse_levels_that_are_not_sigmas() -> None:
    z = torch.zeros(1, 2, 4, 4)
    for key, cls in SAMPLER_CLASSES.items():
        for bad in (None, [1.0, 2.0, 0.0], [5.0, 1.0], [float("nan"), 0.0]):
            with pytest.raises(LatentzooError) as info:
                cls().sample(tiny_unet(), z, levels=bad, generator=gen(0))
            assert key.replace("_", "-") in str(info.value)


# --- schedulers against ComfyUI's formulas -------------------------------------------------------------

SIG = np.array(SD.noise_schedule.sigmas)  # model_sampling.sigmas in ComfyUI
T = len(SIG)


def comfy_sigma(t: float) -> float:
    """ComfyUI's ModelSamplingDiscrete.sigma: log sigma interpolated linearly between integer timesteps."""
    lo, hi = math.floor(t), math.ceil(t)
    w = t - lo
    return math.exp((1 - w) * math.log(SIG[lo]) + w * math.log(SIG[hi]))


def comfy_expected(name: str, steps: int) -> list[float]:
    """The sigmas ComfyUI's comfy/samplers.py computes, written out from its formulas."""
    if name == "normal":
        ts = np.linspace(T - 1, 0, steps)
        return [comfy_sigma(t) for t in ts] + [0.0]
    if name == "sgm_uniform":
        return [comfy_sigma(t) for t in np.linspace(T - 1, 0, steps + 1)[:-1]] + [0.0]
    if name == "simple":
        ss = T / steps
        return [SIG[-(1 + int(x * ss))] for x in range(steps)] + [0.0]
    if name == "ddim_uniform":
        ss, x, sigs = max(T // steps, 1), 1, [0.0]
        while x < T:
            sigs.append(SIG[x])
            x += ss
        return sigs[::-1]
    if name == "beta":
        from scipy.stats import beta

        ts = np.rint(beta.ppf(1 - np.linspace(0, 1, steps, endpoint=False), 0.6, 0.6) * (T - 1))
        out, last = [], -1
        for t in ts:
            if t != last:
                out.append(SIG[int(t)])
            last = t
        return [*out, 0.0]
    if name == "kl_optimal":
        i = np.arange(steps) / (steps - 1)
        return [*list(np.tan(i * math.atan(SIG[0]) + (1 - i) * math.atan(SIG[-1]))), 0.0]
    if name == "linear_quadratic":
        tn, ls = 0.025, steps // 2
        lin = [i * tn / ls for i in range(ls)]
        diff = ls - tn * steps
        qs = steps - ls
        qc = diff / (ls * qs**2)
        lc = tn / ls - 2 * diff / (qs**2)
        const = qc * ls**2
        quad = [qc * i**2 + lc * i + const for i in range(ls, steps)]
        return [(1 - v) * SIG[-1] for v in [*lin, *quad, 1.0]]
    if name in ("align_your_steps", "align_your_steps_sdxl"):
        table = sch.AYS_SIGMAS["SDXL" if name.endswith("sdxl") else "SD1"]
        if steps + 1 != len(table):  # ComfyUI's loglinear_interp
            xs, ys = np.linspace(0, 1, len(table)), np.log(table[::-1])
            table = np.exp(np.interp(np.linspace(0, 1, steps + 1), xs, ys))[::-1]
        return [*list(table[:-1]), 0.0]
    raise AssertionError(name)


COMFY = [
    "normal",
    "sgm_uniform",
    "simple",
    "ddim_uniform",
    "beta",
    "kl_optimal",
    "linear_quadratic",
    "align_your_steps",
    "align_your_steps_sdxl",
]


def scheduler(name: str) -> sch.KScheduler:
    if name == "align_your_steps_sdxl":
        return sch.AlignYourStepsScheduler(model="SDXL")
    return getattr(sch, SCHEDULERS[name][0])()


@pytest.mark.parametrize("name", COMFY)
@pytest.mark.parametrize("steps", [2, 4, 10, 20, 25, 50])
def test_schedulers_match_comfyui(name: str, steps: int) -> None:
    got = scheduler(name).schedule(SD, steps)
    expected = comfy_expected(name, steps)
    assert len(got) == steps + 1 and got[-1] == 0.0
    if len(expected) == steps + 1:  # ddim_uniform at 25, 50 ... is ComfyUI's count; see the next test otherwise
        np.testing.assert_allclose(got, expected, rtol=1e-9)


def test_ays_10_steps_is_the_published_table_and_ddim_uniform_keeps_steps_levels() -> None:
    assert sch.AlignYourStepsScheduler().schedule(SD, 10) == [*sch.AYS_SIGMAS["SD1"][:10], 0.0]
    assert sch.AlignYourStepsScheduler(model="SDXL").schedule(SD, 10)[3] == 2.1811480769
    # 7 steps of 1000: ComfyUI's loop gives 8 levels (t = 1, 143, ..., 995); the first 7 are kept
    expected = comfy_expected("ddim_uniform", 7)
    assert len(expected) == 9
    assert sch.DDIMUniformScheduler().schedule(SD, 7) == pytest.approx([*expected[1:-1], 0.0])


@pytest.mark.parametrize("name", [*SCHEDULERS, "align_your_steps_sdxl"])
def test_every_scheduler_obeys_the_steps_rule(name: str) -> None:
    s = scheduler(name)
    for steps in (1, 2, 3, 7, 33, 100, 999, 1000):
        levels = s.schedule(SD, steps)
        assert len(levels) == steps + 1 and levels[-1] == 0.0 and all(b < a for a, b in itertools.pairwise(levels)), (name, steps)
        assert all(math.isfinite(v) for v in levels)
    for bad in (0, -1, 1001, True, 2.5, "10"):
        with pytest.raises(LatentzooError, match=r"takes 1 to 1000 steps") as info:
            s.schedule(SD, bad)
        assert "\n" not in str(info.value)
    with pytest.raises(LatentzooError, match="has none"):
        s.schedule(object(), 10)


def test_beta_quantile_matches_scipy() -> None:
    from scipy.stats import beta

    for a, b in ((0.6, 0.6), (0.5, 2.0), (3.0, 0.7)):
        for q in (1e-6, 0.01, 0.3, 0.5, 0.77, 0.999):
            assert sch.beta_ppf(q, a, b) == pytest.approx(beta.ppf(q, a, b), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize(
    ("cls", "options", "message"),
    [
        (sch.BetaScheduler, {"alpha": 0.0}, "scheduler beta: option alpha must be >= 0.01"),
        (sch.PolyExponentialScheduler, {"rho": float("inf")}, "scheduler polyexponential: option rho must be a finite number"),
        (sch.AlignYourStepsScheduler, {"model": "SVD"}, "scheduler align_your_steps: option model must be one of SD1, SDXL"),
        (sch.LinearQuadraticScheduler, {"threshold_noise": -0.1}, "threshold_noise must be"),
    ],
)
def test_bad_scheduler_options_are_refused(cls, options: dict, message: str) -> None:
    with pytest.raises(LatentzooError, match=message):
        cls(**options)
    with pytest.raises(LatentzooError, match=message):
        cls().schedule(SD, 10, **options)


# --- aliases -----------------------------------------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "extra.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_aliases_resolve_to_the_entry() -> None:
    reg = Registry.load()
    for alias, name in {
        "euler_ancestral": "euler-ancestral",
        "dpmpp_2m_sde": "dpmpp-2m-sde",
        "uni_pc_bh2": "uni-pc-bh2",
        "sgm_uniform": "sgm-uniform",
        "dpm_adaptive": "dpm-adaptive",
        "dpm_2": "dpm2",
        "kl_optimal": "kl-optimal",
    }.items():
        assert reg.get(alias).name == name and reg.canonical(alias) == name
    for plain in ("lms", "karras", "normal", "simple", "beta", "deis", "ipndm"):
        assert reg.get(plain).name == plain
    with pytest.raises(RegistryError, match="uni_pc_bh2 is a sampler, not a scheduler"):
        reg.get("uni_pc_bh2", "scheduler")


def test_an_alias_that_collides_is_an_error_naming_both(tmp_path: Path) -> None:
    taken = write(tmp_path, "components:\n  mine:\n    class: ksampling.normal\n    roles: [scheduler]\n    aliases: [karras]\n")
    with pytest.raises(RegistryError, match=r"alias 'karras' of mine collides with the entry karras") as info:
        Registry.load([taken])
    assert "extra.yaml" in str(info.value) and "registry.yaml" in str(info.value)
    twice = write(tmp_path, "components:\n  mine:\n    class: ksampling.normal\n    roles: [scheduler]\n    aliases: [sgm_uniform]\n")
    with pytest.raises(RegistryError, match=r"alias 'sgm_uniform' of (mine|sgm-uniform) is also an alias of (sgm-uniform|mine)"):
        Registry.load([twice])
    for bad in ("aliases: [mine]", "aliases: ['']", "aliases: [3]", "aliases: normal"):
        path = write(tmp_path, f"components:\n  mine:\n    class: ksampling.normal\n    roles: [scheduler]\n    {bad}\n")
        with pytest.raises(RegistryError, match=r"extra.yaml:\d+: components.mine.aliases"):
            Registry.load([path])


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "latentzoo", *args], capture_output=True, text=True, timeout=300)


def test_cli_lists_and_shows_aliases() -> None:
    listed = cli("list", "--role", "sampler")
    assert listed.returncode == 0 and "dpmpp-2m-sde (dpmpp_2m_sde, dpmpp_2m_sde_gpu)" in listed.stdout
    info = cli("info", "sgm_uniform")
    assert info.returncode == 0 and "name: sgm-uniform" in info.stdout and "aliases: [sgm_uniform]" in info.stdout
    unknown = cli("info", "dpmpp_2m_sdee")
    assert unknown.returncode != 0 and "dpmpp_2m_sde" in unknown.stderr and "Traceback" not in unknown.stderr


@pytest.mark.parametrize(
    ("sampler", "scheduler"), [("euler_ancestral", "normal"), ("dpmpp_2m_sde", "karras"), ("uni_pc_bh2", "sgm_uniform")]
)
def test_cli_samples_digits_with_comfyui_names(tmp_path: Path, sampler: str, scheduler: str) -> None:
    out = tmp_path / "grid.png"
    run = cli("sample", "digits", "--sampler", sampler, "--scheduler", scheduler, "--steps", "6", "-n", "8", "-o", str(out))
    assert run.returncode == 0, run.stderr[-500:]
    assert out.is_file() and out.stat().st_size > 100


# --- every new sampler x four schedulers on the shipped digits prior ------------------------------------


@pytest.fixture(scope="module")
def digits():
    return latentzoo.load_pipeline("digits")


ENTRIES = sorted(e.name for e in Registry.load().entries.values() if e.layer == "plugin:ksampling" and "sampler" in e.roles)


@pytest.mark.parametrize("sampler", ENTRIES)
def test_every_sampler_samples_digits_on_four_schedulers(digits, sampler: str) -> None:
    pipe = digits
    original = pipe.sampler, pipe.scheduler, pipe.spec.defaults
    try:
        pipe.sampler = latentzoo.build(sampler, "sampler")
        pipe.spec.defaults = {}
        outputs = []
        for name in ("normal", "karras", "exponential", "sgm-uniform"):
            pipe.scheduler = latentzoo.build(name, "scheduler")
            images = pipe.sample(8, seed=0, steps=5)
            assert images.shape == (8, 1, 32, 32) and torch.isfinite(images).all() and images.abs().max() <= 1
            # digits: a dark background and bright strokes, not noise or a constant
            assert images.mean() < -0.3 and (images > 0.5).float().mean() > 0.03, (sampler, name, images.mean())
            outputs.append(images)
        # the scheduler matters (dpm-fast / dpm-adaptive use only the ends of the levels: normal and karras share them)
        other = 3 if sampler in ("dpm-fast", "dpm-adaptive") else 1
        assert not torch.equal(outputs[0], outputs[other])
    finally:
        pipe.sampler, pipe.scheduler, pipe.spec.defaults = original


def test_declarations_and_aliases_stay_light() -> None:
    """`list`, `info` and the plugin's hooks never import torch."""
    code = (
        "import sys, latentzoo.plugins.ksampling as k; k.latentzoo_components(); k.latentzoo_registry(); "
        "from latentzoo.core.contract.registry import Registry; Registry.load().get('uni_pc_bh2'); print('torch' in sys.modules)"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "False", run.stderr
