"""Managing plugins (these never load plugins, so a broken plugin can always be removed): install, uninstall, new-plugin."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from latentzoo.core.contract.errors import LatentzooError

from .common import _table


def _requirement_name(spec: str) -> str | None:
    """The distribution name of a requirement like ``foo[x]>=1``; None for a path, URL or wheel file."""
    import re

    if os.sep in spec or "/" in spec or spec.endswith((".whl", ".tar.gz", ".zip")) or Path(spec).exists():
        return None
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", spec)
    return match.group(0) if match else None


@click.command()
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
    from latentzoo.commands import install as pip_env

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
    from latentzoo.core.runtime.sources import offline

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


@click.command()
@click.argument("packages", nargs=-1, required=True)
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
def uninstall(packages: tuple[str, ...], yes: bool) -> None:
    """Uninstall plugin PACKAGES (distribution names, as `latentzoo plugins` shows) from latentzoo's environment."""
    from latentzoo.commands import install as pip_env

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


@click.command("new-plugin")
@click.argument("name")
@click.option(
    "-o", "--output", "directory", type=click.Path(file_okay=False), help="Project directory (default ./NAME); must be absent or empty."
)
@click.option(
    "--kind",
    type=click.Choice(["sampler", "scheduler", "prior"]),
    default="sampler",
    show_default=True,
    help="What to scaffold: a sampler, a scheduler, or a new prior kind (its convention and check) with a prior of that kind.",
)
def new_plugin_cmd(name: str, directory: str | None, kind: str) -> None:
    """Write a pip-installable plugin project NAME: one working component, its registry fragment, a README and a test.

    \b
    Examples:
      latentzoo new-plugin latentzoo-my-sampler && latentzoo install -e latentzoo-my-sampler
      latentzoo new-plugin latentzoo-my-kind --kind prior    # its test runs `latentzoo check`
    """
    from latentzoo.commands.scaffold import new_plugin

    names, root, _ = new_plugin(name, directory, kind)
    what = f"prior kind {names.entry} and prior class" if kind == "prior" else f"{kind} {names.entry} (class"
    click.echo(f"wrote plugin {names.dist} to {root}/: package {names.package}, {what} {names.component}{')' if kind != 'prior' else ''}")
    click.echo("next:")
    click.echo(f"  latentzoo install -e {root}")
    if kind == "prior":
        click.echo(f"  latentzoo plugins                    # {names.entry_point} provides kind {names.entry}")
    else:
        click.echo(f"  latentzoo list --role {kind}        # shows {names.entry}")
    click.echo(f"  python -m pytest {root / 'tests'}")
