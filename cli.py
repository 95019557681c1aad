"""The ``latentzoo`` command: the group, lazy commands, error handling and ``main``.

The commands live in ``latentzoo.commands`` (one module per area: inspect, sampling,
training, plugins, interop), each a thin layer over the Python API. A command's module is
imported only when that command runs (``--help`` imports them all, none imports torch), so
``--help``, ``list``, ``info``, ``plugins`` and ``formats`` never import torch. Plugin
commands are added only for names that are not built in. Errors are one line and a non-zero
exit; ``--debug`` (or LATENTZOO_DEBUG=1) shows the traceback.
"""

from __future__ import annotations

import importlib
import os
import sys

import click

from latentzoo.commands.common import _version
from latentzoo.core.contract.errors import LatentzooError

# command name -> "module:function" in latentzoo.commands
COMMANDS = {
    "list": "inspect:list_cmd",
    "info": "inspect:info",
    "plugins": "inspect:plugins",
    "check": "check:check",
    "compose": "sampling:compose",
    "sample": "sampling:sample",
    "reconstruct": "sampling:reconstruct",
    "encode": "sampling:encode",
    "decode": "sampling:decode",
    "img2img": "editing:img2img",
    "inpaint": "editing:inpaint",
    "interpolate": "editing:interpolate",
    "variations": "variations:variations",
    "train": "training:train",
    "install": "plugins:install",
    "uninstall": "plugins:uninstall",
    "new-plugin": "plugins:new_plugin_cmd",
    "convert": "interop:convert",
    "export": "interop:export",
    "formats": "inspect:formats_cmd",
    "push": "interop:push",
    "pull": "interop:pull",
    "registry": "registry:registry",
    "lora": "adapters:lora",
    "fuse": "adapters:fuse",
    "merge": "adapters:merge",
    "distill": "distill:distill",
    "serve": "serve:serve",
}


class LazyGroup(click.Group):
    """Built-in commands load on use; plugin commands are added only for names that are not built in."""

    _plugins_added = False

    def _add_plugin_commands(self) -> None:
        if not self._plugins_added:
            self._plugins_added = True
            from latentzoo.core.contract.plugins import get_manager

            get_manager().add_commands(self)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is not None:  # a built-in always wins over a plugin's command of the same name
            module, _, attr = target.partition(":")
            return getattr(importlib.import_module(f"latentzoo.commands.{module}"), attr)
        cmd = super().get_command(ctx, name)
        if cmd is None:
            self._add_plugin_commands()
            cmd = super().get_command(ctx, name)
        return cmd

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._add_plugin_commands()
        return sorted({*COMMANDS, *super().list_commands(ctx)})


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
      latentzoo compose --encoder digits-vqgan --prior digits-ldm --decoder digits-vqgan --sampler ddpm --scheduler leading
    """
    if debug:
        os.environ["LATENTZOO_DEBUG"] = "1"
    ctx.obj = {"registries": registries}


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning known errors into one line and exit status 1."""
    debug = "--debug" in (argv if argv is not None else sys.argv) or os.environ.get("LATENTZOO_DEBUG")
    from latentzoo.core.runtime.sources import configure_hub_client

    configure_hub_client()  # LATENTZOO_OFFLINE reaches huggingface_hub before anything (a plugin too) imports it
    from latentzoo.core.runtime.signals import terminate_as_interrupt, terminated

    try:
        with terminate_as_interrupt():  # SIGTERM cleans up as Ctrl-C does: no temporaries left
            cli.main(args=argv, prog_name="latentzoo", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except (click.Abort, KeyboardInterrupt) as exc:
        if terminated():
            click.echo("terminated (SIGTERM); temporaries removed, finished outputs kept", err=True)
            sys.exit(143)
        click.echo("aborted" if isinstance(exc, click.Abort) else "interrupted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except LatentzooError as exc:
        if debug:
            raise
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except Exception as exc:
        if debug:
            raise
        click.echo(
            f"error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} (run with --debug for the traceback)", err=True
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
