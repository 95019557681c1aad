"""What ``train lora`` adapts beyond the prior: the text encoder and the decoder, found by calling them.

A LoRA part is a component of the pipeline (``core.runtime.adapters.PARTS``). Which of its layers a part
uses is read off the component itself, whatever its family: the Linear / Conv2d layers that run
when it encodes a caption (``condition``) or decodes a latent (``decode``). An autoencoder that
is both encoder and decoder thus gets LoRA pairs on its decoder only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from latentzoo.core.contract.errors import LatentzooError

TRAINABLE_PARTS = ("prior", "conditioner", "decoder")


def parse_parts(value: Any) -> list[str]:
    """``prior,conditioner`` / a YAML list -> the parts, checked (the prior by default)."""
    items = value if isinstance(value, list | tuple) else str(value or "prior").replace(",", " ").split()
    parts = [str(p).strip() for p in items if str(p).strip()]
    wrong = [p for p in parts if p not in TRAINABLE_PARTS]
    if not parts or wrong:
        raise LatentzooError(
            f"--parts {', '.join(map(str, items))}: each part must be one of {', '.join(TRAINABLE_PARTS)} (e.g. prior,conditioner)"
        )
    return sorted(set(parts), key=TRAINABLE_PARTS.index)


def layers_called(module: nn.Module, call: Callable[[], Any], kinds: tuple[type, ...] = (nn.Linear, nn.Conv2d)) -> list[str]:
    """Paths of ``module``'s layers of ``kinds`` that run during ``call()`` (in the order they first run)."""
    names = {layer: path for path, layer in module.named_modules() if path and isinstance(layer, kinds)}
    seen: dict[str, None] = {}

    def record(layer: nn.Module, args: Any, out: Any) -> None:
        seen.setdefault(names[layer])

    handles = [layer.register_forward_hook(record) for layer in names]
    try:
        with torch.no_grad():
            call()
    finally:
        for handle in handles:
            handle.remove()
    return list(seen)


def trainable_condition(conditioner: Any) -> Callable[[list[str]], dict[str, torch.Tensor]]:
    """The conditioner's ``condition`` with gradients: a text encoder declares ``condition`` under
    inference mode, so its undecorated function (``__wrapped__``) is called instead."""
    fn = getattr(type(conditioner).condition, "__wrapped__", None)
    if fn is None:
        return conditioner.condition
    return lambda texts: fn(conditioner, texts)


def text_targets(conditioner: Any, patterns: list[str] | None) -> list[str]:
    """The text encoder's Linear layers that encode a caption (or those matching ``patterns``)."""
    from latentzoo.core.runtime.adapters import select_targets

    called = layers_called(conditioner, lambda: conditioner.condition(["a"]), (nn.Linear,))
    if patterns:
        chosen = set(select_targets(conditioner, patterns))
        called = [p for p in called if p in chosen]
    if not called:
        raise LatentzooError(f"no Linear layer of the text encoder matches --set text_targets={patterns}; see its module paths")
    return called


def decoder_targets(decoder: Any, latent: torch.Tensor, patterns: list[str] | None) -> list[str]:
    """The decoder's Linear / Conv2d layers that decode a latent (or those matching ``patterns``)."""
    from latentzoo.core.runtime.adapters import select_targets

    called = layers_called(decoder, lambda: decoder.decode(latent))
    if patterns:
        chosen = set(select_targets(decoder, patterns))
        called = [p for p in called if p in chosen]
    if not called:
        raise LatentzooError(f"no layer of the decoder matches --set decoder_targets={patterns}; see its module paths")
    return called


__all__ = ["TRAINABLE_PARTS", "decoder_targets", "layers_called", "parse_parts", "text_targets", "trainable_condition"]
