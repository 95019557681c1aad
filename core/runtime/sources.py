"""Where a component's weights come from: a local path, or a Hub file pinned to a revision.

One small module with no back-references (it imports neither ``build`` nor ``interop``), as
timm's ``_resolve_pretrained_source`` is a leaf the builders call. ``build`` imports it to load
weights; ``latentzoo.interop.hub`` imports it to read what it pulled.

Network rules (the HF client is configured before ``huggingface_hub`` is first imported, and
its module constants are set too when something imported it earlier):

* ``LATENTZOO_OFFLINE=1`` (or ``HF_HUB_OFFLINE=1``): zero requests of any kind. Pinned files
  come from the local HF cache or the command fails in one line naming the file.
* Always: telemetry off (``HF_HUB_DISABLE_TELEMETRY``), so building a request header never
  fetches anything (the client's agent detection would GET ``/api/agent-harnesses``).
* A file pinned to a commit that is already cached is returned from the cache without any
  request, online too: a pinned commit never changes.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from ..contract.errors import WeightsError

ENV_OFFLINE = "LATENTZOO_OFFLINE"
TRUE = ("1", "true", "yes", "on")
COMMIT_SHA = re.compile(r"^[0-9a-f]{40}$")


def offline() -> bool:
    """True when LATENTZOO_OFFLINE or HF_HUB_OFFLINE is set: no command may make a network request."""
    return any(os.environ.get(v, "").strip().lower() in TRUE for v in (ENV_OFFLINE, "HF_HUB_OFFLINE"))


def configure_hub_client() -> None:
    """Set the HF client's environment (offline, telemetry) before huggingface_hub reads it."""
    import sys

    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    if offline():
        os.environ["HF_HUB_OFFLINE"] = "1"
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:  # imported before us (a test, an embedding program): its constants are already read
        constants.HF_HUB_DISABLE_TELEMETRY = os.environ["HF_HUB_DISABLE_TELEMETRY"].strip().lower() in TRUE
        constants.HF_HUB_OFFLINE = constants.HF_HUB_OFFLINE or offline()


def endpoint() -> str | None:
    return os.environ.get("HF_ENDPOINT") or None


def cached_file(repo: str, filename: str, revision: str) -> Path | None:
    """The cached copy of a file pinned to ``revision``, found without any request; None if not cached."""
    configure_hub_client()
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo, filename, revision=revision)
    return Path(found) if isinstance(found, str) else None


def hub_file(repo: str, filename: str, revision: str) -> Path:
    """Path of ``filename`` of ``repo`` at ``revision`` in the HF cache, downloading only when online and not cached."""
    configure_hub_client()
    if COMMIT_SHA.match(revision or ""):
        path = cached_file(repo, filename, revision)
        if path is not None:
            return path
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(hf_hub_download(repo, filename, revision=revision, local_files_only=offline(), endpoint=endpoint()))
    except LocalEntryNotFoundError as exc:
        if offline():
            raise WeightsError(
                f"{repo}@{revision} file {filename} is not in the local Hugging Face cache and offline mode is on; "
                "unset LATENTZOO_OFFLINE/HF_HUB_OFFLINE or `latentzoo pull` it first"
            ) from exc
        raise WeightsError(f"cannot fetch {repo}@{revision} file {filename}: {hub_error_hint(exc)}") from exc
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise WeightsError(f"cannot fetch {repo}@{revision} file {filename}: {hub_error_hint(exc)}") from exc


def hub_error_hint(exc: BaseException) -> str:
    """One line for a failed Hub request, naming the fix (not a bare exception class)."""
    text = " ".join(str(exc).split())
    lowered = text.lower()
    kind = type(exc).__name__
    chain = [exc]
    while chain[-1].__cause__ is not None or chain[-1].__context__ is not None:
        nxt = chain[-1].__cause__ or chain[-1].__context__
        if nxt in chain:
            break
        chain.append(nxt)
    names = " ".join(type(e).__name__ for e in chain)
    if "Connect" in names or "connection" in lowered or "timed out" in lowered or "Timeout" in names:
        where = endpoint() or "https://huggingface.co"
        return f"the Hub at {where} is unreachable; check the network or HF_ENDPOINT, or set LATENTZOO_OFFLINE=1 to use the local cache"
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if "RepositoryNotFound" in names or (status == 404 and "repository" in lowered):
        return "the repository does not exist (or is private: log in with `huggingface-cli login` or set HF_TOKEN); check ORG/NAME"
    if status in (401, 403):
        return f"not authorised ({status}); log in with `huggingface-cli login` or set HF_TOKEN with access to the repo"
    if "RevisionNotFound" in names:
        return "the revision does not exist; check the branch, tag or commit after @"
    if "EntryNotFound" in names:
        return "the file is not in that revision of the repo; is it a latentzoo repo?"
    first = text[:200] if text else kind
    return f"{first} ({kind})" if kind not in first else first


def resolve_weights(entry: Any) -> tuple[Path, str]:
    """Local path and sha256 of a registry entry's weights (a Hub reference resolves through the HF cache)."""
    weights = entry.data["weights"]
    if "path" in weights:
        return entry.weights_path(), weights["sha256"]
    revision = weights.get("revision")
    if not revision:
        raise WeightsError(f"{entry.where}: {entry.name}'s Hub weights are not pinned to a revision; add weights.revision (a commit sha)")
    return hub_file(weights["hub"], weights.get("file", "model.safetensors"), str(revision)), weights["sha256"]
