"""``latentzoo distill consistency``: a consistency LoRA (LCM-LoRA) for a text-to-image pipeline (thin, over core.training)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click


@click.command("consistency")
@click.option(
    "--teacher", required=True, metavar="PIPELINE", help="The text-to-image pipeline to distil (its prior is the frozen teacher and base)."
)
@click.option("--lora-rank", "rank", type=int, default=8, show_default=True, help="Rank r of each (down, up) pair.")
@click.option("--lora-alpha", "alpha", type=float, help="Scale numerator, W + alpha / r * up @ down [default: the rank].")
@click.option(
    "--targets", multiple=True, metavar="PATTERN", help="Layers to adapt [default: LCM-LoRA's attention, feed-forward and resnet layers]."
)
@click.option("--guidance", type=float, help="The teacher's classifier-free guidance folded into the student [default: the pipeline's].")
@click.option("--teacher-steps", type=int, default=50, show_default=True, help="The skipping-step DDIM grid of the teacher (LCM: 50).")
@click.option("--data", default="digits-captions", show_default=True, help="A captioned dataset or folder (the teacher's training data).")
@click.option("-o", "--out", "out", required=True, type=click.Path(file_okay=False), help="Run directory.")
@click.option("--name", help="Registry name of the adapter [default: TEACHER-lcm].")
@click.option("--steps", type=int, default=1500, show_default=True)
@click.option("--batch-size", type=int, default=32, show_default=True, help="Global batch per optimizer step (all processes).")
@click.option("--lr", type=float, default=1e-3, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--checkpoint-every", type=int, default=250, show_default=True)
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Another option (huber_c, conditioner).")
@click.option("--device", default="auto", show_default=True, help="auto (CUDA when present, else CPU), cpu or cuda.")
@click.option("--precision", type=click.Choice(["fp32", "bf16"]), default="fp32", show_default=True)
@click.option("--grad-accum", type=int, default=1, show_default=True, help="Micro-batches per optimizer step.")
@click.option("--no-progress", is_flag=True)
@click.pass_context
def consistency(ctx: click.Context, teacher: str, rank: int, alpha: float | None, targets: tuple[str, ...], guidance: float | None,
                teacher_steps: int, data: str, out: str, name: str | None, steps: int, batch_size: int, lr: float, seed: int,
                checkpoint_every: int, resume: bool, overrides: tuple[str, ...], device: str, precision: str, grad_accum: int,
                no_progress: bool) -> None:  # fmt: skip
    """Distil TEACHER into a consistency LoRA (Luo et al. 2023, LCM-LoRA): the base stays untouched,
    and with the LoRA it samples in 2-8 steps with the lcm sampler.

    Writes OUT/model.safetensors (kohya-ss), config.json, metrics.json, checkpoints, and
    OUT/registry.yaml naming the adapter (use it with --registry); exact --resume, torchrun.

    \b
      latentzoo distill consistency --teacher digits-t2i --lora-rank 8 -o runs/lcm
      latentzoo --registry runs/lcm/registry.yaml sample digits-t2i --lora digits-t2i-lcm \\
          --sampler lcm --scheduler sgm_uniform --steps 4 --guidance 1 --prompt "a 3"
    """
    import yaml

    from latentzoo.core.contract.errors import LatentzooError
    from latentzoo.core.contract.options import parse_assignments
    from latentzoo.core.training import TrainOptions
    from latentzoo.core.training import train as run_trainer

    config: dict[str, Any] = {}
    for key, value in parse_assignments(overrides).items():
        try:
            config[key] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise LatentzooError(f"--set '{key}={value}': the value is not valid YAML; quote it or fix it") from exc
    given = {"base": teacher, "rank": rank, "alpha": alpha, "targets": list(targets) or None, "guidance": guidance}
    config.update({k: v for k, v in given.items() if v is not None}, teacher_steps=teacher_steps)
    options = TrainOptions(
        out=Path(out), data=data, steps=steps, batch_size=batch_size, lr=lr, seed=seed, checkpoint_every=checkpoint_every,
        resume=resume, name=name, config=config, progress=not no_progress,
        extra={"registry_files": ctx.obj["registries"]}, device=device, precision=precision, grad_accum=grad_accum,
    )  # fmt: skip
    entry = run_trainer("consistency", options)
    if entry is None:  # a rank other than 0 of a data-parallel run: rank 0 reports
        return
    click.echo(f"distilled {teacher}: {json.dumps(entry.get('metrics', {}))}; registry fragment: {Path(out) / 'registry.yaml'}", err=True)
