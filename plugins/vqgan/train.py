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

from latentzoo.core.data import load_dataset
from latentzoo.core.metrics import psnr
from latentzoo.core.registry import import_target
from latentzoo.core.training import Checkpointer, TrainOptions, finish_autoencoder, held_out_split, prepare_run, split_options, train_loop
from latentzoo.core.weights import space_identity

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


def train(options: TrainOptions) -> dict[str, Any]:
    """Train and write the run directory; return the registry entry of the result."""
    cfg, loss_cfg = split_options("vqgan", options.config, MODEL_DEFAULTS, LOSS_DEFAULTS, extra=("vq_embed_dim", "mid_block_add_attention"))
    prepare_run(options)
    data = load_dataset(options.data, split="train", size=cfg["sample_size"], channels=cfg["in_channels"])

    torch.manual_seed(options.seed)
    model = VQAutoencoder(**cfg)
    disc = PatchDiscriminator(cfg["in_channels"], width=loss_cfg["disc_width"])
    perceptual = import_target(loss_cfg["perceptual"])() if loss_cfg["perceptual"] else None
    opt_g = torch.optim.Adam(model.parameters(), lr=options.lr, betas=(0.5, 0.9))
    opt_d = torch.optim.Adam(disc.parameters(), lr=options.lr, betas=(0.5, 0.9))
    generator = torch.Generator().manual_seed(options.seed)
    ckpt = Checkpointer(options, {"model": model, "disc": disc}, {"g": opt_g, "d": opt_d}, generator)
    start, history = ckpt.start(options.resume)
    if start:
        model.quantize.initialised.fill_(True)  # the codebook comes from the checkpoint: no data init

    def step(i: int, idx: torch.Tensor) -> dict[str, float]:
        x = data.images[idx]
        rec, vq_loss, stats = model(x)
        rec_loss = (x - rec).abs().mean()
        if perceptual is not None:
            rec_loss = rec_loss + loss_cfg["perceptual_weight"] * perceptual(x, rec).mean()
        loss = rec_loss + vq_loss
        gan_on = loss_cfg["disc_weight"] > 0 and i >= loss_cfg["disc_start"]
        if gan_on:
            g_loss = -disc(rec).mean()
            loss = loss + adaptive_weight(rec_loss, g_loss, model.last_layer) * loss_cfg["disc_weight"] * g_loss
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        opt_g.step()
        logs = {"rec": rec_loss.item(), "vq": vq_loss.item(), "ppl": stats["perplexity"]}
        if gan_on:
            d_loss = hinge_d_loss(disc(x), disc(rec.detach()))
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            logs.update(g=g_loss.item(), d=d_loss.item())
        return logs

    model.train()
    history = train_loop(
        options,
        ckpt,
        start=start,
        history=history,
        num_examples=len(data),
        step=step,
        desc="vqgan",
        state={"config": cfg, "loss": loss_cfg},
    )
    model.eval()
    metrics = evaluate(model, options.data, cfg)
    return finish_autoencoder(
        options,
        model,
        family="vqgan",
        component_class="vqgan.autoencoder",
        config=cfg,
        metrics=metrics,
        history=history,
        identity=space_identity,
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
