"""Checkpoint merging, tensor by tensor (runtime wing): A1111's weighted sum and add difference.

    weighted-sum:    (1 - a) * A + a * B        (ComfyUI's ModelMergeSimple(ratio) is ratio * A + (1 - ratio) * B)
    add-difference:  A + a * (B - C)

Inputs must hold the same tensor names and shapes (the first that differs is named). Every
tensor is read from each input with ``safe_open`` only when it is combined, the math runs in
fp32 and the result is cast to the output dtype: peak memory is the output plus one tensor of
each input, never all inputs at once. The recipe (operation, alpha, inputs' sha256) goes into
the output's safetensors metadata.
"""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from typing import Any

from ..contract.errors import LatentzooError

OPERATIONS = {"weighted-sum": 2, "add-difference": 3}
DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def check_alpha(alpha: float) -> float:
    if not isinstance(alpha, int | float) or not math.isfinite(alpha) or abs(alpha) > 20:
        raise LatentzooError(f"--alpha {alpha!r} is outside [-20, 20] or not finite; give a number such as 0.5")
    return float(alpha)


def headers(paths: list[Path]) -> list[dict[str, tuple[tuple[int, ...], str]]]:
    """Each file's tensor name -> (shape, dtype), from its header alone."""
    from safetensors import SafetensorError, safe_open

    out = []
    for path in paths:
        try:
            with safe_open(str(path), "pt") as f:
                out.append({k: (tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype()) for k in f.keys()})
        except (SafetensorError, OSError) as exc:
            raise LatentzooError(f"{path} is not a readable safetensors file ({exc}); restore it") from exc
    return out


def check_same_tensors(labels: list[str], paths: list[Path]) -> dict[str, tuple[tuple[int, ...], str]]:
    """Refuse inputs whose tensor names or shapes differ, naming the first differing tensor."""
    heads = headers(paths)
    first = heads[0]
    for label, head in zip(labels[1:], heads[1:], strict=True):
        for key in sorted(set(first) | set(head)):
            if key not in head or key not in first:
                where = labels[0] if key not in first else label
                raise LatentzooError(
                    f"cannot merge {labels[0]} and {label}: tensor {key!r} is missing from {where}; merge models of one architecture"
                )
            if first[key][0] != head[key][0]:
                raise LatentzooError(
                    f"cannot merge {labels[0]} and {label}: tensor {key!r} is {list(first[key][0])} vs {list(head[key][0])}; "
                    "merge models of one architecture"
                )
    return first


def merge_files(operation: str, paths: list[Path], alpha: float, out: str | Path, *, dtype: str | None, recipe: dict[str, Any]) -> str:
    """Merge ``paths`` into ``out`` (atomic); return its sha256. ``dtype`` None keeps A's per-tensor dtype."""
    import torch
    from safetensors import safe_open

    from ..contract.weights import check_finite, stream_tensors, torch_dtype

    if operation not in OPERATIONS or len(paths) != OPERATIONS[operation]:
        raise LatentzooError(f"merge {operation}: takes {OPERATIONS.get(operation, '?')} inputs")
    target = getattr(torch, DTYPES[dtype]) if dtype else None
    with contextlib.ExitStack() as stack:
        files = [stack.enter_context(safe_open(str(p), "pt")) for p in paths]
        layout = {}
        for key in files[0].keys():
            head = files[0].get_slice(key)
            kept = torch_dtype(head.get_dtype())
            layout[key] = (tuple(head.get_shape()), (target or kept) if kept.is_floating_point else kept)

        def produce(key: str) -> torch.Tensor:
            tensor = _combine(operation, [f.get_tensor(key) for f in files], alpha, target)
            check_finite(out, {key: tensor})  # NaN or Inf refused before the file is renamed into place
            return tensor

        return stream_tensors(out, layout, produce, {"recipe": json.dumps(recipe, sort_keys=True)})


def _combine(operation: str, ts: list[Any], alpha: float, target: Any) -> Any:
    """One output tensor from the inputs' tensors of one name, in fp32, cast to ``target`` (or A's dtype)."""
    import torch

    if not ts[0].is_floating_point():  # integer buffers (ids, counters) are A's
        return ts[0]
    xs = [t.to(torch.float32) for t in ts]
    if operation == "weighted-sum":
        y = (1.0 - alpha) * xs[0] + alpha * xs[1]
    else:
        y = xs[0] + alpha * (xs[1] - xs[2])
    return y.to(target or ts[0].dtype)


__all__ = ["DTYPES", "OPERATIONS", "check_alpha", "check_same_tensors", "headers", "merge_files"]
