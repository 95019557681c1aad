"""Zero-shot evaluation of a CLIP model on the held-out digits (training metrics and benchmarks/).

Digits: the most probable of the ten prompts "a handwritten <name>" (Radford et al. 2021,
sec. 3.1.2: the class names put in a prompt template). Attributes: on held-out images whose
attribute has a word, whether "a <right word> <digit>" beats "a <opposite word> <digit>",
the digit named being the image's own, so only the attribute is tested.
"""

from __future__ import annotations

from typing import Any

import torch

from latentzoo.plugins.datasets.captions import NAMES, ORDER, WORDS, article

from .model import CLIPModel

DIGIT_TEMPLATE = "a handwritten {}"


def digit_accuracy(model: CLIPModel, images: torch.Tensor, labels: torch.Tensor, template: str = DIGIT_TEMPLATE) -> float:
    """Fraction of images whose most probable prompt among the ten digits' names is their label's."""
    probs = model.probabilities(images, [template.format(n) for n in NAMES])
    return float((probs.argmax(1).cpu() == labels.cpu()).float().mean())


def attribute_accuracy(model: CLIPModel, held: Any) -> dict[str, float]:
    """Per attribute, accuracy of telling its two words apart on images that have one of them."""
    out = {}
    for attr in ORDER:
        lo, hi = WORDS[attr]
        rows = [i for i, w in enumerate(held.words) if attr in w]
        if not rows:
            continue
        texts = [f"{article(lo)} {lo} {n}" for n in NAMES] + [f"{article(hi)} {hi} {n}" for n in NAMES]
        probs = model.probabilities(held.images[rows], texts)
        labels = held.labels[rows]
        p_lo = probs[torch.arange(len(rows)), labels]
        p_hi = probs[torch.arange(len(rows)), labels + 10]
        truth = torch.tensor([held.words[i][attr] == hi for i in rows])
        out[attr] = float(((p_hi > p_lo) == truth).float().mean())
    return out
