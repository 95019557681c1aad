"""What a distilled component was trained for: the one ``distilled_for`` schema of registry entries.

A distilled prior (progressive distillation, Salimans & Ho 2022; guidance distillation, Meng et
al. 2023) and a distilled adapter (a consistency LoRA, Luo et al. 2023) both state, in their
registry entry, the sampling they were trained for:

    distilled_for: {teacher: digits, method: progressive, sampler: ddim, scheduler: trailing, steps: 4, teacher_steps: 8}
    distilled_for: {teacher: digits-t2i, method: consistency, sampler: lcm, teacher_steps: 50, max_steps: 50,
                    folded_guidance: 2.0}

Every field but ``method`` is optional; an absent one constrains nothing. The trainers write it
with ``DistilledFor(...).as_dict()``, the registry loader parses it (a bad field is a schema error
naming the file and line) and ``core.runtime.distilled.check`` reads it in request validation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

METHODS = ("progressive", "single-step", "consistency", "reflow")


@dataclass(frozen=True)
class DistilledFor:
    """The sampling a distilled prior or adapter was trained for (every constraint optional)."""

    method: str
    """progressive (one step of ``sampler`` per two of its teacher's), single-step (matched at single
    timesteps, no step count), consistency (a consistency function, sampled with ``sampler``) or reflow
    (a rectified flow retrained on its teacher's ODE couplings, any step count of ``sampler``)."""
    teacher: str | None = None
    """The pipeline it was distilled from (named in messages: sample it for what the student cannot do)."""
    sampler: str | None = None
    """The sampler it was trained for; another one runs with a warning."""
    scheduler: str | None = None
    """The scheduler whose levels it was trained on; another one runs with a warning."""
    steps: int | None = None
    """The step count it was trained for; another one runs with a warning."""
    teacher_steps: int | None = None
    """The teacher's step count (progressive: 2 x steps; consistency: its skipping-step grid). Informational."""
    max_steps: int | None = None
    """With ``sampler``, more steps than this walk levels it never learned: refused."""
    guidance: tuple[float, float] | None = None
    """It takes the guidance weight w as an input, trained on [low, high]: another w warns, and it has no
    unconditional branch, so a negative prompt is refused."""
    folded_guidance: float | None = None
    """The teacher's guidance weight folded into it: guiding again (w != 1) warns."""

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, not {self.method!r}")
        for name in ("teacher", "sampler", "scheduler"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ValueError(f"{name} must be a non-empty string, not {value!r}")
        for name in ("steps", "teacher_steps", "max_steps"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a whole number >= 1, not {value!r}")
        if self.guidance is not None:
            g = self.guidance
            ok = isinstance(g, (list, tuple)) and len(g) == 2 and all(_finite(v) for v in g) and 0 <= g[0] < g[1]
            if not ok:
                raise ValueError(f"guidance must be [low, high] with 0 <= low < high, not {g!r}")
            object.__setattr__(self, "guidance", (float(g[0]), float(g[1])))
        if self.folded_guidance is not None and not _finite(self.folded_guidance):
            raise ValueError(f"folded_guidance must be a finite number, not {self.folded_guidance!r}")

    @classmethod
    def parse(cls, data: Any) -> DistilledFor:
        """From a registry entry's ``distilled_for`` mapping; ValueError names the bad key."""
        if not isinstance(data, dict):
            raise ValueError(f"must be a mapping, not {type(data).__name__}")
        known = [f.name for f in fields(cls)]
        for key in data:
            if key not in known:
                raise ValueError(f"unknown key {key!r}; known: {', '.join(known)}")
        if "method" not in data:
            raise ValueError(f"needs method ({', '.join(METHODS)})")
        return cls(**data)

    def as_dict(self) -> dict[str, Any]:
        """The registry mapping: set fields only, in declaration order (guidance as a list, as YAML writes it)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                out[f.name] = list(value) if isinstance(value, tuple) else value
        return out


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
