"""Image data: named datasets declared by plugins, and any folder of images (Pillow).

Images are float tensors (N, C, H, W) in [-1, 1].
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import LatentzooError

if TYPE_CHECKING:
    import torch
    from PIL import Image

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
MODES = {1: "L", 3: "RGB"}


@dataclass
class ImageSet:
    images: torch.Tensor
    labels: torch.Tensor | None
    name: str

    def __len__(self) -> int:
        return len(self.images)


def load_dataset(source: str, *, split: str = "train", size: int = 32, channels: int = 1) -> ImageSet:
    """A dataset declared by a plugin (``digits``), or a folder of images."""
    from .plugins import get_manager
    from .registry import import_target

    datasets = get_manager().datasets()
    if source in datasets:
        return import_target(datasets[source]["target"])(split=split, size=size, channels=channels)
    path = Path(source)
    if path.is_dir():
        return folder_dataset(path, size=size, channels=channels)
    known = ", ".join(sorted(datasets)) or "none"
    raise LatentzooError(f"no dataset or folder named {source!r}; use a folder of images or one of: {known}")


def to_tensor(image: Image.Image, size: int, channels: int) -> torch.Tensor:
    """Resize the shorter side to ``size``, centre-crop, convert mode, map to [-1, 1]."""
    import numpy as np
    import torch
    from PIL import Image

    image = image.convert(MODES[channels])
    scale = size / min(image.size)
    w, h = max(size, round(image.width * scale)), max(size, round(image.height * scale))
    image = image.resize((w, h), Image.Resampling.BICUBIC)
    left, top = (w - size) // 2, (h - size) // 2
    image = image.crop((left, top, left + size, top + size))
    array = np.asarray(image, dtype=np.float32).reshape(size, size, channels)
    return torch.from_numpy(array).permute(2, 0, 1).div(127.5).sub(1.0)


def folder_dataset(path: Path, *, size: int, channels: int) -> ImageSet:
    """Every image file under ``path`` (recursively, sorted); unreadable files are skipped and counted."""
    import torch
    from PIL import Image, UnidentifiedImageError

    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    tensors, skipped = [], []
    for file in files:
        try:
            with Image.open(file) as image:
                tensors.append(to_tensor(image, size, channels))
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            skipped.append(f"{file.name}: {exc}")
    if skipped:
        warnings.warn(f"skipped {len(skipped)} unreadable image(s) in {path}: {'; '.join(skipped[:3])}", stacklevel=2)
    if not tensors:
        raise LatentzooError(f"no readable images in {path} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    return ImageSet(images=torch.stack(tensors), labels=None, name=str(path))
