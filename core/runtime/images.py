"""Image files in and out (Pillow): grids, per-sample PNGs, strict loading for encoders."""

from __future__ import annotations

import io
import math
from pathlib import Path

import torch

from ..contract.errors import LatentzooError
from ..contract.weights import write_bytes
from .data import MODES, to_tensor


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) in [-1, 1] -> (N, H, W, C) uint8."""
    return images.clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def _png(array: torch.Tensor) -> bytes:
    from PIL import Image

    arr = array.numpy()
    image = Image.fromarray(arr[..., 0], mode="L") if arr.shape[-1] == 1 else Image.fromarray(arr, mode="RGB")
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def grid(images: torch.Tensor, nrow: int | None = None, padding: int = 2) -> torch.Tensor:
    """Tile (N, C, H, W) into one (C, H', W') image, ``nrow`` images per row (one image: itself, unpadded)."""
    n, c, h, w = images.shape
    if n == 1:
        return images[0]
    nrow = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / nrow)
    out = torch.full((c, rows * (h + padding) + padding, nrow * (w + padding) + padding), -1.0)
    for i in range(n):
        r, k = divmod(i, nrow)
        top, left = padding + r * (h + padding), padding + k * (w + padding)
        out[:, top : top + h, left : left + w] = images[i]
    return out


def save_grid(images: torch.Tensor, path: str | Path, *, nrow: int | None = None) -> Path:
    return write_bytes(path, _png(to_uint8(grid(images, nrow)[None])[0]))


def save_each(images: torch.Tensor, directory: str | Path) -> list[Path]:
    """One PNG per image, named by index (0000.png, 0001.png, ...)."""
    directory = Path(directory)
    return [write_bytes(directory / f"{i:04d}.png", _png(img)) for i, img in enumerate(to_uint8(images))]


def too_large(exc: Exception) -> str:
    """Pillow's DecompressionBombError, as the one-line reason and fix."""
    from PIL import Image

    return (
        f"the image is too large ({exc}); Pillow refuses images over {2 * (Image.MAX_IMAGE_PIXELS or 0)} pixels "
        "as a possible decompression bomb: use a smaller image"
    )


def grid_shape(width: int, height: int, size: int, padding: int = 2) -> tuple[int, int] | None:
    """(rows, columns) when a ``width`` x ``height`` image is laid out as a grid of ``size`` tiles
    as ``grid`` pads them (a sample grid), else None."""
    cols, dx = divmod(width - padding, size + padding)
    rows, dy = divmod(height - padding, size + padding)
    return (rows, cols) if dx == dy == 0 and rows >= 1 and cols >= 1 else None


def _size_refusal(path: str | Path, width: int, height: int, size: int, expects: str) -> str:
    shape = grid_shape(width, height, size)
    if shape is None:
        return f"{path} is {width}x{height} but {expects} takes {size}x{size} images; pass --fit to resize and centre-crop"
    rows, cols = shape
    return (
        f"{path} is {width}x{height}: a grid of {rows}x{cols} padded {size}x{size} images, but {expects} takes one {size}x{size} image per file; "
        f"sample with -o DIR/ for one PNG per image (then pass DIR/0000.png), or -n 1 -o x.png"
    )


def load_images(paths: list[str | Path], *, size: int, channels: int, fit: bool, expects: str) -> torch.Tensor:
    """Load images for an encoder; without ``fit``, a wrong size or mode is an error naming the file."""
    from PIL import Image, UnidentifiedImageError

    out = []
    from ..contract.userfiles import open_file

    for p in paths:
        try:
            with open_file(p, "image", "image") as fh, Image.open(fh) as image:
                image.load()
                if not fit:
                    if image.size != (size, size):
                        raise LatentzooError(_size_refusal(p, image.width, image.height, size, expects))
                    ok_modes = {"L"} if channels == 1 else {"RGB"}
                    if image.mode not in ok_modes:
                        raise LatentzooError(
                            f"{p} has mode {image.mode} but {expects} takes {MODES[channels]} ({channels}-channel) images; pass --fit to convert"
                        )
                out.append(to_tensor(image, size, channels))
        except Image.DecompressionBombError as exc:
            raise LatentzooError(f"cannot read image {p}: {too_large(exc)}") from exc
        except (FileNotFoundError, IsADirectoryError) as exc:
            raise LatentzooError(f"cannot read image {p}: no such file") from exc
        except (UnidentifiedImageError, OSError) as exc:
            raise LatentzooError(f"cannot read image {p}: not an image Pillow can open ({exc})") from exc
    return torch.stack(out)
