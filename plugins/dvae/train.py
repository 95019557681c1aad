"""Train DALL-E's dVAE: reconstruction + beta * KL(q || uniform), Gumbel temperature annealed.

Temperature: exponential decay from ``tau_start`` to ``tau_end`` over the run (DALL-E anneals
1 -> 1/16); ``kl_weight`` beta ramps up linearly over the first ``kl_warmup`` fraction
(DALL-E raises it from 0 to 6.6 early in training).
"""

from __future__ import annotations

from typing import Any

import torch

from latentzoo.core.runtime.data import load_dataset
from latentzoo.core.runtime.metrics import psnr
from latentzoo.core.training import MicroBatch, Phase, Run, TrainOptions, held_out_split, publish_autoencoder, split_options

from .model import DiscreteVAE

MODEL_DEFAULTS: dict[str, Any] = {
    "in_channels": 1,
    "out_channels": 1,
    "block_out_channels": [32, 64, 64],
    "layers_per_block": 1,
    "num_tokens": 128,
    "codebook_dim": 32,
    "norm_num_groups": 16,
    "sample_size": 32,
}
LOSS_DEFAULTS: dict[str, Any] = {"tau_start": 1.0, "tau_end": 0.0625, "kl_weight": 0.01, "kl_warmup": 0.2}


def train(options: TrainOptions) -> dict[str, Any] | None:
    run = Run(options)
    cfg, loss_cfg = split_options("dvae", options.config, MODEL_DEFAULTS, LOSS_DEFAULTS, extra=("mid_block_add_attention",))
    data = load_dataset(options.data, split="train", size=cfg["sample_size"], channels=cfg["in_channels"])

    torch.manual_seed(options.seed)
    model = DiscreteVAE(**cfg).to(run.device)
    opt = torch.optim.Adam(model.parameters(), lr=options.lr)
    ckpt = run.checkpointer({"model": model}, {"opt": opt})
    start, history = ckpt.start()
    model_ddp = run.wrap(model)
    grid = cfg["sample_size"] // model.factor

    def loss(mb: MicroBatch) -> tuple[torch.Tensor, dict[str, Any]]:
        progress = mb.step / max(1, options.steps - 1)
        tau = loss_cfg["tau_start"] * (loss_cfg["tau_end"] / loss_cfg["tau_start"]) ** progress
        beta = loss_cfg["kl_weight"] * min(1.0, progress / max(1e-8, loss_cfg["kl_warmup"]))
        x = mb.data
        rec, kl, codes = model_ddp(x, tau, mb.rand(cfg["num_tokens"], grid, grid))
        rec_loss = (x - rec).abs().mean()
        total = rec_loss + beta * kl.mean() / codes[0].numel()
        return total, {"rec": rec_loss.detach(), "kl": kl.detach().mean(), "tau": tau}

    model.train()
    history = run.loop(
        data,
        [Phase("dvae", opt, model_ddp, loss, clip=run.clip(None))],
        ckpt,
        start=start,
        history=history,
        desc="dvae",
        state={"config": cfg, "loss": loss_cfg},
    )
    return publish_autoencoder(
        run,
        model,
        family="dvae",
        config=cfg,
        history=history,
        evaluate=evaluate,
        description=f"DALL-E discrete VAE trained on {data.name}, {options.steps} steps",
    )


@torch.inference_mode()
def evaluate(model: DiscreteVAE, data_name: str, cfg: dict[str, Any]) -> dict[str, float]:
    """Held-out PSNR with hard codes, and code usage / perplexity."""
    held = held_out_split(data_name, cfg["sample_size"], cfg["in_channels"])
    codes = model.encode(held.images)
    rec = model.decode(codes).clamp(-1, 1)
    counts = torch.bincount(codes.flatten(), minlength=model.num_tokens).float()
    probs = counts / counts.sum()
    return {
        "psnr_db": round(psnr(rec, held.images), 2),
        "codebook_usage": round(float((counts > 0).float().mean()), 4),
        "perplexity": round(float(torch.exp(-(probs * torch.log(probs + 1e-10)).sum())), 2),
        "held_out_images": len(held),
    }
