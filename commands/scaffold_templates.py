"""Templates of ``latentzoo new-plugin --kind scheduler`` and ``--kind prior`` (``@NAME@`` is substituted).

The sampler templates are in ``scaffold.py``; each set is a working plugin with a test that
passes as generated. The prior set declares a new prior kind with its convention and a
conformance check, and its test runs ``latentzoo check`` on it.
"""

from __future__ import annotations

# ---------------------------------------------------------------------------------------
# --kind scheduler

SCHEDULER_INIT = '''\
"""@DIST@: a latentzoo plugin (declarations only; the scheduler loads when a pipeline is built)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from latentzoo.core.contract.hookspecs import hookimpl

LATENTZOO_PLUGIN_API = @PLUGIN_API@


@hookimpl
def latentzoo_components() -> list[dict[str, Any]]:
    return [
        {
            "name": "@COMPONENT@",
            "roles": ["scheduler"],
            "levels": "sigma",  # the level type it picks: any sampler that walks sigma levels takes it
            "family": "@ENTRY_POINT@",
            "target": "@PACKAGE@.scheduler:LogSNRScheduler",
            "description": "Noise levels uniform in log-SNR between the prior's sigma_max and sigma_min",
        }
    ]


@hookimpl
def latentzoo_registry() -> list[str]:
    return [str(Path(__file__).with_name("registry.yaml"))]
'''

SCHEDULER = '''\
"""Noise levels uniform in log-SNR (SNR = 1 / sigma^2; k-diffusion's "exponential" schedule).

Written against latentzoo's public interfaces: a scheduler picks the noise levels a sampler
walks, from the prior's own training schedule (``prior.noise_schedule``, a
``latentzoo.core.contract.denoising.NoiseSchedule``), and returns ``steps`` strictly decreasing sigmas
then 0.0.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from latentzoo.core.contract.denoising import NoiseSchedule
from latentzoo.core.contract.errors import LatentzooError
from latentzoo.core.contract.interfaces import Prior, Scheduler


class LogSNRScheduler(Scheduler):
    """log sigma_i = log sigma_max + i / (n - 1) (log sigma_min - log sigma_max), then 0."""

    levels: ClassVar[str] = "sigma"

    def schedule(self, prior: Prior, steps: int, **options: Any) -> list[float]:
        schedule = getattr(prior, "noise_schedule", None)
        if not isinstance(schedule, NoiseSchedule):
            raise LatentzooError("scheduler @ENTRY@ picks sigmas of a denoiser's noise_schedule; this prior has none")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise LatentzooError(f"scheduler @ENTRY@ takes at least 1 step, not {steps!r}")
        if steps == 1:
            return [schedule.sigma_max, 0.0]
        hi, lo = math.log(schedule.sigma_max), math.log(schedule.sigma_min)
        return [math.exp(hi + i / (steps - 1) * (lo - hi)) for i in range(steps)] + [0.0]
'''

SCHEDULER_FRAGMENT = """\
# Registry fragment of @DIST@ (paths in here are relative to this file).
components:
  @ENTRY@:
    family: @ENTRY_POINT@
    class: @COMPONENT@
    roles: [scheduler]
    config: {}
    description: Noise levels uniform in log-SNR, from the @DIST@ plugin
"""

SCHEDULER_TEST = '''\
"""Tests for @DIST@; run with `python -m pytest tests` after `pip install -e .`."""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys

import torch
from latentzoo.core.contract.denoising import NoiseSchedule
from latentzoo.core.contract.interfaces import DenoiserPrior

SCHEDULE = NoiseSchedule.from_config({"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "num_train_timesteps": 1000})


class PointMass(DenoiserPrior):
    """The exact denoiser of data that is always ``target``: eps = (x_t - sqrt(a) target) / sqrt(1 - a)."""

    prediction_type = "epsilon"
    num_train_timesteps = 1000
    num_classes = None
    noise_schedule = SCHEDULE

    def __init__(self, target: torch.Tensor) -> None:
        self.target = target

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return tuple(self.target.shape)

    def __call__(self, x: torch.Tensor, t: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        a = 1 / (1 + SCHEDULE.sigma(float(t)) ** 2)
        return (x - math.sqrt(a) * self.target) / math.sqrt(1 - a)


def latentzoo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "latentzoo", *args], capture_output=True, text=True, timeout=120)


def test_scheduler_is_listed_with_its_levels() -> None:
    result = latentzoo("list", "--role", "scheduler", "--json")
    assert result.returncode == 0, result.stderr
    entry = next(e for e in json.loads(result.stdout) if e["name"] == "@ENTRY@")
    assert entry["class"] == "@COMPONENT@" and entry["levels"] == "sigma"


def test_plugin_module_does_not_import_torch() -> None:
    code = "import sys, @PACKAGE@; @PACKAGE@.latentzoo_components(); print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_levels_decrease_and_a_sampler_reaches_the_point_mass() -> None:
    import latentzoo

    scheduler, sampler = latentzoo.build("@ENTRY@", "scheduler"), latentzoo.build("euler", "sampler")
    target = torch.linspace(-1, 1, 16).reshape(1, 4, 4)
    prior = PointMass(target)
    levels = scheduler.schedule(prior, 12)
    assert len(levels) == 13 and levels[-1] == 0.0 and all(b < a for a, b in itertools.pairwise(levels))
    assert math.isclose(levels[0], SCHEDULE.sigma_max) and math.isclose(levels[-2], SCHEDULE.sigma_min)
    noise = torch.randn(4, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    out = sampler.sample(prior, noise, levels=levels, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, target.expand_as(out), atol=1e-4, rtol=0)
'''

# ---------------------------------------------------------------------------------------
# --kind prior: a new kind, its convention, its conformance check, and a prior of that kind

PRIOR_INIT = '''\
"""@DIST@: a latentzoo plugin that adds a prior kind (declarations only; model code loads when built).

The kind ``@KIND@``: a denoiser D(x; sigma) that returns x0 for x = x0 + sigma eps (the
variance-exploding form of Karras et al. 2022, eq. 1-2). Its convention is data, and its
conformance check (``check.py``) is what `latentzoo check PRIOR` runs on every prior of
this kind, whoever wrote it.
"""

from __future__ import annotations

from typing import Any

from latentzoo.core.contract.hookspecs import hookimpl

LATENTZOO_PLUGIN_API = @PLUGIN_API@


@hookimpl
def latentzoo_kinds() -> list[dict[str, Any]]:
    return [
        {
            "name": "@KIND@",
            "description": "x0-predicting denoiser D(x; sigma) for x = x0 + sigma eps (Karras et al. 2022)",
            "convention": {"x_t": "x0 + sigma eps", "predicts": "x0", "levels": "sigma"},
            "check": "@PACKAGE@.check:check",
        }
    ]


@hookimpl
def latentzoo_components() -> list[dict[str, Any]]:
    return [
        {
            "name": "@COMPONENT@",
            "roles": ["prior"],
            "kind": "@KIND@",
            "scaled_latents": True,
            "family": "@ENTRY_POINT@",
            "target": "@PACKAGE@.prior:MemoryDenoiser",
            "description": "The ideal denoiser of a set of stored latents (its weights are the latents)",
        }
    ]
'''

PRIOR = '''\
"""The ideal denoiser of a finite set of latents y_1..y_N (Karras et al. 2022, app. B.3):
D(x; sigma) = sum_i softmax_i(-|x - y_i|^2 / (2 sigma^2)) y_i, the posterior mean of x0 given
x = x0 + sigma eps when x0 is drawn uniformly from the set. It needs no training: its weights
are the latents themselves (``memory``), so it is the smallest prior a kind's check can test.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from latentzoo.core.contract.interfaces import Prior
from torch import nn


class MemoryDenoiser(nn.Module, Prior):
    kind: ClassVar[str] = "@KIND@"

    def __init__(self, *, count: int, shape: list[int]) -> None:
        super().__init__()
        self.shape = tuple(shape)
        self.register_buffer("memory", torch.zeros(count, *self.shape))

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return self.shape

    def forward(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        """x0 = D(x; sigma), the kind's convention."""
        memory = self.memory.flatten(1)
        distances = torch.cdist(x.flatten(1), memory).pow(2)  # (B, N)
        weights = torch.softmax(-distances / (2 * sigma**2), dim=1)
        return (weights @ memory).reshape_as(x)
'''

PRIOR_CHECK = '''\
"""The conformance check of the kind @KIND@ (run by `latentzoo check PRIOR` on real encoded latents).

Noise the latents as the convention says (x = x0 + sigma eps), ask the prior, and measure how
far its output is from the convention's target (x0) and from the reversed one (eps). The first
reading is the declared convention; latentzoo passes the prior when it fits best.
"""

from __future__ import annotations

from typing import Any

import torch
from latentzoo.core.runtime.conformance import Reading

SIGMAS = (0.5, 1.0, 2.0)


def check(prior: Any, x0: torch.Tensor, convention: dict[str, Any], *, generator: torch.Generator, **_: Any) -> list[Reading]:
    err = {"x0": 0.0, "eps": 0.0}
    norm = {"x0": 0.0, "eps": 0.0}
    for sigma in SIGMAS:
        eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
        out = prior(x0 + sigma * eps, sigma).float()
        for name, target in (("x0", x0), ("eps", eps)):
            err[name] += float((out - target).pow(2).sum())
            norm[name] += float(target.pow(2).sum())
    return [
        Reading("predicts x0", err["x0"] / norm["x0"]),
        Reading("predicts eps", err["eps"] / norm["eps"], "it predicts the noise: return x - sigma * output, or declare another kind"),
    ]
'''

PRIOR_TEST = '''\
"""Tests for @DIST@; run with `python -m pytest tests` after `pip install -e .`.

``latentzoo check`` tests the prior against its kind's convention on real images: the prior
here stores 256 training digits encoded by latentzoo's shipped digits VQ-GAN (the weights are
written to a user registry file, with no pipeline), and the check encodes held-out digits.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch
import yaml


def latentzoo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "latentzoo", *args], capture_output=True, text=True, timeout=300)


def test_plugin_declares_its_kind_and_prior() -> None:
    result = latentzoo("plugins", "--json")
    assert result.returncode == 0, result.stderr
    mine = [p for p in json.loads(result.stdout) if p["name"] == "@ENTRY_POINT@"]
    assert len(mine) == 1 and mine[0]["status"] == "ok", mine
    assert mine[0]["components"] == ["@COMPONENT@"]


def test_plugin_module_does_not_import_torch() -> None:
    code = "import sys, @PACKAGE@; @PACKAGE@.latentzoo_kinds(); @PACKAGE@.latentzoo_components(); print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def write_prior(folder: Path) -> Path:
    """A registry file naming the prior, its weights 256 scaled latents of digits[train] in digits-ldm's latent space."""
    import latentzoo
    from latentzoo.core.runtime.data import load_dataset
    from latentzoo.core.contract.registry import Registry
    from latentzoo.core.contract.weights import save_tensors

    space = Registry.load().get("digits-ldm").latent_space
    encoder = latentzoo.build("digits-vqgan", "encoder")
    images = load_dataset("digits", split="train", size=32, channels=1).images[:256]
    with torch.inference_mode():
        memory = (encoder.encode(images) - space.shift) * space.scaling_factor
    sha = save_tensors(folder / "memory.safetensors", {"memory": memory.contiguous()})
    entry = {
        "family": "@ENTRY_POINT@",
        "class": "@COMPONENT@",
        "roles": ["prior"],
        "config": {"count": 256, "shape": list(memory.shape[1:])},
        "weights": {"path": "memory.safetensors", "sha256": sha},
        "latent_space": space.to_dict(),
    }
    path = folder / "mine.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "components": {"@ENTRY@": entry}}), encoding="utf-8")
    return path


def test_latentzoo_check_passes(tmp_path: Path) -> None:
    registry = write_prior(tmp_path)
    result = latentzoo("--registry", str(registry), "check", "@ENTRY@", "-n", "8")
    assert result.returncode == 0, result.stderr
    assert "@ENTRY@: follows kind @KIND@ (predicts x0)" in result.stdout
'''
