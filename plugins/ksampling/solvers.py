"""k-diffusion-style samplers: one function each over (model, x, sigmas).

``model(x, sigma)`` is a denoiser D(x; sigma) ~ E[x0 | x0 + sigma eps] (the variance-exploding
form of Karras et al. 2022, eq. 1-3; ``latentzoo.core.contract.denoising.Denoiser`` makes one of any
denoiser prior), ``x`` starts at noise of std ~ sigma_0, and ``sigmas`` is a scheduler's strictly
decreasing list of Python floats ending at 0. Every function returns the sample at sigma = 0.

Stochastic samplers take ``noise(sigma, sigma_next)``: a function returning a standard normal
tensor shaped like x for the step sigma -> sigma_next (``brownian.BrownianNoise`` for the SDE
samplers, ``brownian.GaussianNoise`` for the ancestral ones), so that tests can feed a
reference implementation the same noise. ``progress(i, n)`` is called after each step.

Notation: lambda = -log sigma (half the log-SNR), h = lambda_next - lambda > 0.
Shared pieces, written once: ``to_d`` and ``ancestral_step`` (the public denoising API),
``churn`` (Karras et al.'s noise injection, which k-diffusion pastes into several samplers),
``log_midpoint`` and ``lagrange_integral``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from latentzoo.core.contract.denoising import ancestral_step, to_d
from latentzoo.core.contract.interfaces import Progress

Model = Callable[[torch.Tensor, float], torch.Tensor]
Noise = Callable[[float, float], torch.Tensor]


def tick(progress: Progress | None, i: int, n: int) -> None:
    if progress:
        progress(i, n)


def log_midpoint(a: float, b: float) -> float:
    """exp((log a + log b) / 2): the midpoint in log sigma (DPM2's intermediate level)."""
    return math.sqrt(a * b)


def churn(x: torch.Tensor, sigma: float, gamma: float, s_noise: float, noise: Noise | None) -> tuple[torch.Tensor, float]:
    """Raise the noise level from sigma to sigma_hat = (1 + gamma) sigma by adding fresh noise (Karras et al. 2022, alg. 2, lines 4-6)."""
    if gamma <= 0 or noise is None:
        return x, sigma
    sigma_hat = sigma * (gamma + 1)
    return x + noise(sigma, sigma_hat) * (s_noise * math.sqrt(sigma_hat**2 - sigma**2)), sigma_hat


def churn_gamma(sigma: float, steps: int, s_churn: float, s_tmin: float, s_tmax: float) -> float:
    """gamma_i = min(S_churn / N, sqrt(2) - 1) inside [S_tmin, S_tmax], else 0 (Karras et al. 2022, alg. 2, line 3)."""
    return min(s_churn / steps, math.sqrt(2) - 1) if s_churn > 0 and s_tmin <= sigma <= s_tmax else 0.0


# --- ancestral samplers ----------------------------------------------------------------------------


def sample_euler_ancestral(
    model: Model,
    x: torch.Tensor,
    sigmas: Sequence[float],
    *,
    noise: Noise,
    eta: float = 1.0,
    s_noise: float = 1.0,
    progress: Progress | None = None,
) -> torch.Tensor:
    """Euler ancestral: an Euler step of the probability-flow ODE to sigma_down, then fresh noise of std sigma_up.

    Ancestral sampling (Ho et al. 2020) in the sigma form of Karras et al. 2022 (eq. 3 for the
    slope), with k-diffusion's split sigma_down^2 + sigma_up^2 = sigma_next^2.
    """
    n = len(sigmas) - 1
    for i in range(n):
        s, s_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, s)
        down, up = ancestral_step(s, s_next, eta)
        x = x + to_d(x, s, denoised) * (down - s)
        if s_next > 0 and up > 0:
            x = x + noise(s, s_next) * (s_noise * up)
        tick(progress, i + 1, n)
    return x


def dpm2_step(model: Model, x: torch.Tensor, sigma: float, sigma_to: float, denoised: torch.Tensor) -> torch.Tensor:
    """DPM-Solver-2 in the sigma form (Lu et al. 2022, "DPM-Solver", alg. 1 with r = 1/2): midpoint slope at the log-midpoint level."""
    d = to_d(x, sigma, denoised)
    if sigma_to == 0:  # into sigma = 0: an Euler step, which returns D itself
        return x + d * (sigma_to - sigma)
    mid = log_midpoint(sigma, sigma_to)
    x_mid = x + d * (mid - sigma)
    return x + to_d(x_mid, mid, model(x_mid, mid)) * (sigma_to - sigma)


def sample_dpm2(
    model: Model,
    x: torch.Tensor,
    sigmas: Sequence[float],
    *,
    noise: Noise | None = None,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = math.inf,
    s_noise: float = 1.0,
    progress: Progress | None = None,
) -> torch.Tensor:
    """DPM2: DPM-Solver-2 (Lu et al. 2022, alg. 1) on the sigma ODE, with Karras et al.'s optional churn (alg. 2).

    Two model evaluations per step except the last (into sigma = 0).
    """
    n = len(sigmas) - 1
    for i in range(n):
        gamma = churn_gamma(sigmas[i], n, s_churn, s_tmin, s_tmax)
        x, sigma_hat = churn(x, sigmas[i], gamma, s_noise, noise)
        x = dpm2_step(model, x, sigma_hat, sigmas[i + 1], model(x, sigma_hat))
        tick(progress, i + 1, n)
    return x


def sample_dpm2_ancestral(
    model: Model,
    x: torch.Tensor,
    sigmas: Sequence[float],
    *,
    noise: Noise,
    eta: float = 1.0,
    s_noise: float = 1.0,
    progress: Progress | None = None,
) -> torch.Tensor:
    """DPM2 ancestral: a DPM-Solver-2 step (Lu et al. 2022, alg. 1) to sigma_down, then fresh noise of std sigma_up."""
    n = len(sigmas) - 1
    for i in range(n):
        s, s_next = sigmas[i], sigmas[i + 1]
        down, up = ancestral_step(s, s_next, eta)
        x = dpm2_step(model, x, s, down, model(x, s))
        if down > 0 and up > 0:
            x = x + noise(s, s_next) * (s_noise * up)
        tick(progress, i + 1, n)
    return x


def dpmpp_2s_step(model: Model, x: torch.Tensor, sigma: float, sigma_to: float, denoised: torch.Tensor) -> torch.Tensor:
    """DPM-Solver++(2S) (Lu et al. 2022, "DPM-Solver++", alg. 1, r = 1/2): one single-step 2nd-order update in lambda."""
    if sigma_to == 0:
        return denoised
    h = math.log(sigma / sigma_to)
    mid = sigma * math.exp(-h / 2)
    x_mid = (mid / sigma) * x - math.expm1(-h / 2) * denoised
    return (sigma_to / sigma) * x - math.expm1(-h) * model(x_mid, mid)


def sample_dpmpp_2s_ancestral(
    model: Model,
    x: torch.Tensor,
    sigmas: Sequence[float],
    *,
    noise: Noise,
    eta: float = 1.0,
    s_noise: float = 1.0,
    progress: Progress | None = None,
) -> torch.Tensor:
    """DPM-Solver++(2S) ancestral: a DPM-Solver++(2S) step (Lu et al. 2022, alg. 1) to sigma_down, then noise of std sigma_up."""
    n = len(sigmas) - 1
    for i in range(n):
        s, s_next = sigmas[i], sigmas[i + 1]
        down, up = ancestral_step(s, s_next, eta)
        x = dpmpp_2s_step(model, x, s, down, model(x, s))
        if s_next > 0 and up > 0:
            x = x + noise(s, s_next) * (s_noise * up)
        tick(progress, i + 1, n)
    return x


# --- SDE samplers (Brownian-tree noise) -----------------------------------------------------------------


def sample_dpmpp_sde(
    model: Model,
    x: torch.Tensor,
    sigmas: Sequence[float],
    *,
    noise: Noise,
    eta: float = 1.0,
    s_noise: float = 1.0,
    r: float = 0.5,
    progress: Progress | None = None,
) -> torch.Tensor:
    """DPM++ SDE: stochastic DPM-Solver++ with a single-step 2nd-order update (Lu et al. 2022, "DPM-Solver++", sec. 4), as k-diffusion.

    Each step goes to the intermediate level sigma_s = sigma e^{-r h} and then to sigma_next,
    each part as an ancestral DPM-Solver++(1) step (sigma_down, then noise of std sigma_up);
    the second part uses the combination (1 - 1/(2r)) D(x) + 1/(2r) D(x_s). Two model
    evaluations per step except the last (an Euler step into sigma = 0).
    """
    n = len(sigmas) - 1
    fac = 1 / (2 * r)
    for i in range(n):
        s, s_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, s)
        if s_next == 0:
            x = denoised  # Euler into 0
        else:
            h = math.log(s / s_next)
            mid = s * math.exp(-r * h)
            down, up = ancestral_step(s, mid, eta)
            x_mid = (down / s) * x - math.expm1(math.log(down / s)) * denoised
            if up > 0:
                x_mid = x_mid + noise(s, mid) * (s_noise * up)
            denoised_d = (1 - fac) * denoised + fac * model(x_mid, mid)
            down, up = ancestral_step(s, s_next, eta)
            x = (down / s) * x - math.expm1(math.log(down / s)) * denoised_d
            if up > 0:
                x = x + noise(s, s_next) * (s_noise * up)
        tick(progress, i + 1, n)
    return x


def sde_noise_scale(sigma_next: float, h: float, eta: float, s_noise: float) -> float:
    """Std of the noise added by a DPM-Solver++ SDE step: sigma_next sqrt(1 - e^{-2 eta h}) (Lu et al. 2022, eq. 18 in sigma form)."""
    return sigma_next * math.sqrt(-math.expm1(-2 * eta * h)) * s_noise


def sample_dpmpp_2m_sde(
    model: Model,
    x: torch.Tensor,
    sigmas: Sequence[float],
    *,
    noise: Noise,
    eta: float = 1.0,
    s_noise: float = 1.0,
    solver_type: str = "midpoint",
    progress: Progress | None = None,
) -> torch.Tensor:
    """DPM-Solver++(2M) SDE: the multistep 2nd-order solver of the variance-preserving SDE (Lu et al. 2022, "DPM-Solver++", sec. 4-5).

    x_next = (sigma_next / sigma) e^{-eta h} x + (1 - e^{-(1 + eta) h}) D, plus the 2nd-order
    correction from the previous D (``midpoint`` or ``heun`` form, as k-diffusion), plus noise
    of std sigma_next sqrt(1 - e^{-2 eta h}). eta = 0 is the deterministic DPM-Solver++(2M).
    """
    if solver_type not in ("midpoint", "heun"):
        raise ValueError(f"solver_type must be midpoint or heun, not {solver_type!r}")
    n = len(sigmas) - 1
    old, h_last = None, None
    for i in range(n):
        s, s_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, s)
        if s_next == 0:
            x = denoised
        else:
            h = math.log(s / s_next)
            eta_h = eta * h
            phi = -math.expm1(-h - eta_h)  # 1 - e^{-(1 + eta) h}
            x = (s_next / s) * math.exp(-eta_h) * x + phi * denoised
            if old is not None:
                r = h_last / h
                if solver_type == "heun":
                    x = x + (phi / (-h - eta_h) + 1) * (1 / r) * (denoised - old)
                else:
                    x = x + 0.5 * phi * (1 / r) * (denoised - old)
            if eta:
                x = x + noise(s, s_next) * sde_noise_scale(s_next, h, eta, s_noise)
            h_last = h
        old = denoised
        tick(progress, i + 1, n)
    return x


def sample_dpmpp_3m_sde(
    model: Model,
    x: torch.Tensor,
    sigmas: Sequence[float],
    *,
    noise: Noise,
    eta: float = 1.0,
    s_noise: float = 1.0,
    progress: Progress | None = None,
) -> torch.Tensor:
    """DPM-Solver++(3M) SDE: the multistep 3rd-order solver (Lu et al. 2022, "DPM-Solver++", sec. 5 and app. B), as k-diffusion.

    D is extrapolated from the last three evaluations with divided differences in lambda; the
    phi_2 and phi_3 terms are the exponential integrator's weights at (1 + eta) h.
    """
    n = len(sigmas) - 1
    d1_, d2_, h1, h2 = None, None, None, None  # the previous two denoised and their step sizes
    for i in range(n):
        s, s_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, s)
        h = None
        if s_next == 0:
            x = denoised
        else:
            h = math.log(s / s_next)
            h_eta = h * (eta + 1)
            x = math.exp(-h_eta) * x - math.expm1(-h_eta) * denoised
            phi_2 = math.expm1(-h_eta) / h_eta + 1
            if h2 is not None:
                r0, r1 = h1 / h, h2 / h
                d1_0, d1_1 = (denoised - d1_) / r0, (d1_ - d2_) / r1
                d1 = d1_0 + (d1_0 - d1_1) * (r0 / (r0 + r1))
                d2 = (d1_0 - d1_1) / (r0 + r1)
                phi_3 = phi_2 / h_eta - 0.5
                x = x + phi_2 * d1 - phi_3 * d2
            elif h1 is not None:
                x = x + phi_2 * ((denoised - d1_) / (h1 / h))
            if eta:
                x = x + noise(s, s_next) * sde_noise_scale(s_next, h, eta, s_noise)
        d1_, d2_, h1, h2 = denoised, d1_, h, h1
        tick(progress, i + 1, n)
    return x


# --- linear multistep family ------------------------------------------------------------------------

GAUSS_NODES, GAUSS_WEIGHTS = np.polynomial.legendre.leggauss(16)


def lagrange_integral(
    nodes: Sequence[float], j: int, a: float, b: float, weight: Callable[[np.ndarray], np.ndarray] | None = None
) -> float:
    """int_a^b w(t) L_j(t) dt, L_j the Lagrange basis polynomial of ``nodes`` that is 1 at nodes[j].

    16-point Gauss-Legendre: exact for w = 1 (degree <= 3 here) and accurate to rounding for smooth w.
    """
    t = (b - a) / 2 * GAUSS_NODES + (a + b) / 2
    poly = np.ones_like(t)
    for k, node in enumerate(nodes):
        if k != j:
            poly *= (t - node) / (nodes[j] - node)
    w = weight(t) if weight is not None else 1.0
    return float((b - a) / 2 * np.sum(GAUSS_WEIGHTS * w * poly))


def multistep(
    model: Model,
    x: torch.Tensor,
    sigmas: Sequence[float],
    max_order: int,
    coefficients: Callable[[int, int], list[float]],
    progress: Progress | None,
    euler_into_zero: bool = True,
) -> torch.Tensor:
    """x_{i+1} = x_i + sum_j c_ij d_{i-j} over the last ``order`` slopes d = (x - D) / sigma (the Adams-Bashforth form).

    ``coefficients(i, order)`` gives c_i0..c_i(order-1); order grows from 1 to ``max_order``.
    With ``euler_into_zero`` the step into sigma = 0 is an Euler step (it returns D itself), as
    ComfyUI's DEIS / iPNDM do; k-diffusion's LMS extrapolates that step too.
    """
    n = len(sigmas) - 1
    ds: list[torch.Tensor] = []
    for i in range(n):
        d = to_d(x, sigmas[i], model(x, sigmas[i]))
        ds = [d, *ds][:max_order]  # newest first
        order = 1 if euler_into_zero and sigmas[i + 1] == 0 else len(ds)
        c = coefficients(i, order) if order > 1 else [sigmas[i + 1] - sigmas[i]]
        x = x + sum(ci * di for ci, di in zip(c, ds, strict=False))
        tick(progress, i + 1, n)
    return x


def sample_lms(model: Model, x: torch.Tensor, sigmas: Sequence[float], *, order: int = 4, progress: Progress | None = None) -> torch.Tensor:
    """Linear multistep (LMS): Adams-Bashforth on the non-uniform sigma grid, as k-diffusion's sample_lms.

    The slope d(sigma) is interpolated by the Lagrange polynomial through the last ``order``
    slopes and integrated exactly over [sigma_i, sigma_{i+1}] (Karras et al. 2022, eq. 3;
    the Adams-Bashforth construction, e.g. Hairer, Norsett & Wanner, "Solving ODEs I", III.1).
    As in k-diffusion, the last step into sigma = 0 is extrapolated too.
    """
    s = list(sigmas)

    def coefficients(i: int, k: int) -> list[float]:
        nodes = [s[i - j] for j in range(k)]
        return [lagrange_integral(nodes, j, s[i], s[i + 1]) for j in range(k)]

    return multistep(model, x, sigmas, order, coefficients, progress, euler_into_zero=False)


IPNDM_COEFFICIENTS = {2: (3 / 2, -1 / 2), 3: (23 / 12, -16 / 12, 5 / 12), 4: (55 / 24, -59 / 24, 37 / 24, -9 / 24)}


def sample_ipndm(
    model: Model, x: torch.Tensor, sigmas: Sequence[float], *, max_order: int = 4, progress: Progress | None = None
) -> torch.Tensor:
    """iPNDM: improved pseudo numerical method (Zhang & Chen 2023, "Fast Sampling of Diffusion Models with Exponential Integrator", sec. 4 / app. on iPNDM).

    PNDM's linear multistep (Liu et al. 2022) with the fixed Adams-Bashforth weights of order
    1..4 and a lower-order warm start instead of Runge-Kutta, applied to d = (x - D) / sigma
    in sigma (the form of zju-pi/diff-sampler and ComfyUI). The fixed weights assume equal
    steps, so on a non-uniform sigma grid the method is 2nd-order-accurate at best.
    """

    def coefficients(i: int, k: int) -> list[float]:
        return [(sigmas[i + 1] - sigmas[i]) * c for c in IPNDM_COEFFICIENTS[k]]

    return multistep(model, x, sigmas, max_order, coefficients, progress)


# DEIS's VP time t(sigma) (EDM's variance-preserving reparametrisation with sigma_min = 0.002,
# sigma_max = 80, epsilon_s = 1e-3: Karras et al. 2022, table 1), as zju-pi/diff-sampler and ComfyUI use.
_VP_BETA_D = 2 * (math.log(0.002**2 + 1) / 1e-3 - math.log(80.0**2 + 1)) / (1e-3 - 1)
_VP_BETA_MIN = math.log(80.0**2 + 1) - 0.5 * _VP_BETA_D


def vp_time(sigma: float) -> float:
    """t with log(1 + sigma^2) = beta_d t^2 / 2 + beta_min t."""
    return (math.sqrt(_VP_BETA_MIN**2 + 2 * _VP_BETA_D * math.log1p(sigma**2)) - _VP_BETA_MIN) / _VP_BETA_D


def vp_dsigma_dt(t: np.ndarray) -> np.ndarray:
    """d sigma / dt for sigma(t) = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1)."""
    e = np.exp(_VP_BETA_D * t**2 / 2 + _VP_BETA_MIN * t)
    return (_VP_BETA_D * t + _VP_BETA_MIN) * e / (2 * np.sqrt(e - 1))


def sample_deis(
    model: Model, x: torch.Tensor, sigmas: Sequence[float], *, max_order: int = 3, progress: Progress | None = None
) -> torch.Tensor:
    """DEIS, tAB form (Zhang & Chen 2023, "Fast Sampling of Diffusion Models with Exponential Integrator", eq. 14-15).

    The slope d = (x - D) / sigma = eps is extrapolated by the Lagrange polynomial in VP time t
    through the last ``max_order`` points and integrated exactly against d sigma / dt:
    x_{i+1} = x_i + sum_j d_{i-j} int_{t_i}^{t_{i+1}} sigma'(t) L_j(t) dt. ComfyUI's default
    ``deis_mode='tab'``; its coefficients use a 10,000-point Riemann sum, these Gauss-Legendre.
    """
    ts = [vp_time(s) for s in sigmas]

    def coefficients(i: int, k: int) -> list[float]:
        nodes = [ts[i - j] for j in range(k)]
        return [lagrange_integral(nodes, j, ts[i], ts[i + 1], vp_dsigma_dt) for j in range(k)]

    return multistep(model, x, sigmas, max_order, coefficients, progress)


# --- UniPC ---------------------------------------------------------------------------------------------


def unipc_update(
    model: Model,
    x: torch.Tensor,
    history: list[tuple[float, torch.Tensor]],
    sigma_to: float,
    order: int,
    variant: str,
    use_corrector: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One UniP-p predictor (and UniC-p corrector) step in the data prediction (Zhao et al. 2023, "UniPC", alg. 2-3).

    ``history`` holds (sigma, D) of previous evaluations, newest last. In the VE form (divide
    x_t by alpha_t) with h = lambda_to - lambda_0, B(h) = h (bh1) or e^h - 1 (bh2):
    x_t = (sigma_to / sigma_0) x - (e^{-h} - 1) D_0 - B(-h) sum_m rho_m D1_m,
    where D1_m = (D_m - D_0) / r_m and rho solves R rho = b (eq. 8, the order conditions).
    Returns (x_t, D(x_t)) when the corrector ran (its evaluation is reused by the next step).
    """
    sigma_0, d_0 = history[-1]
    if sigma_to == 0:  # h = inf: the first-order step returns D_0 (ComfyUI ends at sigma = 0.001 instead)
        return d_0, None
    h = math.log(sigma_0 / sigma_to)
    rks, d1s = [], []
    for m in range(1, order):
        sigma_m, d_m = history[-(m + 1)]
        rk = math.log(sigma_0 / sigma_m) / h  # (lambda_m - lambda_0) / h, negative
        rks.append(rk)
        d1s.append((d_m - d_0) / rk)
    rks.append(1.0)
    hh = -h  # the data-prediction form integrates in -lambda
    h_phi_1 = math.expm1(hh)
    b_h = hh if variant == "bh1" else math.expm1(hh)
    R, b = [], []
    h_phi_k, factorial = h_phi_1 / hh - 1, 1
    for k in range(1, order + 1):
        R.append([rk ** (k - 1) for rk in rks])
        b.append(h_phi_k * factorial / b_h)
        factorial *= k + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    x_base = (sigma_to / sigma_0) * x - h_phi_1 * d_0
    x_t = x_base
    if d1s:
        rhos_p = [0.5] if order == 2 else np.linalg.solve(np.array(R)[:-1, :-1], np.array(b)[:-1]).tolist()
        x_t = x_base - b_h * sum(rho * d1 for rho, d1 in zip(rhos_p, d1s, strict=True))
    if not use_corrector:
        return x_t, None
    rhos_c = [0.5] if order == 1 else np.linalg.solve(np.array(R), np.array(b)).tolist()
    model_t = model(x_t, sigma_to)
    corr = sum((rho * d1 for rho, d1 in zip(rhos_c[:-1], d1s, strict=True)), torch.zeros_like(x))
    return x_base - b_h * (corr + rhos_c[-1] * (model_t - d_0)), model_t


def sample_unipc(
    model: Model, x: torch.Tensor, sigmas: Sequence[float], *, variant: str = "bh1", order: int = 3, progress: Progress | None = None
) -> torch.Tensor:
    """UniPC: unified predictor-corrector, multistep, data prediction (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework").

    Order ``order`` (3, as ComfyUI), lower order for the first steps and the last ones
    (``lower_order_final``); the corrector reuses the model evaluation at the predicted point,
    so one model evaluation per step; the last step (into sigma = 0, first order) has no
    corrector and returns D. ComfyUI instead ends at sigma = 0.001.
    """
    if variant not in ("bh1", "bh2"):
        raise ValueError(f"variant must be bh1 or bh2, not {variant!r}")
    n = len(sigmas) - 1
    order = max(1, min(order, n - 1)) if n > 1 else 1
    history = [(sigmas[0], model(x, sigmas[0]))]
    for i in range(1, n + 1):
        step_order = min(order, i, n + 1 - i)  # warm-up, then lower order at the end
        last = i == n
        x, model_x = unipc_update(model, x, history, sigmas[i], step_order, variant, use_corrector=not last)
        if not last:
            history = [*history, (sigmas[i], model_x if model_x is not None else model(x, sigmas[i]))][-order:]
        tick(progress, i, n)
    return x


# --- DPM-Solver (fast and adaptive) -------------------------------------------------------------------


class DPMSolver:
    """DPM-Solver-1, -2, -3 single steps in lambda = -log sigma (Lu et al. 2022, "DPM-Solver", alg. 1-2 and app. B).

    ``eps(x, lam)`` = (x - D(x; sigma)) / sigma is cached per step under its stage name so a
    step reuses the evaluation at its start, as k-diffusion's DPMSolver.
    """

    def __init__(self, model: Model) -> None:
        self.model, self.evaluations = model, 0

    @staticmethod
    def sigma(lam: float) -> float:
        return math.exp(-lam)

    def eps(self, cache: dict[str, torch.Tensor], key: str, x: torch.Tensor, lam: float) -> torch.Tensor:
        if key not in cache:
            sigma = self.sigma(lam)
            cache[key] = (x - self.model(x, sigma)) / sigma
            self.evaluations += 1
        return cache[key]

    def step1(self, x: torch.Tensor, lam: float, lam_next: float, cache: dict) -> torch.Tensor:
        """DPM-Solver-1 (= DDIM): x - sigma_next (e^h - 1) eps."""
        h = lam_next - lam
        return x - self.sigma(lam_next) * math.expm1(h) * self.eps(cache, "eps", x, lam)

    def step2(self, x: torch.Tensor, lam: float, lam_next: float, cache: dict, r1: float = 0.5) -> torch.Tensor:
        """DPM-Solver-2 (alg. 1): one intermediate evaluation at lambda + r1 h."""
        h = lam_next - lam
        eps = self.eps(cache, "eps", x, lam)
        s1 = lam + r1 * h
        u1 = x - self.sigma(s1) * math.expm1(r1 * h) * eps
        eps_r1 = self.eps(cache, "eps_r1", u1, s1)
        sn = self.sigma(lam_next)
        return x - sn * math.expm1(h) * eps - sn / (2 * r1) * math.expm1(h) * (eps_r1 - eps)

    def step3(self, x: torch.Tensor, lam: float, lam_next: float, cache: dict, r1: float = 1 / 3, r2: float = 2 / 3) -> torch.Tensor:
        """DPM-Solver-3 (alg. 2): intermediate evaluations at lambda + r1 h and lambda + r2 h."""
        h = lam_next - lam
        eps = self.eps(cache, "eps", x, lam)
        s1, s2 = lam + r1 * h, lam + r2 * h
        u1 = x - self.sigma(s1) * math.expm1(r1 * h) * eps
        eps_r1 = self.eps(cache, "eps_r1", u1, s1)
        u2 = (
            x
            - self.sigma(s2) * math.expm1(r2 * h) * eps
            - self.sigma(s2) * (r2 / r1) * (math.expm1(r2 * h) / (r2 * h) - 1) * (eps_r1 - eps)
        )
        eps_r2 = self.eps(cache, "eps_r2", u2, s2)
        sn = self.sigma(lam_next)
        return x - sn * math.expm1(h) * eps - sn / r2 * (math.expm1(h) / h - 1) * (eps_r2 - eps)

    def ancestral(self, lam: float, lam_next: float, lam_end: float, eta: float) -> tuple[float, float]:
        """(lambda to step to, std of the noise added after) for eta > 0, as k-diffusion's DPMSolver."""
        if not eta:
            return lam_next, 0.0
        down, _ = ancestral_step(self.sigma(lam), self.sigma(lam_next), eta)
        lam_to = min(lam_end, -math.log(down))
        return lam_to, math.sqrt(max(0.0, self.sigma(lam_next) ** 2 - self.sigma(lam_to) ** 2))


def level_range(sigmas: Sequence[float]) -> tuple[float, float]:
    """(sigma_max, smallest positive sigma): DPM-fast / DPM-adaptive use only the ends of the levels, as ComfyUI."""
    positive = [s for s in sigmas if s > 0]
    return positive[0], positive[-1]


def sample_dpm_fast(
    model: Model,
    x: torch.Tensor,
    sigmas: Sequence[float],
    *,
    noise: Noise | None = None,
    eta: float = 0.0,
    s_noise: float = 1.0,
    progress: Progress | None = None,
) -> torch.Tensor:
    """DPM-Solver-fast (Lu et al. 2022, "DPM-Solver", sec. 3.4): steps of order 3, 3, ..., then 2 and 1 or 3 and r, uniform in lambda.

    Uses ``len(sigmas) - 1`` model evaluations between sigma_max and the smallest positive
    sigma of the levels (their spacing is ignored, as in ComfyUI's dpm_fast), then returns
    D(x; sigma_min) (one more evaluation) so the output is at sigma = 0 like every sampler here.
    """
    sigma_max, sigma_min = level_range(sigmas)
    nfe = len(sigmas) - 1
    solver = DPMSolver(model)
    lam_start, lam_end = -math.log(sigma_max), -math.log(sigma_min)
    m = nfe // 3 + 1
    lams = [lam_start + (lam_end - lam_start) * k / m for k in range(m + 1)]
    lams[-1] = lam_end
    orders = [3] * (m - 2) + [2, 1] if nfe % 3 == 0 else [3] * (m - 1) + [nfe % 3]
    for i, order in enumerate(orders):
        lam, lam_next = lams[i], lams[i + 1]
        lam_to, up = solver.ancestral(lam, lam_next, lam_end, eta)
        cache: dict[str, torch.Tensor] = {}
        x = (solver.step1, solver.step2, solver.step3)[order - 1](x, lam, lam_to, cache)
        if up > 0 and noise is not None:
            x = x + noise(solver.sigma(lam), solver.sigma(lam_next)) * (up * s_noise)
        tick(progress, i + 1, len(orders))
    return model(x, sigma_min)


class PIDStepSizeController:
    """The step-size controller of k-diffusion's DPM-adaptive: h <- h * limiter(prod eps_k^b_k).

    A PID controller on the inverse error (Söderlind 2003, "Digital filters in adaptive
    time-stepping"), with the arctan limiter 1 + atan(f - 1); a step is accepted when the
    factor reaches ``accept_safety``. icoeff = 1 alone is the classic integral controller
    h <- h (1 / err)^(1 / order) (Lu et al. 2022, "DPM-Solver", alg. 4).
    """

    def __init__(
        self, h: float, pcoeff: float, icoeff: float, dcoeff: float, order: float, accept_safety: float, eps: float = 1e-8
    ) -> None:
        self.h = h
        self.b1 = (pcoeff + icoeff + dcoeff) / order
        self.b2 = -(pcoeff + 2 * dcoeff) / order
        self.b3 = dcoeff / order
        self.accept_safety, self.eps = accept_safety, eps
        self.errs: list[float] = []

    def propose_step(self, error: float) -> bool:
        inv_error = 1 / (error + self.eps)
        if not self.errs:
            self.errs = [inv_error, inv_error, inv_error]
        self.errs[0] = inv_error
        factor = self.errs[0] ** self.b1 * self.errs[1] ** self.b2 * self.errs[2] ** self.b3
        factor = 1 + math.atan(factor - 1)
        accept = factor >= self.accept_safety
        if accept:
            self.errs[2], self.errs[1] = self.errs[1], self.errs[0]
        self.h *= factor
        return accept


def sample_dpm_adaptive(
    model: Model,
    x: torch.Tensor,
    sigmas: Sequence[float],
    *,
    noise: Noise | None = None,
    order: int = 3,
    rtol: float = 0.05,
    atol: float = 0.0078,
    h_init: float = 0.05,
    pcoeff: float = 0.0,
    icoeff: float = 1.0,
    dcoeff: float = 0.0,
    accept_safety: float = 0.81,
    eta: float = 0.0,
    s_noise: float = 1.0,
    max_evaluations: int = 10_000,
    progress: Progress | None = None,
    info: dict | None = None,
) -> torch.Tensor:
    """DPM-Solver-12 / -23 with adaptive step size (Lu et al. 2022, "DPM-Solver", sec. 3.3 and alg. 4-5).

    Each step computes a lower- and a higher-order solution (1 and 2, or 2 and 3) from the same
    evaluations; their difference, scaled by max(atol, rtol * |x|), is the local error that
    the PID controller turns into the next step size in lambda. Runs from sigma_max to the
    smallest positive sigma of the levels (the step count is the controller's, not the
    scheduler's), then returns D(x; sigma_min). ``info`` (if given) receives steps, nfe,
    n_accept, n_reject. Stops with an error after ``max_evaluations`` model evaluations.
    """
    if order not in (2, 3):
        raise ValueError(f"order must be 2 or 3, not {order}")
    sigma_max, sigma_min = level_range(sigmas)
    solver = DPMSolver(model)
    lam, lam_end = -math.log(sigma_max), -math.log(sigma_min)
    x_prev = x
    pid = PIDStepSizeController(abs(h_init), pcoeff, icoeff, dcoeff, 1.5 if eta else order, accept_safety)
    stats = {"steps": 0, "nfe": 0, "n_accept": 0, "n_reject": 0}
    while lam < lam_end - 1e-5:
        if stats["nfe"] >= max_evaluations:
            raise RuntimeError(f"dpm-adaptive took more than {max_evaluations} model evaluations; raise rtol / atol")
        lam_next = min(lam_end, lam + pid.h)
        lam_to, up = solver.ancestral(lam, lam_next, lam_end, eta)
        cache: dict[str, torch.Tensor] = {}
        if order == 2:
            x_low = solver.step1(x, lam, lam_to, cache)
            x_high = solver.step2(x, lam, lam_to, cache)
        else:
            x_low = solver.step2(x, lam, lam_to, cache, r1=1 / 3)
            x_high = solver.step3(x, lam, lam_to, cache)
        delta = torch.maximum(torch.full_like(x_low, atol), rtol * torch.maximum(x_low.abs(), x_prev.abs()))
        error = float(torch.linalg.norm((x_low - x_high) / delta)) / math.sqrt(x.numel())
        if pid.propose_step(error):
            x_prev = x_low
            x = x_high
            if up > 0 and noise is not None:
                x = x + noise(solver.sigma(lam), solver.sigma(lam_next)) * (up * s_noise)
            lam = lam_next
            stats["n_accept"] += 1
            tick(progress, round(100 * (lam + math.log(sigma_max)) / (lam_end + math.log(sigma_max))), 100)
        else:
            stats["n_reject"] += 1
        stats["nfe"] += order
        stats["steps"] += 1
    if info is not None:
        info.update(stats)
    return model(x, sigma_min)
