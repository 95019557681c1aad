"""The ``latentzoo`` command: a thin click layer over ``latentzoo.core``.

``--help``, ``list``, ``info``, ``plugins`` and ``compose`` never import torch; the verbs
that run models import it inside their bodies. Errors are one line and a non-zero exit;
``--debug`` (or LATENTZOO_DEBUG=1) shows the traceback.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from latentzoo.core.errors import LatentzooError

ROLE_CHOICES = ["encoder", "decoder", "prior", "sampler", "scheduler", "pipeline"]


class LazyGroup(click.Group):
    """Adds plugin commands only when a name is not built in, so a broken plugin cannot break built-ins."""

    _plugins_added = False

    def _add_plugin_commands(self) -> None:
        if not self._plugins_added:
            self._plugins_added = True
            from latentzoo.core.plugins import get_manager

            get_manager().add_commands(self)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        cmd = super().get_command(ctx, name)
        if cmd is None:
            self._add_plugin_commands()
            cmd = super().get_command(ctx, name)
        return cmd

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._add_plugin_commands()
        return super().list_commands(ctx)


def _version() -> str:
    from latentzoo import __version__

    return __version__


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(_version(), "--version", prog_name="latentzoo")
@click.option(
    "--registry", "registries", multiple=True, type=click.Path(dir_okay=False), help="Extra registry YAML file (later wins); repeatable."
)
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.pass_context
def cli(ctx: click.Context, registries: tuple[str, ...], debug: bool) -> None:
    """latentzoo: mix, train and publish the parts of image generators.

    Components (encoders, decoders, priors, samplers, schedulers) come from plugins and
    are named, with their weights, in a layered registry. Any encoder / prior / decoder
    that share a latent space compose into a pipeline.

    \b
    Examples:
      latentzoo list
      latentzoo sample digits -n 16 --seed 0 -o samples.png
      latentzoo compose --encoder digits-vqgan --prior digits-ldm --decoder digits-vqgan --sampler ddpm --scheduler scaled-linear
    """
    if debug:
        os.environ["LATENTZOO_DEBUG"] = "1"
    ctx.obj = {"registries": registries}


def _registry(ctx: click.Context):
    from latentzoo.core.registry import Registry

    reg = Registry.load(list(ctx.obj["registries"]))
    for message in reg.errors:
        click.echo(f"warning: {message}", err=True)
    return reg


def _emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


def _table(rows: list[list[str]], headers: list[str]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=False)]
    for row in [headers, *rows]:
        click.echo("  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=False)).rstrip())


# ---------------------------------------------------------------------------------------
# inspecting (no torch)


@cli.command("list")
@click.option("--role", type=click.Choice(ROLE_CHOICES), help="Only this role.")
@click.option("--family", help="Only this family (vqgan, diffusion, ...).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def list_cmd(ctx: click.Context, role: str | None, family: str | None, as_json: bool) -> None:
    """List named components and pipelines in the registry."""
    entries = _registry(ctx).list(role=role, family=family)
    if as_json:
        _emit_json([e.summary() for e in entries])
        return
    if not entries:
        click.echo("nothing matches")
        return
    rows = [[e.name, "/".join(e.roles), e.data.get("family", ""), (e.data.get("description") or "")[:70]] for e in entries]
    _table(rows, ["NAME", "ROLE", "FAMILY", "DESCRIPTION"])


@cli.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def info(ctx: click.Context, name: str, as_json: bool) -> None:
    """Show one component or pipeline: config, weights, latent space, and whether it composes."""
    import yaml

    from latentzoo.core.compose import PipelineSpec, check_spec, resolve_component

    reg = _registry(ctx)
    if name in reg.entries:
        entry = reg.get(name)
    else:
        entry = resolve_component(reg, name, _declared_role(name) or "prior")
    data = entry.summary()
    if entry.section == "pipelines":
        try:
            warnings = check_spec(reg, PipelineSpec.from_entry(entry))
            data["composes"] = {"ok": True, "warnings": warnings}
        except LatentzooError as exc:
            data["composes"] = {"ok": False, "error": str(exc)}
    else:
        try:
            decl = reg.declaration(entry)
            data["class_declaration"] = {k: v for k, v in decl.items() if k != "name"}
        except LatentzooError as exc:
            data["class_declaration"] = {"error": str(exc)}
        if entry.latent_space:
            data["latent_space_summary"] = entry.latent_space.describe()
    if as_json:
        _emit_json(data)
    else:
        click.echo(yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=120).rstrip())


def _declared_role(name: str) -> str | None:
    from latentzoo.core.plugins import get_manager

    decl = get_manager().components().get(name)
    return decl["roles"][0] if decl else None


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--strict", is_flag=True, help="Exit non-zero if any plugin is broken or incompatible.")
@click.option("-v", "--verbose", is_flag=True, help="One block per plugin, with where it was loaded from and its hooks.")
def plugins(as_json: bool, strict: bool, verbose: bool) -> None:
    """Show installed plugins: distribution, version, location, hooks, components, status."""
    from latentzoo.core.plugins import get_manager

    cli._add_plugin_commands()  # run the commands hook too, so a plugin that raises there is reported
    report = get_manager().report()
    if as_json:
        _emit_json([p.to_dict() for p in report])
    elif verbose:
        _plugin_blocks(report)
    else:
        rows = [
            [
                p.name,
                f"{p.distribution or '?'} {p.version or ''}".strip(),
                p.status,
                ", ".join(p.components + p.datasets) or "-",
                p.error or "",
            ]
            for p in report
        ]
        _table(rows, ["PLUGIN", "DISTRIBUTION", "STATUS", "PROVIDES", "ERROR"])
    bad = [p for p in report if p.status in ("broken", "incompatible")]
    if strict and bad:
        raise LatentzooError(f"{len(bad)} plugin(s) not usable: {', '.join(f'{p.name} ({p.status})' for p in bad)}")


def _plugin_blocks(report: list[Any]) -> None:
    """``plugins -v``: every field of every plugin, one block each."""
    from importlib import metadata

    for i, p in enumerate(report):
        if i:
            click.echo()
        if p.location:
            where = ("loaded from", p.location)
        else:  # never imported (broken on import, disabled, incompatible): say where it is installed
            try:
                site = str(metadata.distribution(p.distribution).locate_file("")) if p.distribution else "?"
            except metadata.PackageNotFoundError:
                site = "?"
            where = ("installed in", f"{site} (not imported)")
        fields = [
            ("status", p.status if p.status == "ok" else f"{p.status}: {p.error}"),
            ("distribution", f"{p.distribution or '?'} {p.version or ''}".rstrip() + (" (built-in)" if p.builtin else "")),
            ("module", p.module),
            where,
            ("plugin api", str(p.api) if p.api is not None else "-"),
            ("hooks", ", ".join(h.removeprefix("latentzoo_") for h in p.hooks) or "-"),
            ("components", ", ".join(p.components) or "-"),
            ("datasets", ", ".join(p.datasets) or "-"),
        ]
        click.echo(p.name)
        for label, value in fields:
            click.echo(f"  {label + ':':<14}{value}")


def _spec_from_options(ctx: click.Context, target: str | None, parts: dict[str, str | None], name: str | None = None):
    """A pipeline spec from a name / YAML file, with any --encoder/--prior/... overriding its parts."""
    from latentzoo.core.compose import PipelineSpec, load_spec

    reg = _registry(ctx)
    if target:
        spec, reg = load_spec(reg, target)
        for role, value in parts.items():
            if value:
                setattr(spec, role, value)
    else:
        missing = [f"--{r}" for r in ("prior", "decoder", "sampler") if not parts.get(r)]
        if missing:
            raise LatentzooError(f"give a pipeline name or file, or all of --prior, --decoder and --sampler (missing {', '.join(missing)})")
        spec = PipelineSpec(**{k: v for k, v in parts.items() if v}, name=name or "composed")
    return spec, reg


def _part_options(f):
    for role in reversed(("encoder", "prior", "decoder", "sampler", "scheduler")):
        f = click.option(f"--{role}", help=f"{role.capitalize()} name from the registry.")(f)
    return f


@cli.command()
@_part_options
@click.option("--name", default="composed", show_default=True, help="Name of the pipeline in the YAML.")
@click.option("--steps", type=int, help="Default sampling steps.")
@click.option("--eta", type=float, help="Default DDIM eta.")
@click.option("--allow-mismatch", is_flag=True, help="Allow latent spaces of equal kind and shape but different identity (warns).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the pipeline YAML here instead of printing it.")
@click.pass_context
def compose(
    ctx: click.Context, name: str, steps: int | None, eta: float | None, allow_mismatch: bool, output: str | None, **parts: str | None
) -> None:
    """Check that parts fit together and print (or write) the pipeline as registry YAML."""
    from latentzoo.core.compose import check_spec
    from latentzoo.core.weights import write_bytes

    spec, reg = _spec_from_options(ctx, None, parts, name)
    spec.defaults.update({k: v for k, v in {"steps": steps, "eta": eta}.items() if v is not None})
    spec.allow_mismatch = allow_mismatch
    for warning in check_spec(reg, spec):
        click.echo(f"warning: {warning}", err=True)
    if output:
        write_bytes(output, spec.to_yaml().encode())
        click.echo(f"wrote {output}", err=True)
    else:
        click.echo(spec.to_yaml().rstrip())


# ---------------------------------------------------------------------------------------
# running models (imports torch inside)


def _progress(enabled: bool, desc: str):
    from tqdm.auto import tqdm

    state: dict[str, Any] = {}

    def update(i: int, total: int) -> None:
        if "bar" not in state:
            state["bar"] = tqdm(total=total, desc=desc, disable=not enabled, leave=False, dynamic_ncols=True)
        state["bar"].update(1)
        if i == total:
            state.pop("bar").close()

    return update


def _versions() -> dict[str, str]:
    import platform

    import torch

    return {"latentzoo": _version(), "torch": torch.__version__, "python": platform.python_version()}


def _build(ctx: click.Context, target: str | None, parts: dict[str, Any], allow_mismatch: bool):
    from latentzoo.core.build import Builder

    spec, reg = _spec_from_options(ctx, target, parts)
    pipe = Builder(reg).pipeline(spec, allow_mismatch=allow_mismatch or None)
    for warning in pipe.warnings:
        click.echo(f"warning: {warning}", err=True)
    return pipe


def _check_output(output: str) -> Path:
    path = Path(output)
    parent = path if output.endswith(("/", os.sep)) else path.parent
    probe = parent
    while not probe.exists():
        probe = probe.parent
    if not os.access(probe, os.W_OK):
        raise LatentzooError(f"cannot write {output}: {probe} is not writable; choose another -o")
    if not output.endswith(("/", os.sep)) and path.is_dir():
        raise LatentzooError(f"-o {output} is a directory; end it with / to write one PNG per sample, or give a .png file")
    return path


@cli.command()
@click.argument("target", required=False)
@_part_options
@click.option("-n", "--num", "n", type=int, default=16, show_default=True, help="Number of samples.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed (same seed, same output).")
@click.option("--steps", type=int, help="Sampling steps (default: the pipeline's).")
@click.option("--eta", type=float, help="DDIM eta (0 = deterministic).")
@click.option("--class", "class_label", type=int, help="Class label for a class-conditional prior.")
@click.option("--guidance", type=float, help="Classifier-free guidance scale (with --class).")
@click.option("--nrow", type=int, help="Images per row of the grid.")
@click.option("--allow-mismatch", is_flag=True, help="Allow equal-shape latent spaces of different identity (warns).")
@click.option(
    "-o", "--output", default="samples.png", show_default=True, help="A .png grid, or a directory ending in / for one PNG per sample."
)
@click.option("--json", "as_json", is_flag=True, help="Print the sidecar record as JSON.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@click.pass_context
def sample(
    ctx: click.Context,
    target: str | None,
    n: int,
    seed: int,
    steps: int | None,
    eta: float | None,
    class_label: int | None,
    guidance: float | None,
    nrow: int | None,
    allow_mismatch: bool,
    output: str,
    as_json: bool,
    no_progress: bool,
    **parts: str | None,
) -> None:
    """Draw samples from a pipeline (a registry name, a pipeline YAML file, or --prior/--decoder/--sampler...).

    Writes a PNG grid and a JSON sidecar beside it (pipeline, component sha256s, seed,
    steps, sampler, versions). With -o DIR/ writes DIR/0000.png, DIR/0001.png, ...
    """
    if n < 1:
        raise LatentzooError(f"-n must be at least 1, not {n}")
    if steps is not None and steps < 1:
        raise LatentzooError(f"--steps must be at least 1, not {steps}")
    if guidance is not None and class_label is None:
        raise LatentzooError("--guidance needs --class (classifier-free guidance towards a class)")
    out = _check_output(output)
    pipe = _build(ctx, target, parts, allow_mismatch)
    overrides = {"steps": steps, "eta": eta, "class_label": class_label, "guidance": guidance}
    images = pipe.sample(n, seed=seed, progress=_progress(not no_progress, "sampling"), **overrides)

    from latentzoo.core.images import save_each, save_grid
    from latentzoo.core.weights import write_json

    opts = pipe.options(**overrides)
    record = {
        **pipe.record(),
        "seed": seed,
        "n": n,
        "steps": int(opts.get("steps", 50)),
        "sampler": pipe.spec.sampler,
        "scheduler": pipe.spec.scheduler,
        "options": {k: v for k, v in opts.items() if k != "steps"},
        "versions": _versions(),
    }
    if output.endswith(("/", os.sep)):
        files = save_each(images, out)
        record["files"] = [f.name for f in files]
        sidecar = out / "samples.json"
    else:
        save_grid(images, out, nrow=nrow)
        record["files"] = [out.name]
        sidecar = out.with_suffix(".json")
    write_json(sidecar, record)
    if as_json:
        _emit_json(record)
    else:
        click.echo(f"wrote {out} ({n} samples) and {sidecar}", err=True)


@cli.command()
@click.argument("name")
@click.argument("images", nargs=-1, required=True)
@click.option(
    "-o",
    "--output",
    default="reconstruction.png",
    show_default=True,
    help="PNG: inputs (top row) above reconstructions; DIR/ writes DIR/reconstruction.png.",
)
@click.option("--fit", is_flag=True, help="Resize, centre-crop and convert inputs instead of refusing them.")
@click.option("--json", "as_json", is_flag=True, help="Print per-image PSNR as JSON.")
@click.pass_context
def reconstruct(ctx: click.Context, name: str, images: tuple[str, ...], output: str, fit: bool, as_json: bool) -> None:
    """Encode and decode IMAGES with a pipeline's (or an autoencoder's) encoder and decoder."""
    from latentzoo.core.codec import reconstruct as run

    result = run(name, list(images), output, fit=fit, extra=ctx.obj["registries"])
    if as_json:
        _emit_json({"output": str(result.output), "psnr_db": result.psnr_db})
    else:
        scores = ", ".join(f"{Path(k).name} {v}" for k, v in result.psnr_db.items())
        click.echo(f"wrote {result.output}; PSNR (dB): {scores}", err=True)


@cli.command()
@click.argument("name")
@click.argument("images", nargs=-1, required=True)
@click.option(
    "-o",
    "--output",
    default="latents.safetensors",
    show_default=True,
    help="A .safetensors latent file; DIR/ writes DIR/latents.safetensors.",
)
@click.option("--fit", is_flag=True, help="Resize, centre-crop and convert inputs instead of refusing them.")
@click.pass_context
def encode(ctx: click.Context, name: str, images: tuple[str, ...], output: str, fit: bool) -> None:
    """Encode IMAGES to a .safetensors latent file (raw latents plus their latent space)."""
    from latentzoo.core.codec import encode as run

    result = run(name, list(images), output, fit=fit, extra=ctx.obj["registries"])
    click.echo(f"wrote {result.output}: latents {result.shape} in {result.latent_space.describe()}", err=True)


@cli.command()
@click.argument("name")
@click.argument("latents", type=click.Path(dir_okay=False))
@click.option("-o", "--output", default="decoded.png", show_default=True, help="A .png grid, or a directory ending in / for one PNG each.")
@click.option("--allow-mismatch", is_flag=True, help="Allow an equal-shape latent space of another autoencoder (warns).")
@click.pass_context
def decode(ctx: click.Context, name: str, latents: str, output: str, allow_mismatch: bool) -> None:
    """Decode a .safetensors latent file (from `encode`) to images."""
    from latentzoo.core.codec import decode as run

    result = run(name, latents, output, allow_mismatch=allow_mismatch, extra=ctx.obj["registries"])
    for w in result.warnings:
        click.echo(f"warning: {w}", err=True)
    click.echo(f"wrote {result.output} ({len(result.files)} file(s))", err=True)


@cli.command()
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
@click.option("--device", default="auto", show_default=True, help="auto (CUDA when present, else CPU), cpu or cuda.")
@click.option("--precision", type=click.Choice(["fp32", "bf16"]), default="fp32", show_default=True, help="bf16: autocast to bfloat16.")
@click.option("--grad-accum", type=int, default=1, show_default=True, help="Micro-batches per optimizer step (of each process's share).")
@click.option(
    "--clip-grad", type=float, help="Clip the gradient norm to this (0: off). Default: the family's (1.0 for priors, off for autoencoders)."
)
@click.option("--workers", type=int, default=0, show_default=True, help="DataLoader worker processes per training process.")
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
) -> None:
    """Train a FAMILY's component (vqgan, vae, dvae autoencoders; diffusion or transformer
    prior, with --encoder for a prior over a frozen encoder's latents).

    Writes OUT/model.safetensors, config.json, metrics.json, checkpoints, and
    OUT/registry.yaml naming the result (use it with --registry).

    \b
    Data-parallel on N processes or GPUs, unchanged (--batch-size is the global batch):
      torchrun --nproc-per-node 2 -m latentzoo train vae -o runs/vae
    """
    import yaml

    from latentzoo.core.plugins import get_manager
    from latentzoo.core.registry import import_target
    from latentzoo.core.training import TrainOptions

    trainers = {d["family"]: d["trainer"] for d in get_manager().components().values() if d.get("trainer")}
    if family not in trainers:
        raise LatentzooError(f"no trainer for family {family!r}; trainable families: {', '.join(sorted(trainers)) or 'none'}")
    if steps < 1 or batch_size < 1 or checkpoint_every < 1 or grad_accum < 1:
        raise LatentzooError("--steps, --batch-size, --checkpoint-every and --grad-accum must be positive")
    if workers < 0 or (clip_grad is not None and clip_grad < 0):
        raise LatentzooError("--workers and --clip-grad cannot be negative")
    config: dict[str, Any] = {}
    if config_file:
        loaded = yaml.safe_load(Path(config_file).read_text())
        if not isinstance(loaded, dict):
            raise LatentzooError(f"--config {config_file} must be a YAML mapping of options")
        config.update(loaded)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise LatentzooError(f"--set {item!r}: use KEY=VALUE")
        config[key.strip()] = yaml.safe_load(value)
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
    entry = import_target(trainers[family])(options)
    if entry is None:  # a rank other than 0 of a data-parallel run: rank 0 reports
        return
    click.echo(f"trained {family}: {json.dumps(entry.get('metrics', {}))}; registry fragment: {Path(out) / 'registry.yaml'}", err=True)


# ---------------------------------------------------------------------------------------
# managing plugins (these never load plugins, so a broken plugin can always be removed)


def _requirement_name(spec: str) -> str | None:
    """The distribution name of a requirement like ``foo[x]>=1``; None for a path, URL or wheel file."""
    import re

    if os.sep in spec or "/" in spec or spec.endswith((".whl", ".tar.gz", ".zip")) or Path(spec).exists():
        return None
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", spec)
    return match.group(0) if match else None


@cli.command()
@click.argument("packages", nargs=-1)
@click.option("-U", "--upgrade", is_flag=True, help="Upgrade to the newest available version.")
@click.option("-e", "--editable", "editables", multiple=True, metavar="PATH", help="Install a local project in editable mode; repeatable.")
@click.option("--no-deps", is_flag=True, help="Do not install dependencies.")
@click.option("--no-build-isolation", is_flag=True, help="Build with the packages already installed (offline builds).")
@click.option("--force-reinstall", is_flag=True, help="Reinstall even if already up to date.")
@click.option("-q", "--quiet", is_flag=True, help="Less output from pip.")
def install(
    packages: tuple[str, ...],
    upgrade: bool,
    editables: tuple[str, ...],
    no_deps: bool,
    no_build_isolation: bool,
    force_reinstall: bool,
    quiet: bool,
) -> None:
    """Install plugin PACKAGES (names, requirements, paths, wheels) into latentzoo's environment with pip.

    Afterwards shows the plugins the installed distributions registered, and their status.

    \b
    Examples:
      latentzoo install latentzoo-example-plugin
      latentzoo install -e ./my-plugin
      latentzoo install -U ./dist/my_plugin-0.2.0-py3-none-any.whl
    """
    from latentzoo.core import install as pip_env

    if not packages and not editables:
        raise LatentzooError("name at least one package, requirement or path to install, or -e PATH")
    flags = {
        "--upgrade": upgrade,
        "--no-deps": no_deps,
        "--no-build-isolation": no_build_isolation,
        "--force-reinstall": force_reinstall,
        "--quiet": quiet,
    }
    args = ["install", *(flag for flag, on in flags.items() if on)]
    from latentzoo.core.sources import offline

    if offline():  # offline means zero network requests: pip installs from local paths and wheels only
        args.append("--no-index")
    for path in editables:
        args += ["-e", path]
    args += packages
    before = pip_env.snapshot()
    code = pip_env.pip(args)
    if code != 0:
        raise LatentzooError(f"pip install failed (exit status {code}); see pip's messages above")
    touched = pip_env.changed(before, pip_env.snapshot())
    touched |= {pip_env.normalize(n) for n in map(_requirement_name, packages) if n}
    report = [p for p in pip_env.plugin_report() if p["distribution"] and pip_env.normalize(p["distribution"]) in touched]
    if not report:
        click.echo("the installed distributions register no latentzoo plugin (see `latentzoo plugins`)")
        return
    click.echo("plugins registered:")
    rows = [
        [p["name"], f"{p['distribution']} {p['version'] or ''}".strip(), p["status"], ", ".join(p["components"] + p["datasets"]) or "-"]
        for p in report
    ]
    _table(rows, ["PLUGIN", "DISTRIBUTION", "STATUS", "PROVIDES"])
    for p in report:
        if p["status"] != "ok":
            click.echo(f"warning: plugin {p['name']} is {p['status']}: {p['error']}", err=True)


@cli.command()
@click.argument("packages", nargs=-1, required=True)
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
def uninstall(packages: tuple[str, ...], yes: bool) -> None:
    """Uninstall plugin PACKAGES (distribution names, as `latentzoo plugins` shows) from latentzoo's environment."""
    from latentzoo.core import install as pip_env

    if any(pip_env.normalize(p) == "latentzoo" for p in packages):
        raise LatentzooError("refusing to uninstall latentzoo itself; run `python -m pip uninstall latentzoo` if you mean it")
    versions = {p: pip_env.installed_version(p) for p in packages}
    missing = [p for p, v in versions.items() if v is None]
    if missing:
        raise LatentzooError(
            f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed in {sys.prefix}; "
            "see `latentzoo plugins` for distribution names"
        )
    if not yes:
        click.confirm(f"Uninstall {', '.join(f'{p} {v}' for p, v in versions.items())} from {sys.prefix}?", abort=True)
    code = pip_env.pip(["uninstall", "-y", *packages])
    if code != 0:
        raise LatentzooError(f"pip uninstall failed (exit status {code}); see pip's messages above")


@cli.command("new-plugin")
@click.argument("name")
@click.option(
    "-o", "--output", "directory", type=click.Path(file_okay=False), help="Project directory (default ./NAME); must be absent or empty."
)
def new_plugin_cmd(name: str, directory: str | None) -> None:
    """Write a pip-installable plugin project NAME: one working sampler, its registry fragment, a README and a test.

    \b
    Example:
      latentzoo new-plugin latentzoo-my-sampler && latentzoo install -e latentzoo-my-sampler
    """
    from latentzoo.core.scaffold import new_plugin

    names, root, _ = new_plugin(name, directory)
    click.echo(f"wrote plugin {names.dist} to {root}/: package {names.package}, sampler {names.entry} (class {names.component})")
    click.echo("next:")
    click.echo(f"  latentzoo install -e {root}")
    click.echo(f"  latentzoo list --role sampler        # shows {names.entry}")
    click.echo(f"  python -m pytest {root / 'tests'}")


# ---------------------------------------------------------------------------------------
# diffusers interop and the Hugging Face Hub (huggingface_hub and torch import inside the bodies)


@cli.command()
@click.argument("source", type=click.Path())
@click.option("--from", "fmt", metavar="FORMAT", required=True, help="Format of SOURCE (see `latentzoo formats`), e.g. diffusers.")
@click.option("--name", required=True, help="Registry name (a pipeline's components get NAME-vqvae, NAME-unet, ...).")
@click.option(
    "-o", "--out", "outdir", type=click.Path(file_okay=False), help="Output directory [default: <user registry dir>/converted/NAME]."
)
@click.option("--scaling-factor", type=float, help="Latent scaling factor, when the config does not state one (diffusers).")
@click.option(
    "--calibrate", "calibrate_data", metavar="DATA", help="Measure the scaling factor (1/std of the latents) on a dataset or image folder."
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
    no_register: bool,
    force: bool,
) -> None:
    """Import a model or pipeline folder from another format (diffusers: VQModel, AutoencoderKL, UNet2DModel, DDIM/DDPM, pipelines).

    Writes re-saved safetensors weights (with sha256) and OUT/registry.yaml, and adds the
    entries to the user registry (unless --no-register). A name the registry already has
    (built-in or yours) is refused unless --force. A latent scaling factor is never
    defaulted: it comes from the config, --scaling-factor, or --calibrate.
    """
    from latentzoo.interop.api import convert as run

    options = {k: v for k, v in {"scaling_factor": scaling_factor, "calibrate": calibrate_data}.items() if v is not None}
    result = run(source, name, from_format=fmt, outdir=outdir, register=not no_register, force=force, **options)
    for note in result.notes:
        click.echo(note, err=True)
    kinds = [f"{n} ({'/'.join(e['roles'])})" for n, e in result.components.items()] + [f"{n} (pipeline)" for n in result.pipelines]
    click.echo(f"converted {source} -> {result.fragment}: {', '.join(kinds)}", err=True)
    if result.registered:
        click.echo(f"added to {result.registered}", err=True)
    else:
        click.echo(f"use it with: latentzoo --registry {result.fragment} info {name}", err=True)


@cli.command()
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


@cli.command("formats")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def formats_cmd(as_json: bool) -> None:
    """List the formats plugins declare for `convert --from` and `export --to`."""
    from latentzoo.interop.api import formats

    found = formats()
    if as_json:
        _emit_json(
            [
                {"name": f.name, "plugin": f.plugin, "convert": f.can("convert"), "export": f.can("export"), "description": f.description}
                for f in found
            ]
        )
        return
    rows = [[f.name, "yes" if f.can("convert") else "-", "yes" if f.can("export") else "-", f.plugin, f.description[:60]] for f in found]
    _table(rows, ["FORMAT", "CONVERT", "EXPORT", "PLUGIN", "DESCRIPTION"])


@cli.command()
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


@cli.command()
@click.argument("ref", metavar="ORG/NAME[@REVISION]")
@click.option("--name", help="Local registry name [default: the repo name]; a pipeline's components become NAME-<component>.")
@click.option("--force", is_flag=True, help="Replace or shadow entries of the same names (built-in ones included).")
def pull(ref: str, name: str | None, force: bool) -> None:
    """Download a component or pipeline from the Hub, verify its sha256, and add it to the user registry.

    Names from the Hub never replace names the registry already has unless --force. A
    pipeline's components are added as NAME-<component>, except those identical (class,
    config, weights sha256) to an entry the registry has, which the pipeline reuses.
    """
    from latentzoo.core.registry import user_registry_path
    from latentzoo.interop.api import pull as run

    result = run(ref, name=name, force=force)
    what = ", ".join([*result.components, *(f"{p} (pipeline)" for p in result.pipelines)])
    where = f"added {what} to {user_registry_path()}" if what else "already in the registry"
    reused = f"; reuses {', '.join(sorted(set(result.reused.values())))}" if result.reused else ""
    click.echo(f"pulled {ref} at {result.commit} as {result.name}: {where}{reused}", err=True)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning known errors into one line and exit status 1."""
    debug = "--debug" in (argv if argv is not None else sys.argv) or os.environ.get("LATENTZOO_DEBUG")
    from latentzoo.core.sources import configure_hub_client

    configure_hub_client()  # LATENTZOO_OFFLINE reaches huggingface_hub before anything (a plugin too) imports it
    try:
        cli.main(args=argv, prog_name="latentzoo", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except LatentzooError as exc:
        if debug:
            raise
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as exc:
        if debug:
            raise
        click.echo(
            f"error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} (run with --debug for the traceback)", err=True
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
