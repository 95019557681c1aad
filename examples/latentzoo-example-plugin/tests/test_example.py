"""Tests of latentzoo-example-plugin; run after `pip install -e .` with `python -m pytest tests`.

They need latentzoo's registry to name ``digits-vqgan`` and the ``digits`` pipeline (the
shipped registry does).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import latentzoo_example
import pytest
import torch
import yaml
from latentzoo_example.plms import PLMSSampler

import latentzoo
from latentzoo.core.contract.denoising import NoiseSchedule
from latentzoo.core.contract.errors import ContractError, LatentzooError
from latentzoo.core.contract.interfaces import DenoiserPrior, Scheduler

SCHEDULE = NoiseSchedule.from_config(
    {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "num_train_timesteps": 1000}
)

FRAGMENT = Path(latentzoo_example.__file__).with_name("registry.yaml")


def run_latentzoo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "latentzoo", *args], capture_output=True, text=True, timeout=120)


# ---------------------------------------------------------------------------------------
# the plugin as latentzoo sees it


def test_plugin_is_ok_and_declares_both_components() -> None:
    result = run_latentzoo("plugins", "--json")
    assert result.returncode == 0, result.stderr
    mine = next(p for p in json.loads(result.stdout) if p["name"] == "example")
    assert (mine["status"], mine["distribution"], mine["api"]) == ("ok", "latentzoo-example-plugin", 1)
    assert mine["components"] == ["example.plms", "example.preview"]
    assert mine["hooks"] == ["latentzoo_components", "latentzoo_registry"]


def test_registry_entries_are_listed() -> None:
    result = run_latentzoo("list", "--json", "--family", "example")
    assert result.returncode == 0, result.stderr
    entries = {e["name"]: e for e in json.loads(result.stdout)}
    assert set(entries) == {"plms", "digits-preview"}
    assert entries["plms"]["roles"] == ["sampler"] and entries["digits-preview"]["roles"] == ["decoder"]
    assert {e["layer"] for e in entries.values()} == {"plugin:example"}


def test_plugin_module_does_not_import_torch() -> None:
    code = "import sys, latentzoo_example as p; p.latentzoo_components(); p.latentzoo_registry(); print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout.strip()) == (0, "False"), result.stderr


# ---------------------------------------------------------------------------------------
# PLMS on denoisers whose exact answer is known


class PointMass(DenoiserPrior):
    """The exact denoiser of data that is always ``target``: eps = (x_t - sqrt(a) target) / sqrt(1 - a)."""

    prediction_type = "epsilon"
    num_train_timesteps = 1000
    num_classes = None
    noise_schedule = SCHEDULE

    def __init__(self, target: torch.Tensor) -> None:
        self.target, self.calls = target, 0

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return tuple(self.target.shape)

    def eps(self, x: torch.Tensor, a: float) -> torch.Tensor:
        return (x - math.sqrt(a) * self.target) / math.sqrt(1 - a)

    def __call__(self, x: torch.Tensor, t: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        self.calls += 1
        a = 1 / (1 + SCHEDULE.sigma(float(t)) ** 2)
        eps = self.eps(x, a)
        if self.prediction_type == "v_prediction":
            x0 = (x - math.sqrt(1 - a) * eps) / math.sqrt(a)
            return math.sqrt(a) * eps - math.sqrt(1 - a) * x0
        return eps


class Gaussian(PointMass):
    """The exact denoiser of data ~ N(0, std^2 I): E[eps | x_t] = sqrt(1 - a) x_t / (a std^2 + 1 - a)."""

    def __init__(self, std: float, shape: tuple[int, ...]) -> None:
        super().__init__(torch.zeros(shape))
        self.std = std

    def eps(self, x: torch.Tensor, a: float) -> torch.Tensor:
        return math.sqrt(1 - a) * x / (a * self.std**2 + 1 - a)


def exact_solution(noise: torch.Tensor, scheduler: Scheduler, steps: int, std: float) -> torch.Tensor:
    """For N(0, std^2) data the probability-flow ODE solves in closed form (variance-exploding view)."""
    sigma = scheduler.schedule(PointMass(torch.zeros(1)), steps)[0]
    return noise * math.sqrt(sigma**2 + 1) * std / math.sqrt(std**2 + sigma**2)


@pytest.fixture(scope="module")
def scheduler() -> Scheduler:
    return latentzoo.build("leading", "scheduler")


@pytest.fixture
def noise() -> torch.Tensor:
    return torch.randn(64, 1, 8, 8, generator=torch.Generator().manual_seed(0))


def draw(sampler: Any, prior: Any, scheduler: Any, noise: torch.Tensor, steps: int, **options: Any) -> torch.Tensor:
    levels = scheduler.schedule(prior, steps) if scheduler is not None else None
    return sampler.sample(prior, noise, levels=levels, generator=torch.Generator().manual_seed(0), **options)


def test_registry_entry_builds_a_fourth_order_plms() -> None:
    sampler = latentzoo.build("plms", "sampler")
    assert isinstance(sampler, PLMSSampler) and sampler.order == 4


def test_point_mass_is_reached_exactly(scheduler, noise) -> None:
    target = torch.linspace(-1, 1, 64).reshape(1, 8, 8)
    out = draw(PLMSSampler(), PointMass(target), scheduler, noise, 10)
    torch.testing.assert_close(out, target.expand_as(out), atol=1e-4, rtol=0)


def test_higher_order_beats_ddim_on_gaussian_data(scheduler, noise) -> None:
    prior = Gaussian(0.5, (1, 8, 8))
    ddim = latentzoo.build("ddim", "sampler")

    def error(sampler: Any, steps: int) -> float:
        return (draw(sampler, prior, scheduler, noise, steps) - exact_solution(noise, scheduler, steps, 0.5)).abs().max().item()

    assert error(PLMSSampler(), 10) < error(ddim, 10) / 4
    assert error(PLMSSampler(), 40) < 0.01
    assert error(PLMSSampler(order=2), 20) < error(ddim, 20) / 2


def test_order_one_is_ddim(scheduler, noise) -> None:
    prior = Gaussian(0.5, (1, 8, 8))
    ddim = latentzoo.build("ddim", "sampler")
    torch.testing.assert_close(draw(PLMSSampler(order=1), prior, scheduler, noise, 12), draw(ddim, prior, scheduler, noise, 12))


def test_one_evaluation_per_step_plus_one_and_progress(scheduler, noise) -> None:
    prior, calls = Gaussian(0.5, (1, 8, 8)), []
    draw(PLMSSampler(), prior, scheduler, noise, 10, progress=lambda i, n: calls.append((i, n)))
    assert prior.calls == 11
    assert calls == [(i, 10) for i in range(1, 11)]


def test_v_prediction_gives_the_same_samples(scheduler, noise) -> None:
    eps_prior, v_prior = Gaussian(0.5, (1, 8, 8)), Gaussian(0.5, (1, 8, 8))
    v_prior.prediction_type = "v_prediction"
    torch.testing.assert_close(draw(PLMSSampler(), v_prior, scheduler, noise, 10), draw(PLMSSampler(), eps_prior, scheduler, noise, 10))


def test_bad_order_and_missing_scheduler_are_refused(scheduler, noise) -> None:
    with pytest.raises(LatentzooError, match="order must be 1, 2, 3 or 4"):
        PLMSSampler(order=5)
    with pytest.raises(LatentzooError, match="plms walks sigma levels; compose it with a scheduler"):
        draw(PLMSSampler(), Gaussian(0.5, (1, 8, 8)), None, noise, 10)


# ---------------------------------------------------------------------------------------
# the preview decoder and the latent-space contract


def fragment_space() -> dict:
    return yaml.safe_load(FRAGMENT.read_text())["components"]["digits-preview"]["latent_space"]


def test_preview_accepts_exactly_the_digits_vqgan_space() -> None:
    shipped = latentzoo.info("digits-vqgan").latent_space.to_dict()
    raw = {k: v for k, v in shipped.items() if k not in ("scaling_factor", "shift")}
    assert fragment_space() == raw, "re-run fit_preview.py: the preview was fitted to another digits-vqgan"
    assert latentzoo.info("digits-preview").latent_space == latentzoo.info("digits-vqgan").latent_space


def test_preview_approximates_the_real_decoder() -> None:
    from latentzoo.core.runtime.data import load_dataset
    from latentzoo.core.runtime.metrics import psnr

    vq, preview = latentzoo.build("digits-vqgan", "decoder"), latentzoo.build("digits-preview", "decoder")
    images = load_dataset("digits", split="test", size=32, channels=1).images[:128]
    with torch.no_grad():
        z = vq.encode(images)
        real, approx = vq.decode(z).clamp(-1, 1), preview.decode(z)
    assert approx.shape == real.shape == (128, 1, 32, 32)
    assert approx.min() >= -1 and approx.max() <= 1
    mean_image = real.mean(0, keepdim=True).expand_as(real)
    assert psnr(approx, real) > psnr(mean_image, real) + 4  # far better than knowing nothing about z
    with pytest.raises(LatentzooError, match="code indices"):
        preview.decode(torch.zeros(1, 8, 8, dtype=torch.long))


def test_preview_composes_with_the_digits_prior_and_refuses_others(tmp_path: Path) -> None:
    digits = latentzoo.info("digits").data
    spec = latentzoo.compose(prior=digits["prior"], decoder="digits-preview", sampler="plms", scheduler=digits.get("scheduler"))
    assert spec.decoder == "digits-preview"

    other = dict(fragment_space(), autoencoder="sha256:00000000deadbeef", scaling_factor=1.0)
    registry = tmp_path / "other.yaml"
    registry.write_text(
        yaml.safe_dump({"components": {"other-ldm": {"class": "diffusion.unet", "roles": ["prior"], "latent_space": other}}})
    )
    with pytest.raises(ContractError, match=r"prior other-ldm vs decoder digits-preview: autoencoder 'sha256:00000000deadbeef'"):
        latentzoo.compose(prior="other-ldm", decoder="digits-preview", sampler="plms", scheduler="leading", extra=[registry])
