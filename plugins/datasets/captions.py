"""``digits-captions``: the bundled digits with captions built from the label and attributes
measured from the image.

Three attributes, measured on the 32x32 rendering with ink = (x + 1) / 2 and the stroke
mask = ink > 0.5 (so the same numbers whatever ``size`` is requested):

- thickness: 2 * area / perimeter of the stroke mask (4-neighbour edge count, image border
  included). A stroke of length l and width w has area l*w and perimeter 2(l + w), so this
  is w for long strokes: the mean stroke width in pixels.
- slant: |atan(-mu11 / mu02)| in degrees, from the ink's second central moments: the shear
  x = x0 + s*y that best explains the ink (s = mu11 / mu02, y pointing down), so 0 is upright.
- width: the stroke mask's bounding-box width in pixels (every digit is normalised to the
  full height, so height carries no information; width does).

Each attribute is binned into words by terciles of the *training* split, per digit class
(a thick one is thick for a one): the lower third gets the first word (thin, upright,
narrow), the upper third the second (thick, slanted, wide), the middle third no word, so a
caption never says what the image does not clearly show.

Captions: several phrasings ("a thick, slanted seven", "7, thin", "a narrow upright two",
"a handwritten 3", ...), each naming a subset of the image's words, chosen by a generator
seeded by (seed, image index in the full dataset): the same seed gives the same captions on
any split. ``CaptionedImageSet.variants(k)`` gives k captions per image (seeds 0..k-1) for
training.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch

from latentzoo.core.runtime.data import ImageSet

from . import digits

NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# attribute -> (word for the lower tercile, word for the upper tercile)
WORDS: dict[str, tuple[str, str]] = {"thickness": ("thin", "thick"), "slant": ("upright", "slanted"), "width": ("narrow", "wide")}
ORDER = ("width", "thickness", "slant")  # adjective order in a caption: "a narrow, thick, slanted two"


def measure(images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Attributes of images (N, 1, H, W) in [-1, 1]: thickness (px), slant (degrees, >= 0), width (px)."""
    ink = images[:, 0].add(1).div(2).clamp(0, 1).double()
    mask = (ink > 0.5).double()
    _, h, w = mask.shape
    area = mask.sum((1, 2))
    padded = torch.nn.functional.pad(mask, (1, 1, 1, 1))
    perimeter = (padded[:, 1:, :] != padded[:, :-1, :]).sum((1, 2)) + (padded[:, :, 1:] != padded[:, :, :-1]).sum((1, 2))
    thickness = 2 * area / perimeter.clamp(min=1)
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    mass = ink.sum((1, 2)).clamp(min=1e-6)
    cx, cy = (ink * xs).sum((1, 2)) / mass, (ink * ys).sum((1, 2)) / mass
    dx, dy = xs - cx[:, None, None], ys - cy[:, None, None]
    mu11, mu02 = (ink * dx * dy).sum((1, 2)) / mass, (ink * dy * dy).sum((1, 2)) / mass
    slant = torch.rad2deg(torch.atan(-mu11 / mu02.clamp(min=1e-6))).abs()
    cols = mask.amax(1) > 0  # (N, W): columns holding ink
    idx = torch.arange(w)
    first = torch.where(cols, idx, w).amin(1)
    last = torch.where(cols, idx, -1).amax(1)
    width = (last - first + 1).clamp(min=0).double()
    return {"thickness": thickness.float(), "slant": slant.float(), "width": width.float()}


def terciles(values: dict[str, torch.Tensor], labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per attribute, a (10, 2) tensor: the 1/3 and 2/3 quantiles of each class."""
    q = torch.tensor([1 / 3, 2 / 3], dtype=torch.float64)
    return {name: torch.stack([torch.quantile(v[labels == c].double(), q) for c in range(10)]).float() for name, v in values.items()}


def words_for(values: dict[str, torch.Tensor], labels: torch.Tensor, cuts: dict[str, torch.Tensor]) -> list[dict[str, str]]:
    """Each image's attribute words: {"thickness": "thick", ...} (an attribute in its class's middle third is absent)."""
    out: list[dict[str, str]] = [{} for _ in range(len(labels))]
    for name in ORDER:
        lo, hi = cuts[name][labels, 0], cuts[name][labels, 1]
        for i in range(len(labels)):
            v = float(values[name][i])
            if v < float(lo[i]):
                out[i][name] = WORDS[name][0]
            elif v > float(hi[i]):
                out[i][name] = WORDS[name][1]
    return out


def article(word: str) -> str:
    """The indefinite article of ``word`` as read aloud ("an 8", "an ink", "a 7")."""
    return "an" if word[0] in "aeiou8" else "a"


def caption(label: int, words: dict[str, str], rng: random.Random) -> str:
    """One caption: a phrasing and a subset of the image's attribute words, drawn from ``rng``."""
    adjs = [words[k] for k in ORDER if k in words and rng.random() < 0.75]
    name, numeral = NAMES[label], str(label)
    phrasing = rng.randrange(7)
    if phrasing == 0:  # "a thick, slanted seven"
        return f"{article(adjs[0])} {', '.join(adjs)} {name}" if adjs else f"{article(name)} {name}"
    if phrasing == 1:  # "7, thin"
        return ", ".join([numeral, *adjs])
    if phrasing == 2:  # "a narrow upright two"
        first = adjs[0] if adjs else name
        return f"{article(first)} {' '.join([*adjs, name])}"
    if phrasing == 3:  # "a handwritten 3"
        return f"a handwritten {numeral}"
    if phrasing == 4:  # "a handwritten seven" / "a thin handwritten seven"
        first = adjs[0] if adjs else "handwritten"
        return f"{article(first)} {' '.join([*adjs, 'handwritten', name])}"
    if phrasing == 5:  # "the digit 4, wide and slanted"
        tail = f", {' and '.join([', '.join(adjs[:-1]), adjs[-1]] if len(adjs) > 2 else adjs)}" if adjs else ""
        return f"the digit {rng.choice([name, numeral])}{tail}"
    return f"{name}, {' '.join(adjs)}" if adjs else f"a {rng.choice(['picture', 'photo', 'drawing'])} of the number {name}"


def captions_for(labels: torch.Tensor, words: list[dict[str, str]], index: torch.Tensor, seed: int) -> list[str]:
    """One caption per image; image i's caption depends only on (seed, index[i]), its place in the full dataset."""
    return [caption(int(labels[i]), words[i], random.Random(seed * 1_000_003 + int(index[i]))) for i in range(len(labels))]


@dataclass
class CaptionedImageSet(ImageSet):
    """An ImageSet with a caption per image; ``attributes`` (measured values) and ``words``
    (their binned words) explain where the captions come from."""

    captions: list[str] = field(default_factory=list)
    attributes: dict[str, torch.Tensor] = field(default_factory=dict)
    words: list[dict[str, str]] = field(default_factory=list)
    index: torch.Tensor | None = None  # each image's place in the full dataset (seeds its captions)
    seed: int = 0

    def variants(self, k: int) -> list[list[str]]:
        """k captions per image (seeds 0..k-1): ``[image][variant]``."""
        per_seed = [captions_for(self.labels, self.words, self.index, s) for s in range(k)]
        return [[per_seed[s][i] for s in range(k)] for i in range(len(self))]


def _full_order() -> torch.Tensor:
    """The permutation digits.load uses for its fixed split (train = all but the last HELD_OUT)."""
    n = len(digits.load("all", 8, 1))
    return torch.randperm(n, generator=torch.Generator().manual_seed(0))


def load(split: str = "train", size: int = 32, channels: int = 1, seed: int = 0) -> CaptionedImageSet:
    """The digits of ``split`` (same fixed split as ``digits``) with their attributes and captions."""
    images = digits.load(split, size, channels)
    train32, split32 = digits.load("train", 32, 1), digits.load(split, 32, 1)
    cuts = terciles(measure(train32.images), train32.labels)
    values = measure(split32.images)
    words = words_for(values, split32.labels, cuts)
    order = _full_order()
    index = {"train": order[: -digits.HELD_OUT], "test": order[-digits.HELD_OUT :], "all": order}[split]
    return CaptionedImageSet(
        images=images.images,
        labels=images.labels,
        name=f"digits-captions[{split}]",
        captions=captions_for(split32.labels, words, index, seed),
        attributes=values,
        words=words,
        index=index,
        seed=seed,
    )
