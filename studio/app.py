"""The studio's FastAPI app: the HTTP API under ``/api/v1``, its WebSocket, and the static page at ``/``.

Every error is JSON ``{"error": ..., "fix": ...}`` with its status: 401 no token, 403 a
cross-site or foreign-host request, 404 an unknown job or file, 413 an upload over the cap,
422 a request the contract or the options refuse, 429 a full queue.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import re
import threading
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from latentzoo.core.contract.errors import LatentzooError

from . import adapter, catalog
from .security import Guard
from .store import JobStore
from .worker import Worker, error_body

STATIC = Path(__file__).parent / "static"
JOB_ID = re.compile(r"^[0-9a-f]{32}$")
FORMATS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp", "BMP": "bmp", "GIF": "gif"}
Scalar = str | int | float | bool | None
EVENT_BACKLOG = 10_000  # events held for one WebSocket client that reads slowly


@dataclass
class Settings:
    outputs: Path
    token: str | None = None
    max_queue: int = 64
    cache_mb: float = 1024
    allowed_hosts: set[str] = field(default_factory=set)
    max_upload_bytes: int = 8 * 2**20
    max_upload_pixels: int = 2048 * 2048
    max_n: int = 64
    max_steps: int = 1000
    registries: tuple[str, ...] = ()
    device: str = "cpu"  # where every job's models run (serve --device; checked by core.runtime.devices.check_device)


class ApiError(Exception):
    def __init__(self, status: int, error: str, fix: str) -> None:
        super().__init__(error)
        self.status, self.error, self.fix = status, error, fix


class JobBody(BaseModel):
    """A generation request, the shape of the typed request (``latentzoo sample ...`` as JSON)."""

    model_config = ConfigDict(extra="forbid")
    command: Literal["sample", "img2img", "inpaint", "interpolate", "variations"] = "sample"
    pipeline: str = Field(min_length=1, max_length=200)
    encoder: str | None = None
    conditioner: str | None = None
    prior: str | None = None
    decoder: str | None = None
    sampler: str | None = None
    scheduler: str | None = None
    n: int | None = Field(default=None, ge=1)
    seed: int = Field(default=0, ge=0, le=2**63 - 1)
    steps: int | None = Field(default=None, ge=1)
    eta: float | None = None
    guidance: float | None = None
    class_label: int | None = None
    prompt: str | None = Field(default=None, max_length=2000)
    negative_prompt: str | None = Field(default=None, max_length=2000)
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    options: dict[str, Scalar] = Field(default_factory=dict)
    candidates: int | None = None  # re-rank: draws per output, the scorer's best kept (sample)
    scorer: str | None = Field(default=None, max_length=200)
    batch_size: int | None = Field(default=None, ge=1, le=1024)
    precision: Literal["fp32", "bf16", "bf16-weights", "fp16"] = "fp32"
    loras: list[str] = Field(default_factory=list, max_length=8)  # registered adapters, NAME[:MODEL[:TEXT]]
    strength: float | None = None
    frames: int | None = Field(default=None, ge=2)
    images: list[str] = Field(default_factory=list, max_length=16)
    mask: str | None = None
    fit: bool = False
    no_fit: bool = False


class ComposeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pipeline: str | None = None
    encoder: str | None = None
    conditioner: str | None = None
    prior: str | None = None
    decoder: str | None = None
    sampler: str | None = None
    scheduler: str | None = None


class Events:
    """WebSocket subscribers; ``publish`` may be called from any thread."""

    def __init__(self) -> None:
        self.subscribers: set[tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = set()
        self.lock = threading.Lock()

    def publish(self, event: dict[str, Any]) -> None:
        with self.lock:
            subscribers = list(self.subscribers)
        for loop, queue in subscribers:
            try:
                loop.call_soon_threadsafe(_offer, queue, event)
            except RuntimeError:  # its loop closed
                with self.lock:
                    self.subscribers.discard((loop, queue))


def _offer(queue: asyncio.Queue, event: dict[str, Any]) -> None:
    """Queue an event for one subscriber; a client too slow to read loses its oldest events, not the server's memory."""
    if queue.full():
        queue.get_nowait()
    queue.put_nowait(event)


def create_app(settings: Settings, *, start_worker: bool = True) -> Guard:
    """The app behind its ``Guard`` (an ASGI app; ``.fastapi`` is the FastAPI app, ``.state`` its state)."""
    from latentzoo.core.runtime.api import registry as load_registry

    outputs = settings.outputs.resolve()
    (outputs / "uploads").mkdir(parents=True, exist_ok=True)
    registry = load_registry(list(settings.registries))
    store = JobStore(outputs / "studio.db")
    events = Events()
    worker = Worker(store, registry, outputs, events.publish, settings.cache_mb, settings.device)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if start_worker:
            worker.start()
        yield
        worker.stop()

    # No Swagger / ReDoc pages: FastAPI loads their assets from a CDN; the schema itself is served.
    app = FastAPI(
        title="latentzoo studio", version="1", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url="/api/v1/openapi.json"
    )
    app.state.worker, app.state.store, app.state.settings, app.state.events = worker, store, settings, events

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"error": exc.error, "fix": exc.fix}, status_code=exc.status)

    @app.exception_handler(LatentzooError)
    async def _refused(request: Request, exc: LatentzooError) -> JSONResponse:
        return JSONResponse(error_body(exc), status_code=422)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
        return JSONResponse(
            {
                "error": f"{where}: {first.get('msg', 'invalid')}",
                "fix": "see POST /api/v1/jobs in /api/v1/openapi.json for the request's fields",
            },
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        fix = {404: "see /api/v1/openapi.json for the routes", 405: "see /api/v1/openapi.json for the methods each route takes"}.get(
            exc.status_code, ""
        )
        return JSONResponse({"error": str(exc.detail), "fix": fix}, status_code=exc.status_code)

    # -- the registry -------------------------------------------------------------------
    @app.get("/api/v1/pipelines")
    def pipelines() -> dict[str, Any]:
        return {"pipelines": catalog.pipelines(registry)}

    @app.get("/api/v1/components")
    def components() -> dict[str, Any]:
        return {"components": catalog.components(registry)}

    @app.post("/api/v1/compose")
    def compose(body: ComposeBody) -> Any:
        """Check a combination: the composed spec, or the contract's refusal (422); and, per role, which entries fit."""
        answer = catalog.compose(registry, body.pipeline, {r: getattr(body, r) for r in adapter.PARTS if getattr(body, r)})
        return answer if answer.get("ok") else JSONResponse(answer, status_code=422)

    # -- uploads --------------------------------------------------------------------------
    @app.post("/api/v1/uploads")
    async def upload(request: Request) -> dict[str, Any]:
        """The image is the raw request body; answers its id (sha256 + format), which jobs name in ``images`` / ``mask``."""
        from PIL import Image, UnidentifiedImageError

        cap = settings.max_upload_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > cap:
            raise ApiError(413, f"the upload is {declared} bytes, over the cap of {cap}", "send a smaller image")
        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > cap:
                raise ApiError(413, f"the upload is over the cap of {cap} bytes", "send a smaller image")
        try:
            with Image.open(io.BytesIO(bytes(data))) as image:
                fmt, (w, h) = image.format, image.size
                if w * h > settings.max_upload_pixels:  # checked from the header, before the pixels are decoded
                    raise ApiError(
                        413, f"the image is {w}x{h}, over the cap of {settings.max_upload_pixels} pixels", "send a smaller image"
                    )
                image.load()
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError, ValueError) as exc:
            raise ApiError(415, f"the upload is not an image Pillow can open ({type(exc).__name__})", "send a PNG, JPEG or WebP") from exc
        if fmt not in FORMATS:
            raise ApiError(415, f"image format {fmt} is not accepted", f"send one of {', '.join(FORMATS)}")
        upload_id = f"{hashlib.sha256(data).hexdigest()}.{FORMATS[fmt]}"
        path = outputs / "uploads" / upload_id
        if not path.exists():
            from latentzoo.core.contract.weights import write_bytes

            write_bytes(path, bytes(data))
        return {"upload_id": upload_id, "width": w, "height": h}

    # -- jobs -----------------------------------------------------------------------------
    def view(job: dict[str, Any]) -> dict[str, Any]:
        job_id = job["id"]
        outputs_list = [
            {"url": f"/api/v1/outputs/{job_id}/{name}", "index": i, "kind": "image"}
            for i, name in enumerate(f for f in job["files"] if f.endswith(".png"))
        ]
        if job["record"] is not None:
            outputs_list.append({"url": f"/api/v1/outputs/{job_id}/samples.json", "index": None, "kind": "record"})
        return {
            "job_id": job_id,
            "status": job["status"],
            "position": worker.position(job_id),
            "progress": {"step": job["step"], "total": job["total"]},
            "outputs": outputs_list,
            "record": job["record"],
            "error": job["error"],
            "request": job["body"],
            "cli": adapter.cli_command(job["body"]),
            "created": job["created"],
            "started": job["started"],
            "finished": job["finished"],
        }

    def find(job_id: str) -> dict[str, Any]:
        job = store.get(job_id) if JOB_ID.match(job_id) else None
        if job is None:
            raise ApiError(404, f"no job {job_id}", "list jobs with GET /api/v1/jobs")
        return job

    @app.post("/api/v1/jobs", status_code=201)
    def submit(body: JobBody) -> dict[str, Any]:
        data = body.model_dump(exclude_none=True, exclude_defaults=True)
        data.setdefault("command", body.command)
        data["pipeline"] = body.pipeline
        if (body.n or 0) > settings.max_n or (body.frames or 0) > settings.max_n:
            raise ApiError(422, f"n is over this server's cap of {settings.max_n}", f"ask for at most {settings.max_n} images per job")
        if (body.steps or 0) > settings.max_steps:
            raise ApiError(422, f"steps is over this server's cap of {settings.max_steps}", f"ask for at most {settings.max_steps} steps")
        job_id = uuid.uuid4().hex
        # 422 with the CLI's own message on a bad request
        prepared = adapter.prepare(data, registry, f"{outputs / 'jobs' / job_id}/", outputs / "uploads", settings.device)
        for upload_id in [*prepared.images, *([prepared.mask] if prepared.mask else [])]:
            if not (outputs / "uploads" / upload_id).is_file():
                raise ApiError(422, f"no upload {upload_id}", "upload the image with POST /api/v1/uploads first")
        if len(worker.queue) >= settings.max_queue:
            raise ApiError(429, f"the queue is full ({settings.max_queue} jobs waiting)", "wait for jobs to finish and try again")
        position = worker.submit(job_id, data)
        return {"job_id": job_id, "position": position}

    @app.get("/api/v1/jobs")
    def jobs(status: str | None = None, limit: int = 200) -> dict[str, Any]:
        return {"jobs": [view(j) for j in store.list(status, max(1, min(limit, 1000)))]}

    @app.get("/api/v1/jobs/{job_id}")
    def job(job_id: str) -> dict[str, Any]:
        return view(find(job_id))

    @app.delete("/api/v1/jobs/{job_id}")
    def cancel(job_id: str) -> dict[str, Any]:
        find(job_id)
        outcome = worker.cancel(job_id)
        if outcome not in ("cancelled", "cancelling"):
            raise ApiError(409, f"job {job_id} is {outcome}", "only a queued or running job can be cancelled")
        return {"job_id": job_id, "status": outcome}

    @app.get("/api/v1/outputs/{job_id}/{name}")
    def output(job_id: str, name: str) -> FileResponse:
        job = find(job_id)
        allowed = set(job["files"]) | ({"samples.json"} if job["record"] is not None else set())
        if name not in allowed:  # only this job's own files: no path is ever joined from the request
            raise ApiError(404, f"job {job_id} has no output {name!r}", f"see GET /api/v1/jobs/{job_id} for its outputs")
        return FileResponse(outputs / "jobs" / job_id / name)

    # -- events ---------------------------------------------------------------------------
    @app.websocket("/api/v1/ws")
    async def ws(websocket: WebSocket) -> None:
        """Events (queued, started, progress, completed, failed, cancelled), each with its job_id; ``?job_id=`` filters."""
        protocols = websocket.headers.get("sec-websocket-protocol", "")
        await websocket.accept(subprotocol="bearer" if protocols.startswith("bearer") else None)
        only = websocket.query_params.get("job_id")
        queue: asyncio.Queue = asyncio.Queue(maxsize=EVENT_BACKLOG)
        member = (asyncio.get_running_loop(), queue)
        with events.lock:
            events.subscribers.add(member)
        try:
            receiver = asyncio.ensure_future(websocket.receive_text())
            while True:
                getter = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait({getter, receiver}, return_when=asyncio.FIRST_COMPLETED)
                if receiver in done:
                    getter.cancel()
                    receiver.result()  # raises WebSocketDisconnect when the client leaves
                    receiver = asyncio.ensure_future(websocket.receive_text())
                    continue
                event = getter.result()
                if only is None or event.get("job_id") == only:
                    await websocket.send_json(event)
        except WebSocketDisconnect:
            pass
        finally:
            with events.lock:
                events.subscribers.discard(member)

    # -- the page -------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    guarded = Guard(app, token=settings.token, allowed_hosts=settings.allowed_hosts)
    guarded.state = app.state  # tests reach the worker and store through it
    guarded.fastapi = app
    return guarded
