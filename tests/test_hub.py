"""Hub push / pull against a small Hub-compatible server on 127.0.0.1 (no network).

The server implements just what the real ``huggingface_hub`` client calls: repo creation,
branch creation, preupload (answering "regular" uploads), the ndjson commit endpoint,
model_info (``/api/models/{repo}[/revision/{rev}]``) and file resolution (HEAD and GET with
ETag / X-Repo-Commit). The CLI runs in subprocesses with HF_ENDPOINT pointing at it and
HF_HOME in a temporary directory, so the real client code paths run end to end.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import yaml

TOKEN = "hf_TESTtokenNeverPrinted0123456789"
# the built-in scheduler of the digits pipelines (named after its spacing since schedulers pick levels)
SCHEDULER = "leading" if "\n  leading:" in (Path(__file__).parents[1] / "registry.yaml").read_text() else "scaled-linear"


class FakeHub:
    """In-memory repos: refs -> commit sha, commit sha -> {path: bytes}."""

    def __init__(self) -> None:
        self.repos: dict[str, dict] = {}
        self.requests: list[tuple[str, str]] = []
        self.unknown: list[tuple[str, str]] = []
        self.cards: list[dict] = []
        self.auth: list[str | None] = []
        self.counter = 0
        self.lock = threading.Lock()

    def new_commit(self, repo: str, files: dict[str, bytes]) -> str:
        self.counter += 1
        sha = hashlib.sha1(f"{repo}:{self.counter}".encode()).hexdigest()
        self.repos[repo]["commits"][sha] = files
        return sha

    def resolve(self, repo: str, rev: str) -> str | None:
        info = self.repos.get(repo)
        if info is None:
            return None
        if rev in info["refs"]:
            return info["refs"][rev]
        return rev if rev in info["commits"] else None


def make_handler(hub: FakeHub, endpoint: list[str]):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # quiet
            pass

        def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None, head: bool = False) -> None:
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def _json(self, status: int, data) -> None:
            self._send(status, json.dumps(data).encode(), {"Content-Type": "application/json"})

        def _error(self, status: int, message: str) -> None:
            self._send(status, json.dumps({"error": message}).encode(), {"Content-Type": "application/json", "X-Error-Message": message})

        def _body(self) -> bytes:
            n = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(n) if n else b""

        def _route(self, method: str) -> None:
            url = urlsplit(self.path)
            raw = [unquote(p) for p in url.path.split("/")[1:]]
            query = parse_qs(url.query)
            with hub.lock:
                hub.requests.append((method, self.path))
                hub.auth.append(self.headers.get("Authorization"))
            body = self._body() if method == "POST" else b""
            if method == "POST" and raw[:3] == ["api", "repos", "create"]:
                data = json.loads(body)
                repo = f"{data.get('organization') or 'user'}/{data['name']}"
                if repo in hub.repos:  # the real Hub's 409 names the existing repo's url
                    return self._json(409, {"error": "You already created this model repo", "url": f"{endpoint[0]}/{repo}"})
                hub.repos[repo] = {"commits": {}, "refs": {}, "private": bool(data.get("private")), "prs": 0}
                hub.repos[repo]["refs"]["main"] = hub.new_commit(repo, {".gitattributes": b"*.safetensors filter=lfs\n"})
                return self._json(200, {"url": f"{endpoint[0]}/{repo}", "name": repo})
            if method == "POST" and raw[:2] == ["api", "validate-yaml"]:  # the client checks a README's front matter
                content = json.loads(body)["content"]
                front = content.split("---")[1] if content.startswith("---") else ""
                hub.cards.append(yaml.safe_load(front))
                return self._json(200, {"warnings": []})
            if raw[:2] == ["api", "models"] and len(raw) >= 4:
                repo = f"{raw[2]}/{raw[3]}"
                rest = raw[4:]
                if repo not in hub.repos:
                    return self._error(404, "Repository not found")
                info = hub.repos[repo]
                if method == "POST" and rest[:1] == ["branch"]:
                    branch = "/".join(rest[1:])
                    if branch in info["refs"]:
                        return self._error(409, "Reference already exists")
                    info["refs"][branch] = info["refs"]["main"]
                    return self._json(200, {})
                if method == "POST" and rest[:1] == ["preupload"]:
                    files = json.loads(body)["files"]
                    return self._json(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]})
                if method == "POST" and rest[:1] == ["commit"]:
                    rev = "/".join(rest[1:])
                    base = hub.resolve(repo, rev)
                    if base is None:
                        return self._error(404, f"Invalid rev id: {rev}")
                    files = dict(info["commits"][base])
                    for line in body.decode().splitlines():
                        item = json.loads(line)
                        if item["key"] == "file":
                            files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                        elif item["key"] != "header":
                            return self._error(400, f"unsupported operation {item['key']}")
                    sha = hub.new_commit(repo, files)
                    out = {"commitUrl": f"{endpoint[0]}/{repo}/commit/{sha}", "commitOid": sha, "success": True}
                    if query.get("create_pr"):
                        info["prs"] += 1
                        info["refs"][f"refs/pr/{info['prs']}"] = sha
                        out["pullRequestUrl"] = f"{endpoint[0]}/{repo}/discussions/{info['prs']}"
                    else:
                        info["refs"][rev] = sha
                    return self._json(200, out)
                if method == "GET" and (not rest or rest[:1] == ["revision"]):
                    rev = "/".join(rest[1:]) or "main"
                    sha = hub.resolve(repo, rev)
                    if sha is None:
                        return self._error(404, f"Invalid rev id: {rev}")
                    files = info["commits"][sha]
                    return self._json(
                        200,
                        {
                            "id": repo,
                            "modelId": repo,
                            "sha": sha,
                            "private": info["private"],
                            "tags": [],
                            "siblings": [{"rfilename": f} for f in sorted(files)],
                        },
                    )
            if method in ("GET", "HEAD") and len(raw) >= 5 and raw[2] == "resolve":
                repo, rev, filename = f"{raw[0]}/{raw[1]}", raw[3], "/".join(raw[4:])
                sha = hub.resolve(repo, rev)
                if sha is None:
                    return self._send(
                        404, b"", {"X-Error-Code": "RevisionNotFound"} if repo in hub.repos else {"X-Error-Code": "RepoNotFound"}
                    )
                files = hub.repos[repo]["commits"][sha]
                if filename not in files:
                    return self._send(404, b"", {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": sha}, head=method == "HEAD")
                data = files[filename]
                etag = '"' + hashlib.sha1(data).hexdigest() + '"'
                return self._send(
                    200, data, {"ETag": etag, "X-Repo-Commit": sha, "Content-Type": "application/octet-stream"}, head=method == "HEAD"
                )
            hub.unknown.append((method, self.path))
            return self._error(404, f"fake hub does not implement {method} {url.path}")

        def do_GET(self):
            self._route("GET")

        def do_HEAD(self):
            self._route("HEAD")

        def do_POST(self):
            self._route("POST")

    return Handler


@pytest.fixture
def hub():
    state = FakeHub()
    endpoint: list[str] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state, endpoint))
    endpoint.append(f"http://127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.endpoint = endpoint[0]
    yield state
    server.shutdown()
    server.server_close()
    assert not state.unknown, f"the client called endpoints the fake hub does not implement: {state.unknown}"


# ---------------------------------------------------------------------------------------
# a tiny latent-diffusion pipeline with random weights, named in a registry fragment


@pytest.fixture
def zoo(tmp_path):
    import torch

    from latentzoo.core.contract.weights import save_tensors, space_identity
    from latentzoo.plugins.diffusion.unet import UNetPrior
    from latentzoo.plugins.vqgan.model import VQAutoencoder

    torch.manual_seed(0)
    vq_cfg = {"in_channels": 1, "out_channels": 1, "block_out_channels": [8, 8], "layers_per_block": 1, "latent_channels": 2,
              "num_vq_embeddings": 16, "norm_num_groups": 4, "sample_size": 16}  # fmt: skip
    unet_cfg = {"sample_size": 8, "in_channels": 2, "out_channels": 2, "block_out_channels": [8, 16], "layers_per_block": 1,
                "down_block_types": ["DownBlock2D", "AttnDownBlock2D"], "up_block_types": ["AttnUpBlock2D", "UpBlock2D"],
                "attention_head_dim": 4, "norm_num_groups": 4, "num_train_timesteps": 1000,
                "training_schedule": {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}}  # fmt: skip
    d = tmp_path / "zoo"
    vq_sha = save_tensors(d / "vq.safetensors", VQAutoencoder(**vq_cfg).state_dict())
    unet_sha = save_tensors(d / "unet.safetensors", UNetPrior(**unet_cfg).state_dict())
    space = {"kind": "continuous", "channels": 2, "factor": 2, "codebook_size": 16, "autoencoder": space_identity(vq_sha)}
    frag = {
        "components": {
            "tiny-vq": {"family": "vqgan", "class": "vqgan.autoencoder", "roles": ["encoder", "decoder"], "config": vq_cfg,
                        "weights": {"path": "vq.safetensors", "sha256": vq_sha}, "latent_space": space, "license": "MIT",
                        "description": "tiny VQ for hub tests", "metrics": {"psnr_db": 12.5}},
            "tiny-unet": {"family": "diffusion", "class": "diffusion.unet", "roles": ["prior"], "config": unet_cfg,
                          "weights": {"path": "unet.safetensors", "sha256": unet_sha},
                          "latent_space": {**space, "scaling_factor": 1.5, "shift": 0.0}, "license": "MIT"},
        },
        "pipelines": {"tiny-ldm": {"encoder": "tiny-vq", "prior": "tiny-unet", "decoder": "tiny-vq", "sampler": "ddim",
                                   "scheduler": SCHEDULER, "defaults": {"steps": 3}, "license": "MIT"}},
    }  # fmt: skip
    (d / "registry.yaml").write_text(yaml.safe_dump(frag, sort_keys=False))
    return {"registry": d / "registry.yaml", "vq_sha": vq_sha, "unet_sha": unet_sha}


class Runner:
    def __init__(self, tmp_path: Path, hub: FakeHub) -> None:
        self.tmp = tmp_path
        self.hub = hub
        self.outputs: list[str] = []
        (tmp_path / "cwd").mkdir(exist_ok=True)
        (tmp_path / "user").mkdir(exist_ok=True)
        (tmp_path / "user" / "registry.yaml").write_text("version: 1\n")  # LATENTZOO_REGISTRY names an existing file

    def env(self, **extra: str | None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LATENTZOO_", "HF_")) and k != "PYTHONPATH"}
        env.update(
            HF_ENDPOINT=self.hub.endpoint,
            HF_HOME=str(self.tmp / "hf-home"),
            HF_TOKEN=TOKEN,
            HF_HUB_DISABLE_TELEMETRY="1",
            HF_HUB_DISABLE_PROGRESS_BARS="1",
            LATENTZOO_REGISTRY=str(self.tmp / "user" / "registry.yaml"),
            XDG_CONFIG_HOME=str(self.tmp / "config"),
            OMP_NUM_THREADS="1",
        )
        for k, v in extra.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = v
        return env

    def __call__(self, *args: str, **env: str | None) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [sys.executable, "-m", "latentzoo", *args],
            cwd=self.tmp / "cwd",
            env=self.env(**env),
            capture_output=True,
            text=True,
            timeout=300,
        )
        self.outputs.append(proc.stdout + proc.stderr)
        return proc


@pytest.fixture
def run(tmp_path, hub):
    runner = Runner(tmp_path, hub)
    yield runner
    for out in runner.outputs:
        assert TOKEN not in out and TOKEN[:12] not in out, "the token was printed"


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stdout + proc.stderr
    return proc


def one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and len(lines) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def user_registry(run: Runner) -> dict:
    return yaml.safe_load((run.tmp / "user" / "registry.yaml").read_text())


# ---------------------------------------------------------------------------------------


def test_push_component_one_commit_with_model_card_then_pull_and_use(hub, run, zoo, tmp_path):
    reg = str(zoo["registry"])
    ok(run("--registry", reg, "push", "tiny-vq", "--repo", "acme/tiny-vq"))
    repo = hub.repos["acme/tiny-vq"]
    assert len(repo["commits"]) == 2  # the repo's initial commit + exactly one upload commit
    files = repo["commits"][repo["refs"]["main"]]
    assert {"config.json", "model.safetensors", "README.md"} <= set(files)
    assert hashlib.sha256(files["model.safetensors"]).hexdigest() == zoo["vq_sha"]
    assert any(a == f"Bearer {TOKEN}" for a in hub.auth), "the token from HF_TOKEN was not sent"
    card = files["README.md"].decode()
    front = yaml.safe_load(card.split("---")[1])
    assert front["library_name"] == "latentzoo" and front["license"] == "mit"
    assert {"vqgan", "encoder", "decoder"} <= set(front["tags"])
    assert front["latentzoo"]["latent_space"]["autoencoder"].startswith("sha256:")
    assert front["latentzoo"]["metrics"] == {"psnr_db": 12.5}
    assert front["latentzoo"]["sha256"]["model.safetensors"] == zoo["vq_sha"]
    assert "latentzoo pull acme/tiny-vq" in card
    config = json.loads(files["config.json"])
    assert config["weights"] == {"file": "model.safetensors", "sha256": zoo["vq_sha"]}

    pulled = ok(run("pull", "acme/tiny-vq"))
    commit = repo["refs"]["main"]
    assert commit in pulled.stderr
    entry = user_registry(run)["components"]["tiny-vq"]
    assert entry["weights"] == {"hub": "acme/tiny-vq", "revision": commit, "file": "model.safetensors", "sha256": zoo["vq_sha"]}
    info = json.loads(ok(run("info", "tiny-vq", "--json")).stdout)
    assert info["layer"] == "user" and info["latent_space"]["autoencoder"] == entry["latent_space"]["autoencoder"]

    # the pulled component builds (weights resolved through the HF cache, sha256 checked) and runs
    from PIL import Image

    Image.new("L", (16, 16), 128).save(tmp_path / "img.png")
    ok(run("reconstruct", "tiny-vq", str(tmp_path / "img.png"), "-o", str(tmp_path / "rec.png")))
    assert (tmp_path / "rec.png").is_file()


def test_push_pipeline_pins_component_commits_and_pull_samples(hub, run, zoo, tmp_path):
    proc = ok(run("--registry", str(zoo["registry"]), "push", "tiny-ldm", "--repo", "acme/tiny-ldm"))
    assert proc.stdout.count("pushed ") == 3  # two components, then the pipeline
    vq_repo, unet_repo = hub.repos["acme/tiny-ldm-tiny-vq"], hub.repos["acme/tiny-ldm-tiny-unet"]
    pipe_files = hub.repos["acme/tiny-ldm"]["commits"][hub.repos["acme/tiny-ldm"]["refs"]["main"]]
    doc = yaml.safe_load(pipe_files["pipeline.yaml"])
    assert doc["components"]["tiny-vq"]["weights"] == {
        "hub": "acme/tiny-ldm-tiny-vq",
        "revision": vq_repo["refs"]["main"],
        "file": "model.safetensors",
        "sha256": zoo["vq_sha"],
    }
    assert doc["components"]["tiny-unet"]["weights"]["revision"] == unet_repo["refs"]["main"]
    assert doc["pipelines"]["tiny-ldm"]["sampler"] == "ddim"

    ok(run("pull", "acme/tiny-ldm"))
    user = user_registry(run)
    # the pipeline's components are namespaced to it; the built-in sampler it embeds is reused, not copied
    assert user["pipelines"]["tiny-ldm"]["prior"] == "tiny-ldm-tiny-unet"
    assert user["pipelines"]["tiny-ldm"]["encoder"] == user["pipelines"]["tiny-ldm"]["decoder"] == "tiny-ldm-tiny-vq"
    assert user["pipelines"]["tiny-ldm"]["sampler"] == "ddim" and user["pipelines"]["tiny-ldm"]["scheduler"] == SCHEDULER
    assert user["components"]["tiny-ldm-tiny-unet"]["weights"]["hub"] == "acme/tiny-ldm-tiny-unet"
    assert sorted(user["components"]) == ["tiny-ldm-tiny-unet", "tiny-ldm-tiny-vq"]
    out = tmp_path / "samples.png"
    ok(run("sample", "tiny-ldm", "-n", "2", "--steps", "2", "-o", str(out), "--no-progress"))
    assert out.is_file()
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["sha256"]["tiny-ldm-tiny-vq"] == zoo["vq_sha"] and sidecar["sha256"]["tiny-ldm-tiny-unet"] == zoo["unet_sha"]
    # offline, the same draw comes from the cache alone
    seen = len(hub.requests)
    again = tmp_path / "offline.png"
    ok(run("sample", "tiny-ldm", "-n", "2", "--steps", "2", "-o", str(again), "--no-progress", HF_HUB_OFFLINE="1"))
    assert again.read_bytes() == out.read_bytes() and len(hub.requests) == seen


def test_revision_branch_pr_and_pull_at_revision(hub, run, zoo):
    reg = str(zoo["registry"])
    ok(run("--registry", reg, "push", "tiny-unet", "--repo", "acme/unet", "--revision", "v1"))
    repo = hub.repos["acme/unet"]
    assert "config.json" in repo["commits"][repo["refs"]["v1"]] and "config.json" not in repo["commits"][repo["refs"]["main"]]
    ok(run("--registry", reg, "push", "tiny-unet", "--repo", "acme/unet", "--create-pr"))
    assert "refs/pr/1" in repo["refs"]
    ok(run("pull", "acme/unet@v1", "--name", "unet-v1"))
    entry = user_registry(run)["components"]["unet-v1"]
    assert entry["weights"]["revision"] == repo["refs"]["v1"]
    fresh = run.tmp / "fresh" / "registry.yaml"  # LATENTZOO_REGISTRY naming a file that does not exist yet
    ok(run("pull", "acme/unet@v1", LATENTZOO_REGISTRY=str(fresh)))
    assert yaml.safe_load(fresh.read_text())["components"]["unet"]["weights"]["revision"] == repo["refs"]["v1"]
    again = ok(run("pull", "acme/unet@v1", "--name", "unet-v1"))  # idempotent
    assert "already in the registry" in again.stderr
    # another commit under a taken name is refused, unless --force
    one_line_error(run("pull", "acme/unet@refs/pr/1", "--name", "unet-v1"), "unet-v1", "--force")
    ok(run("pull", "acme/unet@refs/pr/1", "--name", "unet-v1", "--force"))
    assert user_registry(run)["components"]["unet-v1"]["weights"]["revision"] == repo["refs"]["refs/pr/1"]


def test_dry_run_and_offline_make_no_network_call(hub, run, zoo):
    reg = str(zoo["registry"])
    proc = ok(run("--registry", reg, "push", "tiny-ldm", "--repo", "acme/dry", "--dry-run"))
    assert "would upload to acme/dry-tiny-vq: README.md, config.json, model.safetensors" in proc.stdout
    assert "would upload to acme/dry: README.md, pipeline.yaml" in proc.stdout
    assert hub.requests == [] and hub.repos == {}

    ok(run("--registry", reg, "push", "tiny-vq", "--repo", "acme/tiny-vq"))
    ok(run("pull", "acme/tiny-vq"))
    seen = len(hub.requests)
    # pre-populated cache: offline pull works, and touches nothing
    for var in ("LATENTZOO_OFFLINE", "HF_HUB_OFFLINE"):
        ok(run("pull", "acme/tiny-vq", "--name", f"vq-{var.lower()}", **{var: "1"}))
        ok(run("info", f"vq-{var.lower()}", **{var: "1"}))
    assert len(hub.requests) == seen
    # an empty cache: one line naming repo, revision and file
    empty = str(run.tmp / "empty-hf-home")
    line = one_line_error(
        run("pull", "acme/tiny-vq", HF_HOME=empty, LATENTZOO_OFFLINE="1"), "acme/tiny-vq", "main", "config.json", "offline"
    )
    assert "acme/tiny-vq@main" in line
    one_line_error(run("pull", "acme/tiny-vq@0123abc", HF_HOME=empty, HF_HUB_OFFLINE="1"), "acme/tiny-vq@0123abc", "config.json")
    one_line_error(run("--registry", reg, "push", "tiny-vq", "--repo", "acme/x", LATENTZOO_OFFLINE="1"), "offline")
    assert len(hub.requests) == seen


def test_pull_refuses_weights_that_fail_sha256(hub, run, zoo):
    ok(run("--registry", str(zoo["registry"]), "push", "tiny-vq", "--repo", "acme/tiny-vq"))
    repo = hub.repos["acme/tiny-vq"]
    files = dict(repo["commits"][repo["refs"]["main"]])
    files["model.safetensors"] = files["model.safetensors"][:-8] + b"\x00" * 8  # corrupted after upload
    repo["refs"]["main"] = hub.new_commit("acme/tiny-vq", files)
    one_line_error(run("pull", "acme/tiny-vq"), "sha256", "acme/tiny-vq")
    assert user_registry(run) == {"version": 1}  # nothing was registered


def test_bad_repo_names_and_missing_repos_are_one_line_errors(hub, run, zoo):
    one_line_error(run("pull", "not-a-repo"), "ORG/NAME")
    one_line_error(run("pull", "acme/missing"), "acme/missing", "does not exist", "ORG/NAME")


# ---------------------------------------------------------------------------------------
# names from outside never replace existing ones (issue 12, item 1)


def publish(hub: FakeHub, repo: str, files: dict[str, bytes]) -> str:
    """A repo written straight into the fake Hub (what a hostile or hand-made upload holds)."""
    hub.repos[repo] = {"commits": {}, "refs": {}, "private": False, "prs": 0}
    hub.repos[repo]["refs"]["main"] = hub.new_commit(repo, files)
    return hub.repos[repo]["refs"]["main"]


def test_pulled_names_never_replace_existing_ones_without_force(hub, run, zoo):
    ok(run("--registry", str(zoo["registry"]), "push", "tiny-vq", "--repo", "acme/tiny-vq"))
    for taken in ("digits-vqgan", "ddim", "digits"):  # a built-in component, a built-in sampler, a built-in pipeline
        one_line_error(run("pull", "acme/tiny-vq", "--name", taken), taken, "builtin", "--force")
    assert user_registry(run) == {"version": 1}
    ok(run("pull", "acme/tiny-vq", "--name", "mine"))
    one_line_error(run("pull", "acme/tiny-vq", "--name", "digits-vqgan"), "digits-vqgan")
    # a pipeline.yaml naming built-ins with other weights: its components are namespaced, the built-ins untouched
    vq = hub.repos["acme/tiny-vq"]
    vq_commit = vq["refs"]["main"]
    body = json.loads(vq["commits"][vq_commit]["config.json"])
    doc = {
        "version": 1,
        "components": {
            "digits-vqgan": {**{k: body[k] for k in ("family", "class", "roles", "config", "latent_space")},
                             "weights": {"hub": "acme/tiny-vq", "revision": vq_commit, "file": "model.safetensors", "sha256": zoo["vq_sha"]}},
            "ddim": {"family": "diffusion", "class": "diffusion.ddim", "roles": ["sampler"], "config": {"eta": 1.0}},
        },
        "pipelines": {"digits": {"encoder": "digits-vqgan", "prior": "digits-ldm", "decoder": "digits-vqgan", "sampler": "ddim"}},
    }  # fmt: skip
    publish(hub, "evil/digits", {"pipeline.yaml": yaml.safe_dump(doc).encode()})
    one_line_error(run("pull", "evil/digits"), "digits (builtin)", "--force")  # the pipeline name itself is taken
    ok(run("pull", "evil/digits", "--name", "evil"))
    user = user_registry(run)
    # the weights it calls digits-vqgan are those pulled as "mine" (same sha256): reused; its ddim differs: namespaced
    assert user["pipelines"]["evil"] == {"encoder": "mine", "prior": "digits-ldm", "decoder": "mine", "sampler": "evil-ddim"}
    assert user["components"]["evil-ddim"]["config"] == {"eta": 1.0} and "digits-vqgan" not in user["components"]
    for name in ("digits-vqgan", "ddim", "digits"):
        assert json.loads(ok(run("info", name, "--json")).stdout)["layer"] == "builtin"
    # with --force a user entry may shadow a built-in, and says so
    ok(run("pull", "acme/tiny-vq", "--name", "digits-vqgan", "--force"))
    assert json.loads(ok(run("info", "digits-vqgan", "--json")).stdout)["layer"] == "user"


def test_a_pipeline_pushed_from_the_builtins_pulls_back_onto_them(hub, run, tmp_path):
    ok(run("push", "digits", "--repo", "acme/digits"))
    pulled = ok(run("pull", "acme/digits", "--name", "my-digits"))
    assert "reuses" in pulled.stderr and "digits-vqgan" in pulled.stderr
    user = user_registry(run)
    assert "components" not in user or not user["components"]  # nothing copied: every part is a built-in, same sha256
    assert {k: v for k, v in user["pipelines"]["my-digits"].items() if k in ("encoder", "prior", "decoder")} == {
        "encoder": "digits-vqgan", "prior": "digits-ldm", "decoder": "digits-vqgan"}  # fmt: skip
    assert "already in the registry" in ok(run("pull", "acme/digits")).stderr  # identical to the built-in pipeline
    import shutil

    shutil.rmtree(tmp_path / "hf-home")  # clearing the HF cache breaks nothing: the built-ins are used
    for name in ("digits", "my-digits"):
        ok(run("sample", name, "-n", "1", "--steps", "2", "-o", str(tmp_path / f"{name}.png"), "--no-progress", LATENTZOO_OFFLINE="1"))
    assert (tmp_path / "digits.png").read_bytes() == (tmp_path / "my-digits.png").read_bytes()


# ---------------------------------------------------------------------------------------
# offline means zero requests; a pinned, cached model needs none online either (issue 12, item 3)


def test_offline_and_pinned_cached_models_make_zero_requests(hub, run, zoo, tmp_path):
    from PIL import Image

    ok(run("--registry", str(zoo["registry"]), "push", "tiny-ldm", "--repo", "acme/tiny-ldm"))
    ok(run("--registry", str(zoo["registry"]), "push", "tiny-vq", "--repo", "acme/tiny-vq"))
    ok(run("pull", "acme/tiny-ldm"))
    ok(run("pull", "acme/tiny-vq"))
    Image.new("L", (16, 16), 100).save(tmp_path / "img.png")
    # as a user runs it: no telemetry switch of our own, so the client's own defaults are in play
    plain = {"HF_HUB_DISABLE_TELEMETRY": None, "HF_HUB_OFFLINE": None}
    seen = len(hub.requests)
    for env in ({**plain, "LATENTZOO_OFFLINE": "1"}, plain):  # offline, then online: both must stay silent
        if env.get("LATENTZOO_OFFLINE"):
            ok(run("pull", "acme/tiny-vq", **env))  # an offline pull resolves from the cache alone
        ok(run("sample", "tiny-ldm", "-n", "1", "--steps", "2", "-o", str(tmp_path / "s.png"), "--no-progress", **env))
        ok(run("reconstruct", "tiny-vq", str(tmp_path / "img.png"), "-o", str(tmp_path / "r.png"), **env))
        ok(run("encode", "tiny-vq", str(tmp_path / "img.png"), "-o", str(tmp_path / "z.safetensors"), **env))
        ok(run("list", **env))
        ok(run("info", "tiny-ldm-tiny-unet", **env))
        assert hub.requests[seen:] == [], f"requests while {env}: {hub.requests[seen:]}"
    # offline, pushing is refused before any request, and a pull that needs the network says so
    one_line_error(run("push", "tiny-vq", "--repo", "acme/again", LATENTZOO_OFFLINE="1", **plain), "offline")
    one_line_error(run("pull", "acme/never-pulled", LATENTZOO_OFFLINE="1", **plain), "offline", "acme/never-pulled")
    assert hub.requests[seen:] == []


# ---------------------------------------------------------------------------------------
# Hub failures are one line naming the fix (issue 12, item 14)


def test_hub_failures_are_one_line_errors_naming_the_fix(hub, run, zoo):
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    one_line_error(run("pull", "acme/tiny-vq", HF_ENDPOINT=dead), "unreachable", "LATENTZOO_OFFLINE")
    one_line_error(run("--registry", str(zoo["registry"]), "push", "tiny-vq", "--repo", "acme/x", HF_ENDPOINT=dead), "unreachable")
    for bad in ("../x", "./a/b", "/etc/passwd", "a/../b", "acme/x@", "acme/-x", "acme//x", "a b/c"):
        one_line_error(run("pull", bad), "ORG/NAME")
    one_line_error(run("pull", "acme/nope"), "acme/nope", "does not exist")
    one_line_error(run("pull", "acme/x", "--name", "../evil"), "--name", "usable registry name")
    # a pipeline.yaml whose component weights are not pinned to a revision
    ok(run("--registry", str(zoo["registry"]), "push", "tiny-vq", "--repo", "acme/tiny-vq"))
    doc = {"components": {"v": {"class": "vqgan.autoencoder", "roles": ["encoder", "decoder"],
                                "weights": {"hub": "acme/tiny-vq", "revision": "", "sha256": zoo["vq_sha"]}}},
           "pipelines": {"p": {"encoder": "v", "prior": "digits-ldm", "decoder": "v", "sampler": "ddim"}}}  # fmt: skip
    publish(hub, "acme/unpinned", {"pipeline.yaml": yaml.safe_dump(doc).encode()})
    one_line_error(run("pull", "acme/unpinned"), "not pinned to a revision", "latentzoo push")
    doc["components"]["v"]["weights"].pop("revision")
    publish(hub, "acme/unpinned2", {"pipeline.yaml": yaml.safe_dump(doc).encode()})
    one_line_error(run("pull", "acme/unpinned2"), "acme/unpinned2", "pipeline.yaml")
    publish(
        hub, "acme/two", {"pipeline.yaml": yaml.safe_dump({"pipelines": {"a": doc["pipelines"]["p"], "b": doc["pipelines"]["p"]}}).encode()}
    )
    one_line_error(run("pull", "acme/two"), "exactly one")
    assert user_registry(run) == {"version": 1}


def test_a_converted_stable_diffusion_pipeline_pushes_and_pulls_with_its_tokenizer(hub, run, tmp_path):
    """Text conditioning travels: the conditioner's tokenizer file, the prior's conditioning, the conditioner part."""
    pytest.importorskip("diffusers")
    pytest.importorskip("transformers")
    from sd_tiny import build_sd

    build_sd(tmp_path / "sd", "sd1")
    ok(run("convert", "--from", "diffusers", str(tmp_path / "sd"), "--name", "tiny-sd", "--no-register", "-o", str(tmp_path / "conv")))
    reg = str(tmp_path / "conv" / "registry.yaml")
    local = tmp_path / "local.png"
    args = ["sample", "tiny-sd", "--prompt", "a horse", "--steps", "2", "-n", "1", "--no-progress"]
    ok(run("--registry", reg, *args, "-o", str(local)))
    proc = ok(run("--registry", reg, "push", "tiny-sd", "--repo", "acme/tiny-sd"))
    assert proc.stdout.count("pushed ") == 4  # text encoder, unet, vae (the weights), then the pipeline
    te = hub.repos["acme/tiny-sd-tiny-sd-text-encoder"]
    assert "tiny-sd-text-encoder.tokenizer.json" in te["commits"][te["refs"]["main"]]
    ok(run("pull", "acme/tiny-sd"))
    user = user_registry(run)
    assert user["pipelines"]["tiny-sd"]["conditioner"] == "tiny-sd-tiny-sd-text-encoder"
    assert user["components"]["tiny-sd-tiny-sd-unet"]["conditioning"]["kind"] == "text"
    pulled = tmp_path / "pulled.png"
    ok(run(*args, "-o", str(pulled)))
    assert pulled.read_bytes() == local.read_bytes()


def test_pull_refuses_a_config_without_sha256_unless_trusted_and_an_alias_name(hub, run, zoo):
    """Issue 22: nothing to verify the download against is the user's call; a --name that is an alias is never taken."""
    ok(run("--registry", str(zoo["registry"]), "push", "tiny-vq", "--repo", "acme/tiny-vq"))
    repo = hub.repos["acme/tiny-vq"]
    files = dict(repo["commits"][repo["refs"]["main"]])
    config = json.loads(files["config.json"])
    del config["weights"]["sha256"]
    files["config.json"] = json.dumps(config).encode()
    repo["refs"]["main"] = hub.new_commit("acme/tiny-vq", files)
    one_line_error(run("pull", "acme/tiny-vq"), "states no sha256", "--trust-unverified")
    assert user_registry(run) == {"version": 1}
    one_line_error(run("pull", "acme/tiny-vq", "--name", "dpmpp_2m", "--trust-unverified"), "dpmpp_2m is an alias of dpmpp-2m")
    ok(run("pull", "acme/tiny-vq", "--trust-unverified"))
    assert user_registry(run)["components"]["tiny-vq"]["weights"]["sha256"] == zoo["vq_sha"]
