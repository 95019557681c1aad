"""Priors that borrow a built-in kind but break its convention (for tests/test_kinds.py).

Each wraps the shipped digits flow prior: a third-party prior trained "the other way" is, up
to training noise, exactly such a transform of a correct one.
"""

from __future__ import annotations

import torch

from latentzoo.plugins.flow.model import FlowUNetPrior


class BackwardsFlowPrior(FlowUNetPrior):
    """Time runs the other way: noise at t = 0 and v = x0 - eps (the velocity of x_t = t x0 + (1 - t) eps)."""

    def forward(self, x: torch.Tensor, t: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        return -super().forward(x, 1 - t, class_labels)


class FlippedVelocityPrior(FlowUNetPrior):
    """Noise at t = 1 as the kind says, but the velocity's sign reversed (x0 - eps)."""

    def forward(self, x: torch.Tensor, t: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        return -super().forward(x, t, class_labels)
