"""Hub files through the huggingface_hub cache; offline mode never touches the network."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import WeightsError


def offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on") for v in ("LATENTZOO_OFFLINE", "HF_HUB_OFFLINE"))


def hub_file(repo: str, filename: str, revision: str) -> Path:
    """Path of ``filename`` of ``repo`` at ``revision`` in the HF cache, downloading unless offline."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(hf_hub_download(repo, filename, revision=revision, local_files_only=offline(), endpoint=_endpoint()))
    except LocalEntryNotFoundError as exc:
        raise WeightsError(
            f"{repo}@{revision} file {filename} is not in the local Hugging Face cache"
            + (" and offline mode is on; unset LATENTZOO_OFFLINE/HF_HUB_OFFLINE or `latentzoo pull` it first" if offline() else "")
        ) from exc
    except (HfHubHTTPError, OSError) as exc:
        raise WeightsError(f"cannot fetch {repo}@{revision} file {filename}: {str(exc).splitlines()[0]}") from exc


# ---------------------------------------------------------------------------------------
# push / pull: a component is one Hub repo holding config.json, model.safetensors and a
# model card README.md, uploaded in one commit. A pipeline repo holds pipeline.yaml (a
# registry fragment whose components with weights reference their own repos pinned to a
# commit sha) and a README.md.

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
PIPELINE_FILE = "pipeline.yaml"
CARD_FILE = "README.md"
CARRIED_KEYS = ("family", "class", "roles", "config", "latent_space", "license", "description", "metrics")


def _endpoint() -> str | None:
    return os.environ.get("HF_ENDPOINT") or None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def parse_repo(ref: str) -> tuple[str, str | None]:
    """``ORG/NAME[@REVISION]`` -> (repo id, revision or None)."""
    from .errors import LatentzooError

    repo, _, revision = ref.partition("@")
    parts = repo.split("/")
    if len(parts) != 2 or not all(parts) or any(c in repo for c in " :\\"):
        raise LatentzooError(f"{ref!r} is not a Hub repo; use ORG/NAME or ORG/NAME@REVISION")
    return repo, revision or None


def _license_id(text: str | None) -> str:
    return (text or "unknown").strip().lower().replace(" ", "-")


def model_card(name: str, data: dict, repo: str, sha256: str | None, *, pipeline: dict | None = None) -> str:
    """README.md with YAML front matter (library_name: latentzoo, tags, license, latent space, metrics) and usage."""
    import yaml

    roles = ["pipeline"] if pipeline is not None else list(data.get("roles", []))
    family = data.get("family") or "pipeline"
    front: dict = {"library_name": "latentzoo", "license": _license_id(data.get("license")), "tags": ["latentzoo", family, *roles]}
    extra: dict = {"name": name}
    if data.get("latent_space"):
        extra["latent_space"] = data["latent_space"]
    if data.get("metrics"):
        extra["metrics"] = data["metrics"]
    if sha256:
        extra["sha256"] = {WEIGHTS_FILE: sha256}
    if pipeline is not None:
        extra["components"] = pipeline
    front["latentzoo"] = extra
    local = repo.split("/")[1]
    usage = [f"latentzoo pull {repo} --name {local}", f"latentzoo info {local}"]
    if pipeline is not None or "prior" in roles:
        usage.append(f"latentzoo sample {local} -n 16 --seed 0 -o samples.png" if pipeline is not None else f"latentzoo info {local}")
    elif "encoder" in roles:
        usage.append(f"latentzoo reconstruct {local} image.png -o reconstruction.png")
    lines = [
        "---",
        yaml.safe_dump(front, sort_keys=False).rstrip(),
        "---",
        "",
        f"# {name}",
        "",
        data.get("description") or f"A latentzoo {'/'.join(roles)}.",
        "",
    ]
    if data.get("latent_space"):
        lines += ["## Latent space", "", "```yaml", yaml.safe_dump(data["latent_space"], sort_keys=False).rstrip(), "```", ""]
    if data.get("metrics"):
        lines += ["## Metrics", "", *(f"- {k}: {v}" for k, v in data["metrics"].items()), ""]
    lines += ["## Usage", "", "```bash", "pip install latentzoo", *dict.fromkeys(usage), "```", ""]
    if sha256:
        lines += [f"`{WEIGHTS_FILE}` sha256: `{sha256}` (checked by `latentzoo pull` and on every load).", ""]
    return "\n".join(lines)


def _component_files(entry, repo: str) -> tuple[dict[str, bytes | str], str | None]:
    """{path in repo: bytes or local file path} for one component, and its weights' sha256."""
    import json

    from .build import resolve_weights
    from .errors import WeightsError
    from .weights import sha256_file

    data = {k: entry.data[k] for k in CARRIED_KEYS if k in entry.data}
    files: dict[str, bytes | str] = {}
    sha = None
    if "weights" in entry.data:
        path, sha = resolve_weights(entry)
        actual = sha256_file(path)
        if actual != sha:
            raise WeightsError(f"{path} fails its sha256 check (expected {sha[:12]}..., got {actual[:12]}...); refusing to push it")
        files[WEIGHTS_FILE] = str(path)
        data["weights"] = {"file": WEIGHTS_FILE, "sha256": sha}
    files[CONFIG_FILE] = (json.dumps({"latentzoo": 1, "name": entry.name, **data}, indent=2) + "\n").encode()
    files[CARD_FILE] = model_card(entry.name, data, repo, sha).encode()
    return files, sha


def _api():
    from huggingface_hub import HfApi

    return HfApi(endpoint=_endpoint(), token=os.environ.get("HF_TOKEN") or None)


def _commit(api, repo: str, files: dict[str, bytes | str], message: str, revision: str | None, private: bool, create_pr: bool):
    from huggingface_hub import CommitOperationAdd

    api.create_repo(repo, private=private, exist_ok=True)
    if revision and not create_pr:
        api.create_branch(repo, branch=revision, exist_ok=True)
    ops = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=c) for p, c in files.items()]
    return api.create_commit(repo, operations=ops, commit_message=message, revision=revision, create_pr=create_pr)


def _hub_errors():
    from huggingface_hub.errors import HfHubHTTPError

    return (HfHubHTTPError, OSError, ValueError)


def push(
    registry, name: str, repo: str, *, revision: str | None = None, private: bool = False, create_pr: bool = False, dry_run: bool = False
):
    """Upload a component (or a pipeline and, first, its components) to the Hub. Returns a list of (repo, files, commit or None)."""
    from .compose import PipelineSpec, check_spec
    from .errors import LatentzooError

    repo, at = parse_repo(repo)
    if at:
        raise LatentzooError(f"--repo {repo}@{at}: give the branch with --revision, not @")
    entry = registry.get(name)
    if not dry_run and offline():
        raise LatentzooError("offline mode is on (LATENTZOO_OFFLINE / HF_HUB_OFFLINE); unset it to push, or use --dry-run")
    plan: list[tuple[str, str, dict, str]] = []  # (component name, repo, files, message)
    pipeline_doc = None
    if entry.section == "components":
        files, _ = _component_files(entry, repo)
        plan.append((name, repo, files, f"latentzoo push {name}"))
    else:
        import yaml

        spec = PipelineSpec.from_entry(entry)
        check_spec(registry, spec)
        components: dict = {}
        refs: dict = {}
        for part in dict.fromkeys(spec.parts().values()):
            part_entry = registry.entries.get(part)
            if part_entry is None:  # a plugin class used with its default config
                continue
            body = {k: part_entry.data[k] for k in CARRIED_KEYS if k in part_entry.data}
            weights = part_entry.data.get("weights")
            if weights and "hub" in weights:  # already on the Hub: reference it as is
                body["weights"] = dict(weights)
                refs[part] = f"{weights['hub']}@{weights['revision']}"
            elif weights:
                part_repo = f"{repo}-{part}"
                files, sha = _component_files(part_entry, part_repo)
                plan.append((part, part_repo, files, f"latentzoo push {part} (component of {name})"))
                body["weights"] = {"hub": part_repo, "revision": None, "file": WEIGHTS_FILE, "sha256": sha}
                refs[part] = part_repo
            components[part] = body
        pipeline_doc = {"version": 1, "components": components, "pipelines": {name: spec.to_dict()}}
        card = model_card(
            name, {"description": entry.data.get("description"), "license": entry.data.get("license")}, repo, None, pipeline=refs
        )
        plan.append((name, repo, {PIPELINE_FILE: b"", CARD_FILE: card.encode()}, f"latentzoo push {name} (pipeline)"))
    results = []
    if dry_run:
        return [(r, sorted(f), None) for _, r, f, _ in plan]
    api = _api()
    commits: dict[str, str] = {}
    for part, part_repo, files, message in plan:
        if pipeline_doc is not None and part_repo == repo:
            for comp, body in pipeline_doc["components"].items():
                if body.get("weights", {}).get("revision", "") is None:
                    body["weights"]["revision"] = commits[comp]  # pinned to the commit just made
            files[PIPELINE_FILE] = yaml.safe_dump(pipeline_doc, sort_keys=False).encode()
        try:
            info = _commit(api, part_repo, files, message, revision, private, create_pr)
        except _hub_errors() as exc:
            raise LatentzooError(f"cannot push {part} to {part_repo}: {_first_line(exc)}") from exc
        commits[part] = info.oid
        results.append((part_repo, sorted(files), info.oid))
    return results


def _download(repo: str, filename: str, revision: str) -> Path:
    return hub_file(repo, filename, revision)


def _resolve(repo: str, revision: str | None) -> tuple[str, list[str] | None]:
    """(commit sha, file list) online; offline, the commit the cache holds for the revision and no list."""
    from .errors import LatentzooError, WeightsError

    rev = revision or "main"
    if offline():
        for filename in (CONFIG_FILE, PIPELINE_FILE):
            try:
                path = hub_file(repo, filename, rev)
            except WeightsError:
                continue
            return path.parent.name, [filename]
        raise WeightsError(
            f"{repo}@{rev} file {CONFIG_FILE} (or {PIPELINE_FILE}) is not in the local Hugging Face cache and offline mode is on; "
            "unset LATENTZOO_OFFLINE/HF_HUB_OFFLINE to pull it"
        )
    try:
        info = _api().model_info(repo, revision=rev)
    except _hub_errors() as exc:
        raise LatentzooError(f"cannot read {repo}@{rev} on the Hub: {_first_line(exc)}") from exc
    files = [s.rfilename for s in (info.siblings or [])]
    main = CONFIG_FILE if CONFIG_FILE in files else PIPELINE_FILE if PIPELINE_FILE in files else None
    if main is None:
        raise LatentzooError(f"{repo}@{rev} has no {CONFIG_FILE} or {PIPELINE_FILE}; is it a latentzoo repo?")
    # fetched by the revision's name, so the cache maps that name to the commit (offline pulls resolve it later)
    return hub_file(repo, main, rev).parent.name, files


def _load_config(repo: str, commit: str) -> dict:
    import json

    from .errors import LatentzooError

    path = hub_file(repo, CONFIG_FILE, commit)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LatentzooError(f"{repo}@{commit} {CONFIG_FILE} is not readable JSON ({exc}); is it a latentzoo repo?") from exc
    if not isinstance(data, dict) or "class" not in data or "roles" not in data:
        raise LatentzooError(f"{repo}@{commit} {CONFIG_FILE} is not a latentzoo component config (no class / roles)")
    return data


def _verified_entry(repo: str, commit: str, data: dict) -> dict:
    from .errors import WeightsError
    from .weights import sha256_file

    entry = {k: data[k] for k in CARRIED_KEYS if k in data}
    weights = data.get("weights")
    if weights:
        filename = weights.get("file", WEIGHTS_FILE)
        path = hub_file(repo, filename, commit)
        actual = sha256_file(path)
        expected = weights.get("sha256")
        if expected and actual != expected:
            raise WeightsError(
                f"{repo}@{commit} {filename} fails its sha256 check (expected {expected[:12]}..., got {actual[:12]}...); "
                "the upload is corrupt or was changed"
            )
        entry["weights"] = {"hub": repo, "revision": commit, "file": filename, "sha256": expected or actual}
    return entry


def pull(ref: str, *, name: str | None = None, force: bool = False) -> tuple[str, str, dict, dict]:
    """Download ORG/NAME[@REV], verify sha256, add it to the user registry. Returns (name, commit, components, pipelines)."""
    import yaml

    from .errors import LatentzooError
    from .userregistry import add_entries

    repo, revision = parse_repo(ref)
    commit, files = _resolve(repo, revision)
    local = name or repo.split("/")[1]
    components: dict = {}
    pipelines: dict = {}
    if files is not None and PIPELINE_FILE in files and CONFIG_FILE not in files:
        path = hub_file(repo, PIPELINE_FILE, commit)
        try:
            doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise LatentzooError(f"{repo}@{commit} {PIPELINE_FILE} is not readable YAML ({_first_line(exc)})") from exc
        for comp, body in (doc.get("components") or {}).items():
            weights = body.get("weights")
            if weights and "hub" in weights:
                body = {**body, **_verified_entry(weights["hub"], weights["revision"], body)}
            components[comp] = body
        for pname, body in (doc.get("pipelines") or {}).items():
            pipelines[name or pname] = body
        local = name or next(iter(pipelines), local)
    elif files is not None and CONFIG_FILE not in files:
        raise LatentzooError(f"{repo}@{commit} has no {CONFIG_FILE} or {PIPELINE_FILE}; is it a latentzoo repo?")
    else:
        components[local] = _verified_entry(repo, commit, _load_config(repo, commit))
    # entries the registry already holds verbatim (built-in samplers a pipeline embeds, a repeated pull) are not re-added
    from .registry import ENV_USER, Registry, user_registry_path

    saved = None if user_registry_path().is_file() else os.environ.pop(ENV_USER, None)  # a user file pull is about to create
    try:
        current = Registry.load().entries
    finally:
        if saved is not None:
            os.environ[ENV_USER] = saved
    components = {k: v for k, v in components.items() if not (k in current and current[k].data == v)}
    pipelines = {k: v for k, v in pipelines.items() if not (k in current and current[k].data == v)}
    if components or pipelines:
        add_entries(components, pipelines, force=force)
    return local, commit, components, pipelines
