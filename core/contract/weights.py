"""Weights on disk: safetensors only, sha256-verified, written atomically. Never unpickled."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator
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


ENV_CRASH_AT = "LATENTZOO_CRASH_AT"
_CRASH_COUNT = 0


def crash_point(label: str) -> None:
    """A write boundary. With ``LATENTZOO_CRASH_AT=N`` the process dies (``os._exit(77)``, no
    cleanup, as a kill would) at the N-th boundary it reaches: the crash-consistency tests use
    it to interrupt a real run at every boundary in turn. ``LATENTZOO_CRASH_AT=list`` prints
    each boundary to stderr instead. Unset (always, in normal use), it costs one dict lookup.
    """
    target = os.environ.get(ENV_CRASH_AT)
    if not target:
        return
    global _CRASH_COUNT
    _CRASH_COUNT += 1
    if target == "list":
        print(f"crash point {_CRASH_COUNT}: {label}", file=sys.stderr, flush=True)
    elif target.isdigit() and int(target) == _CRASH_COUNT:
        print(f"crash point {_CRASH_COUNT}: {label}: exiting", file=sys.stderr, flush=True)
        os._exit(77)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


Placed = list[tuple[Path, "Path | None"]]


def place(moves: list[tuple[Path, Path]]) -> Placed:
    """Rename each (staged, dest) into place as one unit: an existing dest is first renamed aside
    (a ``.NAME.PID.bak`` beside it: renames need no free space for data). On any failure, or a
    signal, what was done is undone and the error re-raised. Returns (dest, backup or None) per
    move, for ``unplace`` (put everything back) or ``drop_backups`` (commit)."""
    placed: Placed = []
    try:
        for src, dest in moves:
            backup = None
            if dest.exists():
                backup = dest.with_name(f".{dest.name}.{os.getpid()}.bak")
                os.replace(dest, backup)
            placed.append((dest, backup))
            os.replace(src, dest)
    except BaseException:
        unplace(placed)
        raise
    return placed


def unplace(placed: Placed) -> None:
    """Put back what ``place`` replaced (best effort: a rename that fails here leaves its backup)."""
    for dest, backup in reversed(placed):
        try:
            if backup is not None:
                os.replace(backup, dest)
            else:
                dest.unlink(missing_ok=True)
        except OSError:
            pass


def drop_backups(placed: Placed) -> None:
    """Commit a ``place``: remove the files it kept aside."""
    for _, backup in placed:
        if backup is not None:
            backup.unlink(missing_ok=True)


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
        crash_point(f"before rename to {path.name}")
        os.replace(tmp, path)
    except Exception as exc:  # ENOSPC, EFBIG, EDQUOT, EIO: the old file stays, the temporary goes
        Path(tmp).unlink(missing_ok=True)
        reason = io_error(exc)
        if reason is None:
            raise
        raise LatentzooError(
            f"cannot write {path}: {reason}; free space or choose another location (the previous file, if any, is kept)"
        ) from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# -- one writer per output ---------------------------------------------------------------
# Every writer of a user-named output (sample -o, export, encode, convert's folder, a train
# run folder) holds an exclusive flock on a lock file named by the sha256 of the output's
# resolved path, in the user's cache (nothing is added beside the output). A second writer is
# refused at once (LOCK_NB) in one line naming the holder's pid; the kernel drops the lock
# when its holder exits, however it dies. Locks are per machine (flock on NFS is not
# shared between hosts) and per user (the lock folder is the user's).
_HELD: dict[str, list[Any]] = {}  # lock file -> [fd, holds]: one process may nest holds


def _lock_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "latentzoo" / "locks"


def lock_output(target: str | Path, what: str) -> Callable[[], None]:
    """Take the exclusive lock on ``target`` (``what`` names it in messages, e.g. ``-o x.png``);
    returns the function that releases it. Refused in one line while another process holds it."""
    real = Path(os.path.abspath(Path(target).expanduser()))
    try:
        real = real.resolve()
    except (OSError, RuntimeError):
        pass  # a symlink loop: the path as given
    name = hashlib.sha256(str(real).encode("utf-8", "surrogateescape")).hexdigest()[:32] + ".lock"
    try:
        folder = _lock_dir()
        folder.mkdir(parents=True, exist_ok=True)
        lock = folder / name
    except OSError:
        lock = Path(tempfile.gettempdir()) / f"latentzoo-{os.getuid() if hasattr(os, 'getuid') else 0}-{name}"
    key = str(lock)
    if key in _HELD:
        _HELD[key][1] += 1
        return _releaser(key)
    try:
        import fcntl
    except ImportError:  # Windows: no flock; writes are still atomic renames
        return lambda: None
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        return lambda: None  # no lock folder this user can write: keep the atomic renames only
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        os.close(fd)
        raise LatentzooError(
            f"{what} is being written by another latentzoo process{f' (pid {holder})' if holder.isdigit() else ''}; "
            "wait for it to finish or choose another output"
        ) from exc
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    _HELD[key] = [fd, 1]
    return _releaser(key)


def _releaser(key: str) -> Callable[[], None]:
    done = False

    def release() -> None:  # idempotent: a commit and a later abort release once
        nonlocal done
        if not done:
            done = True
            _release(key)

    return release


def _release(key: str) -> None:
    held = _HELD.get(key)
    if held is None:
        return
    held[1] -= 1
    if held[1] <= 0:
        del _HELD[key]
        os.close(held[0])  # releases the flock


@contextlib.contextmanager
def output_lock(target: str | Path, what: str) -> Iterator[None]:
    """Hold the writer's lock on ``target`` for the block (see lock_output)."""
    release = lock_output(target, what)
    try:
        yield
    finally:
        release()


def io_error(exc: BaseException) -> str | None:
    """The OS's reason when ``exc`` is a failed write (an OSError, or safetensors' error wrapping
    one as "... (os error N)"); None for anything else."""
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    match = re.search(r"\(os error (\d+)\)", str(exc))
    return os.strerror(int(match.group(1))) if match else None


def write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def write_json(path: str | Path, data: Any) -> Path:
    return write_bytes(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


METADATA_KEY = "latentzoo"


def _pack_metadata(metadata: dict[str, str] | None) -> dict[str, str] | None:
    """safetensors serialises a metadata map of two or more keys in a per-process random order, so
    the same tensors would hash differently from run to run: two or more keys are stored as one
    key holding sorted JSON (read_metadata unpacks it)."""
    if metadata and len(metadata) > 1:
        return {METADATA_KEY: json.dumps(metadata, sort_keys=True)}
    return metadata


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> str:
    """Write a safetensors file atomically; return its sha256.

    safetensors serialises a metadata map of two or more keys in a per-process random
    order, so the same tensors would hash differently from run to run. Metadata of more
    than one key is therefore stored as one key holding sorted JSON (see read_metadata).
    """
    from safetensors.torch import save_file

    metadata = _pack_metadata(metadata)
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
    return sha256_file(path)


# safetensors' dtype names (the format's spec, huggingface/safetensors README)
SAFETENSORS_DTYPES = {
    "float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16", "int64": "I64", "int32": "I32",
    "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL",
}  # fmt: skip


def torch_dtype(code: str) -> torch.dtype:
    """The torch dtype of a safetensors dtype name (``F32`` -> torch.float32)."""
    import torch

    names = {v: k for k, v in SAFETENSORS_DTYPES.items()}
    if code not in names:
        raise WeightsError(f"safetensors dtype {code!r} is not one latentzoo reads ({', '.join(sorted(names))})")
    return getattr(torch, names[code])


def stream_tensors(
    path: str | Path,
    layout: dict[str, tuple[tuple[int, ...], torch.dtype]],
    produce: Callable[[str], torch.Tensor],
    metadata: dict[str, str] | None = None,
) -> str:
    """Write a safetensors file one tensor at a time, atomically; return its sha256.

    ``layout`` gives each tensor's shape and dtype up front (the header comes first in the
    format: 8 bytes of little-endian header length, the JSON header padded with spaces to a
    multiple of 8, then the tensors' bytes at their ``data_offsets``); ``produce(name)`` then
    makes each tensor only when its bytes are written, so peak memory is one tensor, not the
    file (``save_file`` holds every tensor and a bytes copy of each). A produced tensor of
    another shape or dtype than its layout is an error.
    """
    import struct

    import torch

    names = sorted(layout)
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = _pack_metadata(metadata)
    offset = 0
    for name in names:
        shape, dtype = layout[name]
        size = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
        header[name] = {
            "dtype": SAFETENSORS_DTYPES[str(dtype).removeprefix("torch.")],
            "shape": list(shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(text)) + text)
            for name in names:
                tensor = produce(name).detach().contiguous().cpu()
                if tuple(tensor.shape) != tuple(layout[name][0]) or tensor.dtype != layout[name][1]:
                    raise ValueError(f"tensor {name!r} is {tuple(tensor.shape)} {tensor.dtype}, not its declared {layout[name]}")
                f.write(tensor.reshape(-1).view(torch.uint8).numpy().data if tensor.numel() else b"")
                del tensor

    atomic_write(path, write)
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


def check_layer_dtypes(tensors: dict[str, Any], source: Any) -> None:
    """Refuse a layer's weight or bias stored as integers (a float tensor declared I32 in a
    foreign file's header): a converter would otherwise cast it into a model that cannot work."""
    for name, tensor in tensors.items():
        if name.endswith((".weight", ".bias")) and not tensor.is_floating_point():
            raise WeightsError(
                f"{source}: tensor {name!r} is stored as {str(tensor.dtype).replace('torch.', '')}, but a layer's weight is "
                "floating point; the file is corrupt or mislabelled: re-save it"
            )


_FINITE_CHECKED: set[str] = set()  # sha256s of files whose tensors were all found finite (this process)


def check_finite(path: str | Path, tensors: dict[str, torch.Tensor]) -> None:
    """Refuse a file holding NaN or Inf in any floating-point tensor, naming the file and tensor.

    A single NaN in a prior's weights gives grey samples with exit 0; this costs one pass
    over the tensors, done once per file in a process: ``aminmax`` (NaN propagates into
    both, an Inf is the min or the max; no boolean copy of the tensor), and only for a
    tensor that fails it, ``isfinite`` to count the bad values.
    """
    import torch

    for name, tensor in tensors.items():
        if tensor.is_floating_point() and tensor.numel():
            lo, hi = torch.aminmax(tensor)
            if bool(torch.isfinite(lo)) and bool(torch.isfinite(hi)):
                continue
        if tensor.is_floating_point() or tensor.is_complex():
            finite = torch.isfinite(tensor)
            if not bool(finite.all()):
                bad = int(finite.numel() - finite.sum())
                raise WeightsError(
                    f"weights file {path}: tensor {name!r} holds {bad} NaN/Inf value(s) of {tensor.numel()}; "
                    "the file is corrupt or its training diverged: retrain it or restore a good copy"
                )


MAX_HEADER_BYTES = 100 * 2**20  # safetensors' own cap on a header
_SCAN_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16"}
_SCAN_CHUNK = 64 * 2**20


def scan_file(path: str | Path) -> tuple[str, tuple[str, int, int] | None, set[str] | None]:
    """One sequential read of a safetensors file: (sha256, the first tensor holding NaN / Inf as
    (name, bad values, values) or None, names whose finiteness was not checked here).

    Hashing and the finiteness check share the read, through one reused buffer: the tensors'
    pages are never mapped into the process (a later memory-mapped load touches only what the
    model uses; a VAE's encoder, unused by a text-to-image pipeline, stays on disk). Float types
    torch cannot view here (fp8) are returned as unchecked; an unreadable header returns None.
    """
    import torch

    digest = hashlib.sha256()
    buf = bytearray(_SCAN_CHUNK)
    view = memoryview(buf)
    bad: tuple[str, int, int] | None = None
    unchecked: set[str] | None = set()

    def read(f: Any, n: int, check: Any = None) -> None:
        while n > 0:
            k = f.readinto(view[: min(n, _SCAN_CHUNK)])
            if not k:
                return
            digest.update(view[:k])
            n -= k
            if check is not None:
                check(k)

    with open(path, "rb") as f:
        head = f.read(8)
        digest.update(head)
        regions: list[tuple[int, int, str, str]] = []
        try:
            n = int.from_bytes(head, "little")
            if not 0 < n <= min(os.fstat(f.fileno()).st_size - 8, MAX_HEADER_BYTES):
                raise ValueError("not a safetensors header")  # bounded before the read: a claimed 2^62 bytes never allocates
            raw = f.read(n)
            digest.update(raw)
            header = json.loads(raw)
            header.pop("__metadata__", None)
            regions = sorted((int(v["data_offsets"][0]), int(v["data_offsets"][1]), k, str(v["dtype"])) for k, v in header.items())
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError):
            unchecked = None
        pos = 0
        for start, end, name, dtype in regions:
            read(f, start - pos)  # bytes between tensors (none in files safetensors writes) are hashed too
            pos = max(pos, start)
            kind = _SCAN_DTYPES.get(dtype)
            if kind is None or bad is not None:
                if dtype.startswith("F") and kind is None and unchecked is not None:
                    unchecked.add(name)
                read(f, end - pos)
            else:
                torch_dtype = getattr(torch, kind)
                size = torch.empty((), dtype=torch_dtype).element_size()
                count = [0, 0]  # bad values, values

                def check(k: int, torch_dtype: Any = torch_dtype, size: int = size, count: list[int] = count) -> None:
                    t = torch.frombuffer(buf, dtype=torch_dtype, count=k // size)
                    lo, hi = torch.aminmax(t)  # NaN propagates into both; an Inf is the min or the max
                    if not (bool(torch.isfinite(lo)) and bool(torch.isfinite(hi))):
                        count[0] += int(t.numel() - torch.isfinite(t).sum())
                    count[1] += t.numel()

                read(f, end - pos, check)  # the chunk size is a multiple of every element size
                if count[0]:
                    bad = (name, count[0], count[1])
            pos = max(pos, end)
        for chunk in iter(lambda: f.read(1 << 20), b""):  # anything after the last tensor
            digest.update(chunk)
    return digest.hexdigest(), bad, unchecked


def load_tensors(path: str | Path, sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Read a safetensors file, checking its sha256 first when one is given, and that every
    floating-point tensor is finite (once per sha256 in a process)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        if path.is_symlink():  # a loop, or a link to nothing: say so, not "does not exist"
            raise WeightsError(f"weights file {path} is a symlink loop or a broken link; point it at the real weights file")
        raise WeightsError(f"weights file {path} does not exist; re-install latentzoo or `latentzoo pull` the component")
    scanned: tuple[tuple[str, int, int] | None, set[str] | None] | None = None
    if sha256 is not None:
        if sha256 in _FINITE_CHECKED:
            actual = sha256_file(path)
        else:  # hash and check finiteness in one read (see scan_file)
            actual, *rest = scan_file(path)
            scanned = (rest[0], rest[1])
        if actual != sha256:
            raise WeightsError(
                f"weights file {path} fails its sha256 check (expected {sha256[:12]}..., got {actual[:12]}...): "
                "it is truncated or was modified; restore it or re-download it"
            )
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"weights file {path} is not a readable safetensors file ({exc}); restore or re-download it") from exc
    if scanned is not None and scanned[1] is not None:
        bad, unchecked = scanned
        if bad is not None:
            name, n_bad, n = bad
            raise WeightsError(
                f"weights file {path}: tensor {name!r} holds {n_bad} NaN/Inf value(s) of {n}; "
                "the file is corrupt or its training diverged: retrain it or restore a good copy"
            )
        check_finite(path, {k: tensors[k] for k in unchecked if k in tensors})
        _FINITE_CHECKED.add(sha256)
    elif sha256 is None or sha256 not in _FINITE_CHECKED:
        check_finite(path, tensors)
        if sha256 is not None:
            _FINITE_CHECKED.add(sha256)
    return tensors


@contextlib.contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Modules built inside hold their parameters on the meta device: no memory, no random initialisation.

    For a model whose weights are loaded right after with ``load_state(..., assign=True)``.
    Buffers and plain tensors made at construction (a prior's noise schedule) stay real,
    which is why this patches parameter registration rather than using ``torch.device("meta")``.
    """
    from torch import nn

    register = nn.Module.register_parameter

    def on_meta(module: nn.Module, name: str, param: Any) -> None:
        if param is not None and param.device.type != "meta":
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register(module, name, param)

    nn.Module.register_parameter = on_meta  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Module.register_parameter = register  # type: ignore[method-assign]


def load_state(module: Any, state: dict[str, torch.Tensor], path: str | Path, name: str, *, assign: bool = False) -> None:
    """Load ``state`` into ``module`` (strictly); a missing, unexpected or wrongly shaped tensor
    is one line naming the tensor and, for a shape, the expected and found shapes.

    ``assign``: the module adopts the tensors themselves (``load_state_dict(assign=True)``; with
    ``load_tensors``' memory-mapped tensors, no copy of the weights is made), cast only where the
    module's dtype differs; for a module built under ``parameters_on_meta``."""
    own = module.state_dict()
    for key, tensor in state.items():
        if key in own and tuple(own[key].shape) != tuple(tensor.shape):
            raise WeightsError(
                f"weights file {path}: tensor {key!r} has shape {list(tensor.shape)} but {name} expects {list(own[key].shape)}; "
                "the config and weights belong to different models (fix the config or the weights)"
            )
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise WeightsError(
            f"weights {Path(path).name} do not fit {name}'s config: {len(missing)} missing key(s) "
            f"{missing[:3]}, {len(unexpected)} unexpected {unexpected[:3]}; the config and weights belong to different models"
        )
    if assign:
        state = {k: v if v.dtype == own[k].dtype else v.to(own[k].dtype) for k, v in state.items()}
    module.load_state_dict(state, strict=True, assign=assign)


def record_file_sources(module: Any, path: str | Path) -> None:
    """Mark ``module``'s parameters adopted from the safetensors file ``path`` with their byte range.

    Adopted tensors are views of the file's mapping: kernels that repack a weight (core.nn.kernels)
    then read it from the file instead, so its mapped pages are never made resident."""
    import torch

    from ..nn.kernels import set_file_source

    regions = tensor_regions(path)
    for key, param in module.named_parameters():
        region = regions.get(key)
        if region is not None and param.dtype == getattr(torch, _SCAN_DTYPES.get(region[2], "uint8")):
            set_file_source(param, path, region[0], region[1])


def cast_parameters(module: Any, dtype: torch.dtype) -> None:
    """Cast ``module``'s floating-point parameters to ``dtype`` in place (buffers, such as a noise
    schedule, keep their precision). A parameter adopted from a memory-mapped weights file is cast
    from a temporary mapping of its bytes (core.nn.kernels.file_source), so the file's pages in the
    module's own mapping never become resident: memory holds the cast copy only."""
    from ..nn.kernels import file_source

    for param in module.parameters():
        if param.is_floating_point() and param.dtype != dtype:
            with file_source(param) as dense:
                cast = (param.data if dense is None else dense).to(dtype)
                del dense  # lets the temporary mapping close
            param.data = cast


def tensor_regions(path: str | Path) -> dict[str, tuple[int, int, str]]:
    """Each tensor's (start, end) byte offsets in a safetensors file and its dtype code; {} for an unreadable header."""
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if not 0 < n <= min(os.fstat(f.fileno()).st_size - 8, MAX_HEADER_BYTES):
                return {}  # not a safetensors header (safetensors caps headers at 100 MB)
            header = json.loads(f.read(n))
        header.pop("__metadata__", None)
        base = 8 + n
        return {k: (base + int(v["data_offsets"][0]), base + int(v["data_offsets"][1]), str(v["dtype"])) for k, v in header.items()}
    except (OSError, ValueError, TypeError, KeyError, AttributeError, OverflowError):
        return {}
