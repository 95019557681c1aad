"""Image data: named datasets declared by plugins, and any folder of images (Pillow).

Images are float tensors (N, C, H, W) in [-1, 1].
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..contract.errors import LatentzooError

if TYPE_CHECKING:
    import torch
    from PIL import Image

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
MODES = {1: "L", 3: "RGB"}


@dataclass
class ImageSet:
    """Images (and labels) held in memory; also used for pre-encoded latents or codes."""

    images: torch.Tensor
    labels: torch.Tensor | None
    name: str

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.images[i], None if self.labels is None else self.labels[i]

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A whole batch in one indexing operation (torch's DataLoader calls this when present)."""
        return self.images[indices], None if self.labels is None else self.labels[indices]


class ImageFolder:
    """Every image file under a folder, decoded on demand (so DataLoader workers decode in
    parallel and a large folder never has to fit in memory).

    Files are checked when the folder is listed: one that Pillow cannot identify or verify
    is skipped with a counted warning, so a training run does not fail on it hours in.
    """

    labels = None

    def __init__(self, path: Path, *, size: int, channels: int) -> None:
        from PIL import Image, UnidentifiedImageError

        self.path, self.size, self.channels, self.name = path, size, channels, str(path)
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        self.files, skipped = [], []
        for file in files:
            try:
                with Image.open(file) as image:
                    image.verify()
                self.files.append(file)
            except (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
                skipped.append(f"{file.name}: {exc}")
        if skipped:
            warnings.warn(f"skipped {len(skipped)} unreadable image(s) in {path}: {'; '.join(skipped[:3])}", stacklevel=3)
        if not self.files:
            raise LatentzooError(f"no readable images in {path} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
        self._images: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.files)

    def load(self, i: int) -> torch.Tensor:
        from PIL import Image

        try:
            with Image.open(self.files[i]) as image:
                return to_tensor(image, self.size, self.channels)
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise LatentzooError(f"cannot decode {self.files[i]}: {exc}; remove or replace the file") from exc

    def __getitem__(self, i: int) -> tuple[torch.Tensor, None]:
        return self.load(i), None

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, None]:
        import torch

        return torch.stack([self.load(int(i)) for i in indices]), None

    @property
    def images(self) -> torch.Tensor:
        """All images decoded, (N, C, H, W) (cached): for encoding a folder once or evaluating."""
        import torch

        if self._images is None:
            self._images = torch.stack([self.load(i) for i in range(len(self))])
        return self._images


def load_dataset(source: str, *, split: str = "train", size: int = 32, channels: int = 1) -> ImageSet | ImageFolder:
    """A dataset declared by a plugin (``digits``), or a folder of images."""
    from ..contract.plugins import get_manager
    from ..contract.registry import import_target

    datasets = get_manager().datasets()
    if source in datasets:
        return import_target(datasets[source]["target"])(split=split, size=size, channels=channels)
    path = Path(source)
    if path.is_dir():
        return folder_dataset(path, size=size, channels=channels)
    known = ", ".join(sorted(datasets)) or "none"
    raise LatentzooError(f"no dataset or folder named {source!r}; use a folder of images or one of: {known}")


# Integer and float modes whose values Pillow's convert("L") clips at 255 instead of scaling.
_DEEP_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def full_range(image: Image.Image, mode: str) -> Image.Image:
    """``image`` in ``mode`` ("L" or "RGB") with its values scaled from its own full range.

    Pillow's ``convert`` clips deep modes: a 16-bit grey of 0.31 (20316) becomes 255. Here
    I;16* are scaled from 0..65535; I (32-bit int, where Pillow puts 16-bit PNG and TIFF) from
    0..65535 when its values fit 16 bits, else 0..2^31-1; F from 0..1 when its values fit
    0..1, else 0..255 (a float copy of an 8-bit image). 1, P, LA, RGBA, CMYK and the 8-bit
    modes go through ``convert``, which already maps them onto 0..255 (alpha is dropped).
    """
    import numpy as np
    from PIL import Image

    if image.mode in _DEEP_MODES:
        values = np.asarray(image, dtype=np.float64)
        finite = values[np.isfinite(values)]
        top = float(finite.max()) if finite.size else 0.0
        if image.mode == "F":
            full = 1.0 if top <= 1.0 else 255.0
        elif image.mode == "I":
            full = 65535.0 if top <= 65535 else float(2**31 - 1)
        else:
            full = 65535.0
        grey = np.clip(np.nan_to_num(values / full * 255.0), 0, 255).round().astype(np.uint8)
        image = Image.fromarray(grey)  # uint8, 2-D: mode L
    return image if image.mode == mode else image.convert(mode)


def to_tensor(image: Image.Image, size: int, channels: int) -> torch.Tensor:
    """Resize the shorter side to ``size``, centre-crop, convert mode (from its full range), map to [-1, 1]."""
    import numpy as np
    import torch
    from PIL import Image

    image = full_range(image, MODES[channels])
    scale = size / min(image.size)
    w, h = max(size, round(image.width * scale)), max(size, round(image.height * scale))
    image = image.resize((w, h), Image.Resampling.BICUBIC)
    left, top = (w - size) // 2, (h - size) // 2
    image = image.crop((left, top, left + size, top + size))
    array = np.asarray(image, dtype=np.float32).reshape(size, size, channels)
    return torch.from_numpy(array).permute(2, 0, 1).div(127.5).sub(1.0)


def folder_dataset(path: Path, *, size: int, channels: int) -> ImageFolder:
    """Every image file under ``path`` (recursively, sorted); unreadable files are skipped and counted."""
    return ImageFolder(path, size=size, channels=channels)
