"""NoiseSchedule (betas, alphas_cumprod, sigmas, zero terminal SNR) and the sigma schedulers (spacings,
ramps, the steps rule), with diffusers parity."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from unets import BETAS, OnSchedule, noise_schedule, tiny_unet

from latentzoo.core.contract.denoising import NoiseSchedule, make_betas, rescale_zero_terminal_snr
from latentzoo.core.contract.errors import LatentzooError
from latentzoo.plugins.ksampling.levels import (
    ExponentialScheduler,
    KarrasScheduler,
    SigmoidScheduler,
    TimestepScheduler,
    spaced_timesteps,
)

T = 1000
SCHEDULES = ["linear", "scaled_linear", "squaredcos_cap_v2"]
ALL_SCHEDULERS = [TimestepScheduler(spacing="leading"), TimestepScheduler(spacing="trailing"), TimestepScheduler(spacing="linspace")]
ALL_SCHEDULERS += [KarrasScheduler(), SigmoidScheduler(), ExponentialScheduler()]


def cos_alpha_bar(t: float) -> float:
    return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2


def timesteps(spacing: str, n: int, offset: int = 0, schedule: str = "linear") -> list[int]:
    return TimestepScheduler(spacing=spacing, steps_offset=offset).timesteps(OnSchedule(noise_schedule(schedule)), n)


# --- betas and alphas_cumprod ---------------------------------------------------------


def test_linear_betas_closed_form() -> None:
    s = noise_schedule("linear")
    assert s.betas.dtype == torch.float64
    np.testing.assert_allclose(s.betas.numpy(), np.linspace(0.0001, 0.02, T), rtol=0, atol=1e-15)


def test_scaled_linear_betas_closed_form() -> None:
    s = noise_schedule("scaled_linear")
    expected = np.linspace(math.sqrt(0.00085), math.sqrt(0.012), T) ** 2
    np.testing.assert_allclose(s.betas.numpy(), expected, rtol=1e-12)
    # linear in sqrt(beta), so NOT linear in beta: the midpoint is below the arithmetic mean
    assert float(s.betas[T // 2]) < (0.00085 + 0.012) / 2 - 1e-4


def test_cosine_alphas_cumprod_follows_cos_squared_within_cap() -> None:
    s = noise_schedule("squaredcos_cap_v2")
    betas = s.betas.numpy()
    raw = np.array([1 - cos_alpha_bar((i + 1) / T) / cos_alpha_bar(i / T) for i in range(T)])
    np.testing.assert_allclose(betas, np.minimum(raw, 0.999), rtol=1e-12, atol=1e-15)
    capped = raw > 0.999
    assert capped.any() and capped[-1]
    first_capped = int(np.argmax(capped))
    ab = s.alphas_cumprod.numpy()
    expected = np.array([cos_alpha_bar((i + 1) / T) / cos_alpha_bar(0.0) for i in range(T)])
    np.testing.assert_allclose(ab[:first_capped], expected[:first_capped], rtol=1e-9)
    assert np.all(ab[first_capped:] >= expected[first_capped:])


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("rescale", [False, True])
def test_alphas_cumprod_and_sigmas(schedule: str, rescale: bool) -> None:
    s = noise_schedule(schedule, rescale_betas_zero_snr=rescale)
    ab = s.alphas_cumprod
    assert ab.shape == (T,) and torch.all(ab[1:] < ab[:-1]) and torch.all(ab > 0) and torch.all(ab < 1)
    np.testing.assert_allclose(np.array(s.sigmas), np.sqrt((1 - ab.numpy()) / ab.numpy()), rtol=1e-12)
    assert s.sigma_min == s.sigmas[0] < s.sigma_max == s.sigmas[-1]
    if not rescale:
        np.testing.assert_allclose(ab.numpy(), np.cumprod(1 - s.betas.numpy()), rtol=1e-12)


def test_from_config_requires_its_fields() -> None:
    # never default another model's values: each missing field is named
    for cfg, word in [
        ({"beta_start": 0.1, "beta_end": 0.2, "num_train_timesteps": T}, "beta_schedule"),
        ({"beta_schedule": "linear", "beta_start": 0.1, "beta_end": 0.2}, "num_train_timesteps"),
        ({"beta_schedule": "linear", "num_train_timesteps": T}, "beta_start"),
        ({"beta_schedule": "scaled_linear", "beta_start": 0.1, "num_train_timesteps": T}, "beta_end"),
        ({"beta_schedule": "quadratic", "beta_start": 0.1, "beta_end": 0.2, "num_train_timesteps": T}, "beta_schedule"),
        ({"beta_schedule": "linear", "beta_start": 0.1, "beta_end": 0.2, "num_train_timesteps": T, "spacing": "x"}, "spacing"),
        ({"beta_schedule": "linear", "beta_start": 0.5, "beta_end": 1.5, "num_train_timesteps": T}, "beta"),
    ]:
        with pytest.raises(LatentzooError, match=word) as info:
            NoiseSchedule.from_config(cfg)
        assert "\n" not in str(info.value)
    # the cosine schedule has no beta_start / beta_end
    assert NoiseSchedule.from_config({"beta_schedule": "squaredcos_cap_v2", "num_train_timesteps": 10}).num_train_timesteps == 10


def test_unet_prior_without_training_schedule_fails_at_build() -> None:
    with pytest.raises(ValueError, match=r"training_schedule.*add it"):
        tiny_unet(training_schedule=None)
    with pytest.raises(ValueError, match="beta_start"):
        tiny_unet(training_schedule={"beta_schedule": "linear"})
    assert tiny_unet().noise_schedule.num_train_timesteps == 1000


@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize("zsnr", [False, True])
def test_timestep_and_sigma_interpolate_in_log_sigma(name: str, zsnr: bool) -> None:
    s = noise_schedule(name, rescale_betas_zero_snr=zsnr)
    for t in (0, 1, 17, 500, 998, 999):
        assert s.timestep(s.sigmas[t]) == t and s.sigma(t) == s.sigmas[t]
        assert s.alpha_bar(s.sigmas[t]) == float(s.alphas_cumprod[t])  # exact on the grid
    mid = math.sqrt(s.sigmas[10] * s.sigmas[11])  # geometric mean: halfway in log sigma
    assert s.timestep(mid) == pytest.approx(10.5, abs=1e-9)
    assert s.sigma(10.5) == pytest.approx(mid, rel=1e-12)
    assert s.alpha_bar(mid) == pytest.approx(1 / (1 + mid**2), rel=1e-15) and s.alpha_bar(0.0) == 1.0
    assert s.timestep(s.sigma_min / 2) == 0.0 and s.timestep(s.sigma_max * 2) == T - 1


# --- zero terminal SNR -------------------------------------------------------------------


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_zero_terminal_snr(schedule: str) -> None:
    plain = noise_schedule(schedule)
    ab = noise_schedule(schedule, rescale_betas_zero_snr=True).alphas_cumprod
    assert float(ab[-1] / (1 - ab[-1])) < 1e-6
    # kept just above 0 so 1/sqrt(alpha_bar) stays finite, and below alpha_bar[T-2] so the schedule stays decreasing
    assert 0 < float(ab[-1]) <= 2**-24 and float(ab[-1]) < float(ab[-2])
    assert float(ab[0]) == pytest.approx(float(plain.alphas_cumprod[0]), rel=1e-10)


def test_rescale_zero_terminal_snr_algorithm() -> None:
    betas = make_betas("scaled_linear", T, 0.00085, 0.012)
    sqrt_ab_old = torch.cumprod(1 - betas, 0).sqrt()
    sqrt_ab_new = torch.cumprod(1 - rescale_zero_terminal_snr(betas), 0).sqrt()
    assert float(sqrt_ab_new[-1]) == pytest.approx(0.0, abs=1e-7)
    first, last = float(sqrt_ab_old[0]), float(sqrt_ab_old[-1])
    torch.testing.assert_close(sqrt_ab_new[:-1], ((sqrt_ab_old - last) * first / (first - last))[:-1], rtol=1e-9, atol=1e-12)


def test_infinite_terminal_sigma_is_replaced() -> None:
    abar = torch.tensor([0.9, 0.5, 0.1, 0.0], dtype=torch.float64)
    s = NoiseSchedule(abar)
    assert s.sigmas[-1] == 2 * s.sigmas[-2] and math.isfinite(s.sigma_max)


# --- spacing ---------------------------------------------------------------------------


def test_spacings() -> None:
    assert timesteps("leading", 10) == [900, 800, 700, 600, 500, 400, 300, 200, 100, 0]
    assert timesteps("leading", 10, offset=1) == [901, 801, 701, 601, 501, 401, 301, 201, 101, 1]
    assert timesteps("trailing", 10) == [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]
    assert timesteps("linspace", 10) == [int(v) for v in np.round(np.linspace(0, T - 1, 10))[::-1]]
    # trailing at n = 7: the next level is the next element of the sequence, never t - T // n
    ts = timesteps("trailing", 7)
    assert ts == [999, 856, 713, 570, 428, 285, 142] and 999 - T // 7 not in ts


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("n", [1, 2, 7, 33, 999, 1000])
def test_timestep_levels_are_the_schedules_sigmas(spacing: str, n: int) -> None:
    prior = OnSchedule(noise_schedule("scaled_linear"))
    ts = timesteps(spacing, n, schedule="scaled_linear")
    assert len(set(ts)) == n and ts == sorted(ts, reverse=True) and all(0 <= t < T for t in ts)
    levels = TimestepScheduler(spacing=spacing).schedule(prior, n)
    assert levels == [prior.noise_schedule.sigmas[t] for t in ts] + [0.0]
    if n == T:
        assert ts == list(range(T - 1, -1, -1))


def test_scheduler_options_override_the_instance() -> None:
    prior = OnSchedule(noise_schedule("linear"))
    sched = TimestepScheduler(spacing="leading")
    assert sched.timesteps(prior, 10, steps_offset=1)[-1] == 1 and sched.timesteps(prior, 10)[-1] == 0
    assert sched.schedule(prior, 10, spacing="trailing") == TimestepScheduler(spacing="trailing").schedule(prior, 10)
    assert KarrasScheduler().schedule(prior, 10, rho=3.0) == KarrasScheduler(rho=3.0).schedule(prior, 10)
    with pytest.raises(LatentzooError, match="spacing"):
        TimestepScheduler(spacing="uniform")
    with pytest.raises(LatentzooError, match="rho"):
        KarrasScheduler(rho=-1.0)


# --- ramps -----------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 10, 50])
def test_karras_levels_follow_eq5(n: int) -> None:
    s = noise_schedule("scaled_linear")
    levels = KarrasScheduler(rho=7.0).schedule(OnSchedule(s), n)
    assert len(levels) == n + 1 and levels[-1] == 0.0
    assert levels[0] == pytest.approx(s.sigma_max)
    if n > 1:
        assert levels[-2] == pytest.approx(s.sigma_min)
        i = n // 2
        expected = (s.sigma_max ** (1 / 7) + i / (n - 1) * (s.sigma_min ** (1 / 7) - s.sigma_max ** (1 / 7))) ** 7
        assert levels[i] == pytest.approx(expected, rel=1e-12)


def test_sigmoid_and_exponential_shapes() -> None:
    s = noise_schedule("scaled_linear")
    sig = SigmoidScheduler().schedule(OnSchedule(s), 20)
    logs = np.log(sig[:-1])
    gaps = -np.diff(logs)
    assert gaps[0] < gaps[len(gaps) // 2] and gaps[-1] < gaps[len(gaps) // 2]  # dense at both ends
    exp = ExponentialScheduler().schedule(OnSchedule(s), 20)
    np.testing.assert_allclose(np.diff(np.log(exp[:-1])), np.full(19, np.diff(np.log(exp[:-1]))[0]), rtol=1e-9)
    assert exp[0] == pytest.approx(s.sigma_max) and exp[-2] == pytest.approx(s.sigma_min)


@pytest.mark.parametrize("scheduler", [KarrasScheduler(), SigmoidScheduler(), ExponentialScheduler()], ids=lambda s: s.name)
def test_ramps_start_at_the_terminal_sigma_under_zero_terminal_snr(scheduler) -> None:
    s = noise_schedule("scaled_linear", rescale_betas_zero_snr=True)
    levels = scheduler.schedule(OnSchedule(s), 10)
    assert levels[0] == s.sigma_max > 80 and levels[1] == pytest.approx(80.0) and levels[-1] == 0.0


# --- one steps rule --------------------------------------------------------------------


@pytest.mark.parametrize("steps", [0, -1, T + 1, 5000, 2.5, True])
@pytest.mark.parametrize("scheduler", ALL_SCHEDULERS, ids=lambda s: s.name)
def test_steps_out_of_bounds_are_refused_naming_the_scheduler(scheduler, steps) -> None:
    with pytest.raises(LatentzooError) as info:
        scheduler.schedule(OnSchedule(noise_schedule("linear")), steps)
    msg = str(info.value)
    assert scheduler.name in msg and str(T) in msg and "\n" not in msg


@pytest.mark.parametrize("scheduler", ALL_SCHEDULERS, ids=lambda s: s.name)
def test_every_scheduler_returns_decreasing_levels_then_zero(scheduler) -> None:
    for n in (1, 3, 50):
        for name in SCHEDULES:
            levels = scheduler.schedule(OnSchedule(noise_schedule(name)), n)
            assert len(levels) == n + 1 and levels[-1] == 0.0
            assert all(a > b for a, b in itertools.pairwise(levels)) and all(math.isfinite(x) for x in levels)
    with pytest.raises(LatentzooError, match="noise_schedule"):
        scheduler.schedule(object(), 10)  # not a denoiser


def test_steps_rule_follows_num_train_timesteps() -> None:
    prior = OnSchedule(noise_schedule("linear", num_train_timesteps=50))
    assert len(KarrasScheduler().schedule(prior, 50)) == 51
    with pytest.raises(LatentzooError, match="50"):
        KarrasScheduler().schedule(prior, 51)


# --- parity with diffusers (test-only dependency) ---------------------------------------


def diffusers_ddim(schedule: str, spacing: str, **kw):
    diffusers = pytest.importorskip("diffusers")
    start, end = BETAS[schedule]
    extra = {} if start is None else {"beta_start": start, "beta_end": end}
    return diffusers.DDIMScheduler(num_train_timesteps=T, beta_schedule=schedule, timestep_spacing=spacing, **extra, **kw)


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("rescale", [False, True])
def test_alphas_cumprod_match_diffusers(schedule: str, rescale: bool) -> None:
    theirs = diffusers_ddim(schedule, "leading", rescale_betas_zero_snr=rescale)
    ours = noise_schedule(schedule, rescale_betas_zero_snr=rescale)
    np.testing.assert_allclose(ours.alphas_cumprod.numpy(), theirs.alphas_cumprod.double().numpy(), rtol=2e-5, atol=1e-7)


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("n", [1, 7, 10, 50, 999])
@pytest.mark.parametrize("offset", [0, 1])
def test_leading_timesteps_match_diffusers(schedule: str, n: int, offset: int) -> None:
    theirs = diffusers_ddim(schedule, "leading", steps_offset=offset)
    theirs.set_timesteps(n)
    assert timesteps("leading", n, offset, schedule) == theirs.timesteps.tolist()


@pytest.mark.parametrize("spacing", ["trailing", "linspace"])
@pytest.mark.parametrize("n", [2, 10, 50, 250])
def test_trailing_and_linspace_timesteps_match_diffusers(spacing: str, n: int) -> None:
    theirs = diffusers_ddim("scaled_linear", spacing)
    theirs.set_timesteps(n)
    assert timesteps(spacing, n, schedule="scaled_linear") == theirs.timesteps.tolist()
    assert spaced_timesteps(T, n, spacing) == theirs.timesteps.tolist()


def test_a_prior_without_training_schedule_is_one_line_at_build(tmp_path) -> None:
    """As a user meets it: a registry entry for a UNet prior lacking training_schedule, sampled from the CLI."""
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    import latentzoo

    root = Path(latentzoo.__file__).parent
    entry = yaml.safe_load((root / "registry.yaml").read_text())["components"]["digits-ldm"]
    del entry["config"]["training_schedule"]
    entry["weights"]["path"] = str(root / entry["weights"]["path"])
    registry = tmp_path / "reg.yaml"
    registry.write_text(yaml.safe_dump({"components": {"unscheduled-ldm": entry}}))
    parts = ["--prior", "unscheduled-ldm", "--decoder", "digits-vqgan", "--sampler", "ddim", "--scheduler", "leading"]
    out = tmp_path / "x.png"
    proc = subprocess.run(
        [sys.executable, "-m", "latentzoo", "--registry", str(registry), "sample", *parts, "-n", "1", "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "unscheduled-ldm" in lines[0] and "needs training_schedule" in lines[0] and "add it" in lines[0]
    assert not out.exists()
