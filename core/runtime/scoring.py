"""Scoring images against texts with a model that embeds both (CLIP and any family like it).

A component can score when it has ``probabilities(images, texts)`` and ``similarity(images,
texts)`` (both (N, T) tensors) and says its input with ``image_size`` / ``image_channels``;
the core knows no family. ``classify`` is zero-shot classification (the most probable text
per image); ``score`` is the cosine similarity of each image with each text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..contract.errors import LatentzooError


def load_scorer(name: str, *, extra: Any = ()) -> Any:
    """Build a named component that can score images against texts (weights and tokenizer verified)."""
    from ..contract.registry import Registry
    from .build import Builder

    reg = Registry.load(list(extra))
    entry = reg.get(name)
    if entry.section != "components":
        raise LatentzooError(f"{name} is a pipeline; give a model that embeds images and texts (see `latentzoo list --role conditioner`)")
    role = entry.roles[0] if entry.roles else "conditioner"
    model = Builder(reg).component(name, role)
    if not (hasattr(model, "probabilities") and hasattr(model, "similarity")):
        raise LatentzooError(f"{name} cannot score images against texts; use an image-text model such as digits-clip")
    return model


def _images(model: Any, images: Any, *, fit: bool, name: str) -> Any:
    """A (N, C, H, W) tensor in [-1, 1], or image files loaded for the model's input size."""
    import torch

    if isinstance(images, torch.Tensor):
        if images.ndim != 4 or images.shape[1] != model.image_channels:
            raise LatentzooError(f"images must be (N, {model.image_channels}, H, W) in [-1, 1], not {tuple(images.shape)}")
        return images
    if isinstance(images, (str, Path)):
        images = [images]
    if not images:
        raise LatentzooError("no images given")
    from .images import load_images

    return load_images(list(images), size=int(model.image_size), channels=int(model.image_channels), fit=fit, expects=name)


def _texts(texts: Any, what: str) -> list[str]:
    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts or [])
    if not texts:
        raise LatentzooError(f"no {what} given; pass at least one text")
    empty = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
    if empty:
        raise LatentzooError(f"{what} #{empty[0] + 1} is empty; every {what[:-1]} needs some text")
    return texts


def classify(model: str | Any, images: Any, labels: list[str], *, fit: bool = False, extra: Any = ()) -> list[dict[str, Any]]:
    """Zero-shot classification: per image, {"label": most probable text, "probabilities": {text: p}}."""
    name = model if isinstance(model, str) else type(model).__name__
    scorer = load_scorer(model, extra=extra) if isinstance(model, str) else model
    labels = _texts(labels, "labels")
    x = _images(scorer, images, fit=fit, name=name)
    probs = scorer.probabilities(x, labels).cpu()
    return [
        {"label": labels[int(row.argmax())], "probabilities": {t: round(float(p), 6) for t, p in zip(labels, row, strict=True)}}
        for row in probs
    ]


def score(model: str | Any, images: Any, texts: list[str] | str, *, fit: bool = False, extra: Any = ()) -> list[list[float]]:
    """Cosine similarity (N images x T texts) of the model's image and text embeddings, in [-1, 1]."""
    name = model if isinstance(model, str) else type(model).__name__
    scorer = load_scorer(model, extra=extra) if isinstance(model, str) else model
    texts = _texts(texts, "texts")
    x = _images(scorer, images, fit=fit, name=name)
    return [[round(float(v), 6) for v in row] for row in scorer.similarity(x, texts).cpu()]
