"""Resumable, shardable ``-o DIR/`` runs: each finished batch is committed with a manifest line.

A run writing one PNG per sample into ``DIR/`` keeps ``DIR/samples.manifest.jsonl`` while it
runs. Its first line names the request (pipeline, component sha256s, seed, n, batch size,
steps, sampler, scheduler, options, precision, seeding scheme, re-ranking); every later line
commits one batch: its indices, each file's sha256 (and the batch's re-ranking scores and
drawn captions), written after the batch's files were renamed into place. Each line carries
the sha256 of its own content, so an edited or corrupt line is refused, naming its indices.
A line cut short by a kill (the last one, no newline) commits nothing.

Batch k is always indices ``k*B .. k*B+B-1`` (B the batch size), and per-index seeds
(core.runtime.seeding) make its bytes independent of which process renders it and when. So:

* ``--resume`` renders only the batches with a missing or unverifiable file (sha256 mismatch),
  and the result is byte-identical to an uninterrupted run; a resume with a different request
  is refused in one line naming what differs;
* under ``torchrun`` (core.runtime.distributed) rank r renders batches r, r + K, r + 2K, ... of K ranks;
  ranks that disagree on the request are refused; a rank with no batch exits cleanly;
* when every batch is committed, rank 0 writes the sidecar ``samples.json`` (with each file's
  sha256 in ``files_sha256``) atomically and removes the manifest: ``DIR/`` then holds exactly
  the files one process writes, plus the sidecar.

A ``DIR/`` holding a manifest is an unfinished run: without ``--resume`` it is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..contract.errors import LatentzooError

MANIFEST = "samples.manifest.jsonl"
MANIFEST_FORMAT = "latentzoo.manifest/1"
# The sidecar keys that make up the request a manifest is bound to.
REQUEST_KEYS = (
    "pipeline",
    "components",
    "sha256",
    "defaults",
    "seed",
    "n",
    "batch_size",
    "steps",
    "sampler",
    "scheduler",
    "options",
    "precision",
    "seeding",
    "candidates",
)


def request_of(record: dict[str, Any]) -> dict[str, Any]:
    return {k: record.get(k) for k in REQUEST_KEYS}


def digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def file_name(index: int) -> str:
    return f"{index:04d}.png"


def batches(n: int, batch_size: int) -> list[list[int]]:
    """Batch k: indices k*B .. min(n, k*B+B) - 1."""
    return [list(range(start, min(n, start + batch_size))) for start in range(0, n, batch_size)]


def share(count: int, rank: int, size: int, done: set[int]) -> list[int]:
    """The batches rank ``rank`` of ``size`` renders: r, r + size, ... (of ``count``), less those ``done``."""
    return [k for k in range(rank, count, size) if k not in done]


def _line(payload: dict[str, Any]) -> bytes:
    body = {**payload, "line_sha256": digest(payload)}
    return (json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False) + "\n").encode()


def _sha256_file(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


class Manifest:
    """The manifest of one ``-o DIR/`` run (see the module doc)."""

    def __init__(self, directory: Path, output: str) -> None:
        self.directory, self.output = directory, output
        self.path = directory / MANIFEST

    def exists(self) -> bool:
        return self.path.exists()

    # -- reading ----------------------------------------------------------------------------
    def read(self) -> tuple[dict[str, Any], dict[int, dict[str, Any]]]:
        """(header, committed batches by number); refuses a corrupt or edited manifest in one line."""
        try:
            raw = self.path.read_bytes()
        except OSError as exc:
            raise LatentzooError(f"cannot read {self.path}: {exc.strerror or exc}") from exc
        lines = raw.split(b"\n")
        if lines and lines[-1] != b"":
            lines = lines[:-1]  # the last line was cut short by a kill: it commits nothing
        lines = [ln for ln in lines if ln]
        fix = f"remove {self.path} (and re-render) or restore it"
        header: dict[str, Any] | None = None
        committed: dict[int, dict[str, Any]] = {}
        for number, text in enumerate(lines, start=1):
            try:
                entry = json.loads(text)
                ok = isinstance(entry, dict) and entry.pop("line_sha256", None) == digest(entry)
            except (UnicodeDecodeError, ValueError):
                entry, ok = None, False
            if number == 1:
                if not ok or entry.get("format") != MANIFEST_FORMAT:
                    raise LatentzooError(f"{self.path}: its header (line 1) is corrupt or was edited; {fix}")
                header = entry
                continue
            where = f"line {number}"
            if isinstance(entry, dict) and isinstance(entry.get("indices"), list) and entry["indices"]:
                where += f" (indices {entry['indices'][0]}-{entry['indices'][-1]})"
            if not ok or not isinstance(entry.get("batch"), int) or not isinstance(entry.get("files"), dict):
                raise LatentzooError(f"{self.path}: {where} is corrupt or was edited; {fix}")
            committed[entry["batch"]] = entry
        if header is None:
            raise LatentzooError(f"{self.path} is empty; {fix}")
        return header, committed

    def verified(self, committed: dict[int, dict[str, Any]]) -> set[int]:
        """The committed batches whose every file is on disk with its recorded sha256."""
        return {
            k for k, entry in committed.items() if all(_sha256_file(self.directory / name) == sha for name, sha in entry["files"].items())
        }

    # -- writing ----------------------------------------------------------------------------
    def start(self, request: dict[str, Any]) -> None:
        self._append(_line({"format": MANIFEST_FORMAT, "request": request, "request_sha256": digest(request)}), create=True)

    def commit(self, batch: int, indices: Sequence[int], files: dict[str, str], extra: dict[str, Any]) -> None:
        self._append(_line({"batch": batch, "indices": list(indices), "files": files, **extra}))

    def _append(self, data: bytes, *, create: bool = False) -> None:
        # One write per line with O_APPEND: lines of several ranks never interleave; fsync so a
        # committed batch survives a lost node.
        flags = os.O_WRONLY | os.O_APPEND | (os.O_CREAT | os.O_EXCL if create else 0)
        try:
            fd = os.open(self.path, flags, 0o666)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
        except FileExistsError as exc:
            raise LatentzooError(f"{self.path} appeared while starting; another run writes {self.output}; choose another -o") from exc
        except OSError as exc:
            raise LatentzooError(
                f"cannot write {self.path}: {exc.strerror or exc}; finished batches are kept, rerun with --resume"
            ) from exc

    def drop_cut_line(self) -> None:
        """Truncate a last line cut short by a kill, so that the next commit starts a line of its own."""
        try:
            raw = self.path.read_bytes()
            if raw and not raw.endswith(b"\n"):
                with open(self.path, "r+b") as f:
                    f.truncate(raw.rfind(b"\n") + 1)
        except OSError as exc:
            raise LatentzooError(f"cannot repair {self.path}: {exc.strerror or exc}") from exc

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def check_resume(manifest: Manifest, request: dict[str, Any], resume: bool) -> set[int]:
    """The batches already done (verified) for this request; refusals in one line."""
    if not manifest.exists():
        return set()
    if not resume:
        raise LatentzooError(
            f"{manifest.output} holds an unfinished run ({manifest.path.name}); add --resume to finish it, or choose another -o"
        )
    header, committed = manifest.read()
    if header.get("request_sha256") != digest(request):
        theirs = header.get("request") or {}
        differ = sorted(k for k in set(theirs) | set(request) if theirs.get(k) != request.get(k))
        raise LatentzooError(
            f"--resume: {manifest.output} was started by another request (differs in {', '.join(differ) or 'its digest'}); "
            "give the same pipeline, options, seed and batch size, or choose another -o"
        )
    return manifest.verified(committed)


def write_png(directory: Path, name: str, data: bytes) -> None:
    """Write ``data`` to a temporary file in ``directory``, then rename it to ``name``."""
    tmp = directory / f".{name}.{os.getpid()}.tmp"
    try:
        tmp.write_bytes(data)
        os.replace(tmp, directory / name)
    except BaseException as exc:  # a full disk, or Ctrl-C / SIGTERM between the write and the rename
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise LatentzooError(
                f"cannot write {directory / name}: {exc.strerror or exc}; finished batches are kept, rerun with --resume"
            ) from exc
        raise


__all__ = ["MANIFEST", "Manifest", "batches", "check_resume", "file_name", "request_of", "share", "write_png"]
