"""Train a KL-VAE: Gaussian likelihood with fixed std sigma plus KL to N(0, I) (the ELBO).

-ELBO per image = ||x - x_rec||^2 / (2 sigma^2) + KL(q(z|x) || N(0, I)) (+ const), with
``likelihood_std`` sigma and ``kl_weight`` on the KL (1 = a true VAE that samples well on
its own from N(0, I); LDM's KL-f8 used ~1e-6 and then needs a diffusion prior).
"""

from __future__ import annotations

from typing import Any

import torch

from latentzoo.core.runtime.data import load_dataset
from latentzoo.core.runtime.metrics import psnr
from latentzoo.core.training import MicroBatch, Phase, Run, TrainOptions, held_out_split, publish_autoencoder, split_options

from .model import KLAutoencoder

MODEL_DEFAULTS: dict[str, Any] = {
    "in_channels": 1,
    "out_channels": 1,
    "block_out_channels": [32, 64, 64],
    "layers_per_block": 1,
    "latent_channels": 3,
    "norm_num_groups": 16,
    "sample_size": 32,
}
LOSS_DEFAULTS: dict[str, Any] = {"likelihood_std": 0.1, "kl_weight": 1.0}


def train(options: TrainOptions) -> dict[str, Any] | None:
    run = Run(options)
    cfg, loss_cfg = split_options("vae", options.config, MODEL_DEFAULTS, LOSS_DEFAULTS, extra=("mid_block_add_attention", "encode_mode"))
    data = load_dataset(options.data, split="train", size=cfg["sample_size"], channels=cfg["in_channels"])

    torch.manual_seed(options.seed)
    model = KLAutoencoder(**cfg).to(run.device)
    opt = torch.optim.Adam(model.parameters(), lr=options.lr)
    ckpt = run.checkpointer({"model": model}, {"opt": opt})
    start, history = ckpt.start()
    model_ddp = run.wrap(model)
    inv_two_var = 1.0 / (2 * loss_cfg["likelihood_std"] ** 2)
    latent_size = cfg["sample_size"] // model.factor

    def loss(mb: MicroBatch) -> tuple[torch.Tensor, dict[str, Any]]:
        x = mb.data
        rec, kl = model_ddp(x, mb.randn(cfg["latent_channels"], latent_size, latent_size))
        nll = (x - rec).pow(2).flatten(1).sum(1) * inv_two_var
        return (nll + loss_cfg["kl_weight"] * kl).mean(), {"nll": nll.detach().mean(), "kl": kl.detach().mean()}

    model.train()
    history = run.loop(
        data,
        [Phase("vae", opt, model_ddp, loss, clip=run.clip(None))],
        ckpt,
        start=start,
        history=history,
        desc="vae",
        state={"config": cfg, "loss": loss_cfg},
    )
    return publish_autoencoder(
        run,
        model,
        family="vae",
        config=cfg,
        history=history,
        evaluate=evaluate,
        description=f"KL-VAE trained on {data.name}, {options.steps} steps",
    )


@torch.inference_mode()
def evaluate(model: KLAutoencoder, data_name: str, cfg: dict[str, Any]) -> dict[str, float]:
    """Held-out PSNR of posterior-mean reconstructions and the mean KL per image (nats)."""
    held = held_out_split(data_name, cfg["sample_size"], cfg["in_channels"])
    mean, logvar = model.posterior(held.images)
    kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).flatten(1).sum(1)
    rec = model.decode(mean).clamp(-1, 1)
    return {"psnr_db": round(psnr(rec, held.images), 2), "kl_nats": round(float(kl.mean()), 2), "held_out_images": len(held)}
