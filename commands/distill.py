"""``latentzoo distill``: fast-sampling students of a pipeline. ``progressive`` and ``guidance`` are thin
layers over ``latentzoo.plugins.distill``; ``consistency`` (an LCM-LoRA adapter) lives in its own module."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .consistency import consistency


def _train_options(kw: dict[str, Any], data: str) -> Any:
    """The trainer-contract options every distill command takes (core.training.TrainOptions)."""
    from latentzoo.core.training import TrainOptions

    return TrainOptions(
        out=Path(kw["out"]),
        data=data,
        steps=kw["steps"],
        batch_size=kw["batch_size"],
        lr=kw["lr"],
        seed=kw["seed"],
        checkpoint_every=kw["checkpoint_every"],
        resume=kw["resume"],
        progress=not kw["no_progress"],
        device=kw["device"],
    )


def _common(f: Any) -> Any:
    options = [
        click.option("--teacher", required=True, metavar="PIPELINE", help="The teacher: a registry pipeline with a denoiser prior."),
        click.option("-o", "--out", "out", required=True, type=click.Path(file_okay=False), help="Run directory."),
        click.option("--name", help="Registry name of the students (default: TEACHER-fast)."),
        click.option("--teacher-steps", type=int, help="DDIM steps of the teacher the first round halves [default: the pipeline's]."),
        click.option("--sampler", help="The teacher's deterministic sampler (ddim) [default: the pipeline's]."),
        click.option("--scheduler", help="Levels that nest when halved (trailing) [default: the pipeline's]."),
        click.option(
            "--prediction",
            default="v_prediction",
            show_default=True,
            help="Student parametrisation: v_prediction or sample (x0), as the paper; epsilon keeps the teacher's.",
        ),
        click.option("--data", help="Training images [default: the teacher prior's training data]."),
        click.option("--steps", type=int, default=1000, show_default=True, help="Optimizer steps of each round."),
        click.option("--batch-size", type=int, default=64, show_default=True, help="Global batch per optimizer step (all processes)."),
        click.option("--lr", type=float, default=2e-4, show_default=True),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--checkpoint-every", type=int, default=250, show_default=True),
        click.option("--resume", is_flag=True, help="Continue the run in -o: finished rounds are kept, the current one resumes."),
        click.option("--device", default="auto", show_default=True, help="auto (CUDA when present, else CPU), cpu or cuda."),
        click.option("--no-progress", is_flag=True),
    ]
    for option in reversed(options):
        f = option(f)
    return click.pass_context(f)


def _run(ctx: click.Context, rounds: int, guidance: tuple[float, float] | None, **kw: Any) -> None:
    from latentzoo.plugins.distill.rounds import DistillOptions, distill
    from latentzoo.plugins.distill.teacher import resolve_teacher

    teacher = resolve_teacher(
        kw["teacher"],
        rounds=rounds,
        teacher_steps=kw["teacher_steps"],
        sampler=kw["sampler"],
        scheduler=kw["scheduler"],
        data=kw["data"],
        registries=ctx.obj["registries"],
    )
    train = _train_options(kw, teacher.data)
    name = kw["name"] or f"{kw['teacher']}-fast"
    opts = DistillOptions(teacher, Path(kw["out"]), name, train, prediction=kw["prediction"], guidance=guidance)
    doc = distill(opts)
    if doc is None:  # a rank other than 0 of a data-parallel run: rank 0 reports
        return
    for comp, entry in doc["components"].items():
        click.echo(
            f"{comp}: {entry['description']}; loss {entry['metrics']['final_loss']}, {entry['metrics']['cpu_minutes']} CPU-minutes",
            err=True,
        )
    click.echo(
        f"registry: {Path(kw['out']) / 'registry.yaml'} (latentzoo --registry {Path(kw['out']) / 'registry.yaml'} sample {name})", err=True
    )


@click.group()
def distill() -> None:
    """Distil a pipeline into a faster one: progressive (Salimans & Ho 2022), guidance (Meng et al. 2023),
    consistency (an LCM-LoRA adapter) or reflow (a rectified flow, Liu et al. 2022).

    \b
    Examples:
      latentzoo distill progressive --teacher digits --teacher-steps 16 --scheduler trailing --rounds 4 -o runs/fast
      latentzoo distill guidance --teacher digits-t2i --sampler ddim --scheduler trailing --teacher-steps 16 --rounds 2 -o runs/t2i-fast
      latentzoo sample digits-fast --registry runs/fast/registry.yaml -n 16
    """


@distill.command()
@click.option("--rounds", type=int, required=True, help="Halvings of the step count: 16 teacher steps and 2 rounds give a 4-step student.")
@_common
def progressive(ctx: click.Context, rounds: int, **kw: Any) -> None:
    """Progressive distillation: each round trains a student, initialised from its teacher, to take one
    DDIM step where the teacher takes two (Salimans & Ho 2022, Algorithm 2)."""
    if rounds < 1:
        from latentzoo.core.contract.errors import LatentzooError

        raise LatentzooError(f"--rounds must be 1 or more, not {rounds}")
    _run(ctx, rounds, None, **kw)


@distill.command()
@click.option(
    "--rounds", type=int, default=0, show_default=True, help="Progressive rounds after the guidance stage (Meng et al.'s stage two)."
)
@click.option("--guidance-range", nargs=2, type=float, default=(1.0, 4.0), show_default=True, help="w is drawn from U[LOW, HIGH].")
@_common
def guidance(ctx: click.Context, rounds: int, guidance_range: tuple[float, float], **kw: Any) -> None:
    """Guidance distillation: a student that takes the guidance weight w as an input, one forward pass per
    step instead of two (Meng et al. 2023), then --rounds progressive rounds."""
    _run(ctx, rounds, tuple(guidance_range), **kw)


@distill.command()
@click.option("--teacher", required=True, metavar="PIPELINE", help="The teacher: a registry pipeline with a flow prior (digits-flow).")
@click.option("-o", "--out", "out", required=True, type=click.Path(file_okay=False), help="Run directory.")
@click.option("--name", help="Registry name of the student pipeline (default: TEACHER-reflow; its prior NAME-prior).")
@click.option("--pairs", type=int, default=2000, show_default=True, help="(noise, teacher sample) pairs drawn in stage 1.")
@click.option("--teacher-steps", type=int, help="Steps of the teacher's solver that draw each pair [default: the pipeline's].")
@click.option("--sampler", help="The teacher's flow solver [default: the pipeline's].")
@click.option("--scheduler", help="The teacher's flow scheduler [default: the pipeline's].")
@click.option("--sample-steps", type=int, default=1, show_default=True, help="Default steps of the student pipeline.")
@click.option("--steps", type=int, default=1000, show_default=True, help="Optimizer steps of the student.")
@click.option("--batch-size", type=int, default=64, show_default=True, help="Global batch per optimizer step (all processes).")
@click.option("--lr", type=float, default=2e-4, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds the pairs' noise and the training stream.")
@click.option("--checkpoint-every", type=int, default=250, show_default=True)
@click.option("--resume", is_flag=True, help="Continue the run in -o: its pairs are read back, training resumes exactly.")
@click.option("--device", default="auto", show_default=True, help="auto (CUDA when present, else CPU), cpu or cuda.")
@click.option("--no-progress", is_flag=True)
@click.pass_context
def reflow(ctx: click.Context, **kw: Any) -> None:
    """Reflow a rectified flow once (Liu et al. 2022, "Flow Straight and Fast"): draw (noise, ODE sample) pairs
    from the teacher, then train a student, initialised from it, on the straight path between each pair.

    \b
    Example:
      latentzoo distill reflow --teacher digits-flow --pairs 3000 --teacher-steps 30 --steps 1500 -o runs/flow-reflow
      latentzoo --registry runs/flow-reflow/registry.yaml sample digits-flow-reflow --steps 1
    """
    from latentzoo.plugins.distill.reflow import ReflowOptions, resolve_reflow_teacher
    from latentzoo.plugins.distill.reflow import reflow as run_reflow

    teacher = resolve_reflow_teacher(kw["teacher"], sampler=kw["sampler"], scheduler=kw["scheduler"], registries=ctx.obj["registries"])
    teacher_steps = kw["teacher_steps"] if kw["teacher_steps"] is not None else int(teacher.spec.defaults.get("steps") or 0)
    train = _train_options(kw, str((teacher.prior_entry.data.get("training") or {}).get("data") or "digits"))
    name = kw["name"] or f"{kw['teacher']}-reflow"
    opts = ReflowOptions(
        teacher, Path(kw["out"]), name, train, pairs=kw["pairs"], teacher_steps=teacher_steps, sample_steps=kw["sample_steps"]
    )
    doc = run_reflow(opts)
    if doc is None:  # a rank other than 0 of a data-parallel run
        return
    entry = doc["components"][f"{name}-prior"]
    click.echo(
        f"{name}-prior: {entry['description']}; loss {entry['metrics']['final_loss']}, {entry['metrics']['cpu_minutes']} CPU-minutes",
        err=True,
    )
    registry = Path(kw["out"]) / "registry.yaml"
    click.echo(f"registry: {registry} (latentzoo --registry {registry} sample {name})", err=True)


distill.add_command(consistency)
