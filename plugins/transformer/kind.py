"""The ``autoregressive`` kind's conformance check (``latentzoo check``): which order does the prior read codes in?

The convention (declared in this family's ``latentzoo_kinds``): the prior factorises p(codes)
over the code grid in raster order, row by row (Esser et al. 2021; Ramesh et al. 2021), and
``prior(codes, labels, text)`` returns teacher-forced logits where position i predicts code i.
A prior trained in another order samples grids whose rows and columns are swapped or whose
last code was drawn first; on real codes its cross-entropy gives it away. The error here is
the cross-entropy in units of log K (1 = a uniform guess over the K codes).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from latentzoo.core.runtime.conformance import Reading

FIX = "it reads codes in another order: reorder them to raster order before and after it, or declare another kind"
ORDERS = {  # label -> (codes (B, h, w) -> sequence (B, h * w))
    "raster order (row by row)": lambda c: c.flatten(1),
    "column order (transposed grid)": lambda c: c.transpose(1, 2).flatten(1),
    "reversed raster order": lambda c: c.flatten(1).flip(1),
}


def check(
    prior: Any,
    latents: torch.Tensor,
    convention: dict[str, Any],
    *,
    generator: torch.Generator,
    conditioning: Any = None,
    encoder: Any = None,
) -> list[Reading]:
    """Cross-entropy of the real codes in the declared (raster) order first, then in the other orders."""
    codes = (
        latents if not latents.is_floating_point() else encoder.quantize.indices(latents)
    )  # a VQ encoder's nearest codes (train.encode_codes)
    text = None
    if conditioning is not None:  # the empty prompt's token states (caption dropout trains them as the unconditional input)
        text = conditioning["tokens"].expand(codes.shape[0], *conditioning["tokens"].shape[1:])
    k = prior.codebook_size
    out = []
    for label, order in ORDERS.items():
        seq = order(codes).long()
        logits = prior(seq, None, text)
        nll = F.cross_entropy(logits.reshape(-1, k).float(), seq.reshape(-1))
        out.append(Reading(label, float(nll) / math.log(k), "" if label.startswith("raster") else FIX))
    return out
