"""Low-rank adapters (LoRA) on any component's modules: fit check, apply, fuse (runtime wing).

Knows no family and no file format: a format reader (``latentzoo.interop.lora``) turns a file
into an :class:`Adapter`, a list of :class:`LoraModule` that each name a *part* of a pipeline
(``prior`` or ``conditioner``) and a module in it. The math (Hu et al. 2021, eq. 3, with
kohya-ss' and PEFT's scaling) is, for a weight ``W`` of shape (out, in, ...):

    W' = W + s * (alpha / r) * reshape(up (out, r) @ down (r, in * ...), W.shape)

so a Linear and a Conv2d (kohya's 3x3 ``down`` with a 1x1 ``up``) are the same product. Several
adapters add their deltas; the sum is formed in fp32 and cast once to the weight's dtype. A
module is found by its path in the component's state dict (``a.b.c`` for ``a.b.c.weight``), or,
for formats that flatten paths (kohya: ``a_b_c``), by that flattened path: names come from the
component's weights file, so fitting needs only its safetensors header, no model code.

A *fingerprint* of a base is the sha256 of the targeted module paths and weight shapes: two
bases that share it take the same adapter. Strength 0 leaves a part untouched (the base's bytes).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..contract.errors import LatentzooError

PARTS = ("prior", "conditioner")  # model strength -> prior, text strength -> conditioner
MAX_STRENGTH = 20.0


@dataclass(frozen=True)
class LoraModule:
    part: str  # "prior" / "conditioner"
    target: str  # module path ("down_blocks.0.attentions.0.proj_in"), or its flattened form for a flat adapter
    key: str  # the module's key in the adapter file, for messages
    down: Any  # tensor (r, in, ...)
    up: Any  # tensor (out, r, ...)
    alpha: float

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])


@dataclass
class Adapter:
    format: str
    modules: list[LoraModule]
    flat: bool = False  # targets are module paths with "." -> "_" (kohya)
    notes: list[str] = field(default_factory=list)
    path: Path | None = None
    sha256: str | None = None

    @property
    def parts(self) -> list[str]:
        return [p for p in PARTS if any(m.part == p for m in self.modules)]

    @property
    def rank(self) -> int:
        return max((m.rank for m in self.modules), default=0)

    @property
    def alpha(self) -> float:
        return max((m.alpha for m in self.modules), default=0.0)


@dataclass
class Fit:
    """How an adapter's modules land on a base: matched target -> (module path, weight shape), unmatched keys."""

    part: str
    matched: dict[str, tuple[str, tuple[int, ...]]]
    unmatched: list[str]

    def fingerprint(self) -> str:
        return fingerprint(dict(self.matched.values()))


def fingerprint(shapes: dict[str, tuple[int, ...]]) -> str:
    """sha256 of sorted (module path, weight shape) pairs: the structure an adapter fits."""
    text = json.dumps(sorted((k, list(v)) for k, v in shapes.items()))
    return hashlib.sha256(text.encode()).hexdigest()


def check_strength(value: float, what: str = "strength") -> float:
    """A strength is finite and within [-20, 20] (beyond, a LoRA only produces noise)."""
    if not isinstance(value, int | float) or not math.isfinite(value) or abs(value) > MAX_STRENGTH:
        raise LatentzooError(f"{what} {value!r} is outside [-{MAX_STRENGTH:g}, {MAX_STRENGTH:g}] or not finite; give a number such as 0.8")
    return float(value)


def parse_spec(text: str) -> tuple[str, float, float]:
    """``NAME[:MODEL[:TEXT]]`` (NAME may be a path) -> (name, model strength, text strength); defaults 1 and MODEL."""
    parts = text.split(":")
    nums: list[float] = []
    while len(parts) > 1 and len(nums) < 2:
        try:
            value = float(parts[-1])
        except ValueError:
            break
        nums.insert(0, value)
        parts.pop()
    ref = ":".join(parts)
    if not ref:
        raise LatentzooError(f"--lora {text!r} names no LoRA; give NAME[:MODEL_STRENGTH[:TEXT_STRENGTH]]")
    model = check_strength(nums[0], f"--lora {text}: model strength") if nums else 1.0
    textual = check_strength(nums[1], f"--lora {text}: text strength") if len(nums) > 1 else model
    return ref, model, textual


def weight_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Module path -> weight shape, read from a safetensors header (``a.b.weight`` -> ``a.b``)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return {k[: -len(".weight")]: tuple(f.get_slice(k).get_shape()) for k in f.keys() if k.endswith(".weight")}
    except (SafetensorError, OSError) as exc:
        raise LatentzooError(f"{path} is not a readable safetensors file ({exc})") from exc


def _check_module(m: LoraModule, path: str, shape: tuple[int, ...], where: str) -> None:
    """Rank and shapes of one LoRA pair against the weight it adapts (``up @ down`` must have W's size)."""
    r = m.rank
    up_r = int(m.up.shape[1]) if m.up.dim() > 1 else -1
    fan_in = math.prod(shape[1:]) if len(shape) > 1 else 0
    down_in = m.down.numel() // max(r, 1)
    if up_r != r or int(m.up.shape[0]) != shape[0] or m.up.numel() != shape[0] * r or down_in != fan_in:
        raise LatentzooError(
            f"{where}: {m.key} has lora_down {list(m.down.shape)} / lora_up {list(m.up.shape)} but {path}.weight is {list(shape)} "
            "(rank or shape mismatch); the LoRA was made for another model"
        )


def fit(adapter: Adapter, part: str, shapes: dict[str, tuple[int, ...]], where: str) -> Fit:
    """Match ``adapter``'s modules for ``part`` against a base's module shapes; a shape mismatch is refused."""
    index = {k.replace(".", "_"): k for k in shapes} if adapter.flat else {k: k for k in shapes}
    matched: dict[str, tuple[str, tuple[int, ...]]] = {}
    unmatched: list[str] = []
    for m in adapter.modules:
        if m.part != part:
            continue
        path = index.get(m.target)
        if path is None:
            unmatched.append(m.key)
            continue
        _check_module(m, path, shapes[path], where)
        matched[m.target] = (path, shapes[path])
    return Fit(part, matched, unmatched)


def require_fit(fits: list[Fit], adapter_name: str, base_name: str, *, allow_partial: bool = False) -> list[str]:
    """Refuse an adapter that does not fit (one line: counts and the first unmatched key); return notes."""
    matched = sum(len(f.matched) for f in fits)
    unmatched = [k for f in fits for k in f.unmatched]
    if matched == 0 or (unmatched and not allow_partial):
        first = f"; first unmatched key {unmatched[0]}" if unmatched else ""
        hint = "" if matched == 0 else " (or pass --allow-partial to apply the matched part)"
        raise LatentzooError(
            f"LoRA {adapter_name} does not fit {base_name}: {matched} module(s) matched, {len(unmatched)} unmatched{first}; "
            f"it was made for another base: use it with the model it was trained on{hint}"
        )
    return [f"LoRA {adapter_name}: {len(unmatched)} module(s) not applied (--allow-partial)"] if unmatched else []


def deltas(adapters: list[tuple[Adapter, dict[str, float]]], part: str, fits: dict[int, Fit]) -> dict[str, Any]:
    """Module path -> summed fp32 delta for ``part`` (``fits`` keyed by id(adapter)); strength 0 adds nothing."""
    import torch

    out: dict[str, torch.Tensor] = {}
    for adapter, strengths in adapters:
        s = strengths.get(part, 0.0)
        if s == 0.0:
            continue
        f = fits[id(adapter)]
        for m in adapter.modules:
            if m.part != part or m.target not in f.matched:
                continue
            path, shape = f.matched[m.target]
            up = m.up.detach().to(torch.float32).reshape(shape[0], m.rank)
            down = m.down.detach().to(torch.float32).reshape(m.rank, -1)
            d = (s * (m.alpha / m.rank)) * (up @ down)
            d = d.reshape(shape)
            out[path] = out[path] + d if path in out else d
    return out


def apply(module: Any, delta: dict[str, Any]) -> None:
    """Give ``module``'s weights W + delta as new tensors (never written through: an adopted,
    memory-mapped weight stays the file's; core.nn.kernels repacks a weight that is a new tensor)."""
    import torch

    params = dict(module.named_parameters())
    with torch.no_grad():
        for path, d in delta.items():
            owner_path, _, leaf = f"{path}.weight".rpartition(".")
            owner = module.get_submodule(owner_path)
            w = params[f"{path}.weight"]
            new = (w.detach().to(torch.float32) + d).to(w.dtype)
            setattr(owner, leaf, torch.nn.Parameter(new, requires_grad=False))


def fuse_file(base: str | Path, delta: dict[str, Any], out: str | Path, metadata: dict[str, str]) -> str:
    """Write ``base``'s tensors with ``delta`` added to the named weights (streamed, one tensor read at a time)."""
    import torch
    from safetensors import safe_open

    from ..contract.weights import save_tensors

    tensors: dict[str, torch.Tensor] = {}
    with safe_open(str(base), "pt") as f:
        for k in f.keys():
            t = f.get_tensor(k)
            path = k[: -len(".weight")] if k.endswith(".weight") else None
            if path in delta:
                t = (t.to(torch.float32) + delta[path]).to(t.dtype)
            tensors[k] = t
    return save_tensors(out, tensors, metadata)


# ---------------------------------------------------------------------------------------
# training: trainable pairs hooked onto a frozen module


def select_targets(module: Any, patterns: list[str] | None) -> list[str]:
    """Paths of ``module``'s Linear / Conv2d layers that LoRA adapts: every Linear when ``patterns`` is
    None, else each layer whose path equals a pattern, ends in ``.PATTERN``, or matches it as a glob."""
    import fnmatch

    from torch import nn

    found = []
    for path, layer in module.named_modules():
        if not isinstance(layer, nn.Linear | nn.Conv2d) or not path:
            continue
        if patterns is None:
            ok = isinstance(layer, nn.Linear)
        else:
            ok = any(path == p or path.endswith("." + p) or fnmatch.fnmatchcase(path, p) for p in patterns)
        if ok:
            found.append(path)
    if not found:
        raise LatentzooError(
            f"no Linear / Conv2d layer matches --targets {', '.join(patterns or ['(all Linear)'])}; see the model's module paths"
        )
    return found


def _lora_layers() -> Any:
    import torch
    from torch import nn

    class LoraLayers(nn.Module):
        """Trainable (down, up) pairs, one per target layer of a frozen ``base``, added to its
        output by forward hooks: y = base(x) + (alpha / r) * up(down(x)) (Hu et al. 2021, eq. 3).
        ``up`` starts at zero, so training starts from the base. A Conv2d's ``down`` is a conv of
        its kernel, stride and padding, its ``up`` a 1x1 conv (kohya's conv LoRA)."""

        def __init__(self, base: nn.Module, targets: list[str], rank: int, alpha: float) -> None:
            super().__init__()
            self.targets, self.rank, self.alpha = list(targets), int(rank), float(alpha)
            self.down, self.up = nn.ModuleDict(), nn.ModuleDict()
            self._handles: list[Any] = []
            for path in self.targets:
                layer = base.get_submodule(path)
                key = path.replace(".", "_")
                if isinstance(layer, nn.Conv2d):
                    down = nn.Conv2d(layer.in_channels, rank, layer.kernel_size, layer.stride, layer.padding, layer.dilation, bias=False)
                    up = nn.Conv2d(rank, layer.out_channels, 1, bias=False)
                else:
                    down, up = nn.Linear(layer.in_features, rank, bias=False), nn.Linear(rank, layer.out_features, bias=False)
                nn.init.kaiming_uniform_(down.weight, a=math.sqrt(5))
                nn.init.zeros_(up.weight)
                self.down[key], self.up[key] = down, up
                self._handles.append(layer.register_forward_hook(self._hook(key)))

        def _hook(self, key: str) -> Any:
            def hook(module: nn.Module, args: tuple[Any, ...], out: torch.Tensor) -> torch.Tensor:
                return out + (self.alpha / self.rank) * self.up[key](self.down[key](args[0]))

            return hook

        def remove(self) -> None:
            for handle in self._handles:
                handle.remove()
            self._handles = []

        def kohya_state(self, prefix: str) -> dict[str, torch.Tensor]:
            """The pairs in kohya-ss' layout (``PREFIX<path with _>.lora_down.weight`` / ``.lora_up.weight`` / ``.alpha``)."""
            out = {}
            for path in self.targets:
                key = path.replace(".", "_")
                out[f"{prefix}{key}.lora_down.weight"] = self.down[key].weight.detach().float().cpu().contiguous()
                out[f"{prefix}{key}.lora_up.weight"] = self.up[key].weight.detach().float().cpu().contiguous()
                out[f"{prefix}{key}.alpha"] = torch.tensor(self.alpha)
            return out

    return LoraLayers


def lora_layers(base: Any, targets: list[str], rank: int, alpha: float) -> Any:
    """Trainable LoRA pairs hooked onto ``base``'s ``targets`` (an nn.Module; see LoraLayers)."""
    if not isinstance(rank, int) or rank < 1:
        raise LatentzooError(f"--rank {rank!r} must be a positive integer (e.g. 4)")
    if not math.isfinite(alpha) or alpha <= 0:
        raise LatentzooError(f"--alpha {alpha!r} must be a positive number (default: the rank)")
    return _lora_layers()(base, targets, rank, alpha)


__all__ = [
    "MAX_STRENGTH",
    "PARTS",
    "Adapter",
    "Fit",
    "LoraModule",
    "apply",
    "check_strength",
    "deltas",
    "fingerprint",
    "fit",
    "fuse_file",
    "lora_layers",
    "parse_spec",
    "require_fit",
    "select_targets",
    "weight_shapes",
]
