"""Train a rectified-flow prior on the latents of a frozen encoder (``latentzoo train flow``).

Written against the public trainer API (``latentzoo.core.training``) only. The data are
encoded once; the latents' normalisation is measured (shift = mean, scaling_factor =
1 / std of the training latents) and recorded in the prior's latent-space contract.

Objective (conditional flow matching with the straight path, Lipman et al. 2023; Liu et
al. 2022): x_t = (1 - t) x0 + t eps, loss ||v_theta(x_t, t) - (eps - x0)||^2, with t drawn
logit-normal, t = sigmoid(m + s u), u ~ N(0, 1) (Esser et al. 2024, sec. 3.1, eq. 19), and
optionally shifted by t' = s t / (1 + (s - 1) t) (eq. 23).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from latentzoo.core.contract.errors import LatentzooError
from latentzoo.core.runtime.data import ImageSet, load_dataset
from latentzoo.core.training import EMA, MicroBatch, Phase, Run, TrainOptions, encode_dataset, finish_run, normalise_latents, split_options

from .model import FlowUNetPrior
from .schedulers import check_shift

MODEL_DEFAULTS: dict[str, Any] = {
    "block_out_channels": [48, 96],
    "layers_per_block": 2,
    "attention_levels": [1],
    "attention_head_dim": 32,
    "norm_num_groups": 16,
    "dropout": 0.0,
}
TRAIN_DEFAULTS: dict[str, Any] = {
    "ema_decay": 0.999,
    "logit_mean": 0.0,  # m of the logit-normal timestep density (Esser et al. 2024, sec. 3.1)
    "logit_std": 1.0,  # s
    "training_shift": 1.0,  # SD3 timestep shift applied to the sampled t (1 = none)
    "image_size": 32,
}


def sample_times(u: torch.Tensor, logit_mean: float, logit_std: float, shift: float) -> torch.Tensor:
    """t = sigmoid(m + s u) for u ~ N(0, 1) (logit-normal, Esser et al. 2024, eq. 19), then shifted (eq. 23)."""
    t = torch.sigmoid(logit_mean + logit_std * u)
    return shift * t / (1 + (shift - 1) * t)


def train(options: TrainOptions) -> dict[str, Any] | None:
    from latentzoo.core.runtime.build import Builder

    model_cfg, train_cfg = split_options("flow", options.config, MODEL_DEFAULTS, TRAIN_DEFAULTS)
    shift = check_shift(train_cfg["training_shift"])
    if not float(train_cfg["logit_std"]) > 0 or not 0 <= float(train_cfg["ema_decay"]) < 1:
        raise LatentzooError("flow: logit_std must be > 0 and ema_decay in [0, 1)")
    encoder_name = options.extra.get("encoder")
    if not encoder_name:
        raise LatentzooError(
            "latentzoo train flow needs --encoder NAME (the frozen autoencoder whose latents it models, e.g. digits-vqgan)"
        )
    run = Run(options)
    encoder = Builder.from_registry(options.extra.get("registry_files", ())).component(encoder_name, "encoder")
    size = int(getattr(encoder, "sample_size", train_cfg["image_size"]))
    data = load_dataset(options.data, split="train", size=size, channels=encoder.image_channels)
    x_data, latent_shift, scaling_factor = normalise_latents(encode_dataset(encoder, data.images).float())
    model_cfg.update(sample_size=x_data.shape[-1], in_channels=x_data.shape[1])

    torch.manual_seed(options.seed)
    try:
        model = FlowUNetPrior(**model_cfg).to(run.device)
    except (TypeError, ValueError) as exc:
        raise LatentzooError(f"flow: bad model options: {exc}") from exc
    ema = EMA(model, train_cfg["ema_decay"])
    opt = torch.optim.AdamW(model.parameters(), lr=options.lr, weight_decay=0.0)
    ckpt = run.checkpointer({"model": model, "ema": ema.model}, {"opt": opt})
    start, history = ckpt.start()
    model_ddp = run.wrap(model)
    m, s = float(train_cfg["logit_mean"]), float(train_cfg["logit_std"])

    def loss(mb: MicroBatch) -> tuple[torch.Tensor, dict[str, Any]]:
        x0 = mb.data
        t = sample_times(mb.randn(), m, s, shift)
        noise = mb.randn(*x0.shape[1:])
        tt = t.view(-1, 1, 1, 1)
        x_t = (1 - tt) * x0 + tt * noise  # the straight path (Liu et al. 2022, eq. 1)
        out = F.mse_loss(model_ddp(x_t, t).float(), noise - x0)  # target velocity dx_t/dt = eps - x0
        return out, {"loss": out.detach()}

    model.train()
    history = run.loop(
        ImageSet(x_data, None, data.name),
        [Phase("unet", opt, model_ddp, loss, clip=run.clip(1.0))],
        ckpt,
        start=start,
        history=history,
        desc="flow",
        state={"config": model_cfg, "train": train_cfg},
        after_step=lambda i: ema.update(model, i),
    )

    def write() -> dict[str, Any]:
        final = sum(h["loss"] for h in history[-10:]) / max(1, len(history[-10:]))
        return finish_run(
            options,
            ema.model.cpu().state_dict(),
            family="flow",
            component_class="flow.unet",
            roles=["prior"],
            config=model_cfg,
            latent_space=encoder.latent_space.with_scaling(scaling_factor, latent_shift).to_dict(),
            metrics={"final_loss": round(final, 5)},
            history=history,
            description=f"Rectified-flow UNet (velocity) on latents of {encoder_name} of {data.name}",
            encoder=encoder_name,
        )

    return run.publish(write)
