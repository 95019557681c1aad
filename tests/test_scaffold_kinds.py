"""``new-plugin --kind scheduler|prior`` (issue 28, item 6): each scaffold works as generated.

The fast tests import the generated package from its folder (no install) and check its
declarations with the plugin loader's own validators, then run its component: the scheduler
on a point-mass prior with the built-in Euler sampler, the prior's new kind through the same
conformance machinery ``latentzoo check`` uses. The slow twin installs each project and runs its
generated tests (which run ``latentzoo check`` in a subprocess).
"""

from __future__ import annotations

import importlib
import itertools
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from latentzoo.commands.scaffold import new_plugin
from latentzoo.core.contract.errors import LatentzooError
from latentzoo.core.contract.plugins import _check_component, _check_kind, get_manager


def generate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, kind: str):
    names, root, _ = new_plugin(name, tmp_path / name, kind)
    monkeypatch.syspath_prepend(str(root / "src"))
    package = importlib.import_module(names.package)
    return names, root, package


def test_scheduler_scaffold_declares_and_schedules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    names, root, package = generate(tmp_path, monkeypatch, "latentzoo-fast-sched", "scheduler")
    (decl,) = package.latentzoo_components()
    assert _check_component(decl)["levels"] == "sigma" and decl["roles"] == ["scheduler"] and decl["name"] == "fast-sched.log_snr"
    assert (root / f"src/{names.package}/registry.yaml").read_text(encoding="utf-8").count("class: fast-sched.log_snr") == 1
    scheduler = importlib.import_module(f"{names.package}.scheduler").LogSNRScheduler()
    from unets import OnSchedule, noise_schedule

    prior = OnSchedule(noise_schedule("scaled_linear"))
    levels = scheduler.schedule(prior, 8)
    assert len(levels) == 9 and levels[-1] == 0.0 and all(b < a for a, b in itertools.pairwise(levels))
    assert math.isclose(levels[0], prior.noise_schedule.sigma_max) and math.isclose(levels[-2], prior.noise_schedule.sigma_min)
    with pytest.raises(LatentzooError, match="takes at least 1 step"):
        scheduler.schedule(prior, 0)


def test_prior_scaffold_declares_a_kind_that_latentzoo_check_passes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import latentzoo
    from latentzoo.core.contract.registry import Registry
    from latentzoo.core.runtime import conformance
    from latentzoo.core.runtime.data import load_dataset

    names, _, package = generate(tmp_path, monkeypatch, "latentzoo-fast-kind", "prior")
    (kind,) = package.latentzoo_kinds()
    (decl,) = package.latentzoo_components()
    assert _check_kind(kind)["convention"] == {"x_t": "x0 + sigma eps", "predicts": "x0", "levels": "sigma"}
    assert _check_component(decl)["kind"] == kind["name"] == "fast-kind"
    monkeypatch.setitem(get_manager().kinds(), "fast-kind", {**kind, "plugin": "fast-kind"})

    space = Registry.load().get("digits-ldm").latent_space
    encoder = latentzoo.build("digits-vqgan", "encoder")

    def latents(split: str, n: int) -> torch.Tensor:
        with torch.inference_mode():
            return (
                encoder.encode(load_dataset("digits", split=split, size=32, channels=1).images[:n]) - space.shift
            ) * space.scaling_factor

    memory = latents("train", 64)
    prior = importlib.import_module(f"{names.package}.prior").MemoryDenoiser(count=64, shape=list(memory.shape[1:]))
    prior.memory.copy_(memory)
    verdict = conformance.judge(prior, "fast-kind", latents("test", 4), name="mine", data="digits")
    assert verdict.ok and verdict.readings[0].error < 0.5 * verdict.readings[1].error, verdict.line()

    class PredictsNoise(torch.nn.Module):  # the reversed convention: caught in one line
        def forward(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
            return (x - prior(x, sigma)) / sigma

    wrong = conformance.judge(PredictsNoise(), "fast-kind", latents("test", 4), name="wrong", data="digits")
    assert not wrong.ok and "its predictions fit predicts eps" in wrong.line() and "\n" not in wrong.line()


def test_new_plugin_kind_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(LatentzooError, match="would declare the prior kind 'flow', which an installed plugin already declares"):
        new_plugin("flow", tmp_path / "x", "prior")
    with pytest.raises(LatentzooError, match="scaffolds a sampler, a scheduler, a prior, not a 'decoder'"):
        new_plugin("fine-name", tmp_path / "y", "decoder")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["scheduler", "prior"])
def test_generated_project_installs_and_its_tests_pass(tmp_path: Path, kind: str, helpers) -> None:
    """The whole path a plugin author takes: generate, install (a wheel, offline), run the generated tests."""
    names, root, _ = new_plugin(f"latentzoo-slow-{kind}", tmp_path / "project", kind)
    src = root / "src" / names.package
    files = {f"{names.package}/{p.name}": p.read_text(encoding="utf-8") for p in src.iterdir() if p.is_file()}
    wheel = helpers.build_wheel(tmp_path / "wheels", names.dist, "0.1.0", files, {names.entry_point: names.package})
    site = helpers.pip_install([wheel], tmp_path / "site")
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(root / "tests")],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
