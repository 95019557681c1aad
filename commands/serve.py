"""``latentzoo serve``: the studio (local web app and HTTP API) on FastAPI + uvicorn, the ``studio`` extra."""

from __future__ import annotations

import click

from latentzoo.core.contract.errors import LatentzooError


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on; beyond loopback it needs --token.")
@click.option("--port", type=click.IntRange(0, 65535), default=8188, show_default=True, help="TCP port.")
@click.option(
    "--token",
    envvar="LATENTZOO_STUDIO_TOKEN",
    help="Require 'Authorization: Bearer TOKEN' on every API route and the WebSocket (or set LATENTZOO_STUDIO_TOKEN).",
)
@click.option(
    "--outputs",
    "outputs",
    default="studio-outputs",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Job outputs and the job database (studio.db).",
)
@click.option("--max-queue", type=click.IntRange(1), default=64, show_default=True, help="Queued jobs beyond this get 429.")
@click.option(
    "--cache-mb", type=click.FloatRange(0), default=1024, show_default=True, help="Memory for warm pipelines (LRU; the one in use stays)."
)
@click.option("--device", default="cpu", show_default=True, metavar="DEV", help="cpu, cuda, cuda:N or mps: where every job's models run.")
@click.pass_context
def serve(ctx: click.Context, host: str, port: int, token: str | None, outputs: str, max_queue: int, cache_mb: float, device: str) -> None:
    """Serve the studio: a web page at / and the HTTP API under /api/v1 (jobs, progress, outputs).

    \b
      latentzoo serve                      # http://127.0.0.1:8188
      latentzoo serve --host 0.0.0.0 --token "$(openssl rand -hex 16)"
    """
    from pathlib import Path

    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError as exc:
        raise LatentzooError(f"the studio needs FastAPI and uvicorn ({exc.name} is missing); pip install 'latentzoo[studio]'") from exc
    from latentzoo.studio.app import Settings, create_app
    from latentzoo.studio.security import allowed_hosts, check_bind

    check_bind(host, token)
    from latentzoo.core.runtime.devices import check_device

    check_device(device)  # one line for a device this machine lacks, before the server starts
    settings = Settings(
        outputs=Path(outputs),
        token=token,
        max_queue=max_queue,
        cache_mb=cache_mb,
        allowed_hosts=allowed_hosts(host),
        registries=tuple(ctx.obj["registries"]),
        device=device,
    )
    app = create_app(settings)
    click.echo(f"latentzoo studio on http://{host if ':' not in host else f'[{host}]'}:{port}/ (outputs in {outputs})", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", ws="auto")
