"""The ``flow`` scheduler: which times t in (0, 1] a flow sampler visits (no network)."""

from __future__ import annotations

import math
from typing import Any, ClassVar

from latentzoo.core.contract.errors import LatentzooError
from latentzoo.core.contract.interfaces import Prior, Scheduler


def check_shift(shift: Any) -> float:
    """A timestep shift must be a finite number > 0; anything else is refused in one line."""
    if isinstance(shift, bool) or not isinstance(shift, (int, float)) or not math.isfinite(shift) or shift <= 0:
        raise LatentzooError(f"flow shift must be a finite number > 0 (1 = no shift), not {shift!r}")
    return float(shift)


def shift_time(t: float, shift: float) -> float:
    """SD3's timestep shift t' = s t / (1 + (s - 1) t) (Esser et al. 2024, eq. 23).

    It maps 0 -> 0 and 1 -> 1 and is increasing, so a decreasing grid stays decreasing;
    s > 1 moves the grid towards t = 1 (more steps at high noise).
    """
    return shift * t / (1.0 + (shift - 1.0) * t)


class FlowShiftScheduler(Scheduler):
    """``steps`` times from t = 1 down, uniform in t then shifted, followed by t = 0."""

    levels: ClassVar[str] = "flow"

    def __init__(self, *, shift: float = 1.0) -> None:
        self.shift = check_shift(shift)

    def schedule(self, prior: Prior, steps: int, *, shift: float | None = None, **_: Any) -> list[float]:
        s = self.shift if shift is None else check_shift(shift)
        ts = [shift_time(1.0 - i / steps, s) for i in range(steps)]
        return [*ts, 0.0]
