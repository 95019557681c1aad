"""Weights on disk: safetensors only, sha256-verified, written atomically. Never unpickled."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import LatentzooError, WeightsError

if TYPE_CHECKING:
    import torch


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def space_identity(sha256: str) -> str:
    """The latent-space identity of an autoencoder: a prefix of its weights' sha256."""
    return f"sha256:{sha256[:16]}"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place.

    A crash or error leaves the old file (or nothing) at ``path``, never a partial one.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise LatentzooError(f"cannot write {path}: {exc.strerror or exc}; choose a writable location") from exc
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; published files get the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def write_json(path: str | Path, data: Any) -> Path:
    return write_bytes(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


METADATA_KEY = "latentzoo"


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> str:
    """Write a safetensors file atomically; return its sha256.

    safetensors serialises a metadata map of two or more keys in a per-process random
    order, so the same tensors would hash differently from run to run. Metadata of more
    than one key is therefore stored as one key holding sorted JSON (see read_metadata).
    """
    from safetensors.torch import save_file

    if metadata and len(metadata) > 1:
        metadata = {METADATA_KEY: json.dumps(metadata, sort_keys=True)}
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
    return sha256_file(path)


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata written by save_tensors, unpacked."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), "pt") as f:
            meta = dict(f.metadata() or {})
    except (SafetensorError, OSError) as exc:
        raise WeightsError(f"{path} is not a readable safetensors file ({exc})") from exc
    if set(meta) == {METADATA_KEY}:
        return json.loads(meta[METADATA_KEY])
    return meta


def load_tensors(path: str | Path, sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Read a safetensors file, checking its sha256 first when one is given."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist; re-install latentzoo or `latentzoo pull` the component")
    if sha256 is not None:
        actual = sha256_file(path)
        if actual != sha256:
            raise WeightsError(
                f"weights file {path} fails its sha256 check (expected {sha256[:12]}..., got {actual[:12]}...): "
                "it is truncated or was modified; restore it or re-download it"
            )
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"weights file {path} is not a readable safetensors file ({exc}); restore or re-download it") from exc
