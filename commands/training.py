"""Training a family's component: train (a thin layer over the family's trainer)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from latentzoo.core.contract.errors import LatentzooError


@click.command()
@click.argument("family")
@click.option("--data", default="digits", show_default=True, help="A dataset name (digits) or a folder of images.")
@click.option("--encoder", help="Frozen encoder whose latents a prior is trained on (latent diffusion).")
@click.option("-o", "--out", "out", required=True, type=click.Path(file_okay=False), help="Run directory.")
@click.option("--name", help="Registry name of the result (default from the run directory).")
@click.option("--steps", type=int, default=2000, show_default=True)
@click.option("--batch-size", type=int, default=64, show_default=True, help="Global batch per optimizer step (all processes).")
@click.option("--lr", type=float, default=2e-4, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--checkpoint-every", type=int, default=500, show_default=True)
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, exists=True), help="YAML file of model / loss options.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="One option (YAML value), e.g. --set disc_start=500.")
@click.option(
    "--device",
    default="auto",
    show_default=True,
    help="auto (CUDA when present, else CPU), cpu, cuda (each rank its own GPU), cuda:N or mps.",
)
@click.option("--precision", type=click.Choice(["fp32", "bf16"]), default="fp32", show_default=True, help="bf16: autocast to bfloat16.")
@click.option("--grad-accum", type=int, default=1, show_default=True, help="Micro-batches per optimizer step (of each process's share).")
@click.option(
    "--clip-grad", type=float, help="Clip the gradient norm to this (0: off). Default: the family's (1.0 for priors, off for autoencoders)."
)
@click.option("--workers", type=int, default=0, show_default=True, help="DataLoader worker processes per training process.")
@click.option("--base", metavar="NAME", help="lora: the pipeline (or prior) the LoRA adapts.")
@click.option("--rank", type=int, help="lora: the rank r of each (down, up) pair [default 4].")
@click.option("--alpha", type=float, help="lora: the scale numerator, W + alpha / r * up @ down [default: the rank].")
@click.option(
    "--targets",
    multiple=True,
    metavar="PATTERN",
    help="lora: layers to adapt (paths, suffixes such as to_q, or globs) [default: every Linear].",
)
@click.option(
    "--parts",
    metavar="PART[,PART]",
    help="lora: the parts to adapt: prior, conditioner (the text encoder), decoder [default: prior].",
)
@click.option("--no-progress", is_flag=True)
@click.pass_context
def train(
    ctx: click.Context,
    family: str,
    data: str,
    encoder: str | None,
    out: str,
    name: str | None,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    checkpoint_every: int,
    resume: bool,
    config_file: str | None,
    overrides: tuple[str, ...],
    device: str,
    precision: str,
    grad_accum: int,
    clip_grad: float | None,
    workers: int,
    no_progress: bool,
    base: str | None,
    rank: int | None,
    alpha: float | None,
    targets: tuple[str, ...],
    parts: str | None,
) -> None:
    """Train a FAMILY's component (vqgan, vae, dvae autoencoders; diffusion or transformer
    prior, with --encoder for a prior over a frozen encoder's latents).

    Writes OUT/model.safetensors, config.json, metrics.json, checkpoints, and
    OUT/registry.yaml naming the result (use it with --registry).

    \b
    Data-parallel on N processes or GPUs, unchanged (--batch-size is the global batch):
      torchrun --nproc-per-node 2 -m latentzoo train vae -o runs/vae

    \b
    LoRA on a text-to-image pipeline's prior (a kohya-ss file + an adapter entry):
      latentzoo train lora --base digits-t2i --data captioned/ --rank 4 -o runs/my-lora
      latentzoo train lora ... --parts prior,conditioner    # and the text encoder (lora_te_)
    """
    import yaml

    from latentzoo.core.contract.options import parse_assignments
    from latentzoo.core.contract.yamlsafe import load_yaml
    from latentzoo.core.training import TrainOptions
    from latentzoo.core.training import train as run_trainer

    config: dict[str, Any] = {}
    if config_file:
        loaded = load_yaml(config_file, "--config file")[1]
        if not isinstance(loaded, dict):
            raise LatentzooError(f"--config {config_file} must be a YAML mapping of options")
        config.update(loaded)
    for key, value in parse_assignments(overrides).items():  # the one --set parser (as sample's)
        try:
            config[key] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise LatentzooError(f"--set '{key}={value}': the value is not valid YAML; quote it or fix it") from exc
    adapter = {"base": base, "rank": rank, "alpha": alpha, "targets": list(targets) or None, "parts": parts}
    config.update({k: v for k, v in adapter.items() if v is not None})  # only a LoRA trainer takes these (others refuse them)
    options = TrainOptions(
        out=Path(out),
        data=data,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        checkpoint_every=checkpoint_every,
        resume=resume,
        name=name,
        config=config,
        progress=not no_progress,
        extra={"encoder": encoder, "registry_files": ctx.obj["registries"]},
        device=device,
        precision=precision,
        grad_accum=grad_accum,
        clip_grad=clip_grad,
        workers=workers,
    )
    entry = run_trainer(family, options)
    if entry is None:  # a rank other than 0 of a data-parallel run: rank 0 reports
        return
    click.echo(f"trained {family}: {json.dumps(entry.get('metrics', {}))}; registry fragment: {Path(out) / 'registry.yaml'}", err=True)
