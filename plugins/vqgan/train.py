"""Train a VQ-VAE (``--set disc_weight=0``) or VQ-GAN autoencoder.

Loss: L1 reconstruction + VQ loss (codebook + beta * commitment); from ``disc_start`` on,
plus the adaptively weighted PatchGAN hinge loss (Esser et al. 2021, eq. 5-7). A
perceptual loss needs pretrained network weights that cannot be downloaded here, so it
is pluggable and off by default: ``--set perceptual=package.module:factory`` names a
callable returning a module ``f(x, x_rec) -> per-sample loss``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from latentzoo.core.contract.registry import import_target
from latentzoo.core.runtime.data import load_dataset
from latentzoo.core.runtime.metrics import psnr
from latentzoo.core.training import MicroBatch, Phase, Run, TrainOptions, held_out_split, publish_autoencoder, split_options

from .discriminator import PatchDiscriminator, adaptive_weight, hinge_d_loss
from .model import VQAutoencoder

MODEL_DEFAULTS: dict[str, Any] = {
    "in_channels": 1,
    "out_channels": 1,
    "block_out_channels": [32, 64, 64],
    "layers_per_block": 1,
    "latent_channels": 3,
    "num_vq_embeddings": 128,
    "norm_num_groups": 16,
    "sample_size": 32,
    "commitment_weight": 0.25,
}
LOSS_DEFAULTS: dict[str, Any] = {"disc_start": 1000, "disc_weight": 0.5, "disc_width": 32, "perceptual": None, "perceptual_weight": 1.0}


def train(options: TrainOptions) -> dict[str, Any] | None:
    """Train and write the run directory; return the registry entry of the result (rank 0)."""
    run = Run(options)
    cfg, loss_cfg = split_options(
        "vqgan", options.config, MODEL_DEFAULTS, LOSS_DEFAULTS, extra=("vq_embed_dim", "mid_block_add_attention", "dead_code_threshold")
    )
    data = load_dataset(options.data, split="train", size=cfg["sample_size"], channels=cfg["in_channels"])

    torch.manual_seed(options.seed)
    model = VQAutoencoder(**cfg).to(run.device)
    disc = PatchDiscriminator(cfg["in_channels"], width=loss_cfg["disc_width"]).to(run.device)
    perceptual = import_target(loss_cfg["perceptual"])().to(run.device) if loss_cfg["perceptual"] else None
    opt_g = torch.optim.Adam(model.parameters(), lr=options.lr, betas=(0.5, 0.9))
    opt_d = torch.optim.Adam(disc.parameters(), lr=options.lr, betas=(0.5, 0.9))
    ckpt = run.checkpointer({"model": model, "disc": disc}, {"g": opt_g, "d": opt_d})
    start, history = ckpt.start()
    if start:
        model.quantize.initialised.fill_(True)  # the codebook comes from the checkpoint: no data init
    model_ddp, disc_ddp = run.wrap(model), run.wrap(disc)
    gan_on = lambda i: loss_cfg["disc_weight"] > 0 and i >= loss_cfg["disc_start"]  # noqa: E731

    def generator_loss(mb: MicroBatch) -> tuple[torch.Tensor, dict[str, Any]]:
        x = mb.data
        rec, vq_loss, stats = model_ddp(x)
        rec_loss = (x - rec).abs().mean()
        if perceptual is not None:
            rec_loss = rec_loss + loss_cfg["perceptual_weight"] * perceptual(x, rec).mean()
        loss = rec_loss + vq_loss
        logs = {"rec": rec_loss.detach(), "vq": vq_loss.detach(), "ppl": stats["perplexity"]}
        if gan_on(mb.step):
            # The discriminator's plain module: its gradients here are discarded (the "d" phase
            # zeroes them), so they need no all-reduce.
            g_loss = -disc(rec).mean()
            loss = loss + adaptive_weight(rec_loss, g_loss, model.last_layer) * loss_cfg["disc_weight"] * g_loss
            mb.cache["rec"] = rec.detach()
            logs["g"] = g_loss.detach()
        return loss, logs

    def discriminator_loss(mb: MicroBatch) -> tuple[torch.Tensor, dict[str, Any]]:
        # Real and fake in one forward: one DDP reduction (GroupNorm, so no batch statistics mix).
        logits_real, logits_fake = disc_ddp(torch.cat([mb.data, mb.cache.pop("rec")])).chunk(2)
        d_loss = hinge_d_loss(logits_real, logits_fake)
        return d_loss, {"d": d_loss.detach()}

    model.train()
    history = run.loop(
        data,
        [
            Phase("g", opt_g, model_ddp, generator_loss, clip=run.clip(None)),
            Phase("d", opt_d, disc_ddp, discriminator_loss, clip=run.clip(None), when=gan_on),
        ],
        ckpt,
        start=start,
        history=history,
        desc="vqgan",
        state={"config": cfg, "loss": loss_cfg},
    )
    return publish_autoencoder(
        run,
        model,
        family="vqgan",
        config=cfg,
        history=history,
        evaluate=evaluate,
        description=f"VQ-GAN autoencoder trained on {data.name}, {options.steps} steps",
    )


@torch.inference_mode()
def evaluate(model: VQAutoencoder, data_name: str, cfg: dict[str, Any]) -> dict[str, float]:
    """Held-out reconstruction PSNR (dB, images in [0, 1]), codebook usage and perplexity."""
    held = held_out_split(data_name, cfg["sample_size"], cfg["in_channels"])
    x = held.images
    idx = model.quantize.indices(model.encode(x))
    rec = model.decode(idx).clamp(-1, 1)
    counts = torch.bincount(idx.flatten(), minlength=model.codebook_size).float()
    probs = counts / counts.sum()
    return {
        "psnr_db": round(float(psnr(rec, x)), 2),
        "codebook_usage": round(float((counts > 0).float().mean()), 4),
        "perplexity": round(float(torch.exp(-(probs * torch.log(probs + 1e-10)).sum())), 2),
        "l1": round(float(F.l1_loss(rec, x)), 4),
        "held_out_images": len(x),
    }
