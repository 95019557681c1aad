"""The guidance-distilled student: a teacher's network that also takes the guidance weight w as an input.

Meng et al. 2023 ("On Distillation of Guided Diffusion Models", sec. 4.1) fold classifier-free
guidance into one model x_eta(z_t, w): w is embedded like the timestep and added to the time
embedding, so a guided step costs one forward pass instead of two. ``GuidedStudent`` wraps any
denoiser network whose forward computes its time embedding in a ``time_embedding`` module (the
diffusers UNet layouts here): a small MLP of Fourier features of w is added to that module's
output. Its last layer starts at zero, so a fresh student is exactly its base network.

The prior states ``guidance_input = True``; ``latentzoo.core.contract.denoising.Denoiser`` then calls it
once per step with ``guidance=w`` and never on the unconditional branch.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from latentzoo.core.contract.denoising import NoiseSchedule
from latentzoo.core.contract.interfaces import DenoiserPrior
from latentzoo.core.nn.layers import timestep_embedding

GUIDANCE_SCALE = 250.0  # w in [0, 4] spreads over [0, 1000], the range the sinusoidal features were made for


def base_class(name: str) -> type[nn.Module]:
    """The class a plugin declares under ``name`` (e.g. ``diffusion.unet_cond``): the student's base network."""
    from latentzoo.core.contract.errors import LatentzooError
    from latentzoo.core.contract.plugins import get_manager
    from latentzoo.core.contract.registry import import_target

    decl = get_manager().components().get(name)
    if decl is None or "prior" not in decl["roles"]:
        raise LatentzooError(f"guided student: base class {name!r} is not a declared prior class")
    return import_target(decl["target"])


class GuidedStudent(nn.Module, DenoiserPrior):
    """``base`` (a declared prior class) built from ``base_config``, plus an embedding of w."""

    guidance_input = True

    def __init__(self, *, base: str, base_config: dict[str, Any], guidance_range: list[float] | tuple[float, float] = (1.0, 4.0)) -> None:
        super().__init__()
        lo, hi = (float(g) for g in guidance_range)
        if not 0 <= lo < hi:
            raise ValueError(f"guidance_range must be [low, high] with 0 <= low < high, not {list(guidance_range)}")
        self.base, self.guidance_range = base, (lo, hi)
        self.net = base_class(base)(**base_config)
        embedding = getattr(self.net, "time_embedding", None)
        if not isinstance(embedding, nn.Module):
            raise ValueError(f"guided student: {base} has no time_embedding module to add the guidance embedding to")
        width = self.net.conv_in.out_channels
        with torch.no_grad():
            temb = embedding(torch.zeros(1, width)).shape[-1]  # the time embedding's width
        self.freq_dim = width
        self.guidance_embedding = nn.Sequential(nn.Linear(width, temb), nn.SiLU(), nn.Linear(temb, temb))
        nn.init.zeros_(self.guidance_embedding[2].weight)  # a fresh student is its base network (w has no effect yet)
        nn.init.zeros_(self.guidance_embedding[2].bias)
        self._w_emb: torch.Tensor | None = None
        embedding.register_forward_hook(self._add_guidance)

    def _add_guidance(self, module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
        return output if self._w_emb is None else output + self._w_emb.to(output.dtype)

    @property
    def noise_schedule(self) -> NoiseSchedule:
        return self.net.noise_schedule

    @property
    def prediction_type(self) -> str:
        return self.net.prediction_type

    @property
    def num_train_timesteps(self) -> int:
        return self.net.num_train_timesteps

    @property
    def num_classes(self) -> int | None:
        return getattr(self.net, "num_classes", None)

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return self.net.latent_shape

    def forward(
        self, sample: torch.Tensor, timesteps: torch.Tensor, class_labels: torch.Tensor | None = None, *, guidance: Any = 1.0, **kwargs: Any
    ) -> torch.Tensor:
        w = torch.as_tensor(guidance, dtype=torch.float32, device=sample.device).reshape(-1).expand(sample.shape[0])
        features = timestep_embedding(w * GUIDANCE_SCALE, self.freq_dim, flip_sin_to_cos=True, freq_shift=0)
        self._w_emb = self.guidance_embedding(features.to(sample.dtype))
        try:
            return self.net(sample, timesteps, class_labels, **kwargs)
        finally:
            self._w_emb = None
