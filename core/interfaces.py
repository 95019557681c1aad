"""The five roles: Encoder, Decoder, Prior, Scheduler, Sampler.

Families implement these (usually together with ``torch.nn.Module``). The module itself
imports no torch so that plugins' declarations can name roles without loading models.

Every component is built from a JSON-able ``config`` dict with ``from_config``; the
registry then sets ``latent_space`` from its (checked) declaration.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from .latent import LatentSpace

if TYPE_CHECKING:
    import torch

ROLES: tuple[str, ...] = ("encoder", "decoder", "prior", "sampler", "scheduler")

# A progress callback: called once per step with (step_index, total_steps).
Progress = Callable[[int, int], None]


class Component(ABC):
    """Shared by all roles: construction from a config dict, and the config kept for saving."""

    config: dict[str, Any]

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Component:
        obj = cls(**config)
        obj.config = dict(config)
        return obj


class Encoder(Component):
    """Maps an image batch (B, C, H, W) in [-1, 1] to raw latents of ``latent_space``."""

    latent_space: LatentSpace
    image_channels: int

    @abstractmethod
    def encode(self, images: torch.Tensor) -> torch.Tensor: ...


class Decoder(Component):
    """Maps latents of one of ``accepted_spaces`` to an image batch in [-1, 1]."""

    latent_space: LatentSpace
    image_channels: int

    @property
    def accepted_spaces(self) -> tuple[LatentSpace, ...]:
        return (self.latent_space,)

    @abstractmethod
    def decode(self, latents: torch.Tensor) -> torch.Tensor: ...


class Prior(Component):
    """A distribution over one latent space.

    ``kind`` is ``denoiser`` (predicts noise / v / x0 at a timestep), ``autoregressive``
    (next-code logits) or ``analytic`` (samples in closed form).
    """

    kind: ClassVar[str]
    latent_space: LatentSpace

    @property
    @abstractmethod
    def latent_shape(self) -> tuple[int, ...]:
        """Shape of one sample, without the batch dimension."""


class DenoiserPrior(Prior):
    """A diffusion denoiser: ``forward(x_t, t, class_labels)`` returns ``prediction_type``."""

    kind: ClassVar[str] = "denoiser"
    prediction_type: str  # "epsilon" | "v_prediction" | "sample"
    num_train_timesteps: int
    num_classes: int | None


class Scheduler(Component):
    """The noise schedule; no network. Owns alphas_cumprod and the timestep sequence."""

    num_train_timesteps: int

    @property
    @abstractmethod
    def alphas_cumprod(self) -> torch.Tensor:
        """\bar{alpha}_t for t = 0 .. T-1 (float64)."""

    @abstractmethod
    def timesteps(self, num_steps: int) -> list[int]:
        """Descending training timesteps to visit for ``num_steps`` sampling steps."""


class Sampler(Component):
    """An algorithm that draws from a prior along a schedule; ``drives`` lists prior kinds."""

    drives: ClassVar[tuple[str, ...]]

    @abstractmethod
    def sample(
        self,
        prior: Prior,
        scheduler: Scheduler | None,
        noise: torch.Tensor,
        *,
        steps: int,
        generator: torch.Generator,
        progress: Progress | None = None,
        **options: Any,
    ) -> torch.Tensor:
        """Return latents in the prior's (scaled) space, starting from ``noise``."""
