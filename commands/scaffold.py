"""``latentzoo new-plugin [--kind sampler|scheduler|prior]``: write a pip-installable plugin package that works as generated.

``sampler`` (the default) registers an Euler sampler for denoiser priors, ``scheduler`` a
log-SNR sigma scheduler (each named in a registry fragment shipped as package data), and
``prior`` a new prior kind with its convention and conformance check plus a prior of that
kind, whose generated test runs ``latentzoo check``. All are written against the public
interfaces; the scheduler and prior templates are in ``scaffold_templates.py``. Nothing here
imports torch.
"""

from __future__ import annotations

import keyword
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from ..core.contract.errors import LatentzooError
from ..core.contract.hookspecs import PLUGIN_API

# PEP 508 distribution names: letters, digits, '.', '_', '-', starting and ending alphanumeric.
_DIST_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$")


@dataclass(frozen=True)
class PluginNames:
    """The names one plugin needs, all derived from its distribution name."""

    dist: str  # as given: my-sampler
    package: str  # import name: my_sampler
    entry_point: str  # entry point in the latentzoo group, "latentzoo-" prefix dropped: my-sampler
    component: str  # declared class: my-sampler.euler (my-sampler.log_snr, my-sampler.memory)
    entry: str  # registry name of the component: my-sampler
    kind: str = "sampler"  # what it scaffolds: sampler, scheduler or prior


KINDS = {"sampler": "euler", "scheduler": "log_snr", "prior": "memory"}  # what new-plugin scaffolds -> its class suffix


def plugin_names(name: str, kind: str = "sampler") -> PluginNames:
    """Validate ``name`` as a distribution name that is also usable as a Python package name."""
    if kind not in KINDS:
        raise LatentzooError(f"new-plugin scaffolds a {', a '.join(KINDS)}, not a {kind!r}")
    if not _DIST_NAME.match(name):
        raise LatentzooError(
            f"{name!r} is not a valid distribution name; use letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        )
    package = re.sub(r"[-_.]+", "_", name).lower()
    if not package.isidentifier() or keyword.iskeyword(package):
        raise LatentzooError(f"{name!r} gives the package name {package!r}, which Python cannot import; start the name with a letter")
    if package == "latentzoo" or package in sys.stdlib_module_names:
        raise LatentzooError(f"{name!r} would shadow the module {package!r}; choose another name, e.g. latentzoo-{name.lower()}-plugin")
    normalized = re.sub(r"[-_.]+", "-", name).lower()
    short = normalized.removeprefix("latentzoo-") or normalized
    taken = _builtin_names()
    if short in taken:
        raise LatentzooError(f"{name!r} would name its {kind} {short!r}, which the built-in registry already has; choose another name")
    if kind == "prior" and short in _installed_kinds():
        raise LatentzooError(
            f"{name!r} would declare the prior kind {short!r}, which an installed plugin already declares; choose another name"
        )
    return PluginNames(name, package, short, f"{short}.{KINDS[kind]}", short, kind)


def _installed_kinds() -> set[str]:
    """Prior kinds the loaded plugins declare (declarations only)."""
    from ..core.contract.plugins import get_manager

    return set(get_manager().kinds())


def _builtin_names() -> set[str]:
    """Names in latentzoo's own registry.yaml (read without loading any plugin)."""
    from ..core.contract.registry import BUILTIN, parse_file

    return {entry.name for entry in parse_file(BUILTIN, "builtin")}


def _files(n: PluginNames) -> dict[str, str]:
    """Relative path -> content of the generated project."""
    subs = {
        "DIST": n.dist,
        "PACKAGE": n.package,
        "ENTRY_POINT": n.entry_point,
        "COMPONENT": n.component,
        "ENTRY": n.entry,
        "KIND": n.entry,  # --kind prior: the new prior kind is named after the plugin
        "PLUGIN_API": str(PLUGIN_API),
    }

    def fill(template: str) -> str:
        return re.sub(r"@(\w+)@", lambda m: subs[m.group(1)], template)

    from . import scaffold_templates as t

    src = f"src/{n.package}"
    files = {
        "sampler": {
            f"{src}/__init__.py": INIT,
            f"{src}/sampler.py": SAMPLER,
            f"{src}/registry.yaml": FRAGMENT,
            "tests/test_plugin.py": TEST,
        },
        "scheduler": {
            f"{src}/__init__.py": t.SCHEDULER_INIT,
            f"{src}/scheduler.py": t.SCHEDULER,
            f"{src}/registry.yaml": t.SCHEDULER_FRAGMENT,
            "tests/test_plugin.py": t.SCHEDULER_TEST,
        },
        "prior": {
            f"{src}/__init__.py": t.PRIOR_INIT,
            f"{src}/prior.py": t.PRIOR,
            f"{src}/check.py": t.PRIOR_CHECK,
            "tests/test_plugin.py": t.PRIOR_TEST,
        },
    }[n.kind]
    readme = README.replace("@WHAT@", WHAT[n.kind]).replace("@TRY@", TRY[n.kind])
    return {"pyproject.toml": fill(PYPROJECT).replace("an Euler sampler for denoiser priors", WHAT[n.kind]), "README.md": fill(readme)} | {
        rel: fill(text) for rel, text in files.items()
    }


def new_plugin(name: str, directory: str | Path | None = None, kind: str = "sampler") -> tuple[PluginNames, Path, list[Path]]:
    """Write the project for plugin ``name`` (a ``kind``: sampler, scheduler or prior) into ``directory`` (default ./NAME); refuse a non-empty one."""
    names = plugin_names(name, kind)
    root = Path(directory) if directory is not None else Path(name)
    if root.exists() and not root.is_dir():
        raise LatentzooError(f"{root} exists and is not a directory; choose another -o")
    if root.is_dir() and any(root.iterdir()):
        raise LatentzooError(f"{root} is not empty; refusing to overwrite it (choose another -o, or remove it)")
    written = []
    try:
        for rel, text in _files(names).items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            written.append(path)
    except OSError as exc:
        raise LatentzooError(f"cannot write the plugin into {root}: {exc.strerror or exc}; choose a writable -o") from exc
    return names, root, written


# ---------------------------------------------------------------------------------------
# templates (@NAME@ is substituted)

PYPROJECT = """\
[build-system]
requires = ["setuptools>=69", "wheel"]
build-backend = "setuptools.build_meta"

[project]
name = "@DIST@"
version = "0.1.0"
description = "A latentzoo plugin: an Euler sampler for denoiser priors."
readme = "README.md"
requires-python = ">=3.10"
# torch comes with latentzoo; the plugin module itself never imports it.
dependencies = ["latentzoo>=0.1"]

[project.optional-dependencies]
test = ["pytest>=8"]

# The one line that makes this a latentzoo plugin.
[project.entry-points.latentzoo]
@ENTRY_POINT@ = "@PACKAGE@"

[tool.setuptools.packages.find]
where = ["src"]

[tool.setuptools.package-data]
@PACKAGE@ = ["registry.yaml"]
"""

TRY = {
    "sampler": "latentzoo sample digits --sampler @ENTRY@ --steps 20 -o samples.png",
    "scheduler": "latentzoo sample digits --scheduler @ENTRY@ --steps 20 -o samples.png",
    "prior": "latentzoo --registry mine.yaml check @ENTRY@   # mine.yaml names its weights (see tests/test_plugin.py)",
}
WHAT = {
    "sampler": "an Euler sampler for denoiser priors",
    "scheduler": "a log-SNR noise-level scheduler for denoiser priors",
    "prior": "a new prior kind (an x0-predicting denoiser) with its checked convention, and a prior of that kind",
}

README = """\
# @DIST@

A [latentzoo](https://github.com/latentzoo/latentzoo) plugin: @WHAT@ (`@COMPONENT@`).

```bash
latentzoo install -e .                 # or: latentzoo install @DIST@
latentzoo plugins                      # @ENTRY_POINT@ ... ok ... @COMPONENT@
latentzoo list --role sampler          # samplers: what each drives and the levels it walks
latentzoo list --role scheduler        # schedulers: the levels each picks
@TRY@
python -m pytest tests                 # the tests pass as generated
```

Layout:

- `src/@PACKAGE@/__init__.py`: the hook implementations. Declarations only: this module
  must not import torch (latentzoo reads it for `list`, `info` and `plugins`).
- the component's module (`sampler.py`, `scheduler.py` or `prior.py`, with `check.py` for a
  kind): imported only when it is built or checked.
- `tests/test_plugin.py`: checks the plugin loads, stays light, and works (a prior: `latentzoo check`).

See latentzoo's `docs/plugins.md` for the six hooks, the seven roles, the latent-space contract
and "Adding a kind".
"""

INIT = '''\
"""@DIST@: a latentzoo plugin (declarations only; the sampler loads when a pipeline is built)."""

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
            "roles": ["sampler"],
            "drives": ["denoiser"],
            "levels": "sigma",
            "family": "@ENTRY_POINT@",
            "target": "@PACKAGE@.sampler:EulerSampler",
            "description": "Euler steps of the probability-flow ODE (Karras et al. 2022)",
        }
    ]


@hookimpl
def latentzoo_registry() -> list[str]:
    return [str(Path(__file__).with_name("registry.yaml"))]
'''

SAMPLER = '''\
"""Euler sampler for denoiser priors (Karras et al. 2022, "Elucidating the Design Space
of Diffusion-Based Generative Models", algorithm 2 without churn).

Written against latentzoo's public denoising API. The scheduler's ``levels`` are noise levels
sigma of the prior's training schedule, in the variance-exploding form x = x0 + sigma eps, and
``Denoiser`` turns the prior (epsilon / v / x0 prediction, class labels, the null class and
classifier-free guidance included) into D(x; sigma). The probability-flow ODE is
dx / dsigma = (x - D(x; sigma)) / sigma (eq. 3, ``to_d``); one Euler step is
x_next = x + (sigma_next - sigma) d. On the schedule's own timesteps it coincides with DDIM
at eta = 0 (Song et al. 2021, sec. 4.3).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from latentzoo.core.contract.denoising import Denoiser, check_sigmas, to_d
from latentzoo.core.contract.interfaces import Progress, Sampler


class EulerSampler(Sampler):
    """Deterministic Euler steps over the scheduler's sigma levels; one model evaluation per step."""

    drives: ClassVar[tuple[str, ...]] = ("denoiser",)
    levels: ClassVar[str | None] = "sigma"

    @torch.inference_mode()
    def sample(
        self,
        prior: Any,
        noise: torch.Tensor,
        *,
        levels: list[float] | None,
        generator: torch.Generator,
        progress: Progress | None = None,
        class_labels: torch.Tensor | None = None,
        guidance: float | None = None,
        **_: Any,
    ) -> torch.Tensor:
        sigmas = check_sigmas(levels, "sampler @ENTRY@")  # sigma_0 > ... > sigma_{n-1} > 0 = sigma_n
        model = Denoiser(prior, class_labels=class_labels, guidance=1.0 if guidance is None else guidance, batch_size=noise.shape[0])
        x = noise * math.sqrt(sigmas[0] ** 2 + 1)  # unit-variance latents plus noise of std sigma_0
        n = len(sigmas) - 1
        for i in range(n):
            d = to_d(x, sigmas[i], model(x, sigmas[i]))
            x = x + (sigmas[i + 1] - sigmas[i]) * d
            if progress:
                progress(i + 1, n)
        return x  # sigma = 0 at the end: x is a sample of x0
'''

FRAGMENT = """\
# Registry fragment of @DIST@ (paths in here are relative to this file).
components:
  @ENTRY@:
    family: @ENTRY_POINT@
    class: @COMPONENT@
    roles: [sampler]
    config: {}
    description: Euler sampler (probability-flow ODE) from the @DIST@ plugin
"""

TEST = '''\
"""Tests for @DIST@; run with `python -m pytest tests` after `pip install -e .`."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
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

    def alpha_bar(self, t: torch.Tensor) -> float:
        return 1 / (1 + SCHEDULE.sigma(float(t)) ** 2)

    def __call__(self, x: torch.Tensor, t: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        a = self.alpha_bar(t)
        return (x - math.sqrt(a) * self.target) / math.sqrt(1 - a)


class Gaussian(PointMass):
    """The exact denoiser of data ~ N(0, std^2 I): E[eps | x_t] = sqrt(1 - a) x_t / (a std^2 + 1 - a)."""

    def __init__(self, std: float, shape: tuple[int, ...]) -> None:
        super().__init__(torch.zeros(shape))
        self.std = std

    def __call__(self, x: torch.Tensor, t: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        a = self.alpha_bar(t)
        return math.sqrt(1 - a) * x / (a * self.std**2 + 1 - a)


def latentzoo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "latentzoo", *args], capture_output=True, text=True, timeout=120)


def test_plugin_is_loaded_and_ok() -> None:
    result = latentzoo("plugins", "--json")
    assert result.returncode == 0, result.stderr
    mine = [p for p in json.loads(result.stdout) if p["name"] == "@ENTRY_POINT@"]
    assert len(mine) == 1 and mine[0]["status"] == "ok", mine
    assert mine[0]["components"] == ["@COMPONENT@"]


def test_sampler_is_listed() -> None:
    result = latentzoo("list", "--role", "sampler", "--json")
    assert result.returncode == 0, result.stderr
    entry = next(e for e in json.loads(result.stdout) if e["name"] == "@ENTRY@")
    assert entry["class"] == "@COMPONENT@" and entry["layer"] == "plugin:@ENTRY_POINT@"


def test_plugin_module_does_not_import_torch() -> None:
    code = "import sys, @PACKAGE@; @PACKAGE@.latentzoo_components(); print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


@pytest.fixture(scope="module")
def parts():
    import latentzoo

    return latentzoo.build("@ENTRY@", "sampler"), latentzoo.build("leading", "scheduler")


def test_point_mass_is_reached_exactly(parts) -> None:
    sampler, scheduler = parts
    target = torch.linspace(-1, 1, 16).reshape(1, 4, 4)
    prior = PointMass(target)
    noise = torch.randn(8, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    out = sampler.sample(prior, noise, levels=scheduler.schedule(prior, 10), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, target.expand_as(out), atol=1e-4, rtol=0)


def exact_solution(noise: torch.Tensor, sigma_max: float, std: float) -> torch.Tensor:
    """For data ~ N(0, std^2) the ODE solves in closed form: x(sigma) = x(sigma_max) sqrt((std^2 + sigma^2) / (std^2 + sigma_max^2))."""
    return noise * math.sqrt(sigma_max**2 + 1) * std / math.sqrt(std**2 + sigma_max**2)


def test_gaussian_data_converges_to_the_exact_solution(parts) -> None:
    sampler, scheduler = parts
    prior = Gaussian(0.5, (1, 8, 8))
    noise = torch.randn(64, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    errors, calls = [], []
    for steps in (10, 40):
        calls.clear()
        levels = scheduler.schedule(prior, steps)
        out = sampler.sample(prior, noise, levels=levels, generator=torch.Generator(), progress=lambda i, n: calls.append((i, n)))
        assert calls == [(i, steps) for i in range(1, steps + 1)]
        errors.append((out - exact_solution(noise, levels[0], 0.5)).abs().max().item())
    assert errors[1] < errors[0] / 2.5, errors  # first order: 4x the steps, about 4x less error
    assert errors[1] < 0.2, errors
'''
