"""The studio (``latentzoo serve``): REST API, job queue, SQLite store, security and WebSocket events, via FastAPI's TestClient.

One session-scoped app runs the jobs (tiny n and steps); apps without a worker check what
needs no sampling (auth, CSRF checks, a full queue, restart).
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
torch = pytest.importorskip("torch")

from fastapi.testclient import TestClient  # noqa: E402

from latentzoo.studio.app import Settings, create_app  # noqa: E402

BASE = "http://127.0.0.1:8188"
WS = "ws://127.0.0.1:8188/api/v1/ws"
FAST = {"pipeline": "digits", "n": 2, "seed": 3, "steps": 3}


@pytest.fixture(scope="session")
def outputs(tmp_path_factory):
    return tmp_path_factory.mktemp("studio-outputs")


@pytest.fixture(scope="session")
def client(outputs, tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("config")))  # no user registry
        app = create_app(Settings(outputs=outputs, max_queue=8))
        with TestClient(app, base_url=BASE) as c:
            yield c


def wait(client: TestClient, job_id: str, until=("done", "failed", "cancelled", "interrupted"), timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/api/v1/jobs/{job_id}").json()
        if job["status"] in until:
            return job
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} still {job['status']}")


def submit(client: TestClient, **body) -> str:
    r = client.post("/api/v1/jobs", json=body)
    assert r.status_code == 201, r.text
    return r.json()["job_id"]


def assert_error(r, status: int, *fragments: str) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) >= {"error", "fix"} and body["error"], body
    for fragment in fragments:
        assert fragment in body["error"], body
    return body


# -- same request, same images ------------------------------------------------------------


def test_sample_job_bytes_equal_the_cli(client, outputs, tmp_path, capsys, helpers):
    job_id = submit(client, **FAST)
    job = wait(client, job_id)
    assert job["status"] == "done", job
    assert [o["index"] for o in job["outputs"] if o["kind"] == "image"] == [0, 1]
    assert job["record"]["seed"] == 3 and job["record"]["steps"] == 3 and job["progress"] == {"step": 3, "total": 3}
    assert job["cli"] == "latentzoo sample digits -n 2 --seed 3 --steps 3 -o out/"
    run = helpers.in_process_cli(capsys)
    run("sample", "digits", "-n", "2", "--seed", "3", "--steps", "3", "-o", f"{tmp_path}/", "--no-progress").assert_ok()
    for out in job["outputs"]:
        if out["kind"] == "image":
            served = client.get(out["url"])
            assert served.status_code == 200 and served.headers["content-type"] == "image/png"
            assert served.content == (tmp_path / f"{out['index']:04d}.png").read_bytes()
    record = client.get(f"/api/v1/outputs/{job_id}/samples.json").json()
    assert record["sha256"] == json.loads((tmp_path / "samples.json").read_text())["sha256"]


def test_inpaint_job_with_uploads_equals_the_cli(client, tmp_path, capsys, helpers):
    from PIL import Image

    image = Image.new("L", (32, 32), 0)
    image.paste(255, (10, 4, 22, 28))
    mask = Image.new("L", (32, 32), 0)
    mask.paste(255, (0, 0, 32, 16))
    ids = []
    for name, im in (("digit.png", image), ("mask.png", mask)):
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        (tmp_path / name).write_bytes(buf.getvalue())
        r = client.post("/api/v1/uploads", content=buf.getvalue())
        assert r.status_code == 200, r.text
        ids.append(r.json()["upload_id"])
    job = wait(client, submit(client, command="inpaint", pipeline="digits", images=[ids[0]], mask=ids[1], steps=3, seed=1))
    assert job["status"] == "done", job
    run = helpers.in_process_cli(capsys)
    out = tmp_path / "cli"
    run(
        "inpaint",
        "digits",
        str(tmp_path / "digit.png"),
        "--mask",
        str(tmp_path / "mask.png"),
        "--steps",
        "3",
        "--seed",
        "1",
        "-o",
        f"{out}/",
    )
    assert client.get(job["outputs"][0]["url"]).content == (out / "0000.png").read_bytes()
    assert job["record"]["inputs"] == ids  # upload ids, never the server's paths


@pytest.fixture(scope="session")
def digit_uploads(client, tmp_path_factory):
    """Two 32x32 digit-like images and a 64x64 RGB one, uploaded; their files kept for the CLI."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("inputs")
    a, b = Image.new("L", (32, 32), 0), Image.new("L", (32, 32), 0)
    a.paste(255, (12, 4, 20, 28))
    b.paste(255, (4, 12, 28, 20))
    out = {}
    for name, im in (("a", a), ("b", b), ("rgb", Image.new("RGB", (64, 64), (200, 30, 30)))):
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        upload_id = client.post("/api/v1/uploads", content=buf.getvalue()).json()["upload_id"]
        (folder / upload_id).write_bytes(buf.getvalue())
        out[name] = folder / upload_id
    return out


@pytest.mark.parametrize(
    "body, args",
    [
        (
            {"command": "img2img", "images": ["a"], "steps": 4, "strength": 0.5},
            ["img2img", "digits", "a", "--strength", "0.5", "--steps", "4"],
        ),
        ({"command": "img2img", "images": ["rgb"], "steps": 4, "fit": True}, ["img2img", "digits", "rgb", "--steps", "4", "--fit"]),
        (
            {"command": "interpolate", "images": ["a", "b"], "steps": 3, "frames": 3},
            ["interpolate", "digits", "a", "b", "--frames", "3", "--steps", "3"],
        ),
        ({"command": "variations", "pipeline": "digits-unclip", "images": ["a"], "n": 2}, ["variations", "digits-unclip", "a", "-n", "2"]),
        (
            {"pipeline": "digits-dalle", "n": 1, "candidates": 2, "prompt": "a seven"},
            ["sample", "digits-dalle", "-n", "1", "--candidates", "2", "--prompt", "a seven"],
        ),
    ],
    ids=["img2img", "img2img-fit", "interpolate", "variations", "sample-rerank"],
)
def test_editing_jobs_equal_the_cli(client, digit_uploads, tmp_path, capsys, helpers, body, args):
    body = {"pipeline": "digits", "seed": 2, **body, "images": [digit_uploads[k].name for k in body.get("images", [])]}
    job = wait(client, submit(client, **body))
    assert job["status"] == "done", job
    args = [str(digit_uploads[a]) if a in digit_uploads else a for a in args]
    helpers.in_process_cli(capsys)(*args, "--seed", "2", "-o", f"{tmp_path}/").assert_ok()
    images = [o for o in job["outputs"] if o["kind"] == "image"]
    assert len(images) == len(list(tmp_path.glob("0*.png"))) > 0
    for out in images:
        assert client.get(out["url"]).content == (tmp_path / f"{out['index']:04d}.png").read_bytes()


def test_a_failed_job_names_uploads_not_server_paths(client, digit_uploads, outputs):
    job = wait(client, submit(client, command="img2img", pipeline="digits", images=[digit_uploads["rgb"].name], steps=2))
    assert job["status"] == "failed" and "64x64" in job["error"]["error"], job
    assert str(outputs) not in json.dumps(job["error"]) and digit_uploads["rgb"].name in job["error"]["error"]


# -- the queue ----------------------------------------------------------------------------


def test_cancel_stops_only_its_own_job(client):
    with client.websocket_connect(WS) as ws:
        running = submit(client, pipeline="digits", n=1, steps=400, seed=0)
        queued = submit(client, **FAST)
        other = submit(client, **{**FAST, "seed": 4})
        assert client.delete(f"/api/v1/jobs/{queued}").json()["status"] == "cancelled"  # queued: never starts
        deadline = time.monotonic() + 60
        while client.get(f"/api/v1/jobs/{running}").json()["progress"]["step"] < 2:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert client.delete(f"/api/v1/jobs/{running}").json()["status"] == "cancelling"
        stopped = wait(client, running)
        assert stopped["status"] == "cancelled" and stopped["outputs"] == []
        assert stopped["progress"]["step"] < 400  # stopped within a step of the request, not at the end
        assert wait(client, other)["status"] == "done"
        assert client.get(f"/api/v1/jobs/{queued}").json()["progress"]["step"] == 0
        events = []
        while not events or events[-1] != ("completed", other):
            event = ws.receive_json()
            events.append((event["type"], event["job_id"]))
    assert ("cancelled", queued) in events and ("cancelled", running) in events
    assert ("started", queued) not in events and ("completed", running) not in events
    assert_error(client.delete(f"/api/v1/jobs/{other}"), 409, "done")


def test_websocket_events_are_keyed_by_job(client):
    blocker = submit(client, pipeline="digits", n=1, steps=80, seed=0)  # holds the worker while the filtered socket connects
    job_id = submit(client, **FAST)  # the filter: only this job's events, in order
    with client.websocket_connect(f"{WS}?job_id={job_id}") as ws:
        other = submit(client, **{**FAST, "seed": 9})
        seen = []
        while not seen or seen[-1]["type"] != "completed":
            seen.append(ws.receive_json())
    assert {e["job_id"] for e in seen} == {job_id}
    kinds = [e["type"] for e in seen]
    assert kinds[-1] == "completed" and "progress" in kinds
    steps = [e["step"] for e in seen if e["type"] == "progress"]
    assert steps == sorted(steps) and steps[-1] == 3
    wait(client, other)
    assert client.get(f"/api/v1/jobs/{blocker}").json()["status"] == "done"


def test_failed_job_reports_error_and_fix(client, monkeypatch):
    from latentzoo.studio import adapter

    def broken(prepared, registry):
        from latentzoo.core.contract.errors import LatentzooError

        raise LatentzooError("weights of digits-ldm do not match their sha256; pull them again")

    monkeypatch.setattr(adapter, "build", broken)
    job = wait(client, submit(client, **{**FAST, "sampler": "ddpm"}))  # a pipeline not in the cache: the build runs
    assert job["status"] == "failed"
    assert job["error"] == {"error": "weights of digits-ldm do not match their sha256", "fix": "pull them again"}


# -- bad requests: one class each -----------------------------------------------------------


@pytest.mark.parametrize(
    "body, fragment",
    [
        ({"pipeline": "no-such"}, "not in the registry"),
        ({"pipeline": "/etc/passwd"}, "not in the registry"),
        ({"pipeline": "../registry.yaml"}, "not in the registry"),
        ({"pipeline": "digits", "decoder": "/tmp/x.yaml"}, "not a registry name"),
        ({"pipeline": "digits", "decoder": "digits-klvae"}, "latent spaces do not match"),
        ({"pipeline": "digits", "sampler": "analytic"}, "drives analytic priors"),
        ({"pipeline": "digits", "options": {"temprature": 1}}, "unknown option"),
        ({"pipeline": "digits", "eta": "lots"}, "eta"),
        ({"pipeline": "digits", "n": 0}, "n"),
        ({"pipeline": "digits", "n": 10_000}, "cap"),
        ({"pipeline": "digits", "steps": 10**6}, "cap"),
        ({"pipeline": "digits", "seed": -1}, "seed"),
        ({"pipeline": "digits", "prompt": "a seven"}, "takes no text"),
        ({"pipeline": "digits", "output": "/tmp/x.png"}, "output"),
        ({"pipeline": "digits", "command": "train"}, "command"),
        ({"command": "img2img", "pipeline": "digits"}, "image"),
        ({"command": "img2img", "pipeline": "digits", "images": ["/etc/passwd"]}, "not an upload id"),
        ({"command": "img2img", "pipeline": "digits", "images": ["0" * 64 + ".png"]}, "no upload"),
        ({"command": "inpaint", "pipeline": "digits", "images": ["0" * 64 + ".png"]}, "mask"),
        ({"pipeline": "digits", "candidates": 2}, "no scorer"),
        ({"pipeline": "digits-dalle", "candidates": 0}, "candidates"),
        ({"pipeline": "digits-dalle", "candidates": 2, "scorer": "/tmp/x"}, "not a registry name"),
        ({"pipeline": "digits", "loras": ["/tmp/x.safetensors:0.5"]}, "not a registered adapter"),
        ({"pipeline": "digits", "loras": ["x.safetensors"]}, "not a registered adapter"),
        ({"pipeline": "digits", "loras": ["no-such-adapter:0.5"]}, "no-such-adapter"),
        ({"pipeline": "digits", "loras": ["x:99"]}, "strength"),
    ],
)
def test_bad_job_is_422_with_error_and_fix(client, body, fragment):
    before = len(client.get("/api/v1/jobs").json()["jobs"])
    assert_error(client.post("/api/v1/jobs", json=body), 422, fragment)
    assert len(client.get("/api/v1/jobs").json()["jobs"]) == before  # nothing queued


def test_unknown_job_and_foreign_files_are_404(client):
    job_id = wait(client, submit(client, **FAST))["job_id"]
    assert_error(client.get("/api/v1/jobs/" + "f" * 32), 404)
    assert_error(client.get("/api/v1/jobs/..%2F..%2Fetc"), 404)
    for name in ("studio.db", "..%2Fstudio.db", "0099.png", "..", "%2Fetc%2Fpasswd"):
        assert client.get(f"/api/v1/outputs/{job_id}/{name}").status_code == 404
    assert_error(client.get("/api/v1/nothing"), 404)


@pytest.mark.parametrize(
    "data, status",
    [(b"not an image at all", 415), (b"\x89PNG\r\n\x1a\n" + b"\0" * 64, 415), (b"x" * (8 * 2**20 + 1), 413)],
)
def test_bad_uploads_are_refused(client, data, status):
    assert_error(client.post("/api/v1/uploads", content=data), status)


def test_upload_over_the_pixel_cap_is_413(tmp_path):
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (300, 300)).save(buf, format="PNG")
    app = create_app(Settings(outputs=tmp_path, max_upload_pixels=256 * 256), start_worker=False)
    with TestClient(app, base_url=BASE) as c:
        assert_error(c.post("/api/v1/uploads", content=buf.getvalue()), 413, "300x300")


def test_full_queue_is_429(tmp_path):
    app = create_app(Settings(outputs=tmp_path, max_queue=2), start_worker=False)
    with TestClient(app, base_url=BASE) as c:
        assert [c.post("/api/v1/jobs", json=FAST).status_code for _ in range(2)] == [201, 201]
        assert_error(c.post("/api/v1/jobs", json=FAST), 429, "queue is full")


# -- security ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    app = create_app(Settings(outputs=tmp_path_factory.mktemp("guarded"), token="s3cret-token"), start_worker=False)
    with TestClient(app, base_url=BASE) as c:
        yield c


AUTH = {"Authorization": "Bearer s3cret-token"}


@pytest.mark.parametrize(
    "method, path",
    [("get", "/api/v1/jobs"), ("get", "/api/v1/pipelines"), ("post", "/api/v1/jobs"), ("delete", "/api/v1/jobs/" + "a" * 32)],
)
@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-token"}, {"Authorization": "Basic s3cret-token"}]
)
def test_token_is_needed_on_every_api_route(guarded, method, path, headers):
    kwargs = {"json": FAST} if method == "post" else {}
    r = getattr(guarded, method)(path, headers=headers, **kwargs)
    assert_error(r, 401, "token")
    assert r.headers["www-authenticate"] == "Bearer"


def test_token_opens_the_api_and_the_websocket(guarded):
    from starlette.websockets import WebSocketDisconnect

    assert guarded.get("/api/v1/jobs", headers=AUTH).status_code == 200
    assert guarded.post("/api/v1/jobs", json=FAST, headers=AUTH).status_code == 201
    with pytest.raises(WebSocketDisconnect):
        with guarded.websocket_connect(WS) as ws:
            ws.receive_json()
    with guarded.websocket_connect(WS, subprotocols=["bearer", "s3cret-token"]) as ws:
        assert ws.accepted_subprotocol == "bearer"
    with guarded.websocket_connect(WS, headers=AUTH):
        pass
    assert guarded.get("/").status_code == 200  # the page shell holds no data; it asks for the token


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Origin": "http://127.0.0.1:9999"},  # another port is another origin
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Host": "evil.example"},  # DNS rebinding: the page's own name reaches this server
        {"Host": "evil.example:8188", "Origin": "http://evil.example:8188"},
    ],
)
def test_cross_site_post_is_403(client, headers):
    before = len(client.get("/api/v1/jobs").json()["jobs"])
    r = client.post("/api/v1/jobs", json=FAST, headers=headers)
    assert_error(r, 403)
    assert "access-control-allow-origin" not in r.headers
    assert len(client.get("/api/v1/jobs").json()["jobs"]) == before


def test_same_origin_and_no_cors(client):
    ok = client.get("/api/v1/pipelines", headers={"Origin": BASE, "Sec-Fetch-Site": "same-origin"})
    assert ok.status_code == 200 and "access-control-allow-origin" not in ok.headers
    preflight = client.options("/api/v1/jobs", headers={"Origin": BASE, "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in preflight.headers
    page = client.get("/")
    assert page.headers["x-frame-options"] == "DENY" and "frame-ancestors 'none'" in page.headers["content-security-policy"]


# -- nothing lost ---------------------------------------------------------------------------


def test_restart_keeps_finished_and_queued_jobs(tmp_path):
    settings = Settings(outputs=tmp_path)
    with TestClient(create_app(settings), base_url=BASE) as c:
        done = wait(c, submit(c, **FAST))
        assert done["status"] == "done"
    app = create_app(settings, start_worker=False)
    with TestClient(app, base_url=BASE) as c:
        was_running, was_queued = submit(c, **FAST), submit(c, **{**FAST, "seed": 5})
        app.state.store.update(was_running, status="running")  # as if the server died mid-job
    with TestClient(create_app(settings), base_url=BASE) as c:
        again = c.get(f"/api/v1/jobs/{done['job_id']}").json()
        assert again["status"] == "done" and again["record"] == done["record"]
        assert c.get(again["outputs"][0]["url"]).content == (tmp_path / "jobs" / done["job_id"] / "0000.png").read_bytes()
        assert c.get(f"/api/v1/jobs/{was_running}").json()["status"] == "interrupted"
        assert wait(c, was_queued)["status"] == "done"
        assert {j["job_id"] for j in c.get("/api/v1/jobs").json()["jobs"]} == {done["job_id"], was_running, was_queued}


# -- the registry and the composer ----------------------------------------------------------


def test_pipelines_and_components_declare_options(client):
    pipelines = {p["name"]: p for p in client.get("/api/v1/pipelines").json()["pipelines"]}
    assert pipelines["digits"]["composes"]["ok"] and pipelines["digits-t2i"]["text"] and not pipelines["digits"]["text"]
    steps = pipelines["digits"]["options"][0]
    assert steps["name"] == "steps" and steps["default"] == 50
    components = {c["name"]: c for c in client.get("/api/v1/components").json()["components"]}
    assert components["ddim"]["drives"] and components["digits-vqgan"]["latent_space"]
    assert any(o["name"] == "eta" for o in components["ddim"]["options"])


def test_compose_returns_the_spec_or_the_contracts_refusal(client):
    ok = client.post("/api/v1/compose", json={"pipeline": "digits", "sampler": "ddpm"}).json()
    assert ok["ok"] and ok["parts"]["sampler"] == "ddpm" and "pipelines:" in ok["yaml"]
    decoders = {a["name"]: a for a in ok["alternatives"]["decoder"]}
    assert decoders["digits-vqgan"]["ok"] and not decoders["digits-klvae"]["ok"]
    assert "latent spaces do not match" in decoders["digits-klvae"]["reason"]
    refused = assert_error(client.post("/api/v1/compose", json={"pipeline": "digits", "decoder": "digits-dvae"}), 422, "digits-dvae")
    assert refused["alternatives"]["decoder"]
    parts = {"prior": "digits-ldm", "decoder": "digits-vqgan", "sampler": "ddim", "scheduler": "leading"}
    assert client.post("/api/v1/compose", json=parts).json()["ok"]
    assert_error(client.post("/api/v1/compose", json={"prior": "digits-ldm"}), 422, "missing decoder, sampler")
    assert_error(client.post("/api/v1/compose", json={"pipeline": "../x.yaml"}), 422, "not in the registry")


# -- the command ----------------------------------------------------------------------------


def test_serve_refuses_a_public_host_without_token(capsys, helpers):
    run = helpers.in_process_cli(capsys)
    run("serve", "--host", "0.0.0.0").assert_one_line_error("--host 0.0.0.0", "--token")


def test_serve_without_the_extra_says_how_to_install(capsys, helpers, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "uvicorn", None)
    run = helpers.in_process_cli(capsys)
    run("serve").assert_one_line_error("pip install 'latentzoo[studio]'")


def test_studio_assets_ship_in_the_package():
    import latentzoo.studio

    static = Path(latentzoo.studio.__file__).parent / "static"
    assert {"index.html", "app.js", "style.css"} <= {p.name for p in static.iterdir()}
    text = (static / "index.html").read_text()
    assert "http://" not in text.replace("http://127.0.0.1", "") and "https://" not in text  # no CDN: works offline


def test_serve_help_imports_neither_fastapi_nor_torch():
    """Lazy: ``serve --help`` (and ``--help``, which lists it) load no server or model code (a fresh interpreter)."""
    import subprocess
    import sys

    code = (
        "import sys\nfrom click.testing import CliRunner\nfrom latentzoo.cli import cli\n"
        "for args in (['serve', '--help'], ['--help']):\n"
        "    r = CliRunner().invoke(cli, args, catch_exceptions=False)\n"
        "    assert r.exit_code == 0 and 'serve' in r.output, r.output\n"
        "print(sorted(m for m in ('torch', 'fastapi', 'uvicorn', 'starlette') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr + out.stdout


def test_cross_origin_websocket_is_refused(client):
    from starlette.websockets import WebSocketDisconnect

    for headers in ({"Origin": "https://evil.example"}, {"Host": "evil.example"}):
        with pytest.raises(WebSocketDisconnect) as refused:
            with client.websocket_connect(WS, headers=headers) as ws:
                ws.receive_json()
        assert refused.value.code == 4403
    with client.websocket_connect(WS, headers={"Origin": BASE}):
        pass


def test_a_wildcard_bind_answers_any_host_but_still_checks_origin_and_token(tmp_path):
    from latentzoo.studio.security import allowed_hosts

    settings = Settings(outputs=tmp_path, token="tok", allowed_hosts=allowed_hosts("0.0.0.0"))
    with TestClient(create_app(settings, start_worker=False), base_url="http://192.168.1.5:8188") as c:
        auth = {"Authorization": "Bearer tok"}
        assert c.get("/api/v1/jobs", headers=auth).status_code == 200
        assert c.get("/api/v1/jobs").status_code == 401
        assert_error(c.post("/api/v1/jobs", json=FAST, headers={**auth, "Origin": "https://evil.example"}), 403)


def test_pipeline_cache_is_lru_under_its_byte_limit():
    from latentzoo.studio.worker import PipelineCache

    class Pipe:
        def __init__(self, mb: int) -> None:
            self.module = torch.nn.Linear(mb * 2**18, 1, bias=False)  # mb MiB of fp32 weights

        def modules(self):
            return [self.module]

    built: list[str] = []

    def build(name: str, mb: int):
        return lambda: built.append(name) or Pipe(mb)

    cache = PipelineCache(3 * 2**20)
    a = cache.get(("a",), build("a", 1))
    cache.get(("b",), build("b", 1))
    assert cache.get(("a",), build("a", 1)) is a  # warm: not built again
    cache.get(("c",), build("c", 2))  # 4 MiB > 3: the least recently used (b) goes
    assert list(cache.entries) == [("a",), ("c",)] and built == ["a", "b", "c"]
    cache.get(("d",), build("d", 5))  # larger than the limit alone: kept (in use), the rest evicted
    assert list(cache.entries) == [("d",)]


def test_openapi_schema_is_served_and_no_cdn_page(client):
    schema = client.get("/api/v1/openapi.json").json()
    assert "/api/v1/jobs" in schema["paths"] and "JobBody" in schema["components"]["schemas"]
    assert client.get("/api/v1/docs").status_code == 404 and client.get("/docs").status_code == 404


def test_a_slow_websocket_client_keeps_only_the_newest_events():
    import asyncio

    from latentzoo.studio.app import _offer

    queue: asyncio.Queue = asyncio.Queue(maxsize=3)
    for i in range(5):
        _offer(queue, {"i": i})
    assert [queue.get_nowait()["i"] for _ in range(3)] == [2, 3, 4]


def test_a_job_running_at_shutdown_comes_back_interrupted(tmp_path):
    settings = Settings(outputs=tmp_path)
    with TestClient(create_app(settings), base_url=BASE) as c:
        job_id = submit(c, pipeline="digits", n=1, steps=1000, seed=0)
        wait(c, job_id, until=("running",))
    # leaving the client shuts the server down: the job stops within a step
    with TestClient(create_app(settings, start_worker=False), base_url=BASE) as c:
        job = c.get(f"/api/v1/jobs/{job_id}").json()
        assert job["status"] == "interrupted" and job["outputs"] == [] and job["progress"]["step"] < 1000
        assert not (tmp_path / "jobs" / job_id).exists()
