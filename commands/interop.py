"""Other formats and the Hugging Face Hub: convert, export, push, pull (over latentzoo.interop)."""

from __future__ import annotations

import click


@click.command()
@click.argument("source", type=click.Path())
@click.option(
    "--from",
    "fmt",
    metavar="FORMAT",
    help="Format of SOURCE (see `latentzoo formats`), e.g. diffusers [default: single-file for a file, diffusers for a folder].",
)
@click.option("--name", required=True, help="Registry name (a pipeline's components get NAME-vqvae, NAME-unet, ...).")
@click.option(
    "-o", "--out", "outdir", type=click.Path(file_okay=False), help="Output directory [default: <user registry dir>/converted/NAME]."
)
@click.option("--scaling-factor", type=float, help="Latent scaling factor, when the config does not state one (diffusers).")
@click.option(
    "--calibrate", "calibrate_data", metavar="DATA", help="Measure the scaling factor (1/std of the latents) on a dataset or image folder."
)
@click.option(
    "--latent-space-of",
    metavar="NAME",
    help="A fine-tuned VAE decodes the latent space of NAME (a converted VAE or pipeline), e.g. SD's ft-MSE VAE (diffusers).",
)
@click.option(
    "--config", "ldm_config", type=click.Path(dir_okay=False), help="single-file: the original LDM .yaml (checked against the tensors)."
)
@click.option(
    "--prediction-type",
    type=click.Choice(["epsilon", "v_prediction"]),
    help="single-file: what the UNet predicts (SD 2.x: not in the tensors).",
)
@click.option(
    "--tokenizer", "tokenizer_dir", type=click.Path(file_okay=False), help="single-file: a CLIP tokenizer folder (vocab.json + merges.txt)."
)
@click.option("--no-register", is_flag=True, help="Do not add the result to the user registry; use it with --registry OUT/registry.yaml.")
@click.option("--force", is_flag=True, help="Replace an earlier conversion, or shadow registry entries of the same names.")
def convert(
    source: str,
    fmt: str,
    name: str,
    outdir: str | None,
    scaling_factor: float | None,
    calibrate_data: str | None,
    latent_space_of: str | None,
    ldm_config: str | None,
    prediction_type: str | None,
    tokenizer_dir: str | None,
    no_register: bool,
    force: bool,
) -> None:
    """Import a model or pipeline folder from another format (diffusers: VQModel, AutoencoderKL, UNet2DModel, DDIM/DDPM, pipelines, Stable Diffusion),
    or an original single-file .safetensors checkpoint (Stable Diffusion 1.x / 2.x, CompVis LDM, VQ-GAN, KL VAE; --from single-file).

    Writes re-saved safetensors weights (with sha256) and OUT/registry.yaml, and adds the
    entries to the user registry (unless --no-register). A name the registry already has
    (built-in or yours) is refused unless --force. A latent scaling factor is never
    defaulted: it comes from the config, --scaling-factor, or --calibrate.
    """
    from latentzoo.interop.api import convert as run

    options = {
        k: v
        for k, v in {"scaling_factor": scaling_factor, "calibrate": calibrate_data, "latent_space_of": latent_space_of}.items()
        if v is not None
    }
    single = {"config": ldm_config, "prediction_type": prediction_type, "tokenizer": tokenizer_dir}
    options.update({k: v for k, v in single.items() if v is not None})
    if fmt is None:  # a file is an original single-file checkpoint, a folder a diffusers one
        from pathlib import Path

        fmt = "diffusers" if Path(source).is_dir() else "single-file"
    result = run(source, name, from_format=fmt, outdir=outdir, register=not no_register, force=force, **options)
    for note in result.notes:
        click.echo(note, err=True)
    kinds = [f"{n} ({'/'.join(e['roles'])})" for n, e in result.components.items()] + [f"{n} (pipeline)" for n in result.pipelines]
    click.echo(f"converted {source} -> {result.fragment}: {', '.join(kinds)}", err=True)
    if result.registered:
        click.echo(f"added to {result.registered}", err=True)
    else:
        click.echo(f"use it with: latentzoo --registry {result.fragment} info {name}", err=True)


@click.command()
@click.argument("name")
@click.option("--to", "fmt", metavar="FORMAT", required=True, help="Target format (see `latentzoo formats`), e.g. diffusers.")
@click.option("-o", "--out", "outdir", required=True, help="Folder to write (new or empty).")
@click.option("--force", is_flag=True, help="Replace a previous export in that folder (never other files).")
@click.pass_context
def export(ctx: click.Context, name: str, fmt: str, outdir: str, force: bool) -> None:
    """Write a component (model folder) or a pipeline (pipeline folder) in another format, e.g. one diffusers' from_pretrained loads."""
    from latentzoo.interop.api import export as run

    out, notes = run(name, outdir, to_format=fmt, force=force, extra=ctx.obj["registries"])
    for note in notes:
        click.echo(f"note: {note}", err=True)
    click.echo(f"exported {name} to {out}", err=True)


@click.command()
@click.argument("name")
@click.option("--repo", required=True, help="Hub repo ORG/NAME (a pipeline's components go to ORG/NAME-<component>).")
@click.option("--revision", help="Branch to push to (created if missing).")
@click.option("--private", is_flag=True, help="Create the repo private.")
@click.option("--create-pr", is_flag=True, help="Open a pull request instead of committing to the branch.")
@click.option("--dry-run", is_flag=True, help="List what would be uploaded; no network call.")
@click.pass_context
def push(ctx: click.Context, name: str, repo: str, revision: str | None, private: bool, create_pr: bool, dry_run: bool) -> None:
    """Upload a component (config.json, model.safetensors, README.md; one commit) or a pipeline to the Hub.

    A pipeline's components with local weights are pushed first, each to ORG/NAME-<component>,
    and the pipeline's pipeline.yaml references them pinned to those commits. The token comes
    from HF_TOKEN or `huggingface-cli login` and is never printed.
    """
    from latentzoo.interop.api import push as run

    results = run(name, repo, revision=revision, private=private, create_pr=create_pr, dry_run=dry_run, extra=ctx.obj["registries"])
    for pushed in results:
        if dry_run:
            click.echo(f"would upload to {pushed.repo}: {', '.join(pushed.files)}")
        else:
            click.echo(f"pushed {pushed.repo}@{pushed.commit}: {', '.join(pushed.files)}")


@click.command()
@click.argument("ref", metavar="ORG/NAME[@REVISION]")
@click.option("--name", help="Local registry name [default: the repo name]; a pipeline's components become NAME-<component>.")
@click.option("--force", is_flag=True, help="Replace or shadow entries of the same names (built-in ones included).")
@click.option("--trust-unverified", is_flag=True, help="Accept weights whose config states no sha256 (recorded as downloaded).")
def pull(ref: str, name: str | None, force: bool, trust_unverified: bool) -> None:
    """Download a component or pipeline from the Hub, verify its sha256, and add it to the user registry.

    Names from the Hub never replace names the registry already has unless --force. A
    pipeline's components are added as NAME-<component>, except those identical (class,
    config, weights sha256) to an entry the registry has, which the pipeline reuses.
    """
    from latentzoo.core.contract.registry import user_registry_path
    from latentzoo.interop.api import pull as run

    result = run(ref, name=name, force=force, trust_unverified=trust_unverified)
    what = ", ".join([*result.components, *(f"{p} (pipeline)" for p in result.pipelines)])
    where = f"added {what} to {user_registry_path()}" if what else "already in the registry"
    reused = f"; reuses {', '.join(sorted(set(result.reused.values())))}" if result.reused else ""
    click.echo(f"pulled {ref} at {result.commit} as {result.name}: {where}{reused}", err=True)
