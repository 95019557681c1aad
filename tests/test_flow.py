"""The flow-matching family (plugins/flow): solvers, scheduler, contract checks, the shipped
`digits-flow` pipeline and `latentzoo train flow`, driven through the installed CLI where
they are about the CLI.
"""

from __future__ import annotations

import json
import math
from itertools import pairwise

import pytest
import torch
import yaml
from PIL import Image

from latentzoo.core.contract.errors import LatentzooError
from latentzoo.core.contract.registry import BUILTIN
from latentzoo.core.training import latest_checkpoint
from latentzoo.plugins.flow.samplers import FlowEulerSampler, FlowHeunSampler
from latentzoo.plugins.flow.schedulers import FlowShiftScheduler

BAD_SHIFTS = [0, 0.0, -1.0, float("nan"), float("inf"), float("-inf"), "2", True, None]


# --- the solvers on a closed-form flow ------------------------------------------------


class GaussianFlow:
    """The exact velocity of the straight path from x0 ~ N(mu, s^2) to eps ~ N(0, 1).

    The marginal of x_t = (1 - t) x0 + t eps is N(m_t, sigma_t^2) with m_t = (1 - t) mu and
    sigma_t^2 = (1 - t)^2 s^2 + t^2. The flow that carries one marginal to the next is
    affine, x_t = m_t + sigma_t eps, so v(x, t) = m_t' + sigma_t' / sigma_t (x - m_t) and the
    ODE started at eps (t = 1) ends exactly at mu + s eps (t = 0).
    """

    latent_shape = (1,)

    def __init__(self, mu: float, s: float) -> None:
        self.mu, self.s, self.calls = mu, s, 0

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        t = float(t[0])
        sigma = math.sqrt((1 - t) ** 2 * self.s**2 + t**2)
        dsigma = (t - (1 - t) * self.s**2) / sigma
        return -self.mu + dsigma / sigma * (x - (1 - t) * self.mu)


def solve(sampler, flow: GaussianFlow, eps: torch.Tensor, steps: int, shift: float) -> torch.Tensor:
    levels = FlowShiftScheduler(shift=shift).schedule(flow, steps)
    return sampler.sample(flow, eps, levels=levels, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("shift", [1.0, 3.0])
@pytest.mark.parametrize(("sampler", "order"), [(FlowEulerSampler(), 1), (FlowHeunSampler(), 2)])
def test_flow_solvers_converge_at_their_order(sampler, order, shift):
    flow = GaussianFlow(mu=2.0, s=0.5)
    eps = torch.randn(2000, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    exact = flow.mu + flow.s * eps
    errors = [(solve(sampler, flow, eps, n, shift) - exact).abs().max().item() for n in (16, 32, 64)]
    ratios = [errors[0] / errors[1], errors[1] / errors[2]]
    # Halving the step divides the global error by 2^order (Euler ~2, Heun ~4).
    lo, hi = (1.8, 2.2) if order == 1 else (3.5, 4.6)
    assert all(lo < r < hi for r in ratios), (errors, ratios)
    assert errors[-1] < (0.1 if order == 1 else 0.02)  # and it converges to the exact solution


def test_heun_costs_two_evaluations_per_step_but_one_on_the_last():
    flow = GaussianFlow(mu=0.0, s=1.0)
    eps = torch.randn(8, dtype=torch.float64)
    solve(FlowHeunSampler(), flow, eps, 10, 1.0)
    assert flow.calls == 2 * 10 - 1
    flow.calls = 0
    solve(FlowEulerSampler(), flow, eps, 10, 1.0)
    assert flow.calls == 10


def test_samplers_refuse_levels_that_are_not_flow_times():
    flow, eps = GaussianFlow(0.0, 1.0), torch.zeros(2, dtype=torch.float64)
    g = torch.Generator()
    for levels in (None, [1.0], [1.0, 0.5], [0.5, 0.7, 0.0], [14.6, 3.0, 0.0], [1.0, float("nan"), 0.0]):
        with pytest.raises(LatentzooError):
            FlowEulerSampler().sample(flow, eps, levels=levels, generator=g)


# --- the scheduler ---------------------------------------------------------------------


@pytest.mark.parametrize("shift", [0.25, 1.0, 3.0])
@pytest.mark.parametrize("steps", [1, 2, 30])
def test_shift_schedule_is_sd3_shift_of_a_uniform_grid(steps, shift):
    ts = FlowShiftScheduler(shift=shift).schedule(None, steps)
    assert len(ts) == steps + 1 and ts[0] == 1.0 and ts[-1] == 0.0
    assert all(b < a for a, b in pairwise(ts))
    for i, t in enumerate(ts):
        u = 1 - i / steps
        assert t == pytest.approx(shift * u / (1 + (shift - 1) * u), abs=1e-12)  # Esser et al. 2024, eq. 23
    if steps == 30:  # s > 1 spends more of the steps at high noise
        assert (sum(t > 0.5 for t in ts) > 15) == (shift > 1)


def test_shift_option_at_call_time_overrides_the_instance_default():
    sched = FlowShiftScheduler(shift=1.0)
    assert sched.schedule(None, 4, shift=3.0) == FlowShiftScheduler(shift=3.0).schedule(None, 4)
    assert sched.schedule(None, 4) == [1.0, 0.75, 0.5, 0.25, 0.0]


@pytest.mark.parametrize("bad", BAD_SHIFTS)
def test_a_shift_outside_zero_to_infinity_is_refused(bad):
    if bad is not None:  # None at call time means "the instance's shift"
        with pytest.raises(LatentzooError, match="shift"):
            FlowShiftScheduler().schedule(None, 10, shift=bad)
    with pytest.raises(LatentzooError, match="shift"):
        FlowShiftScheduler(shift=bad)


@pytest.mark.parametrize("bad", ["0", "-1.5", ".nan", ".inf", "-.inf", "'fast'"])
def test_cli_refuses_a_registered_scheduler_with_a_bad_shift(cli, tmp_path, bad):
    fragment = tmp_path / "bad.yaml"
    fragment.write_text(
        f"components:\n  bad-shift:\n    family: flow\n    class: flow.shift\n    roles: [scheduler]\n    config: {{shift: {bad}}}\n"
    )
    out = tmp_path / "s.png"
    result = cli(
        "--registry", str(fragment), "sample", "digits-flow", "--scheduler", "bad-shift", "-n", "1", "-o", str(out), "--no-progress"
    )
    result.assert_one_line_error("shift", "> 0")
    assert not out.exists() and not out.with_suffix(".json").exists()


# --- composition: kinds and levels are checked before anything loads -----------------


def sigma_schedulers(cli) -> list[str]:
    rows = cli("list", "--role", "scheduler", "--json").assert_ok().json()
    return [row["name"] for row in rows if row["family"] != "flow"]


@pytest.mark.parametrize(
    ("sampler", "prior", "scheduler"),
    [
        ("ddim", "digits-flow-prior", "leading"),  # a denoiser sampler on a flow prior
        ("flow-euler", "digits-ldm", "flow-shift"),  # a flow sampler on a denoiser prior
        ("flow-heun", "digits-ldm", "flow-shift"),
    ],
)
def test_compose_refuses_a_sampler_for_another_prior_kind(cli, sampler, prior, scheduler):
    result = cli("compose", "--prior", prior, "--decoder", "digits-vqgan", "--sampler", sampler, "--scheduler", scheduler)
    result.assert_one_line_error(sampler, prior)


def test_compose_refuses_a_flow_sampler_without_or_with_the_wrong_scheduler(cli):
    parts = ["compose", "--prior", "digits-flow-prior", "--decoder", "digits-vqgan", "--sampler", "flow-euler"]
    cli(*parts).assert_one_line_error("flow-euler", "scheduler")
    others = sigma_schedulers(cli)
    assert others
    for scheduler in others:
        cli(*parts, "--scheduler", scheduler).assert_one_line_error("flow-euler", scheduler, "flow")


@pytest.mark.parametrize("sampler", ["flow-euler", "flow-heun"])
def test_compose_accepts_the_flow_pairings(cli, sampler):
    result = cli("compose", "--prior", "digits-flow-prior", "--decoder", "digits-vqgan", "--sampler", sampler, "--scheduler", "flow-shift")
    spec = yaml.safe_load(result.assert_ok().stdout)["pipelines"]["composed"]
    assert spec["sampler"] == sampler and spec["scheduler"] == "flow-shift"


def test_flow_prior_declares_its_scaling():
    entry = yaml.safe_load(BUILTIN.read_text())["components"]["digits-flow-prior"]
    ldm = yaml.safe_load(BUILTIN.read_text())["components"]["digits-ldm"]
    assert entry["class"] == "flow.unet"
    # Same encoder, same data: the measured normalisation is the latent diffusion prior's.
    assert entry["latent_space"]["scaling_factor"] == pytest.approx(ldm["latent_space"]["scaling_factor"], rel=1e-5)
    assert entry["latent_space"]["shift"] == pytest.approx(ldm["latent_space"]["shift"], rel=1e-5)


# --- the shipped pipeline --------------------------------------------------------------


def classify(path, n: int, helpers_read_grid) -> torch.Tensor:
    from latentzoo.plugins.datasets.evaluate import classifier_logits

    with torch.inference_mode():
        return classifier_logits(helpers_read_grid(path, n)).softmax(-1)


def read_grid(path, n: int, size: int = 32, padding: int = 2) -> torch.Tensor:
    import numpy as np

    arr = np.asarray(Image.open(path), dtype=np.float32) / 127.5 - 1.0
    padding = 0 if n == 1 else padding  # one image is written as itself, unpadded
    nrow = int(np.ceil(np.sqrt(n)))
    tiles = []
    for i in range(n):
        r, k = divmod(i, nrow)
        top, left = padding + r * (size + padding), padding + k * (size + padding)
        tiles.append(arr[top : top + size, left : left + size])
    return torch.from_numpy(np.stack(tiles))[:, None]


def test_digits_flow_samples_digits_the_classifier_reads(cli, tmp_path):
    out = tmp_path / "flow.png"
    cli("sample", "digits-flow", "-n", "32", "--seed", "0", "-o", str(out), "--no-progress").assert_ok()
    probs = classify(out, 32, read_grid)
    assert (probs.max(-1).values > 0.8).float().mean() >= 0.75, probs.max(-1).values
    assert len(set(probs.argmax(-1).tolist())) >= 7
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["pipeline"] == "digits-flow" and sidecar["sampler"] == "flow-euler" and sidecar["scheduler"] == "flow-shift"
    assert set(sidecar["sha256"]) == {"digits-vqgan", "digits-flow-prior"}


@pytest.mark.parametrize("sampler", ["flow-euler", "flow-heun"])
def test_same_seed_gives_identical_bytes(cli, tmp_path, sampler):
    a, b, c = (tmp_path / f"{k}.png" for k in "abc")
    for path, seed in ((a, "5"), (b, "5"), (c, "6")):
        cli(
            "sample", "digits-flow", "--sampler", sampler, "-n", "4", "--steps", "8", "--seed", seed, "-o", str(path), "--no-progress"
        ).assert_ok()
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


# --- training -------------------------------------------------------------------------

TINY = ["--set", "block_out_channels=[16,32]", "--set", "layers_per_block=1", "--set", "attention_head_dim=16"]


def test_tiny_training_run_publishes_a_prior_that_samples(cli, tmp_path):
    run = tmp_path / "run"
    cli(
        "train",
        "flow",
        "--encoder",
        "digits-vqgan",
        "-o",
        str(run),
        "--name",
        "tiny-flow",
        "--steps",
        "3",
        "--batch-size",
        "16",
        "--no-progress",
        *TINY,
        "--set",
        "training_shift=2.0",
    ).assert_ok()
    entry = yaml.safe_load((run / "registry.yaml").read_text())["components"]["tiny-flow"]
    assert entry["class"] == "flow.unet" and entry["family"] == "flow"
    assert entry["config"]["block_out_channels"] == [16, 32]
    space = entry["latent_space"]
    assert space["scaling_factor"] > 0 and math.isfinite(space["shift"])
    assert entry["training"]["encoder"] == "digits-vqgan" and entry["training"]["steps"] == 3
    found = latest_checkpoint(run)  # the run's newest verified checkpoint (checkpoints/step-N/)
    assert found is not None
    state = found[1]
    assert state["step"] == 3 and state["train"]["training_shift"] == 2.0
    out = tmp_path / "tiny.png"
    cli(
        "--registry", str(run / "registry.yaml"), "sample", "--prior", "tiny-flow", "--decoder", "digits-vqgan",
        "--sampler", "flow-heun", "--scheduler", "flow-shift", "-n", "2", "--steps", "3", "-o", str(out), "--no-progress",
    ).assert_ok()  # fmt: skip
    assert Image.open(out).size == (2 * 34 + 2, 34 + 2)


@pytest.mark.parametrize(
    ("option", "fragment"),
    [
        ("training_shift=0", "shift"),
        ("training_shift=-2", "shift"),
        ("training_shift=.inf", "shift"),
        ("logit_std=0", "logit_std"),
        ("nonsense=1", "nonsense"),
    ],
)
def test_train_refuses_bad_options_before_writing_anything(cli, tmp_path, option, fragment):
    run = tmp_path / "run"
    result = cli("train", "flow", "--encoder", "digits-vqgan", "-o", str(run), "--steps", "2", "--no-progress", "--set", option)
    result.assert_one_line_error(fragment)
    assert not run.exists()


def test_train_flow_needs_an_encoder(cli, tmp_path):
    cli("train", "flow", "-o", str(tmp_path / "run"), "--steps", "2", "--no-progress").assert_one_line_error("--encoder")
