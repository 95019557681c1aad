"""The Hugging Face Hub: push a component or pipeline, pull one into the user registry.

A component is one Hub repo holding config.json, model.safetensors and a model card
README.md, uploaded in one commit. A pipeline repo holds pipeline.yaml (a registry fragment
whose components with weights reference their own repos pinned to a commit sha) and a
README.md. Reading a pinned file goes through ``latentzoo.core.runtime.sources`` (which ``build``
also uses); this module imports neither ``build`` nor any plugin.

Names from the Hub never replace a name the registry already has (built-in, plugin or user)
unless ``force``: a pulled component is named after its repo (or ``--name``), and the
components a pulled pipeline embeds are namespaced to it as ``<local>-<component>``
(``latentzoo pull acme/tiny-ldm`` adds ``tiny-ldm``, ``tiny-ldm-tiny-unet``, ...), except that
a component identical to one the registry already has (same class, roles, config, latent
space and weights sha256) is not copied: the pipeline uses the existing entry. So a pipeline
pushed from the built-ins pulls back onto the built-ins, and clearing the HF cache never breaks
them.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from latentzoo.core.contract.errors import LatentzooError, RegistryError, WeightsError
from latentzoo.core.runtime.sources import configure_hub_client, endpoint, hub_error_hint, hub_file, offline, resolve_weights

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
PIPELINE_FILE = "pipeline.yaml"
CARD_FILE = "README.md"
CARRIED_KEYS = (
    "family", "class", "roles", "config", "latent_space", "conditioning", "conditioning_space", "license", "description", "metrics",
)  # fmt: skip
IDENTITY_KEYS = (
    "class",
    "roles",
    "config",
    "latent_space",
    "conditioning",
    "conditioning_space",
)  # what makes two components the same model
PART_KEYS = ("encoder", "prior", "decoder", "sampler", "scheduler", "conditioner")
MAX_PIPELINE_BYTES = 1 << 20
# the Hub's repo-id rule: letters, digits, '-', '_', '.', not starting or ending with '-' or '.', no '--' or '..'
_REPO_PART = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


def check_name(name: str, what: str = "--name") -> str:
    """A registry name usable on the command line: letters, digits, '.', '_', '+', '-'."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise LatentzooError(
            f"{what} {name!r} is not a usable registry name; use letters, digits, '-', '_', '.' (no spaces, slashes or colons)"
        )
    return name


def parse_repo(ref: str) -> tuple[str, str | None]:
    """``ORG/NAME[@REVISION]`` -> (repo id, revision or None)."""
    repo, _, revision = str(ref).partition("@")
    parts = repo.split("/")
    if len(parts) != 2 or not all(_REPO_PART.match(p) and ".." not in p and "--" not in p for p in parts):
        hint = (
            " (a local folder is not pulled: use it with `latentzoo --registry FOLDER/registry.yaml`)"
            if Path(repo).exists() or repo.startswith((".", "/", "~"))
            else ""
        )
        raise LatentzooError(f"{ref!r} is not a Hub repo; use ORG/NAME or ORG/NAME@REVISION{hint}")
    if "@" in ref and not revision:
        raise LatentzooError(f"{ref!r} names no revision after @; use ORG/NAME@REVISION (a branch, tag or commit) or drop the @")
    return repo, revision or None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


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


def _assets(data: dict) -> list[tuple[str, str | None]]:
    """(file name, sha256) of the files a component's config ships beside its weights (a text encoder's tokenizer)."""
    spec = (data.get("config") or {}).get("tokenizer") if isinstance(data.get("config"), dict) else None
    if isinstance(spec, dict) and isinstance(spec.get("file"), str):
        return [(spec["file"], spec.get("sha256"))]
    return []


def _component_files(entry, repo: str) -> tuple[dict[str, bytes | str], str | None]:
    """{path in repo: bytes or local file path} for one component, and its weights' sha256."""
    import json

    from latentzoo.core.contract.weights import sha256_file

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
        for asset, asset_sha in _assets(data):  # files shipped beside the weights travel with them
            local = path.parent / asset
            if not local.is_file() or (asset_sha and sha256_file(local) != asset_sha):
                raise WeightsError(f"{local} is missing or fails its sha256 check; refusing to push {entry.name} without it")
            files[asset] = str(local)
    files[CONFIG_FILE] = (json.dumps({"latentzoo": 1, "name": entry.name, **data}, indent=2) + "\n").encode()
    files[CARD_FILE] = model_card(entry.name, data, repo, sha).encode()
    return files, sha


def _api():
    configure_hub_client()
    from huggingface_hub import HfApi

    return HfApi(endpoint=endpoint(), token=os.environ.get("HF_TOKEN") or None)


def _commit(api, repo: str, files: dict[str, bytes | str], message: str, revision: str | None, private: bool, create_pr: bool):
    from huggingface_hub import CommitOperationAdd

    api.create_repo(repo, private=private, exist_ok=True)
    if revision and not create_pr:
        api.create_branch(repo, branch=revision, exist_ok=True)
    ops = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=c) for p, c in files.items()]
    return api.create_commit(repo, operations=ops, commit_message=message, revision=revision, create_pr=create_pr)


@dataclass
class Pushed:
    """One repo a push wrote (or, with dry_run, would write)."""

    repo: str
    files: list[str]
    commit: str | None = None


def push(
    registry, name: str, repo: str, *, revision: str | None = None, private: bool = False, create_pr: bool = False, dry_run: bool = False
) -> list[Pushed]:
    """Upload a component (or a pipeline and, first, its components) to the Hub."""
    from latentzoo.core.contract.compose import PipelineSpec, check_spec

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
    if dry_run:
        return [Pushed(r, sorted(f)) for _, r, f, _ in plan]
    import yaml

    api = _api()
    commits: dict[str, str] = {}
    results = []
    for part, part_repo, files, message in plan:
        if pipeline_doc is not None and part_repo == repo:
            for comp, body in pipeline_doc["components"].items():
                if body.get("weights", {}).get("revision", "") is None:
                    body["weights"]["revision"] = commits[comp]  # pinned to the commit just made
            files[PIPELINE_FILE] = yaml.safe_dump(pipeline_doc, sort_keys=False).encode()
        try:
            info = _commit(api, part_repo, files, message, revision, private, create_pr)
        except LatentzooError:
            raise
        except Exception as exc:  # any failure of the HTTP client: one line naming the fix
            raise LatentzooError(f"cannot push {part} to {part_repo}: {hub_error_hint(exc)}") from exc
        commits[part] = info.oid
        results.append(Pushed(part_repo, sorted(files), info.oid))
    return results


def _resolve(repo: str, revision: str | None) -> tuple[str, list[str] | None]:
    """(commit sha, file list) online; offline, the commit the cache holds for the revision and no list."""
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
    except LatentzooError:
        raise
    except Exception as exc:  # any failure of the HTTP client: one line naming the fix
        raise LatentzooError(f"cannot read {repo}@{rev} on the Hub: {hub_error_hint(exc)}") from exc
    files = [s.rfilename for s in (info.siblings or [])]
    main = CONFIG_FILE if CONFIG_FILE in files else PIPELINE_FILE if PIPELINE_FILE in files else None
    if main is None:
        raise LatentzooError(f"{repo}@{rev} has no {CONFIG_FILE} or {PIPELINE_FILE}; is it a latentzoo repo?")
    # fetched by the revision's name, so the cache maps that name to the commit (offline pulls resolve it later)
    return hub_file(repo, main, rev).parent.name, files


def _load_config(repo: str, commit: str) -> dict:
    import json

    path = hub_file(repo, CONFIG_FILE, commit)
    if path.stat().st_size > MAX_PIPELINE_BYTES:
        raise LatentzooError(f"{repo}@{commit} {CONFIG_FILE} is larger than {MAX_PIPELINE_BYTES} bytes; not a latentzoo config")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LatentzooError(f"{repo}@{commit} {CONFIG_FILE} is not readable JSON ({exc}); is it a latentzoo repo?") from exc
    if not isinstance(data, dict) or "class" not in data or "roles" not in data:
        raise LatentzooError(f"{repo}@{commit} {CONFIG_FILE} is not a latentzoo component config (no class / roles)")
    return data


def _verified_entry(repo: str, commit: str, data: dict, trust: bool = False) -> dict:
    from latentzoo.core.contract.weights import sha256_file

    entry = {k: data[k] for k in CARRIED_KEYS if k in data}
    weights = data.get("weights")
    if weights:
        filename = weights.get("file", WEIGHTS_FILE)
        if not isinstance(filename, str) or "/" in filename or filename.startswith("."):
            raise LatentzooError(f"{repo}@{commit}: weights file {filename!r} is not a plain file name; is it a latentzoo repo?")
        path = hub_file(repo, filename, commit)
        actual = sha256_file(path)
        expected = weights.get("sha256")
        if not expected and not trust:  # nothing to check the download against: the user decides
            raise WeightsError(
                f"{repo}@{commit} {CONFIG_FILE} states no sha256 for {filename}; pull it with --trust-unverified to accept "
                f"the file as downloaded (sha256 {actual[:12]}...)"
            )
        if expected and actual != expected:
            raise WeightsError(
                f"{repo}@{commit} {filename} fails its sha256 check (expected {expected[:12]}..., got {actual[:12]}...); "
                "the upload is corrupt or was changed"
            )
        entry["weights"] = {"hub": repo, "revision": commit, "file": filename, "sha256": expected or actual}
        for asset, asset_sha in _assets(entry):  # fetched into the same snapshot folder as the weights
            if "/" in asset or asset.startswith("."):
                raise LatentzooError(f"{repo}@{commit}: file {asset!r} is not a plain file name; is it a latentzoo repo?")
            if asset_sha and sha256_file(hub_file(repo, asset, commit)) != asset_sha:
                raise WeightsError(f"{repo}@{commit} {asset} fails its sha256 check; the upload is corrupt or was changed")
    return entry


def _same_component(a: dict, b: dict) -> bool:
    """Same model: same class, roles, config, latent space and weights (by sha256)."""
    if any(a.get(k) != b.get(k) for k in IDENTITY_KEYS):
        return False
    return (a.get("weights") or {}).get("sha256") == (b.get("weights") or {}).get("sha256")


def _current_registry():
    from latentzoo.core.contract.registry import ENV_USER, Registry, user_registry_path

    saved = None if user_registry_path().is_file() else os.environ.pop(ENV_USER, None)  # a user file pull is about to create
    try:
        return Registry.load()
    finally:
        if saved is not None:
            os.environ[ENV_USER] = saved


def _pipeline_entries(repo: str, commit: str) -> tuple[dict, dict]:
    """(components, pipelines) of a pipeline repo's pipeline.yaml, schema-checked like any registry file."""
    from latentzoo.core.contract.registry import parse_file

    path = hub_file(repo, PIPELINE_FILE, commit)
    if path.stat().st_size > MAX_PIPELINE_BYTES:
        raise LatentzooError(f"{repo}@{commit} {PIPELINE_FILE} is larger than {MAX_PIPELINE_BYTES} bytes; refusing to read it")
    try:
        entries = parse_file(path, f"hub:{repo}")
    except RegistryError as exc:
        raise LatentzooError(
            f"{repo}@{commit} {PIPELINE_FILE} is not a valid latentzoo pipeline ({str(exc).replace(str(path), PIPELINE_FILE)})"
        ) from exc
    components = {e.name: e.data for e in entries if e.section == "components"}
    pipelines = {e.name: e.data for e in entries if e.section == "pipelines"}
    if len(pipelines) != 1:
        raise LatentzooError(
            f"{repo}@{commit} {PIPELINE_FILE} names {len(pipelines)} pipelines; a latentzoo pipeline repo holds exactly one"
        )
    return components, pipelines


@dataclass
class Pulled:
    """What ``pull`` added: the local name, the commit, new entries, and components reused from the registry."""

    name: str
    commit: str
    components: dict[str, dict[str, Any]] = field(default_factory=dict)
    pipelines: dict[str, dict[str, Any]] = field(default_factory=dict)
    reused: dict[str, str] = field(default_factory=dict)  # component in pipeline.yaml -> existing registry name


def pull(ref: str, *, name: str | None = None, force: bool = False, trust_unverified: bool = False) -> Pulled:
    """Download ORG/NAME[@REV], verify sha256, add it to the user registry (existing names need ``force``)."""
    from latentzoo.core.contract.userregistry import add_entries

    repo, revision = parse_repo(ref)
    if name is not None:
        check_name(name)
    commit, files = _resolve(repo, revision)
    local = name or repo.split("/")[1]
    current = _current_registry()
    result = Pulled(local, commit)
    if files is not None and PIPELINE_FILE in files and CONFIG_FILE not in files:
        components, pipelines = _pipeline_entries(repo, commit)
        rename: dict[str, str] = {}
        for comp, body in components.items():
            check_name(comp, f"{repo} {PIPELINE_FILE}: component")
            weights = body.get("weights")
            if weights:
                if "hub" not in weights:
                    raise LatentzooError(
                        f"{repo}@{commit} {PIPELINE_FILE}: {comp} names local weights; re-push the pipeline with `latentzoo push`"
                    )
                if not weights.get("revision"):
                    raise LatentzooError(
                        f"{repo}@{commit} {PIPELINE_FILE}: {comp}'s weights ({weights['hub']}) are not pinned to a revision; "
                        "re-push the pipeline with `latentzoo push` (it pins each component's commit)"
                    )
                part_repo, _ = parse_repo(str(weights["hub"]))
                body = {**body, **_verified_entry(part_repo, str(weights["revision"]), body, trust_unverified)}
            same = [e.name for e in current.entries.values() if e.section == "components" and _same_component(e.data, body)]
            if same:  # the registry already has this model (the same name first): use it, copy nothing
                rename[comp] = result.reused[comp] = comp if comp in same else same[0]
                continue
            rename[comp] = f"{local}-{comp}"
            result.components[rename[comp]] = body
        (body,) = pipelines.values()
        result.pipelines[local] = {k: (rename.get(v, v) if k in PART_KEYS else v) for k, v in body.items()}
    elif files is not None and CONFIG_FILE not in files:
        raise LatentzooError(f"{repo}@{commit} has no {CONFIG_FILE} or {PIPELINE_FILE}; is it a latentzoo repo?")
    else:
        result.components[local] = _verified_entry(repo, commit, _load_config(repo, commit), trust_unverified)
    # a repeated pull (same entries) adds nothing; a name the registry has for something else needs --force
    for section in (result.components, result.pipelines):
        for key in [k for k, v in section.items() if k in current.entries and current.entries[k].data == v]:
            del section[key]
    taken = current.conflicts({**result.components, **result.pipelines}, force=force)  # names and aliases, both ways
    if taken:
        raise RegistryError(f"the registry already names {', '.join(taken)}; pull with --name OTHER, or pass --force to shadow it")
    if result.components or result.pipelines:
        add_entries(result.components, result.pipelines, force=force)
    return result
