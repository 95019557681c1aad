"""Sample outputs and their run record: PNG(s) and a JSON sidecar, committed as one unit.

``SampleOutput`` takes uint8 image batches as they are made and holds only what the
result needs: a grid canvas of uint8 pixels (``-o x.png``), or nothing at all
(``-o DIR/``: each sample's PNG goes to a staging folder as soon as it is made).
``commit`` writes the sidecar beside them and renames everything into place; if any
step fails, whatever was already renamed is rolled back (earlier files restored), so
a failed run leaves neither a PNG without its sidecar nor a sidecar without its PNG.

An existing sidecar is replaced only when it is a latentzoo sample record; any other
file of that name is refused before sampling starts.
"""

from __future__ import annotations

import io
import json
import math
import os
import platform
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..contract.errors import LatentzooError
from ..contract.weights import _umask, drop_backups, place

RECORD_FORMAT = "latentzoo.samples/1"
DIR_SIDECAR = "samples.json"
DEFAULT_BATCH_SIZE = 64
MAX_SEED = 2**63 - 1
MAX_GRID_PIXELS = 100_000_000  # one grid PNG: 10k x 10k pixels (~300 MB of RGB while it is drawn)
MIN_TILE = 8  # pixels: the smallest image side any pipeline makes, for the check before the size is known
PRECISIONS = ("fp32", "bf16", "bf16-weights", "fp16")  # fp16: CUDA only (core.runtime.check_precision_on)


def check_run(n: int, seed: int, batch_size: int | None = None, nrow: int | None = None) -> None:
    """One-line refusals for the numbers every sampling call takes."""
    for label, value in (("-n", n), ("--seed", seed), ("--batch-size", batch_size), ("--nrow", nrow)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise LatentzooError(f"{label} must be an integer, not {value!r}")
    if n < 1:
        raise LatentzooError(f"-n must be at least 1, not {n}")
    if not 0 <= seed <= MAX_SEED:
        raise LatentzooError(f"--seed must be between 0 and 2**63-1 ({MAX_SEED}), not {seed}")
    if batch_size is not None and batch_size < 1:
        raise LatentzooError(f"--batch-size must be at least 1, not {batch_size}")
    if nrow is not None and nrow < 1:
        raise LatentzooError(f"--nrow must be at least 1, not {nrow}")
    if nrow is not None and nrow > n:  # a row wider than the images: empty columns, or a pixel-cap refusal far later
        raise LatentzooError(f"--nrow {nrow} is more than the {n} image(s) of the grid (-n); give --nrow from 1 to {n}")


# Images one edit makes (interpolate's frames, variations' -n). They are made and written batch
# by batch (memory flat in the count); the cap stops a typo such as 1e9 from running for days.
MAX_EDIT_IMAGES = 10_000


def check_held(what: str, count: Any, least: int) -> int:
    """An edit's image count: a whole number from ``least`` to MAX_EDIT_IMAGES (no torch)."""
    if isinstance(count, bool) or not isinstance(count, int):
        raise LatentzooError(f"{what} must be a whole number from {least} to {MAX_EDIT_IMAGES}, not {count!r}")
    if count < least:
        raise LatentzooError(f"{what} must be at least {least}, not {count}")
    if count > MAX_EDIT_IMAGES:
        raise LatentzooError(f"{what} must be at most {MAX_EDIT_IMAGES} (images one edit makes), not {count}")
    return count


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise LatentzooError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")


def prompt_outputs(output: str, count: int) -> list[str]:
    """One output per prompt of a prompts file: ``x.png`` -> ``x-000.png``, ``x-001.png``, ...;
    ``DIR/`` -> ``DIR/000/``, ``DIR/001/``, ... (each with its own sidecar naming its prompt)."""
    if output.endswith(("/", os.sep)):
        return [f"{output}{i:03d}/" for i in range(count)]
    path = Path(output)
    return [str(path.with_name(f"{path.stem}-{i:03d}{path.suffix}")) for i in range(count)]


def versions() -> dict[str, str]:
    import torch

    from latentzoo import __version__

    return {"latentzoo": __version__, "torch": torch.__version__, "python": platform.python_version()}


def is_sample_record(path: Path) -> bool:
    """True for a sidecar latentzoo wrote (this format, or the earlier one with pipeline + versions)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    if not isinstance(data, dict):
        return False
    if data.get("format") == RECORD_FORMAT:
        return True
    return "pipeline" in data and isinstance(data.get("versions"), dict) and "latentzoo" in data["versions"]


def png_bytes(array: Any) -> bytes:
    """A (H, W, C) uint8 array (numpy or torch) as PNG bytes (mode L or RGB)."""
    from PIL import Image

    arr = array.numpy() if hasattr(array, "numpy") else array
    image = Image.fromarray(arr[..., 0], mode="L") if arr.shape[-1] == 1 else Image.fromarray(arr, mode="RGB")
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _writable_ancestor(path: Path, output: str) -> None:
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise LatentzooError(f"cannot write {output}: {probe} is not a directory; choose another -o")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise LatentzooError(f"cannot write {output}: {probe} is not writable; choose another -o")


def _check_sidecar(sidecar: Path, output: str) -> None:
    if sidecar.is_dir():
        raise LatentzooError(f"cannot write the sidecar {sidecar} of -o {output}: it is a directory; choose another -o")
    if sidecar.exists() and not is_sample_record(sidecar):
        raise LatentzooError(
            f"refusing to overwrite {sidecar}: it is not a latentzoo sample record (the sidecar of -o {output}); move it or choose another -o"
        )


class SampleOutput:
    """Where ``sample`` writes: a grid PNG plus ``x.json``, or ``DIR/0000.png ...`` plus ``DIR/samples.json``."""

    def __init__(self, output: str | Path, *, n: int, nrow: int | None = None, padding: int = 2) -> None:
        self._unlock: Any = None
        self._range: tuple[int, int] | None = None
        text = str(output)
        self.output = text
        self.per_sample = text.endswith(("/", os.sep))
        self.path = Path(text)
        # One image is that image at the model's size (chainable into img2img), not a one-tile padded grid.
        self.n, self.padding = n, (0 if n == 1 else padding)
        self.nrow = nrow or math.ceil(math.sqrt(n))
        self.count = 0
        self.canvas: Any = None
        self.files: list[str] = []
        self._created: list[Path] = []
        self._staging: Path | None = None
        self._temps: list[Path] = []
        _writable_ancestor(self.path if self.per_sample else self.path.parent, text)
        if self.per_sample:
            if self.path.exists() and not self.path.is_dir():
                raise LatentzooError(f"cannot write {text}: {self.path} is a file, not a directory; choose another -o")
            self.sidecar = self.path / DIR_SIDECAR
        else:
            if self.path.is_dir():
                raise LatentzooError(f"-o {text} is a directory; end it with / to write one PNG per sample, or give a .png file")
            if self.path.suffix.lower() == ".json":
                raise LatentzooError(f"-o {text} would be its own sidecar; give a .png file")
            if self.path.suffix.lower() != ".png":  # PNG bytes under a .jpg name would mislead every viewer
                raise LatentzooError(f"-o {text}: latentzoo writes PNG; give a .png file, or DIR/ for one PNG per sample")
            self.sidecar = self.path.with_suffix(".json")
            self._check_grid(MIN_TILE, MIN_TILE)  # an absurd -n / --nrow is refused before anything runs
        _check_sidecar(self.sidecar, text)
        from ..contract.weights import lock_output

        # One writer per output, held until commit / abort, or until this object is dropped (a
        # pre-flight check's instance releases at once, CPython's reference counting).
        if os.environ.get("RANK", "0") == "0":  # rank 0 holds it for every rank of a distributed run
            self._unlock = lock_output(self.path, f"-o {text}")

    def __del__(self) -> None:
        if self._unlock is not None:
            self._unlock()

    def _check_grid(self, h: int, w: int) -> None:
        """Refuse a grid over MAX_GRID_PIXELS before its canvas is allocated."""
        rows, p = math.ceil(self.n / self.nrow), self.padding
        height, width = rows * (h + p) + p, self.nrow * (w + p) + p
        if height * width > MAX_GRID_PIXELS:
            raise LatentzooError(
                f"-o {self.output}: a grid of {self.n} image(s), {self.nrow} per row, would be {width}x{height} pixels, over the "
                f"{MAX_GRID_PIXELS:,} pixel limit of one PNG; write one PNG per sample with -o DIR/ (or lower -n / --nrow)"
            )

    # -- filling ------------------------------------------------------------------------
    def _mkdirs(self, directory: Path) -> None:
        missing = []
        probe = directory
        while not probe.exists():
            missing.append(probe)
            probe = probe.parent
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LatentzooError(f"cannot write {self.output}: {exc.strerror or exc}; choose another -o") from exc
        self._created.extend(reversed(missing))

    def add(self, images: Any) -> None:
        """Take a batch of (B, H, W, C) uint8 images (the next ``B`` samples in order)."""
        if len(images):  # the pixel range seen so far: a constant output is named at commit
            lo, hi = int(images.min()), int(images.max())
            self._range = (lo, hi) if self._range is None else (min(lo, self._range[0]), max(hi, self._range[1]))
        if self.per_sample:
            try:
                if self._staging is None:
                    self._mkdirs(self.path)
                    self._staging = Path(tempfile.mkdtemp(prefix=".latentzoo-staging-", dir=self.path))
                for image in images:
                    name = f"{self.count:04d}.png"
                    (self._staging / name).write_bytes(png_bytes(image))
                    self.files.append(name)
                    self.count += 1
            except OSError as exc:
                raise LatentzooError(f"cannot write {self.output}: {exc.strerror or exc}; choose another -o") from exc
            return
        import torch

        _, h, w, c = images.shape
        if self.canvas is None:  # grid of uint8 tiles, background 0 (-1 in [-1, 1]), as images.grid
            self._check_grid(h, w)
            rows = math.ceil(self.n / self.nrow)
            p = self.padding
            self.canvas = torch.zeros((rows * (h + p) + p, self.nrow * (w + p) + p, c), dtype=torch.uint8)
        for image in images:
            r, k = divmod(self.count, self.nrow)
            top, left = self.padding + r * (h + self.padding), self.padding + k * (w + self.padding)
            self.canvas[top : top + h, left : left + w] = image
            self.count += 1

    # -- committing ---------------------------------------------------------------------
    def commit(self, record: dict[str, Any]) -> dict[str, Any]:
        """Write the sidecar (with ``files``) and rename every file into place, or roll back."""
        if self.count != self.n:
            raise LatentzooError(f"internal: {self.count} of {self.n} samples were produced")
        if self._range is not None and self._range[0] == self._range[1]:
            import warnings

            warnings.warn(
                f"every pixel of {self.output} is {self._range[0]}: the output is constant (an all-zero or untrained decoder?)",
                stacklevel=2,
            )
        record = {**record, "files": list(self.files) if self.per_sample else [self.path.name]}
        text = json.dumps(record, indent=2, sort_keys=True, allow_nan=False) + "\n"  # a NaN never makes invalid JSON
        moves: list[tuple[Path, Path]] = []
        if self.per_sample:
            assert self._staging is not None
            try:
                (self._staging / DIR_SIDECAR).write_text(text, encoding="utf-8")
            except OSError as exc:
                raise LatentzooError(f"cannot write {self.sidecar}: {exc.strerror or exc}; nothing was written") from exc
            moves = [(self._staging / name, self.path / name) for name in self.files]
            moves.append((self._staging / DIR_SIDECAR, self.sidecar))
        else:
            self._mkdirs(self.path.parent)
            png, side = self._temp(self.path), self._temp(self.sidecar)
            try:
                png.write_bytes(png_bytes(self.canvas))
                side.write_text(text, encoding="utf-8")
            except OSError as exc:  # a full disk, a quota
                raise LatentzooError(f"cannot write {self.output}: {exc.strerror or exc}; nothing was written") from exc
            moves = [(png, self.path), (side, self.sidecar)]
        _check_sidecar(self.sidecar, self.output)  # it may have appeared while sampling
        _replace_all(moves, self.output)
        self._cleanup(keep_dirs=True)
        return record

    def _temp(self, dest: Path) -> Path:
        try:
            fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
        except OSError as exc:
            raise LatentzooError(f"cannot write {dest}: {exc.strerror or exc}; choose another -o") from exc
        os.close(fd)
        os.chmod(name, 0o666 & ~_umask())  # as weights.atomic_write
        self._temps.append(Path(name))
        return Path(name)

    def abort(self) -> None:
        """Remove everything this output wrote (staging files, temporaries, folders it created)."""
        self._cleanup(keep_dirs=False)

    def _cleanup(self, *, keep_dirs: bool) -> None:
        for tmp in self._temps:
            tmp.unlink(missing_ok=True)
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)
            self._staging = None
        if not keep_dirs:
            for directory in reversed(self._created):
                try:
                    directory.rmdir()
                except OSError:
                    pass
        if self._unlock is not None:  # last: the next writer sees nothing of ours
            self._unlock()


def _replace_all(moves: list[tuple[Path, Path]], output: str) -> None:
    """Rename each (src, dest) as one unit (weights.place: an existing dest kept aside, restored on failure)."""
    try:
        placed = place(moves)
    except OSError as exc:
        raise LatentzooError(f"cannot write {output}: {exc.strerror or exc} ({exc.filename}); nothing was written") from exc
    drop_backups(placed)
