"""The conditioning contract: what a conditioner produces and what a prior accepts (plain data, no torch).

A conditioner (a text encoder, an image embedder, ...) states the ``conditioning_space`` it
produces in its registry entry, the way an encoder states its latent space. A prior states
the conditioning it accepts under ``conditioning``; a prior without that key is
unconditional. Composition compares them before anything is loaded:

- kind: an open string (``text``, ``class``, ``image-embedding``, or any kind a plugin adds).
- width: the feature width the prior attends to (cross-attention dim), or for class
  conditioning the number of classes.
- sequence_length: tokens per condition (None: a single vector or label).
- pooled: the conditioner also gives one pooled vector per condition (a prior that needs
  it says ``pooled: true``; one that does not, does not care).
- pooled_width: that vector's width where it differs from ``width`` (SDXL: tokens of width
  2048 from two text encoders, the pooled vector 1280 wide from the second's projection); a
  prior that states it needs exactly that width.
- encoder: identity of the model that defined the space (``sha256:<16 hex>`` of its
  weights), so two text encoders of the same width never pass for one another.

A prior's conditioning that names no ``encoder`` is fed directly at sample time (class
labels, embedded by the prior itself) and takes no conditioner part; one that names an
encoder needs a conditioner producing exactly that space.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from .errors import ContractError

# Fields that decide whether a produced space fits an accepted one; the identity is compared apart.
SHAPE_FIELDS = ("kind", "width", "sequence_length")


@dataclass(frozen=True)
class ConditioningSpace:
    """One conditioning space (see module doc)."""

    kind: str
    width: int
    sequence_length: int | None = None
    pooled: bool = False
    pooled_width: int | None = None
    encoder: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.kind, str) or not self.kind.strip():
            raise ContractError(f"conditioning kind must be a non-empty string (text, class, ...), not {self.kind!r}")
        for name in ("width", "sequence_length", "pooled_width"):
            value = getattr(self, name)
            if value is None and name != "width":
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ContractError(f"conditioning {name} must be a positive integer, not {value!r}")
        if not isinstance(self.pooled, bool):
            raise ContractError(f"conditioning pooled must be true or false, not {self.pooled!r}")
        if self.encoder is not None and (not isinstance(self.encoder, str) or not self.encoder):
            raise ContractError(f"conditioning encoder must be an identity string (sha256:<hex>), not {self.encoder!r}")

    @classmethod
    def from_dict(cls, data: Any, where: str = "conditioning") -> ConditioningSpace:
        if not isinstance(data, dict):
            raise ContractError(f"{where} must be a mapping (kind, width, ...), not {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ContractError(f"{where}: unknown field(s) {', '.join(map(str, unknown))}; known: {', '.join(sorted(known))}")
        missing = [f for f in ("kind", "width") if f not in data]
        if missing:
            raise ContractError(f"{where} is missing {', '.join(missing)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @property
    def needs_conditioner(self) -> bool:
        """A space naming an encoder is produced by a conditioner part; one naming none is fed directly."""
        return self.encoder is not None

    def describe(self) -> str:
        seq = f" x {self.sequence_length} tokens" if self.sequence_length else ""
        pooled = (f", pooled width {self.pooled_width}" if self.pooled_width else ", pooled") if self.pooled else ""
        who = f" [{self.encoder}]" if self.encoder else ""
        return f"{self.kind} width {self.width}{seq}{pooled}{who}"


def check_conditioning(
    prior: str,
    accepts: ConditioningSpace | None,
    conditioner: str | None,
    produced: ConditioningSpace | None,
    *,
    allow_mismatch: bool = False,
) -> list[str]:
    """Check a conditioner (or its absence) against what a prior accepts; return warnings.

    Refuses in one line naming both: a conditioner whose space differs in kind, width or
    sequence length, or lacks a pooled vector the prior needs; a conditioner of another
    identity (allowed with a warning under ``allow_mismatch``, as latent spaces are); a prior
    that needs a conditioner with none given; a conditioner given to a prior that takes none.
    """
    if conditioner is None:
        if accepts is not None and accepts.needs_conditioner:
            raise ContractError(
                f"prior {prior} is conditioned on {accepts.describe()} but the pipeline has no conditioner; "
                f"add --conditioner (see `latentzoo list --role conditioner`)"
            )
        return []
    if accepts is None or not accepts.needs_conditioner:
        what = "is unconditional" if accepts is None else f"takes {accepts.kind} conditioning directly (no conditioner)"
        raise ContractError(f"prior {prior} {what}, so conditioner {conditioner} would be ignored; drop the conditioner")
    if produced is None:
        raise ContractError(f"conditioner {conditioner} states no conditioning_space; add one to its registry entry")
    diffs = [(f, getattr(produced, f), getattr(accepts, f)) for f in SHAPE_FIELDS if getattr(produced, f) != getattr(accepts, f)]
    if accepts.pooled and not produced.pooled:
        diffs.append(("pooled", produced.pooled, accepts.pooled))
    elif accepts.pooled and accepts.pooled_width and (produced.pooled_width or produced.width) != accepts.pooled_width:
        diffs.append(("pooled_width", produced.pooled_width or produced.width, accepts.pooled_width))
    head = f"conditioning does not fit: conditioner {conditioner} vs prior {prior}"
    if diffs:
        listed = "; ".join(f"{name} {a!r} != {b!r}" for name, a, b in diffs)
        raise ContractError(f"{head}: {listed} (pick a conditioner of the space the prior was trained with)")
    if produced.encoder != accepts.encoder:
        message = f"{head}: encoder {produced.encoder!r} != {accepts.encoder!r}"
        if allow_mismatch:
            return [f"--allow-mismatch: {message} (same kind and shape, another text encoder)"]
        raise ContractError(message + " (the prior was trained on another encoder's features; pass --allow-mismatch to try anyway)")
    return []
