"""NoiseScheduler: beta schedules, spacings, step pairs, bounds, zero-terminal-SNR, diffusers parity."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from latentzoo.core.errors import LatentzooError
from latentzoo.plugins.diffusion.schedulers import NoiseScheduler, make_betas, rescale_zero_terminal_snr

T = 1000

# (beta_schedule, beta_start, beta_end) as used by the registry entries
CONFIGS = [
    ("linear", 0.0001, 0.02),
    ("scaled_linear", 0.00085, 0.012),
    ("squaredcos_cap_v2", 0.0001, 0.02),
]


def sched(schedule: str = "linear", spacing: str = "leading", **kw) -> NoiseScheduler:
    start, end = {s: (b0, b1) for s, b0, b1 in CONFIGS}[schedule]
    return NoiseScheduler(beta_schedule=schedule, beta_start=start, beta_end=end, timestep_spacing=spacing, **kw)


def cos_alpha_bar(t: float) -> float:
    return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2


# --- betas and alphas_cumprod ---------------------------------------------------------


def test_linear_betas_closed_form() -> None:
    s = sched("linear")
    expected = np.linspace(0.0001, 0.02, T)
    assert s.betas.dtype == torch.float64
    np.testing.assert_allclose(s.betas.numpy(), expected, rtol=0, atol=1e-15)
    assert float(s.betas[0]) == pytest.approx(0.0001) and float(s.betas[-1]) == pytest.approx(0.02)


def test_scaled_linear_betas_closed_form() -> None:
    s = sched("scaled_linear")
    expected = np.linspace(math.sqrt(0.00085), math.sqrt(0.012), T) ** 2
    np.testing.assert_allclose(s.betas.numpy(), expected, rtol=1e-12)
    # linear in sqrt(beta), so NOT linear in beta: the midpoint is below the arithmetic mean
    assert float(s.betas[T // 2]) < (0.00085 + 0.012) / 2 - 1e-4
    sqrt_b = s.betas.sqrt().numpy()
    np.testing.assert_allclose(np.diff(sqrt_b), np.full(T - 1, np.diff(sqrt_b)[0]), rtol=1e-9)


def test_cosine_alphas_cumprod_follows_cos_squared_within_cap() -> None:
    s = sched("squaredcos_cap_v2")
    betas = s.betas.numpy()
    raw = np.array([1 - cos_alpha_bar((i + 1) / T) / cos_alpha_bar(i / T) for i in range(T)])
    np.testing.assert_allclose(betas, np.minimum(raw, 0.999), rtol=1e-12, atol=1e-15)
    assert betas.max() <= 0.999
    capped = raw > 0.999
    assert capped.any() and capped[-1]  # the cap bites at the end of the chain (alpha_bar(1) = 0)
    first_capped = int(np.argmax(capped))
    ab = s.alphas_cumprod.numpy()
    expected = np.array([cos_alpha_bar((i + 1) / T) / cos_alpha_bar(0.0) for i in range(T)])
    # before the cap applies, alpha_bar_t is exactly the cos^2 curve normalised at t = 0
    np.testing.assert_allclose(ab[:first_capped], expected[:first_capped], rtol=1e-9)
    # where a beta is capped, alpha_bar only shrinks by (1 - 0.999) per step, staying above the curve
    assert np.all(ab[first_capped:] >= expected[first_capped:])
    assert ab[-1] == pytest.approx(ab[first_capped - 1] * 0.001 ** (T - first_capped), rel=1e-9)


@pytest.mark.parametrize("schedule", [c[0] for c in CONFIGS])
@pytest.mark.parametrize("rescale", [False, True])
def test_alphas_cumprod_strictly_decreasing_in_unit_interval(schedule: str, rescale: bool) -> None:
    s = sched(schedule, rescale_betas_zero_snr=rescale)
    ab = s.alphas_cumprod
    assert ab.shape == (T,)
    assert torch.all(ab[1:] < ab[:-1])
    assert torch.all(ab > 0) and torch.all(ab < 1)


def test_alphas_cumprod_is_cumprod_of_one_minus_betas() -> None:
    for schedule, _, _ in CONFIGS:
        s = sched(schedule)
        np.testing.assert_allclose(s.alphas_cumprod.numpy(), np.cumprod(1 - s.betas.numpy()), rtol=1e-12)


def test_unknown_schedule_and_spacing_raise() -> None:
    with pytest.raises(LatentzooError, match="beta_schedule"):
        make_betas("quadratic", T, 0.0001, 0.02)
    with pytest.raises(LatentzooError, match="timestep_spacing"):
        NoiseScheduler(beta_schedule="linear", timestep_spacing="uniform")


def test_alpha_bar_clean_end() -> None:
    s = sched("linear")
    assert s.alpha_bar(-1) == 1.0
    assert s.alpha_bar(0) == pytest.approx(1 - 0.0001)
    s2 = sched("linear", set_alpha_to_one=False)
    assert s2.alpha_bar(-1) == pytest.approx(float(s2.alphas_cumprod[0]))


# --- spacing ---------------------------------------------------------------------------


def test_leading_spacing() -> None:
    assert sched(spacing="leading").timesteps(10) == [900, 800, 700, 600, 500, 400, 300, 200, 100, 0]


def test_leading_spacing_steps_offset() -> None:
    assert sched(spacing="leading", steps_offset=1).timesteps(10) == [901, 801, 701, 601, 501, 401, 301, 201, 101, 1]


def test_trailing_spacing() -> None:
    assert sched(spacing="trailing").timesteps(10) == [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]


def test_linspace_spacing() -> None:
    expected = [int(v) for v in np.round(np.linspace(0, T - 1, 10))[::-1]]
    assert sched(spacing="linspace").timesteps(10) == expected
    assert expected[0] == 999 and expected[-1] == 0


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("n", [1, 2, 7, 10, 33, 999, 1000])
def test_timesteps_are_distinct_descending_and_in_range(spacing: str, n: int) -> None:
    ts = sched(spacing=spacing).timesteps(n)
    assert len(ts) == n
    assert len(set(ts)) == n
    assert ts == sorted(ts, reverse=True)
    assert all(0 <= t <= T - 1 for t in ts)


def test_all_timesteps_when_steps_equal_training_timesteps() -> None:
    for spacing in ("leading", "trailing", "linspace"):
        assert sched(spacing=spacing).timesteps(T) == list(range(T - 1, -1, -1))


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("n", [1, 7, 10, 13])
def test_pairs_follow_the_actual_sequence(spacing: str, n: int) -> None:
    s = sched(spacing=spacing)
    ts = s.timesteps(n)
    pairs = s.pairs(n)
    assert [t for t, _ in pairs] == ts
    assert [p for _, p in pairs] == [*ts[1:], -1]
    assert pairs[-1][1] == -1


def test_pairs_differ_from_naive_prev_for_trailing_n7() -> None:
    s = sched(spacing="trailing")
    n = 7
    ts = s.timesteps(n)
    assert ts == [999, 856, 713, 570, 428, 285, 142]
    pairs = s.pairs(n)
    naive = [t - T // n for t in ts]
    # the naive rule points at timesteps that are not in the sequence at all
    assert naive[0] == 857 and 857 not in ts
    assert [p for _, p in pairs] != naive
    for i, (t, t_prev) in enumerate(pairs[:-1]):
        assert t == ts[i] and t_prev == ts[i + 1]
    assert pairs[0] == (999, 856)
    # and the naive rule would never reach the clean end (-1) after the last step either
    assert naive[-1] == 0 and pairs[-1] == (142, -1)


def test_pairs_differ_from_naive_prev_for_linspace() -> None:
    s = sched(spacing="linspace")
    ts = s.timesteps(7)
    naive = [t - T // 7 for t in ts]
    assert [p for _, p in s.pairs(7)] == [*ts[1:], -1]
    assert [p for _, p in s.pairs(7)] != naive


# --- bounds ----------------------------------------------------------------------------


@pytest.mark.parametrize("steps", [0, -1, -50, T + 1, 5000])
@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
def test_steps_out_of_bounds_raise(steps: int, spacing: str) -> None:
    s = sched(spacing=spacing)
    with pytest.raises(LatentzooError) as info:
        s.timesteps(steps)
    msg = str(info.value)
    assert "1" in msg and str(T) in msg and str(steps) in msg
    with pytest.raises(LatentzooError):
        s.pairs(steps)


def test_steps_bounds_follow_num_train_timesteps() -> None:
    s = NoiseScheduler(beta_schedule="linear", num_train_timesteps=50)
    assert len(s.timesteps(50)) == 50
    with pytest.raises(LatentzooError, match="50"):
        s.timesteps(51)


# --- zero terminal SNR -------------------------------------------------------------------


@pytest.mark.parametrize("schedule", [c[0] for c in CONFIGS])
def test_zero_terminal_snr(schedule: str) -> None:
    plain = sched(schedule)
    rescaled = sched(schedule, rescale_betas_zero_snr=True)
    ab = rescaled.alphas_cumprod
    snr_last = float(ab[-1] / (1 - ab[-1]))
    assert snr_last < 1e-6
    # kept just above 0 so 1/sqrt(alpha_bar) stays finite, and below alpha_bar[T-2] so the schedule stays decreasing
    assert 0 < float(ab[-1]) <= 2**-24
    assert float(ab[-1]) < float(ab[-2])
    assert torch.all(1 - ab[1:] / ab[:-1] > 0)  # every step's beta is positive
    if schedule != "squaredcos_cap_v2":  # (the capped cosine schedule already ends at SNR ~ 2e-9)
        # the plain schedule's terminal SNR is clearly positive
        assert float(plain.alphas_cumprod[-1] / (1 - plain.alphas_cumprod[-1])) > snr_last * 10
    # the first step is unchanged
    assert float(ab[0]) == pytest.approx(float(plain.alphas_cumprod[0]), rel=1e-10)


def test_rescale_zero_terminal_snr_algorithm() -> None:
    betas = make_betas("scaled_linear", T, 0.00085, 0.012)
    new = rescale_zero_terminal_snr(betas)
    sqrt_ab_old = torch.cumprod(1 - betas, 0).sqrt()
    sqrt_ab_new = torch.cumprod(1 - new, 0).sqrt()
    assert float(sqrt_ab_new[-1]) == pytest.approx(0.0, abs=1e-7)
    assert float(sqrt_ab_new[0]) == pytest.approx(float(sqrt_ab_old[0]), rel=1e-12)
    # an affine map of sqrt(alpha_bar): shifted by the old last value, scaled to keep the first
    first, last = float(sqrt_ab_old[0]), float(sqrt_ab_old[-1])
    expected = (sqrt_ab_old - last) * first / (first - last)
    torch.testing.assert_close(sqrt_ab_new[:-1], expected[:-1], rtol=1e-9, atol=1e-12)


# --- parity with diffusers (test-only dependency) ---------------------------------------


def diffusers_ddim(schedule: str, spacing: str, **kw):
    diffusers = pytest.importorskip("diffusers")
    start, end = {s: (b0, b1) for s, b0, b1 in CONFIGS}[schedule]
    return diffusers.DDIMScheduler(
        num_train_timesteps=T, beta_start=start, beta_end=end, beta_schedule=schedule, timestep_spacing=spacing, **kw
    )


@pytest.mark.parametrize("schedule", [c[0] for c in CONFIGS])
@pytest.mark.parametrize("rescale", [False, True])
def test_alphas_cumprod_match_diffusers(schedule: str, rescale: bool) -> None:
    theirs = diffusers_ddim(schedule, "leading", rescale_betas_zero_snr=rescale)
    ours = sched(schedule, rescale_betas_zero_snr=rescale)
    np.testing.assert_allclose(ours.alphas_cumprod.numpy(), theirs.alphas_cumprod.double().numpy(), rtol=2e-5, atol=1e-7)
    assert ours.final_alpha_cumprod == pytest.approx(float(theirs.final_alpha_cumprod))


@pytest.mark.parametrize("schedule", [c[0] for c in CONFIGS])
@pytest.mark.parametrize("n", [1, 7, 10, 50, 999])
@pytest.mark.parametrize("offset", [0, 1])
def test_leading_timesteps_match_diffusers(schedule: str, n: int, offset: int) -> None:
    theirs = diffusers_ddim(schedule, "leading", steps_offset=offset)
    theirs.set_timesteps(n)
    ours = sched(schedule, "leading", steps_offset=offset)
    assert ours.timesteps(n) == theirs.timesteps.tolist()
    # for leading spacing diffusers' prev = t - T // n is the next element of the sequence
    ratio = T // n
    assert [p for _, p in ours.pairs(n)][:-1] == [t - ratio for t in theirs.timesteps.tolist()][:-1]


@pytest.mark.parametrize("spacing", ["trailing", "linspace"])
@pytest.mark.parametrize("n", [2, 10, 50, 250])
def test_trailing_and_linspace_timesteps_match_diffusers(spacing: str, n: int) -> None:
    theirs = diffusers_ddim("scaled_linear", spacing)
    theirs.set_timesteps(n)
    assert sched("scaled_linear", spacing).timesteps(n) == theirs.timesteps.tolist()
