"""The five roles: Encoder, Decoder, Prior, Scheduler, Sampler.

Families implement these (usually together with ``torch.nn.Module``). The module itself
imports no torch so that plugins' declarations can name roles without loading models.

Every component is built from a JSON-able ``config`` dict with ``from_config``; the
registry then sets ``latent_space`` from its (checked) declaration.

Vocabulary is open. A prior's ``kind`` and a scheduler's ``levels`` are plain strings a
plugin declares (``denoiser``, ``autoregressive``, ``analytic``, ``flow``, ...); the core
compares them and keeps no list. A sampler states the prior kinds it ``drives`` and the
kind of ``levels`` it walks; composition refuses anything else before a model is loaded.

One meaning of "scheduler": a scheduler picks the noise levels a sampler visits, nothing
else. The *noise schedule a prior was trained with* belongs to the prior (a denoiser's
``noise_schedule``), so any scheduler of the right ``levels`` works with any prior of a
kind whose samplers walk those levels.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from .latent import LatentSpace

if TYPE_CHECKING:
    import torch

    from .conditioning import ConditioningSpace

ROLES: tuple[str, ...] = (
    "encoder",
    "decoder",
    "prior",
    "sampler",
    "scheduler",
    "conditioner",
    "adapter",
)  # adapter: a LoRA applied to a prior / conditioner

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

    ``kind`` is any string the plugin declares (the same string as in its declaration). The
    plugin that owns a kind declares its convention and conformance check (``latentzoo_kinds``;
    ``latentzoo plugins`` lists the installed kinds, ``latentzoo check PRIOR`` tests a prior
    against its kind); the core keeps no list of kinds.
    """

    kind: ClassVar[str]
    latent_space: LatentSpace

    @property
    @abstractmethod
    def latent_shape(self) -> tuple[int, ...]:
        """Shape of one sample, without the batch dimension."""


class DenoiserPrior(Prior):
    """A diffusion denoiser: ``forward(x_t, t, class_labels)`` returns ``prediction_type``.

    ``noise_schedule`` is the discrete variance-preserving schedule it was trained with
    (``latentzoo.core.contract.denoising.NoiseSchedule``): alphas_cumprod over ``num_train_timesteps``
    and the matching variance-exploding sigmas. Schedulers pick levels from it.
    """

    kind: ClassVar[str] = "denoiser"
    prediction_type: str  # "epsilon" | "v_prediction" | "sample"
    num_train_timesteps: int
    num_classes: int | None

    @property
    @abstractmethod
    def noise_schedule(self) -> Any:
        """The training noise schedule (a ``latentzoo.core.contract.denoising.NoiseSchedule``)."""


class Scheduler(Component):
    """Picks the noise levels a sampler visits; no network.

    ``levels`` names what the returned numbers are: ``sigma`` (variance-exploding noise
    levels of a denoiser's training schedule, x = x0 + sigma eps) or any string a plugin
    declares (the flow family's ``flow``: t in [0, 1], x_t = (1 - t) x0 + t eps).
    """

    levels: ClassVar[str] = "sigma"

    @abstractmethod
    def schedule(self, prior: Prior, steps: int, **options: Any) -> list[float]:
        """``steps`` strictly decreasing levels followed by the clean end (0.0): ``steps + 1`` floats."""


class Sampler(Component):
    """An algorithm that draws from a prior.

    ``drives`` lists the prior kinds it can drive. ``levels`` is the kind of scheduler levels
    it walks, or None when it needs no scheduler (token sampling, closed form).
    """

    drives: ClassVar[tuple[str, ...]]
    levels: ClassVar[str | None] = None

    @abstractmethod
    def sample(
        self,
        prior: Prior,
        noise: torch.Tensor,
        *,
        levels: list[float] | None,
        generator: torch.Generator,
        progress: Progress | None = None,
        **options: Any,
    ) -> torch.Tensor:
        """Return latents in the prior's (scaled) space, starting from ``noise``.

        ``levels`` is the scheduler's output (None for a sampler with ``levels = None``);
        ``options`` are the validated sampler and prior options (see ``core.contract.options``).
        A sampler that declares ``random_prompt`` (each sample's caption drawn from the K rows
        of ``conditioning``) also takes ``prompt_indices``, a LongTensor of n row indices drawn
        by the pipeline (re-ranking gives every candidate of an output the same caption), and
        then draws none itself.
        """


class Conditioner(Component):
    """Maps conditioning inputs (text prompts, class labels, ...) to what a prior attends to.
    ``conditioning_space`` says what it produces; a prior states the space it accepts."""

    conditioning_space: ConditioningSpace  # set by the builder from the registry entry

    @abstractmethod
    def condition(self, inputs: list[Any]) -> dict[str, torch.Tensor]:
        """A batch: {"tokens": (B, L, W) per-token states, "pooled": (B, W) if it has one, "mask": (B, L) bool}."""


class Scorer(Protocol):
    """Scores images against texts (an image-text model such as digits-clip): re-ranks candidates (core.runtime.rerank)."""

    def similarity(self, images: torch.Tensor, texts: list[str]) -> torch.Tensor:
        """(B,) similarities of image i with text i (or with the one text)."""
        ...
