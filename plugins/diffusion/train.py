"""Train a UNet denoiser prior on the latents of a frozen encoder (latent diffusion, Rombach et al. 2022).

The data are encoded once. The latents' normalisation is *measured*: shift = mean,
scaling_factor = 1 / std of the training latents (Rombach et al. 2022, sec. G), and both
are recorded in the prior's latent-space contract. Without ``--encoder`` the prior models
images directly (pixel-space DDPM).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from latentzoo.core.contract.denoising import training_target
from latentzoo.core.contract.errors import LatentzooError
from latentzoo.core.runtime.data import ImageSet, load_dataset
from latentzoo.core.training import EMA, MicroBatch, Phase, Run, TrainOptions, encode_dataset, finish_run, normalise_latents, split_options

from .unet import UNetPrior

MODEL_DEFAULTS: dict[str, Any] = {
    "block_out_channels": [32, 64, 64],
    "layers_per_block": 2,
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"],
    "up_block_types": ["AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
    "attention_head_dim": 8,
    "norm_num_groups": 16,
    "prediction_type": "epsilon",
    "num_train_timesteps": 1000,
    "num_class_embeds": None,
}
SCHEDULE_DEFAULTS: dict[str, Any] = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}
TRAIN_DEFAULTS: dict[str, Any] = {"ema_decay": 0.999, "label_dropout": 0.1, "image_size": 32, "image_channels": 1}


def _split(config: dict[str, Any]) -> list[dict[str, Any]]:
    return split_options(
        "diffusion",
        config,
        MODEL_DEFAULTS,
        SCHEDULE_DEFAULTS,
        TRAIN_DEFAULTS,
        extra=("dropout", "sample_size", "in_channels", "out_channels"),
    )


def train(options: TrainOptions) -> dict[str, Any] | None:
    from latentzoo.core.runtime.build import Builder
    from latentzoo.core.training import prepare_run

    if options.resume:
        prepare_run(options, create=False)  # a resumed run's saved options decide which trainer continues it
    if options.config.get("conditioner"):  # text (a conditioner's tokens) through cross-attention: train_text.py
        from .train_text import train as train_text

        return train_text(options)
    run = Run(options)
    model_cfg, schedule_cfg, train_cfg = _split(options.config)
    encoder_name = options.extra.get("encoder")
    if encoder_name:
        builder = Builder.from_registry(options.extra.get("registry_files", ()))
        encoder = builder.component(encoder_name, "encoder")
        channels = encoder.image_channels
        size = int(getattr(encoder, "sample_size", train_cfg["image_size"]))
        data = load_dataset(options.data, split="train", size=size, channels=channels)
        latents = encode_dataset(encoder, data.images)
        space = encoder.latent_space
    else:
        data = load_dataset(options.data, split="train", size=train_cfg["image_size"], channels=train_cfg["image_channels"])
        latents, space = data.images, None
    x_data, shift, scaling_factor = normalise_latents(latents)
    model_cfg.update(sample_size=x_data.shape[-1], in_channels=x_data.shape[1], out_channels=x_data.shape[1])
    model_cfg["training_schedule"] = schedule_cfg
    labels = data.labels
    if model_cfg["num_class_embeds"] and labels is None:
        raise LatentzooError(f"num_class_embeds needs a labelled dataset; {options.data} has no labels")

    torch.manual_seed(options.seed)
    model = UNetPrior(**model_cfg).to(run.device)
    ema = EMA(model, train_cfg["ema_decay"])
    abar = model.noise_schedule.alphas_cumprod  # the schedule the prior states, built from training_schedule
    sqrt_ab = abar.sqrt().float().to(run.device)
    sqrt_1mab = (1 - abar).sqrt().float().to(run.device)
    opt = torch.optim.AdamW(model.parameters(), lr=options.lr, weight_decay=0.0)
    ckpt = run.checkpointer({"model": model, "ema": ema.model}, {"opt": opt})
    start, history = ckpt.start()
    model_ddp = run.wrap(model)
    T, classes = model_cfg["num_train_timesteps"], model_cfg["num_class_embeds"]

    def loss(mb: MicroBatch) -> tuple[torch.Tensor, dict[str, Any]]:
        x0 = mb.data
        t = mb.randint(T)
        noise = mb.randn(*x0.shape[1:])
        a, b = sqrt_ab[t].view(-1, 1, 1, 1), sqrt_1mab[t].view(-1, 1, 1, 1)
        x_t = a * x0 + b * noise  # q(x_t | x0), Ho et al. 2020 eq. 4
        cls = None
        if classes:
            cls = torch.where(mb.rand() < train_cfg["label_dropout"], classes - 1, mb.labels)  # null class: for CFG
        out = F.mse_loss(model_ddp(x_t, t, cls).float(), training_target(model_cfg["prediction_type"], x0, noise, a, b))
        return out, {"loss": out.detach()}

    model.train()
    history = run.loop(
        ImageSet(x_data, labels, data.name),
        [Phase("unet", opt, model_ddp, loss, clip=run.clip(1.0))],
        ckpt,
        start=start,
        history=history,
        desc="diffusion",
        state={"config": model_cfg, "ema_decay": train_cfg["ema_decay"]},
        after_step=lambda i: ema.update(model, i),
    )

    def write() -> dict[str, Any]:
        if space is not None:
            latent_space = space.with_scaling(scaling_factor, shift).to_dict()
        else:
            latent_space = {
                "kind": "continuous",
                "channels": x_data.shape[1],
                "factor": 1,
                "autoencoder": "pixels",
                "scaling_factor": scaling_factor,
                "shift": shift,
            }
        final = sum(h["loss"] for h in history[-10:]) / max(1, len(history[-10:]))
        source = f"latents of {encoder_name}" if encoder_name else "pixels"
        return finish_run(
            options,
            ema.model.cpu().state_dict(),
            family="diffusion",
            component_class="diffusion.unet",
            roles=["prior"],
            config=model_cfg,
            latent_space=latent_space,
            metrics={"final_loss": round(final, 5)},
            history=history,
            description=f"UNet denoiser ({model_cfg['prediction_type']}) on {source} of {data.name}",
            encoder=encoder_name,
        )

    return run.publish(write)
