"""scikit-learn's handwritten digits (1,797 images, 8x8, values 0..16), bundled.

The file ``digits.safetensors`` is a byte-for-byte copy of ``sklearn.datasets.load_digits``
(UCI Optical Recognition of Handwritten Digits, CC BY 4.0) so that training and evaluation
need no scikit-learn at run time; ``tests/test_data.py`` checks it against scikit-learn.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from latentzoo.core.runtime.data import ImageSet

FILE = Path(__file__).with_name("digits.safetensors")
HELD_OUT = 360  # fixed held-out split: the last 360 of a seed-0 permutation (~20 %)


def load(split: str = "train", size: int = 32, channels: int = 1) -> ImageSet:
    """Digits upscaled bilinearly to ``size`` and mapped to [-1, 1]; ``split`` is train, test or all."""
    data = load_file(str(FILE))
    images = data["images"].float().div(16.0)[:, None]
    labels = data["labels"]
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    pick = {"train": order[:-HELD_OUT], "test": order[-HELD_OUT:], "all": order}.get(split)
    if pick is None:
        raise ValueError(f"unknown split {split!r}; use train, test or all")
    images = F.interpolate(images[pick], size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
    images = images.mul(2).sub(1).expand(-1, channels, -1, -1).contiguous()
    return ImageSet(images=images, labels=labels[pick], name=f"digits[{split}]")
