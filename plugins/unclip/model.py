"""unCLIP's two networks (Ramesh et al. 2022, "Hierarchical Text-Conditional Image Generation
with CLIP Latents"), sized for digits.

Both are diffusion denoisers over flat vectors, built from one residual MLP whose blocks are
modulated (FiLM: scale and shift, Perez et al. 2018) by the timestep embedding plus a projected
condition vector:

- ``UnCLIPPrior`` (a ``denoiser`` prior, so the existing samplers and schedulers drive it): a
  distribution over CLIP *image* embeddings given the CLIP *text* embedding. Like DALL-E 2's
  prior it predicts x0 (the clean embedding) directly (sec. 2.1). The condition reaches it as
  a conditioner's single token (``encoder_hidden_states`` (B, 1, D), see
  ``plugins/clip/embed.py``), so classifier-free guidance against the empty prompt's
  embedding is ``core.contract.denoising.Denoiser``'s, unchanged.
- ``UnCLIPDecoder`` (a decoder of the image-embedding space): a diffusion model over the
  image's pixels conditioned on the embedding, with classifier-free guidance against the null
  (all-zero) embedding, which it saw for 10% of training examples (sec. 2.1). It denoises at
  ``base_size`` (8x8, the digits' native resolution) and upsamples bilinearly to
  ``image_size``, exactly as the dataset renders its 8x8 digits at 32x32 (DALL-E 2 likewise
  decodes at 64x64 and upsamples). Decoding is stochastic: it draws its starting noise from
  the ``generator`` it is given (``stochastic = True``, the seam ``core.runtime.pipeline`` and
  ``core.runtime.variations`` use), so one embedding decodes into many images (variations).
"""

from __future__ import annotations

import itertools
import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from latentzoo.core.contract.denoising import Denoiser, NoiseSchedule
from latentzoo.core.contract.errors import LatentzooError
from latentzoo.core.contract.interfaces import Decoder, DenoiserPrior
from latentzoo.core.runtime.seeding import randn

DEFAULT_SCHEDULE: dict[str, Any] = {"beta_schedule": "squaredcos_cap_v2", "num_train_timesteps": 1000}


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (fractional) timesteps (Vaswani et al. 2017, sec. 3.5; as DDPM's UNet)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class FiLMBlock(nn.Module):
    """h + MLP(LN(h) * (1 + scale) + shift), scale and shift from the embedding (zero-initialised output)."""

    def __init__(self, hidden: int, emb: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden, elementwise_affine=False)
        self.film = nn.Linear(emb, 2 * hidden)
        self.fc1 = nn.Linear(hidden, 2 * hidden)
        self.fc2 = nn.Linear(2 * hidden, hidden)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        scale, shift = self.film(emb).chunk(2, dim=-1)
        return h + self.fc2(F.silu(self.fc1(self.norm(h) * (1 + scale) + shift)))


class ResMLP(nn.Module):
    """out = f(x_t, t, cond): a residual MLP over a flat vector, FiLM-conditioned on t and ``cond``."""

    def __init__(self, dim: int, cond_dim: int, hidden: int, blocks: int, time_dim: int = 128) -> None:
        super().__init__()
        self.time_dim = time_dim
        self.time_mlp = nn.Sequential(nn.Linear(time_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.cond_mlp = nn.Sequential(nn.Linear(cond_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.proj_in = nn.Linear(dim + cond_dim, hidden)
        self.blocks = nn.ModuleList(FiLMBlock(hidden, hidden) for _ in range(blocks))
        self.norm_out = nn.LayerNorm(hidden)
        self.proj_out = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        t = t.reshape(-1).to(x.device)
        t = t.expand(x.shape[0]) if t.numel() == 1 else t
        emb = F.silu(self.time_mlp(timestep_embedding(t, self.time_dim)) + self.cond_mlp(cond))
        h = self.proj_in(torch.cat([x, cond], dim=-1))
        for block in self.blocks:
            h = block(h, emb)
        return self.proj_out(self.norm_out(h))


def _condition(encoder_hidden_states: torch.Tensor | None, batch: int, width: int, who: str) -> torch.Tensor:
    """The condition vector from a conditioner's single token; the all-zero (null) vector without one."""
    if encoder_hidden_states is None:
        return torch.zeros(batch, width)
    if encoder_hidden_states.ndim != 3 or encoder_hidden_states.shape[1] != 1 or encoder_hidden_states.shape[2] != width:
        raise LatentzooError(
            f"{who} takes one embedding token of width {width} (B, 1, {width}), not {tuple(encoder_hidden_states.shape)}; "
            "compose it with a CLIP embedder (clip.embedder)"
        )
    return encoder_hidden_states[:, 0].float()


class UnCLIPPrior(nn.Module, DenoiserPrior):
    """p(image embedding | text embedding): an x0-predicting diffusion prior over D-vectors (see module doc)."""

    kind: ClassVar[str] = "denoiser"
    num_classes = None

    def __init__(
        self,
        embedding_dim: int = 64,
        cond_dim: int = 64,
        hidden: int = 512,
        blocks: int = 4,
        prediction_type: str = "sample",
        training_schedule: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.embedding_dim, self.cond_dim, self.prediction_type = embedding_dim, cond_dim, prediction_type
        self.training_schedule = dict(training_schedule or DEFAULT_SCHEDULE)
        self._schedule = NoiseSchedule.from_config(self.training_schedule)
        self.num_train_timesteps = self._schedule.num_train_timesteps
        self.net = ResMLP(embedding_dim, cond_dim, hidden, blocks)

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return (self.embedding_dim,)

    @property
    def noise_schedule(self) -> NoiseSchedule:
        return self._schedule

    def forward(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        class_labels: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        cond = _condition(encoder_hidden_states, x_t.shape[0], self.cond_dim, "the unCLIP prior")
        return self.net(x_t, t, cond.to(x_t.device))


class _PixelDenoiser(nn.Module):
    """The decoder's network in the form ``core.contract.denoising.Denoiser`` drives: prior(x_t, t, labels, encoder_hidden_states=...)."""

    num_classes = None

    def __init__(self, pixels: int, embedding_dim: int, hidden: int, blocks: int, prediction_type: str, schedule: NoiseSchedule) -> None:
        super().__init__()
        self.embedding_dim, self.prediction_type, self.noise_schedule = embedding_dim, prediction_type, schedule
        self.net = ResMLP(pixels, embedding_dim, hidden, blocks)

    def forward(self, x_t, t, class_labels=None, encoder_hidden_states=None, encoder_attention_mask=None) -> torch.Tensor:
        cond = _condition(encoder_hidden_states, x_t.shape[0], self.embedding_dim, "the unCLIP decoder")
        return self.net(x_t, t, cond.to(x_t.device))


class UnCLIPDecoder(nn.Module, Decoder):
    """Image embedding (B, D) -> images (B, C, image_size, image_size) in [-1, 1], by guided DDIM (see module doc).

    ``steps``, ``guidance`` and ``eta`` are the decoder's own sampling settings (config); the
    pipeline's sampler and scheduler drive the prior, not this inner diffusion.
    """

    stochastic: ClassVar[bool] = True  # decode() draws noise from the generator it is given
    latent_space: Any = None

    def __init__(
        self,
        embedding_dim: int = 64,
        image_channels: int = 1,
        image_size: int = 32,
        base_size: int = 8,
        hidden: int = 512,
        blocks: int = 4,
        prediction_type: str = "epsilon",
        training_schedule: dict[str, Any] | None = None,
        steps: int = 25,
        guidance: float = 1.0,
    ) -> None:
        super().__init__()
        if image_size % base_size:
            raise ValueError(f"image_size {image_size} must be a multiple of base_size {base_size}")
        self.embedding_dim, self.image_channels, self.image_size, self.base_size = embedding_dim, image_channels, image_size, base_size
        self.steps, self.guidance = int(steps), float(guidance)
        self.training_schedule = dict(training_schedule or DEFAULT_SCHEDULE)
        schedule = NoiseSchedule.from_config(self.training_schedule)
        self.denoiser = _PixelDenoiser(image_channels * base_size * base_size, embedding_dim, hidden, blocks, prediction_type, schedule)

    def shape_fields(self) -> dict[str, Any]:
        return {"kind": "continuous", "channels": self.embedding_dim, "factor": self.image_size}

    def levels(self, steps: int) -> list[float]:
        """``steps`` sigmas of the training schedule, evenly spaced in t from T-1 down ("trailing"), then 0."""
        schedule = self.denoiser.noise_schedule
        T = schedule.num_train_timesteps
        ts = sorted({round(T - 1 - i * (T - 1) / steps) for i in range(steps)}, reverse=True)
        return [schedule.sigmas[t] for t in ts] + [0.0]

    @torch.inference_mode()
    def decode(self, latents: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """DDIM (Song et al. 2021, eq. 12 with eta = 0) from noise drawn from ``generator`` (seed 0 when None)."""
        emb = latents.reshape(latents.shape[0], -1).float()
        if emb.shape[1] != self.embedding_dim:
            raise LatentzooError(f"the unCLIP decoder takes {self.embedding_dim}-d image embeddings, not {emb.shape[1]}-d")
        emb = F.normalize(emb, dim=-1)  # the decoder was trained on unit-norm CLIP embeddings
        b, c, s = emb.shape[0], self.image_channels, self.base_size
        generator = generator or torch.Generator().manual_seed(0)
        # row by row for per-sample generators, drawn on the CPU and moved to the weights' device (core.runtime.seeding)
        x = randn((b, c * s * s), generator, device=emb.device)
        den = Denoiser(
            self.denoiser,
            guidance=self.guidance,
            clip_sample=True,
            batch_size=b,
            conditioning={"tokens": emb[:, None, :]},
            null_conditioning={"tokens": torch.zeros(1, 1, self.embedding_dim, device=emb.device)},
        )
        schedule = self.denoiser.noise_schedule
        levels = self.levels(self.steps)
        for sigma, sigma_next in itertools.pairwise(levels):
            x0, eps = den.predict(x, sigma)
            a_next = schedule.alpha_bar(sigma_next)
            x = math.sqrt(a_next) * x0 + math.sqrt(1.0 - a_next) * eps  # DDIM, eta = 0
        images = x.reshape(b, c, s, s).clamp(-1, 1)
        if self.image_size != s:  # as the dataset renders 8x8 digits at 32x32 (plugins/datasets/digits.py)
            images = F.interpolate(images, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        return images.clamp(-1, 1)
