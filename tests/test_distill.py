"""Fast sampling by distillation (issue 25): progressive (Salimans & Ho 2022) and guidance (Meng et al. 2023).

Tiny runs on the real digits data through the installed CLI: a few optimizer steps of a student
of the shipped digits teachers, the run's registry sampled at once, exact --resume, and each
class of bad input refused in one line before anything is written.
"""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file

from latentzoo.plugins.distill.algorithm import ddim_step, nested, predict_x0, two_step_target

TINY = ["--steps", "2", "--batch-size", "8", "--checkpoint-every", "1", "--no-progress", "--device", "cpu"]


def progressive(out, *extra: str) -> list[str]:
    return [
        "distill",
        "progressive",
        "--teacher",
        "digits",
        "--teacher-steps",
        "4",
        "--scheduler",
        "trailing",
        "-o",
        str(out),
        *TINY,
        *extra,
    ]


def test_one_student_ddim_step_on_the_two_step_target_lands_where_two_teacher_steps_land():
    g = torch.Generator().manual_seed(0)
    z, x1, x2 = (torch.randn(5, 3, 8, 8, generator=g) for _ in range(3))
    abar = [torch.full((5,), a, dtype=torch.float64) for a in (0.05, 0.3, 0.8)]
    z1 = ddim_step(z.double(), x1.double(), abar[0], abar[1])
    z2 = ddim_step(z1, x2.double(), abar[1], abar[2])
    target = two_step_target(z.double(), z2, abar[0], abar[2])
    assert torch.allclose(ddim_step(z.double(), target, abar[0], abar[2]), z2, atol=1e-10)
    final = two_step_target(z.double(), z2, abar[0], torch.ones(5, dtype=torch.float64))  # into sigma = 0: x_tilde = z''
    assert torch.allclose(final, z2)


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
def test_predict_x0_inverts_each_training_target(prediction):
    from latentzoo.core.contract.denoising import training_target

    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(4, 3, 8, 8, generator=g), torch.randn(4, 3, 8, 8, generator=g)
    abar = torch.tensor([0.01, 0.2, 0.5, 0.99])
    a, b = abar.sqrt().view(-1, 1, 1, 1), (1 - abar).sqrt().view(-1, 1, 1, 1)
    out = training_target(prediction, x0, eps, a, b)
    assert torch.allclose(predict_x0(out, a * x0 + b * eps, abar, prediction), x0, atol=1e-4)


def test_trailing_levels_nest_when_halved_and_leading_ones_do_not():
    import latentzoo

    prior = latentzoo.build("digits-ldm", "prior")
    trailing, leading = latentzoo.build("trailing", "scheduler"), latentzoo.build("leading", "scheduler")
    for n in (1, 2, 4, 8):
        assert nested(trailing.schedule(prior, 2 * n), trailing.schedule(prior, n))
    assert not nested(leading.schedule(prior, 8), leading.schedule(prior, 4))


def test_progressive_rounds_publish_students_that_sample_at_once(cli, tmp_path):
    out = tmp_path / "fast"
    r = cli(*progressive(out, "--rounds", "2"))
    assert r.returncode == 0, r.stderr
    registry = out / "registry.yaml"
    import yaml

    doc = yaml.safe_load(registry.read_text())
    assert set(doc["components"]) == {"digits-fast-2-prior", "digits-fast-1-prior"}
    one = doc["components"]["digits-fast-1-prior"]
    assert one["distilled_for"] == {
        "teacher": "digits",
        "method": "progressive",
        "sampler": "ddim",
        "scheduler": "trailing",
        "steps": 1,
        "teacher_steps": 2,
    }
    assert one["config"]["prediction_type"] == "v_prediction"  # the paper's parametrisation
    assert one["latent_space"]["scaling_factor"] == pytest.approx(1.5630550384521484)  # the teacher's latent space, kept
    assert one["metrics"]["cpu_minutes"] >= 0
    assert doc["pipelines"]["digits-fast"]["defaults"] == {"steps": 1}
    r = cli("--registry", str(registry), "sample", "digits-fast", "-n", "2", "-o", str(tmp_path / "s.png"))
    assert r.returncode == 0 and "warning" not in r.stderr, r.stderr
    assert (tmp_path / "s.png").stat().st_size > 0
    r = cli(*progressive(out, "--rounds", "2"))  # the same -o again, without --resume
    assert r.returncode == 1 and "already holds a distillation run" in r.stderr and "--resume" in r.stderr


def test_resume_continues_a_round_exactly(cli, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    common = ("--rounds", "1", "--teacher-steps", "2")
    assert cli(*progressive(straight, *common, "--steps", "4")).returncode == 0
    assert cli(*progressive(split, *common, "--steps", "2")).returncode == 0
    r = cli(*progressive(split, *common, "--steps", "4", "--resume"))
    assert r.returncode == 0, r.stderr
    a = load_file(str(straight / "round-1" / "model.safetensors"))
    b = load_file(str(split / "round-1" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_resume_after_a_finished_round_keeps_it_and_trains_the_next(cli, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert cli(*progressive(straight, "--rounds", "2")).returncode == 0
    assert cli(*progressive(split, "--rounds", "1")).returncode == 0  # as if stopped after round 1
    before = (split / "round-1" / "model.safetensors").read_bytes()
    assert cli(*progressive(split, "--rounds", "2", "--resume")).returncode == 0
    assert (split / "round-1" / "model.safetensors").read_bytes() == before
    assert (split / "round-2" / "model.safetensors").read_bytes() == (straight / "round-2" / "model.safetensors").read_bytes()


@pytest.mark.parametrize("teacher", ["digits-flow", "digits-dalle", "digits-vae", "digits-vqgan-ar"])
def test_a_teacher_whose_prior_is_not_a_denoiser_is_refused(cli, tmp_path, teacher):
    r = cli("distill", "progressive", "--teacher", teacher, "--rounds", "1", "-o", str(tmp_path / "x"), *TINY)
    assert r.returncode == 1 and "not a denoiser" in r.stderr and teacher in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["--sampler", "ddpm"],  # stochastic
        ["--sampler", "euler-ancestral"],
        ["--sampler", "dpmpp-2m"],  # deterministic but multistep: no two-step form of its own
        ["--sampler", "ddim", "--scheduler", "leading"],  # levels that do not nest when halved
        ["--sampler", "ddim", "--scheduler", "karras"],
    ],
)
def test_a_sampler_without_a_deterministic_two_step_form_is_refused(cli, tmp_path, args):
    r = cli(
        "distill", "progressive", "--teacher", "digits", "--teacher-steps", "4", "--rounds", "1", "-o", str(tmp_path / "x"), *TINY, *args
    )
    assert r.returncode == 1 and "two-step form" in r.stderr, r.stderr
    assert "--scheduler trailing" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_the_t2i_teacher_pipeline_sampler_is_refused_for_rounds_with_the_fix(cli, tmp_path):
    r = cli("distill", "guidance", "--teacher", "digits-t2i", "--rounds", "1", "-o", str(tmp_path / "x"), *TINY)
    assert r.returncode == 1 and "dpmpp-2m" in r.stderr and "--sampler ddim" in r.stderr, r.stderr


@pytest.mark.parametrize(
    ("teacher_steps", "rounds", "says"),
    [
        ("4", "3", "below 1 step"),
        ("1", "1", "below 1 step"),
        ("16", "5", "below 1 step"),
        ("50", "2", "fractional"),
        ("4", "0", "1 or more"),
    ],
)
def test_rounds_that_would_go_below_one_step_are_refused(cli, tmp_path, teacher_steps, rounds, says):
    args = ["distill", "progressive", "--teacher", "digits", "--scheduler", "trailing", "--teacher-steps", teacher_steps]
    r = cli(*args, "--rounds", rounds, "-o", str(tmp_path / "x"), *TINY)
    assert r.returncode == 1 and says in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "x").exists()


def test_guidance_distillation_of_an_unconditional_teacher_is_refused(cli, tmp_path):
    r = cli("distill", "guidance", "--teacher", "digits", "-o", str(tmp_path / "x"), *TINY)
    assert r.returncode == 1 and "unconditional" in r.stderr, r.stderr


def test_a_fresh_guided_student_is_its_teacher_and_takes_one_forward_per_step():
    import latentzoo
    from latentzoo.core.contract.denoising import Denoiser
    from latentzoo.plugins.distill.student import GuidedStudent

    teacher = latentzoo.build("digits-ldm-cond", "prior")
    student = GuidedStudent(base="diffusion.unet", base_config=dict(teacher.config), guidance_range=[1.0, 3.0])
    student.net.load_state_dict(teacher.state_dict())
    student.eval()
    x, t, labels = torch.randn(3, 3, 8, 8), torch.tensor([10.0, 500.0, 900.0]), torch.tensor([1, 4, 7])
    with torch.no_grad():
        assert torch.allclose(student(x, t, labels, guidance=2.5), teacher(x, t, labels), atol=1e-5)
    calls = []
    student.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    with torch.inference_mode():
        model = Denoiser(student, class_labels=labels, guidance=2.5)
        model.predict(x, 3.0)
    assert calls == [3]  # one forward pass on the batch, no unconditional half


@pytest.mark.slow
def test_guidance_distillation_of_a_class_teacher_samples_with_guidance(cli, tmp_path):
    out = tmp_path / "cond"
    args = ["distill", "guidance", "--teacher", "digits-cond", "--rounds", "1", "--sampler", "ddim", "--scheduler", "trailing"]
    r = cli(*args, "--teacher-steps", "2", "--guidance-range", "1", "3", "-o", str(out), *TINY)
    assert r.returncode == 0, r.stderr
    import yaml

    doc = yaml.safe_load((out / "registry.yaml").read_text())
    assert doc["components"]["digits-cond-fast-guided-prior"]["class"] == "distill.guided"
    assert doc["components"]["digits-cond-fast-1-prior"]["distilled_for"]["guidance"] == [1.0, 3.0]
    reg = ("--registry", str(out / "registry.yaml"))
    r = cli(*reg, "sample", "digits-cond-fast", "-n", "2", "--class", "3", "--guidance", "2", "-o", str(tmp_path / "s.png"))
    assert r.returncode == 0 and "warning" not in r.stderr, r.stderr
    r = cli(*reg, "sample", "digits-cond-fast", "-n", "2", "--class", "3", "--guidance", "6", "-o", str(tmp_path / "t.png"))
    assert r.returncode == 0 and "learned guidance weights 1 to 3; 6 runs as an extrapolation" in r.stderr, r.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--steps", "8"], "8 steps run but it was not trained so"),
        (["--sampler", "euler"], "sampler euler run"),
        (["--scheduler", "leading"], "scheduler leading run"),
        (["--sampler", "dpmpp-2m", "--steps", "2"], "sampler dpmpp-2m and 2 steps run"),
        (["--eta", "1"], "eta 1 adds noise"),
    ],
)
def test_a_student_sampled_otherwise_than_distilled_warns_and_runs(cli, tmp_path, args, says):
    r = cli("sample", "digits-fast", "-n", "1", "-o", str(tmp_path / "s.png"), *args)
    assert r.returncode == 0, r.stderr
    warnings = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and says in warnings[0] and "digits-fast-prior" in warnings[0], r.stderr


def test_a_guided_student_refuses_a_negative_prompt_in_every_front_end(cli, tmp_path):
    import latentzoo
    from latentzoo.core.contract.errors import LatentzooError

    r = cli("sample", "digits-t2i-fast", "-n", "1", "--prompt", "a seven", "--negative-prompt", "thin", "-o", str(tmp_path / "s.png"))
    assert r.returncode == 1 and "no unconditional branch" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "s.png").exists()
    with pytest.raises(LatentzooError, match="no unconditional branch"):
        latentzoo.sample("digits-t2i-fast", 1, prompt="a seven", negative_prompt="thin", output=str(tmp_path / "a.png"))


def test_shipped_students_record_what_they_were_distilled_for():
    from latentzoo.core.contract.registry import Registry

    reg = Registry.load([])
    for name, steps in (("digits-fast", 4), ("digits-fast-2", 2), ("digits-fast-1", 1), ("digits-t2i-fast", 4)):
        pipe = reg.get(name, "pipeline").data
        trained = reg.get(pipe["prior"], "prior").data["distilled_for"]
        assert trained["steps"] == steps == pipe["defaults"]["steps"]
        assert (trained["sampler"], trained["scheduler"]) == (pipe["sampler"], pipe["scheduler"])
    assert reg.get("digits-t2i-fast-prior", "prior").data["class"] == "distill.guided"
    assert math.isfinite(reg.get("digits-fast-prior", "prior").data["metrics"]["cpu_minutes"])


def test_distilled_priors_and_adapters_share_one_schema():
    """Every shipped distilled entry, prior or LoRA, parses as core.contract.distilled.DistilledFor and writes back the same."""
    from latentzoo.core.contract.distilled import DistilledFor
    from latentzoo.core.contract.registry import Registry

    reg = Registry.load([])
    found = {n: e.data["distilled_for"] for n, e in reg.entries.items() if "distilled_for" in e.data}
    assert {"digits-fast-prior", "digits-t2i-fast-prior", "digits-t2i-lcm"} <= set(found)
    for data in found.values():
        assert DistilledFor.parse(data).as_dict() == data
    assert not any("distilled" in (e.data.get("config") or {}) for e in reg.entries.values())  # the old LoRA spelling is gone


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ("{method: progressive, steps: 0}", "steps must be a whole number >= 1"),
        ("{method: consistency, guidance: 2.0}", "guidance must be [low, high]"),
        ("{method: consistency, folded_guidance: .nan}", "folded_guidance must be a finite number"),
        ("{method: distillation}", "method must be one of progressive, single-step, consistency"),
        ("{sampler: lcm}", "needs method"),
        ("{method: consistency, guidance_folded: 2.0}", "unknown key 'guidance_folded'"),
        ("[lcm]", "must be a dict"),
    ],
)
def test_a_bad_distilled_for_is_a_schema_error_naming_file_and_line(tmp_path, body, says):
    from latentzoo.core.contract.errors import RegistryError
    from latentzoo.core.contract.registry import Registry

    path = tmp_path / "reg.yaml"
    path.write_text(f"components:\n  my-lora:\n    class: lora\n    roles: [adapter]\n    distilled_for: {body}\n")
    with pytest.raises(RegistryError) as err:
        Registry.load([str(path)])
    assert f"{path}:5: components.my-lora.distilled_for:" in str(err.value) and says in str(err.value), err.value


def test_a_distilled_lora_is_checked_in_request_validation_as_a_distilled_prior_is(cli, tmp_path):
    """One check path: the LoRA's distilled_for is read by request validation (nothing loaded), in the API as on the CLI."""
    import warnings

    from latentzoo.core.contract.errors import LatentzooError
    from latentzoo.core.runtime.request import SampleRequest, validate

    base = {"pipeline": "digits-t2i", "loras": ("digits-t2i-lcm",), "prompt": "a 3", "n": 1, "output": str(tmp_path / "a.png")}
    with pytest.raises(LatentzooError, match="digits-t2i-lcm was distilled on 50 teacher timesteps; 51 steps is more"):
        validate(SampleRequest(**base, sampler="lcm", steps=51))
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        plan = validate(SampleRequest(**base, sampler="euler", steps=2, guidance=1))
        assert any("LoRA digits-t2i-lcm was distilled for the lcm sampler; sampler euler run" in m for m in plan.warnings), plan.warnings
        plan = validate(SampleRequest(**base, sampler="lcm", steps=4))  # the pipeline's guidance 2
        assert any("guidance 2 folded in" in m for m in plan.warnings), plan.warnings
        plan = validate(SampleRequest(**{**base, "loras": ("digits-t2i-lcm:0",)}, sampler="lcm", steps=60))  # strength 0: the base
        assert not plan.warnings
    assert not (tmp_path / "a.png").exists()
    r = cli("sample", "digits-t2i", "--lora", "digits-t2i-lcm", "--sampler", "lcm", "--steps", "60", "--prompt", "a 3", "-n", "1",
            "-o", str(tmp_path / "b.png"))  # fmt: skip
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1 and "60 steps is more than it can walk" in r.stderr, r.stderr
    assert not (tmp_path / "b.png").exists()


@pytest.mark.slow
def test_two_torchrun_processes_distil_as_one_process_does(cli, tmp_path):
    from test_distributed import torchrun

    from latentzoo.core.training import latest_checkpoint

    one, two = tmp_path / "one", tmp_path / "two"
    assert cli(*progressive(one, "--rounds", "2")).returncode == 0
    torchrun(cli, *progressive(two, "--rounds", "2")).assert_ok()
    for stage in ("round-1", "round-2"):
        assert latest_checkpoint(two / stage)[1]["replicas_identical"] is True
        a, b = load_file(str(one / stage / "model.safetensors")), load_file(str(two / stage / "model.safetensors"))
        assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a if not k.endswith("to_k.bias"))


# Reflow (Liu et al. 2022): digits-flow's ODE couplings, then flow matching on the straight path between them.


def reflow(out, *extra: str) -> list[str]:
    return ["distill", "reflow", "--teacher", "digits-flow", "--pairs", "8", "--teacher-steps", "2", "-o", str(out), *TINY, *extra]


def test_a_reflow_round_publishes_a_flow_student_that_samples_at_once(cli, tmp_path):
    import yaml

    out = tmp_path / "reflow"
    r = cli(*reflow(out))
    assert r.returncode == 0, r.stderr
    doc = yaml.safe_load((out / "registry.yaml").read_text())
    prior = doc["components"]["digits-flow-reflow-prior"]
    assert prior["class"] == "flow.unet" and prior["family"] == "flow"
    assert prior["distilled_for"] == {
        "method": "reflow",
        "teacher": "digits-flow",
        "sampler": "flow-euler",
        "scheduler": "flow-shift",
        "teacher_steps": 2,
    }
    assert prior["latent_space"]["scaling_factor"] == pytest.approx(1.5630550384521484)  # the teacher's latent space, kept
    pipe = doc["pipelines"]["digits-flow-reflow"]
    assert pipe["prior"] == "digits-flow-reflow-prior" and pipe["sampler"] == "flow-euler" and pipe["defaults"] == {"steps": 1}
    pairs = load_file(str(out / "pairs.safetensors"))
    assert pairs["z0"].shape == pairs["x1"].shape == (8, 3, 8, 8)
    # x1 is the teacher's own 2-step Euler solution from z0 (stage 1)
    import latentzoo

    teacher = latentzoo.build("digits-flow-prior", "prior").eval()
    with torch.no_grad():
        x = pairs["z0"]
        for t, t_next in ((1.0, 0.5), (0.5, 0.0)):
            x = x + (t_next - t) * teacher(x, torch.full((8,), t))
    assert torch.allclose(x, pairs["x1"], atol=1e-5)
    for steps in ("1", "2"):
        r = cli("--registry", str(out / "registry.yaml"), "sample", "digits-flow-reflow", "--steps", steps, "-n", "2",
                "-o", str(tmp_path / f"s{steps}.png"))  # fmt: skip
        assert r.returncode == 0 and "warning" not in r.stderr, r.stderr
        assert (tmp_path / f"s{steps}.png").stat().st_size > 0
    r = cli(*reflow(out))  # the same -o again, without --resume
    assert r.returncode == 1 and "--resume" in r.stderr, r.stderr


def test_reflow_resume_reads_its_pairs_back_and_equals_an_uninterrupted_run(cli, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert cli(*reflow(straight, "--steps", "4")).returncode == 0
    assert cli(*reflow(split, "--steps", "2")).returncode == 0
    drawn = (split / "pairs.safetensors").stat().st_mtime_ns
    r = cli(*reflow(split, "--steps", "4", "--resume"))
    assert r.returncode == 0, r.stderr
    assert (split / "pairs.safetensors").stat().st_mtime_ns == drawn  # not drawn again
    assert (split / "pairs.safetensors").read_bytes() == (straight / "pairs.safetensors").read_bytes()  # seeded
    a, b = load_file(str(straight / "model.safetensors")), load_file(str(split / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    r = cli(*reflow(split, "--steps", "6", "--resume", "--pairs", "9"))  # other pairs than the saved ones
    assert r.returncode == 1 and "pairs 8 -> 9" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.mark.parametrize("teacher", ["digits", "digits-dalle"])
def test_reflow_of_a_teacher_that_is_not_a_flow_is_refused(cli, tmp_path, teacher):
    r = cli("distill", "reflow", "--teacher", teacher, "--pairs", "4", "-o", str(tmp_path / "x"), *TINY)
    assert r.returncode == 1 and "not a flow" in r.stderr and teacher in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    "args, says",
    [
        (["--pairs", "0"], "--pairs must be a whole number >= 1"),
        (["--pairs", "4"], "--pairs 4 is fewer than --batch-size 8"),
        (["--pairs", "8", "--teacher-steps", "0"], "--teacher-steps must be a whole number >= 1"),
        (["--pairs", "8", "--sample-steps", "0"], "--sample-steps must be a whole number >= 1"),
        (["--pairs", "8", "--sampler", "ddim"], "does not drive a flow prior"),
    ],
)
def test_reflow_refuses_bad_numbers_in_one_line_writing_nothing(cli, tmp_path, args, says):
    r = cli("distill", "reflow", "--teacher", "digits-flow", *args, "-o", str(tmp_path / "x"), *TINY)
    assert r.returncode == 1 and says in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_two_torchrun_processes_reflow_as_one_process_does(cli, tmp_path):
    from test_distributed import torchrun

    from latentzoo.core.training import latest_checkpoint

    one, two = tmp_path / "one", tmp_path / "two"
    assert cli(*reflow(one)).returncode == 0
    torchrun(cli, *reflow(two)).assert_ok()
    assert latest_checkpoint(two)[1]["replicas_identical"] is True
    assert (one / "pairs.safetensors").read_bytes() == (two / "pairs.safetensors").read_bytes()  # drawn once, by rank 0
    a, b = load_file(str(one / "model.safetensors")), load_file(str(two / "model.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
