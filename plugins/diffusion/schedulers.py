"""Noise schedules: betas, alphas_cumprod and the timestep sequence (no network).

Spacings (Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps are
Flawed", table 2): ``leading``, ``trailing``, ``linspace``. The previous timestep of a
step is always the next element of the actual sequence (or "the clean end" after the last
one), never ``t - T // n``, which is wrong for trailing and linspace spacing.
"""

from __future__ import annotations

import math

import torch

from latentzoo.core.errors import LatentzooError
from latentzoo.core.interfaces import Scheduler

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid")
SPACINGS = ("leading", "trailing", "linspace")


def make_betas(schedule: str, num_train_timesteps: int, beta_start: float, beta_end: float) -> torch.Tensor:
    """beta_t for t = 0..T-1 in float64."""
    T = num_train_timesteps
    if schedule == "linear":  # Ho et al. 2020, sec. 4
        return torch.linspace(beta_start, beta_end, T, dtype=torch.float64)
    if schedule == "scaled_linear":  # Rombach et al. 2022 (latent diffusion): linear in sqrt(beta)
        return torch.linspace(beta_start**0.5, beta_end**0.5, T, dtype=torch.float64) ** 2
    if schedule == "squaredcos_cap_v2":  # Nichol & Dhariwal 2021, eq. 17, betas capped at 0.999

        def alpha_bar(t: float) -> float:
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

        return torch.tensor([min(1 - alpha_bar((i + 1) / T) / alpha_bar(i / T), 0.999) for i in range(T)], dtype=torch.float64)
    if schedule == "sigmoid":  # GeoDiff (Xu et al. 2022), as diffusers: sigmoid(linspace(-6, 6, T)) scaled to [beta_start, beta_end]
        return torch.sigmoid(torch.linspace(-6, 6, T, dtype=torch.float64)) * (beta_end - beta_start) + beta_start
    raise LatentzooError(f"unknown beta_schedule {schedule!r}; use one of {', '.join(BETA_SCHEDULES)}")


def rescale_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """Shift and scale sqrt(alpha_bar) so the last step has SNR 0 (Lin et al. 2024, algorithm 1)."""
    sqrt_ab = torch.cumprod(1 - betas, 0).sqrt()
    first, last = sqrt_ab[0].clone(), sqrt_ab[-1].clone()
    sqrt_ab = (sqrt_ab - last) * first / (first - last)
    ab = sqrt_ab**2
    alphas = torch.cat([ab[:1], ab[1:] / ab[:-1]])
    return 1 - alphas


class NoiseScheduler(Scheduler):
    """One schedule and one spacing; any sampler can run on it."""

    def __init__(
        self,
        *,
        beta_schedule: str,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        num_train_timesteps: int = 1000,
        timestep_spacing: str = "leading",
        steps_offset: int = 0,
        set_alpha_to_one: bool = True,
        rescale_betas_zero_snr: bool = False,
    ) -> None:
        if timestep_spacing not in SPACINGS:
            raise LatentzooError(f"unknown timestep_spacing {timestep_spacing!r}; use one of {', '.join(SPACINGS)}")
        self.beta_schedule = beta_schedule
        self.num_train_timesteps = num_train_timesteps
        self.timestep_spacing = timestep_spacing
        self.steps_offset = steps_offset
        self.betas = make_betas(beta_schedule, num_train_timesteps, beta_start, beta_end)
        if rescale_betas_zero_snr:
            self.betas = rescale_zero_terminal_snr(self.betas)
        self._alphas_cumprod = torch.cumprod(1.0 - self.betas, dim=0)
        if rescale_betas_zero_snr:
            # keep 1/sqrt(alpha_bar) finite (as diffusers does), but below alpha_bar[T-2] so the
            # schedule stays decreasing (a step 999 -> 998 would otherwise have a negative beta)
            self._alphas_cumprod[-1] = min(2**-24, float(self._alphas_cumprod[-2]) / 2)
        self.final_alpha_cumprod = 1.0 if set_alpha_to_one else float(self._alphas_cumprod[0])

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        return self._alphas_cumprod

    def alpha_bar(self, t: int) -> float:
        """alpha_bar at training timestep t; t = -1 is the clean end of the chain."""
        return self.final_alpha_cumprod if t < 0 else float(self._alphas_cumprod[t])

    def timesteps(self, num_steps: int) -> list[int]:
        T = self.num_train_timesteps
        if not 1 <= num_steps <= T:
            raise LatentzooError(f"steps must be between 1 and the {T} training timesteps, not {num_steps}")
        if self.timestep_spacing == "leading":
            ratio = T // num_steps
            ts = [i * ratio + self.steps_offset for i in range(num_steps)]
        elif self.timestep_spacing == "trailing":
            ratio = T / num_steps
            ts = [round(T - i * ratio) - 1 for i in range(num_steps)][::-1]
        else:
            ts = [round(i * (T - 1) / max(1, num_steps - 1)) for i in range(num_steps)] if num_steps > 1 else [T - 1]
        ts = [min(t, T - 1) for t in ts]
        return sorted(ts, reverse=True)

    def pairs(self, num_steps: int) -> list[tuple[int, int]]:
        """(t, t_prev) for each step, t_prev taken from the actual sequence (-1 after the last)."""
        ts = self.timesteps(num_steps)
        return list(zip(ts, [*ts[1:], -1], strict=True))
