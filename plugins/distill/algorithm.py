"""The arithmetic of progressive and guidance distillation, next to the papers' listings.

Notation of Salimans & Ho 2022 ("Progressive Distillation for Fast Sampling of Diffusion
Models", Algorithm 2), in the variance-preserving form every denoiser prior here is called at:
z_t = alpha_t x + sigma_t eps with alpha_t = sqrt(abar_t), sigma_t = sqrt(1 - abar_t), and a
level is the scheduler's sigma (x = x0 + sigma eps), abar = 1 / (1 + sigma^2).

- ``predict_x0``: a model output (epsilon, v or x0) -> x_hat, the tensor form of
  ``core.contract.denoising.split_prediction`` (each sample has its own abar).
- ``ddim_step``: one deterministic DDIM step, z_s = alpha_s x_hat + (sigma_s / sigma_t)(z_t - alpha_t x_hat)
  (Song et al. 2021, eq. 12 at eta = 0; Algorithm 2, lines 8-9).
- ``two_step_target``: x_tilde, the x that one student DDIM step from t must predict to land where
  two teacher steps t -> t' -> t'' land (Algorithm 2, line 10):
  x_tilde = (z_t'' - (sigma_t'' / sigma_t) z_t) / (alpha_t'' - (sigma_t'' / sigma_t) alpha_t).
- ``snr_weight``: the truncated-SNR weighting max(SNR_t, 1) of the x-space loss (sec. 4, "truncated SNR").
"""

from __future__ import annotations

import torch

from latentzoo.core.contract.errors import LatentzooError


def view(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Per-sample scalars (B,) broadcast against (B, C, H, W)."""
    return values.to(like.dtype).view(-1, *([1] * (like.ndim - 1)))


def predict_x0(output: torch.Tensor, z: torch.Tensor, abar: torch.Tensor, prediction_type: str) -> torch.Tensor:
    """x_hat from a model output at z = sqrt(abar) x + sqrt(1 - abar) eps (v: Salimans & Ho 2022, sec. 4)."""
    a, s = view(abar.sqrt(), z), view((1 - abar).sqrt(), z)
    if prediction_type == "epsilon":
        return (z - s * output) / a
    if prediction_type == "v_prediction":
        return a * z - s * output
    if prediction_type == "sample":
        return output
    raise LatentzooError(f"unknown prediction_type {prediction_type!r}")


def ddim_step(z: torch.Tensor, x_hat: torch.Tensor, abar_t: torch.Tensor, abar_s: torch.Tensor) -> torch.Tensor:
    """z_s = alpha_s x_hat + (sigma_s / sigma_t)(z_t - alpha_t x_hat): DDIM at eta = 0 (Algorithm 2, lines 8-9)."""
    ratio = view(((1 - abar_s) / (1 - abar_t)).sqrt(), z)
    return view(abar_s.sqrt(), z) * x_hat + ratio * (z - view(abar_t.sqrt(), z) * x_hat)


def two_step_target(z_t: torch.Tensor, z_t2: torch.Tensor, abar_t: torch.Tensor, abar_t2: torch.Tensor) -> torch.Tensor:
    """x_tilde such that one DDIM step t -> t'' from z_t with x_hat = x_tilde lands on z_t'' (Algorithm 2, line 10)."""
    ratio = view(((1 - abar_t2) / (1 - abar_t)).sqrt(), z_t)
    return (z_t2 - ratio * z_t) / (view(abar_t2.sqrt(), z_t) - ratio * view(abar_t.sqrt(), z_t))


def snr_weight(abar: torch.Tensor) -> torch.Tensor:
    """max(SNR_t, 1) with SNR_t = alpha_t^2 / sigma_t^2 (Salimans & Ho 2022, sec. 4: truncated SNR weighting)."""
    return (abar / (1 - abar)).clamp(min=1.0)


def weighted_x_loss(x_hat: torch.Tensor, target: torch.Tensor, abar: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of max(SNR, 1) ||target - x_hat||^2 / dims (Algorithm 2, line 12)."""
    per_sample = (x_hat.float() - target.float()).pow(2).flatten(1).mean(1)
    return (snr_weight(abar).float() * per_sample).mean()


def nested(teacher_levels: list[float], student_levels: list[float]) -> bool:
    """The student's N-step levels are every other level of the teacher's 2N-step ones (then 0): the
    condition under which two teacher steps span exactly one student step."""
    return len(teacher_levels) == 2 * (len(student_levels) - 1) + 1 and teacher_levels[::2] == student_levels
