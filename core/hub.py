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
        return Path(hf_hub_download(repo, filename, revision=revision, local_files_only=offline()))
    except LocalEntryNotFoundError as exc:
        raise WeightsError(
            f"{repo}@{revision} file {filename} is not in the local Hugging Face cache"
            + (" and offline mode is on; unset LATENTZOO_OFFLINE/HF_HUB_OFFLINE or `latentzoo pull` it first" if offline() else "")
        ) from exc
    except (HfHubHTTPError, OSError) as exc:
        raise WeightsError(f"cannot fetch {repo}@{revision} file {filename}: {str(exc).splitlines()[0]}") from exc
