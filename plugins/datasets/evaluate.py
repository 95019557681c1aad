"""Sample quality on digits: Fréchet distance in the digit classifier's feature space, and predicted classes.

    from latentzoo.plugins.datasets.evaluate import frechet_digits, frechet_floor, class_histogram
    fd = frechet_digits(images)       # images (N, 1, 32, 32) in [-1, 1] vs the 360 held-out digits
    floor = frechet_floor()           # the training digits vs the held-out ones: what real data scores

The features are the 64-d penultimate activations of the small shipped classifier
(``classifier.py``), not Inception's, so the numbers are comparable only with each other.
The Fréchet distance is biased upwards for small sample sizes; compare runs at equal N, and
read a model's score against ``frechet_floor(n)`` at the same N (at most 1,437).
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F

from latentzoo.core.contract.errors import LatentzooError
from latentzoo.core.runtime.metrics import frechet_distance

from .classifier import NUM_CLASSES, DigitClassifier, load_classifier

BATCH_SIZE = 500


@lru_cache(maxsize=1)
def classifier() -> DigitClassifier:
    """The shipped classifier, loaded and sha256-verified once per process."""
    return load_classifier()


def _prepare(images: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) in [-1, 1] -> (N, 1, 32, 32): RGB averaged to grey, other sizes resized bilinearly."""
    if images.ndim != 4 or images.shape[1] not in (1, 3) or len(images) == 0:
        raise LatentzooError(f"expected a non-empty image batch (N, 1 or 3, H, W) in [-1, 1], got shape {tuple(images.shape)}")
    x = images.detach().float().cpu()
    if not torch.isfinite(x).all():
        raise LatentzooError("the images hold NaN or infinite values; the model that made them diverged")
    if x.shape[1] == 3:
        x = x.mean(1, keepdim=True)
    if x.shape[-2:] != (32, 32):
        x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False, antialias=True)
    return x.clamp(-1, 1)


@torch.inference_mode()
def classifier_features(images: torch.Tensor, batch_size: int = BATCH_SIZE) -> torch.Tensor:
    """Penultimate classifier features (N, 64), float32, computed in batches."""
    x, model = _prepare(images), classifier()
    return torch.cat([model.features(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


@torch.inference_mode()
def classifier_logits(images: torch.Tensor, batch_size: int = BATCH_SIZE) -> torch.Tensor:
    """Class logits (N, 10), computed in batches."""
    x, model = _prepare(images), classifier()
    return torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


def predicted_labels(images: torch.Tensor) -> torch.Tensor:
    """The classifier's predicted digit (N,), int64."""
    return classifier_logits(images).argmax(1)


def class_histogram(images: torch.Tensor) -> torch.Tensor:
    """How many images the classifier assigns to each digit 0..9: an int64 tensor of 10 counts."""
    return torch.bincount(predicted_labels(images), minlength=NUM_CLASSES)


def label_accuracy(images: torch.Tensor, labels: torch.Tensor | int) -> float:
    """Fraction of images classified as ``labels`` (one int for all, or one per image), e.g. for guided samples."""
    preds = predicted_labels(images)
    target = torch.as_tensor(labels, dtype=torch.long).expand_as(preds)
    return float((preds == target).float().mean())


def _split_images(split: str) -> torch.Tensor:
    from latentzoo.core.runtime.data import load_dataset

    return load_dataset("digits", split=split).images


@lru_cache(maxsize=2)
def split_features(split: str = "test") -> torch.Tensor:
    """Features of a digits split (``test`` is the 360 held-out images), cached per process."""
    return classifier_features(_split_images(split))


def frechet_digits(images: torch.Tensor) -> float:
    """Fréchet distance between the classifier features of ``images`` and of the held-out digits."""
    return frechet_distance(classifier_features(images), split_features("test"))


def frechet_floor(n: int | None = None, seed: int = 0) -> float:
    """The Fréchet distance of real data: training digits (all 1,437, or ``n`` of them at random) vs held-out."""
    train = split_features("train")
    if n is not None:
        if not 2 <= n <= len(train):
            raise LatentzooError(f"the floor needs 2 to {len(train)} training images, not {n}")
        train = train[torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:n]]
    return frechet_distance(train, split_features("test"))
