"""Training options: ``TrainOptions`` (``latentzoo train``'s flags as one checked value),
``split_options`` for a family's ``--set`` groups, and the cosine learning-rate schedule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..contract.errors import LatentzooError

PRECISIONS = ("fp32", "bf16")


MAX_STEPS = 100_000_000  # a bound on --steps that no real run reaches, so a typo is an error, not a hang


MAX_SEED = 2**63


@dataclass
class TrainOptions:
    """What a family's trainer receives: the shared ``latentzoo train`` flags (public API).

    A trainer reads these and nothing else from the command line; family-specific model and
    loss options arrive in ``config`` (from ``--config FILE`` and ``--set KEY=VALUE``), to be
    checked with ``split_options``. ``validate()`` is called by ``latentzoo.train`` before the
    trainer runs.
    """

    out: Path
    """The run directory (created; see the module docstring for its layout)."""
    data: str = "digits"
    """A dataset name declared by a plugin, or a folder of images (``core.runtime.data.load_dataset``)."""
    steps: int = 2000
    """Total optimizer steps of the run (a resumed run continues up to this)."""
    batch_size: int = 64
    """The global batch of one optimizer step, over all processes."""
    lr: float = 2e-4
    """Peak learning rate (``run.loop`` applies warm-up and cosine decay)."""
    seed: int = 0
    """Seed of every random draw of the run (0 <= seed < 2**63)."""
    checkpoint_every: int = 500
    """Steps between checkpoints (there is always one at the last step)."""
    resume: bool = False
    """Continue from the newest verified checkpoint in ``out``."""
    name: str | None = None
    """Registry name of the result (default ``<family>-<run directory name>``)."""
    config: dict[str, Any] = field(default_factory=dict)
    """Family options (model shape, loss weights), checked by the trainer with ``split_options``."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Anything else the CLI passes: ``encoder`` (a frozen encoder name) and ``registry_files``."""
    progress: bool = True
    """Show a progress bar (rank 0)."""
    device: str = "auto"
    """``auto`` (CUDA when present), ``cpu`` or ``cuda``."""
    precision: str = "fp32"
    """``fp32`` or ``bf16`` (autocast)."""
    grad_accum: int = 1
    """Micro-batches per optimizer step, of each process's share."""
    clip_grad: float | None = None
    """Max gradient norm: None the family's default, 0 off."""
    workers: int = 0
    """DataLoader worker processes per training process."""

    def validate(self) -> TrainOptions:
        """Refuse impossible values in one line naming the flag (non-finite numbers included)."""
        self.out = Path(self.out)
        ints = {"--steps": self.steps, "--batch-size": self.batch_size, "--checkpoint-every": self.checkpoint_every}
        ints |= {"--grad-accum": self.grad_accum}
        for flag, value in ints.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise LatentzooError(f"{flag} must be a positive integer, not {value!r}")
        if self.steps > MAX_STEPS:
            raise LatentzooError(f"--steps {self.steps} is beyond any real run (at most {MAX_STEPS}); check the number")
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 0:
            raise LatentzooError(f"--workers must be 0 or more, not {self.workers!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < MAX_SEED:
            raise LatentzooError(f"--seed must be an integer from 0 to 2**63-1, not {self.seed!r}")
        if not isinstance(self.lr, (int, float)) or not math.isfinite(self.lr) or self.lr <= 0:
            raise LatentzooError(f"--lr must be a finite positive number, not {self.lr!r}")
        if self.clip_grad is not None and (not math.isfinite(self.clip_grad) or self.clip_grad < 0):
            raise LatentzooError(f"--clip-grad must be a finite number >= 0 (0: off), not {self.clip_grad!r}")
        if self.precision not in PRECISIONS:
            raise LatentzooError(f"--precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}")
        if not isinstance(self.config, dict):
            raise LatentzooError(f"training options (--config / --set) must be a mapping, not {type(self.config).__name__}")
        _check_finite_config(self.config)
        return self


def _check_finite_config(config: Any, path: str = "") -> None:
    """A NaN or Inf family option (``--set lr_decay=.nan``) is refused, naming the key."""
    if isinstance(config, dict):
        for key, value in config.items():
            _check_finite_config(value, f"{path}.{key}" if path else str(key))
    elif isinstance(config, (list, tuple)):
        for i, value in enumerate(config):
            _check_finite_config(value, f"{path}[{i}]")
    elif isinstance(config, float) and not math.isfinite(config):
        raise LatentzooError(f"training option {path} is {config}; give a finite number")


def split_options(family: str, config: dict[str, Any], *groups: dict[str, Any], extra: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Each group of defaults overridden by ``config``; ``extra`` keys (optional, no default)
    go to the first group. An unknown key is an error naming the known ones."""
    known = set().union(*groups, extra)
    unknown = set(config) - known
    if unknown:
        raise LatentzooError(f"unknown {family} option(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
    out = [{**group, **{k: v for k, v in config.items() if k in group}} for group in groups]
    out[0].update({k: v for k, v in config.items() if k in extra})
    return out


def cosine_lr(step: int, total: int, base: float, warmup: int = 100) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    return base * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))
