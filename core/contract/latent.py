"""The latent-space contract: what makes mixing an encoder, a prior and a decoder safe.

A ``LatentSpace`` is plain data (no torch). Every encoder states the space it produces,
every decoder the spaces it consumes, every prior the space it models. Composition
compares them field by field and refuses a mismatch with a message that names both
components and every differing field.

Scaling is deliberately separate from identity. ``scaling_factor`` and ``shift`` say how
a *prior* normalises the autoencoder's raw latents (``prior_z = (z - shift) *
scaling_factor``). A prior must state them (they are measured from data, never
defaulted); an autoencoder may leave them unset, meaning it takes raw latents. When both
sides state them, they must agree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from .errors import ContractError

LatentKind = Literal["continuous", "discrete"]

# Fields that define which space this is; scaling is compared separately (see module doc).
IDENTITY_FIELDS = ("kind", "channels", "factor", "codebook_size", "autoencoder")


@dataclass(frozen=True)
class LatentSpace:
    """One latent space.

    kind: ``continuous`` (real-valued latents) or ``discrete`` (code indices).
    channels: latent channels (1 for a grid of code indices).
    factor: spatial downsampling factor from image to latent grid.
    codebook_size: number of codes for vector-quantised or discrete spaces, else None.
    autoencoder: identity of the autoencoder that defined the space (``sha256:<16 hex>``
        of its weights), so two autoencoders of the same shape never pass for one another.
    scaling_factor, shift: how a prior normalises raw latents; None means raw.
    """

    kind: LatentKind
    channels: int
    factor: int
    autoencoder: str
    codebook_size: int | None = None
    scaling_factor: float | None = None
    shift: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("continuous", "discrete"):
            raise ContractError(f"latent space kind must be continuous or discrete, not {self.kind!r}")
        if self.kind == "discrete" and not self.codebook_size:
            raise ContractError("a discrete latent space needs codebook_size")
        for name in ("channels", "factor"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ContractError(f"latent space {name} must be a positive integer, not {value!r}")
        if self.codebook_size is not None and (not isinstance(self.codebook_size, int) or isinstance(self.codebook_size, bool)):
            raise ContractError(f"latent space codebook_size must be a positive integer or null, not {self.codebook_size!r}")
        if self.channels < 1 or self.factor < 1:
            raise ContractError("latent space channels and factor must be positive integers")
        # A zero, negative or non-finite scale turns every latent into 0, inf or NaN downstream.
        if self.scaling_factor is not None:
            if not _is_finite_number(self.scaling_factor) or self.scaling_factor <= 0:
                raise ContractError(
                    f"latent space scaling_factor must be a finite number > 0, not {self.scaling_factor!r}; "
                    "measure it from data (1/std of the latents)"
                )
        if self.shift is not None and not _is_finite_number(self.shift):
            raise ContractError(
                f"latent space shift must be a finite number, not {self.shift!r}; measure it from data (mean of the latents)"
            )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LatentSpace:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ContractError(f"unknown latent_space field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        missing = [f for f in ("kind", "channels", "factor", "autoencoder") if f not in data]
        if missing:
            raise ContractError(f"latent_space is missing {', '.join(missing)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def with_scaling(self, scaling_factor: float, shift: float = 0.0) -> LatentSpace:
        return LatentSpace(**{**asdict(self), "scaling_factor": scaling_factor, "shift": shift})

    def as_discrete(self) -> LatentSpace:
        """The code-index view of a vector-quantised space (same autoencoder, same codebook)."""
        if not self.codebook_size:
            raise ContractError("only a space with a codebook has a discrete view")
        return LatentSpace("discrete", 1, self.factor, self.autoencoder, self.codebook_size)

    def differences(self, other: LatentSpace) -> list[tuple[str, Any, Any]]:
        """Fields that differ between two spaces; scaling only when both state it."""
        diffs = [(f, getattr(self, f), getattr(other, f)) for f in IDENTITY_FIELDS if getattr(self, f) != getattr(other, f)]
        for f in ("scaling_factor", "shift"):
            a, b = getattr(self, f), getattr(other, f)
            if a is not None and b is not None and abs(a - b) > 1e-6 * max(1.0, abs(a)):
                diffs.append((f, a, b))
        return diffs

    def same_shape(self, other: LatentSpace) -> bool:
        return (self.kind, self.channels, self.factor, self.codebook_size) == (
            other.kind,
            other.channels,
            other.factor,
            other.codebook_size,
        )

    def describe(self) -> str:
        code = f", codebook {self.codebook_size}" if self.codebook_size else ""
        scale = f", scale {self.scaling_factor:.4g}" if self.scaling_factor is not None else ""
        return f"{self.kind} {self.channels}ch /{self.factor}{code}{scale} [{self.autoencoder}]"


def _is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _format_diffs(diffs: list[tuple[str, Any, Any]]) -> str:
    return "; ".join(f"{name} {a!r} != {b!r}" for name, a, b in diffs)


def check_spaces(
    producer: str,
    produced: LatentSpace,
    consumer: str,
    accepted: tuple[LatentSpace, ...] | list[LatentSpace],
    *,
    allow_mismatch: bool = False,
) -> tuple[LatentSpace, list[str]]:
    """Check that ``produced`` fits one of the spaces ``consumer`` accepts.

    Returns the matched accepted space and a list of warnings (non-empty only when
    ``allow_mismatch`` let an equal-shape mismatch through). Raises ContractError naming
    both components and every differing field otherwise.
    """
    best: tuple[LatentSpace, list[tuple[str, Any, Any]]] | None = None
    for space in accepted:
        diffs = produced.differences(space)
        if not diffs:
            return space, []
        if best is None or len(diffs) < len(best[1]) or (space.kind == produced.kind and best[0].kind != produced.kind):
            best = (space, diffs)
    if best is None:
        raise ContractError(f"{consumer} accepts no latent space")
    space, diffs = best
    message = f"latent spaces do not match: {producer} vs {consumer}: {_format_diffs(diffs)}"
    if allow_mismatch:
        if produced.same_shape(space):
            return space, [f"--allow-mismatch: {message}"]
        raise ContractError(message + " (--allow-mismatch only covers spaces of equal kind and shape)")
    raise ContractError(message + " (pick components trained on the same autoencoder, or pass --allow-mismatch for equal shapes)")


def check_sampler(sampler: str, drives: tuple[str, ...] | list[str], prior: str, prior_kind: str, fitting: Sequence[str] = ()) -> None:
    """A sampler states the prior kinds it can drive; refuse any other, listing the ``fitting`` samplers (those that drive it)."""
    if prior_kind not in drives:
        names = ", ".join(fitting) if fitting else "none is registered"
        raise ContractError(
            f"sampler {sampler} drives {'/'.join(drives)} priors, but {prior} is {prior_kind}; samplers for {prior_kind} priors: {names} (see `latentzoo list --role sampler`)"
        )
