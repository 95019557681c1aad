"""A composed pipeline: encoder (optional), prior, sampler, scheduler, decoder (imports torch)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from .compose import PipelineSpec
from .errors import LatentzooError
from .interfaces import Progress


@dataclass
class Pipeline:
    prior: Any
    decoder: Any
    sampler: Any
    spec: PipelineSpec
    encoder: Any = None
    scheduler: Any = None
    sha256: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    # The prior models (z - shift) * scaling_factor; the decoder takes raw z.
    def scale(self, z: torch.Tensor) -> torch.Tensor:
        space = self.prior.latent_space
        if space.kind == "discrete" or space.scaling_factor is None:
            return z
        return (z - (space.shift or 0.0)) * space.scaling_factor

    def unscale(self, z: torch.Tensor) -> torch.Tensor:
        space = self.prior.latent_space
        if space.kind == "discrete" or space.scaling_factor is None:
            return z
        return z / space.scaling_factor + (space.shift or 0.0)

    def options(self, **overrides: Any) -> dict[str, Any]:
        """Pipeline defaults overridden by explicit, non-None arguments."""
        merged = dict(self.spec.defaults)
        merged.update({k: v for k, v in overrides.items() if v is not None})
        return merged

    @torch.inference_mode()
    def sample_latents(self, n: int, *, seed: int = 0, progress: Progress | None = None, **overrides: Any) -> torch.Tensor:
        if n < 1:
            raise LatentzooError(f"-n must be at least 1, not {n}")
        opts = self.options(**overrides)
        steps = int(opts.pop("steps", 50))
        if steps < 1:
            raise LatentzooError(f"steps must be at least 1, not {steps}")
        class_label = opts.pop("class_label", None)
        if class_label is not None:
            num_classes = getattr(self.prior, "num_classes", None)
            if not num_classes:
                raise LatentzooError(f"prior {self.spec.prior} is unconditional; drop --class")
            if not 0 <= class_label < num_classes - 1:
                raise LatentzooError(f"--class must be between 0 and {num_classes - 2} for prior {self.spec.prior}")
            opts["class_labels"] = torch.full((n,), class_label, dtype=torch.long)
        generator = torch.Generator().manual_seed(seed)
        noise = torch.randn((n, *self.prior.latent_shape), generator=generator)
        # the new contract: the scheduler picks levels (if the sampler walks any), the sampler walks them
        levels = self.scheduler.schedule(self.prior, steps) if getattr(self.sampler, "levels", None) else None
        return self.sampler.sample(self.prior, noise, levels=levels, generator=generator, progress=progress, **opts)

    @torch.inference_mode()
    def sample(self, n: int, *, seed: int = 0, progress: Progress | None = None, **overrides: Any) -> torch.Tensor:
        """n images in [-1, 1]; the same seed and options give identical output on CPU."""
        return self.decode(self.unscale(self.sample_latents(n, seed=seed, progress=progress, **overrides)))

    @torch.inference_mode()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        if self.encoder is None:
            raise LatentzooError(f"pipeline {self.spec.name} has no encoder; compose one with --encoder")
        return self.encoder.encode(images)

    @torch.inference_mode()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.decoder.decode(latents).clamp(-1, 1)

    @torch.inference_mode()
    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(images))

    def record(self) -> dict[str, Any]:
        """What a sidecar needs to reproduce a draw."""
        return {
            "pipeline": self.spec.name,
            "components": self.spec.parts(),
            "sha256": dict(self.sha256),
            "defaults": dict(self.spec.defaults),
        }
