"""Train an autoregressive code prior on the codes of a frozen (VQ-GAN or dVAE) encoder.

Cross-entropy on the codes, raster order; with ``num_class_embeds`` the class token is
dropped to the null token with probability ``label_dropout`` (for classifier-free guidance).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from latentzoo.core.data import ImageSet, load_dataset
from latentzoo.core.errors import LatentzooError
from latentzoo.core.training import EMA, MicroBatch, Phase, Run, TrainOptions, finish_run, split_options

from .model import CodeTransformer

MODEL_DEFAULTS: dict[str, Any] = {"d_model": 128, "n_layer": 4, "n_head": 4, "num_class_embeds": None, "dropout": 0.0}
TRAIN_DEFAULTS: dict[str, Any] = {"label_dropout": 0.1, "ema_decay": 0.999, "weight_decay": 0.01}


@torch.inference_mode()
def encode_codes(encoder: Any, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """Code indices (N, h, w): a VQ encoder's nearest codes, or a discrete encoder's output."""
    out = []
    for i in range(0, len(images), batch):
        z = encoder.encode(images[i : i + batch])
        out.append(z if not z.is_floating_point() else encoder.quantize.indices(z))
    return torch.cat(out)


def train(options: TrainOptions) -> dict[str, Any] | None:
    from latentzoo.core.build import Builder

    encoder_name = options.extra.get("encoder")
    if not encoder_name:
        raise LatentzooError("an autoregressive prior models a frozen encoder's codes: pass --encoder (e.g. digits-vqgan)")
    run = Run(options)
    cfg, train_cfg = split_options("transformer", options.config, MODEL_DEFAULTS, TRAIN_DEFAULTS)
    encoder = Builder.from_registry(options.extra.get("registry_files", ())).component(encoder_name, "encoder")
    space = encoder.latent_space
    if not space.codebook_size:
        raise LatentzooError(f"{encoder_name} has no codebook ({space.describe()}); an autoregressive prior needs a VQ or discrete encoder")
    data = load_dataset(options.data, split="train", size=int(encoder.sample_size), channels=encoder.image_channels)
    codes = encode_codes(encoder, data.images)
    cfg.update(codebook_size=space.codebook_size, grid_size=codes.shape[-1])
    flat = codes.flatten(1)
    if cfg["num_class_embeds"] and data.labels is None:
        raise LatentzooError(f"num_class_embeds needs a labelled dataset; {options.data} has no labels")

    torch.manual_seed(options.seed)
    model = CodeTransformer(**cfg).to(run.device)
    ema = EMA(model, train_cfg["ema_decay"])
    opt = torch.optim.AdamW(model.parameters(), lr=options.lr, weight_decay=train_cfg["weight_decay"], betas=(0.9, 0.95))
    ckpt = run.checkpointer({"model": model, "ema": ema.model}, {"opt": opt})
    start, history = ckpt.start()
    model_ddp = run.wrap(model)
    classes = cfg["num_class_embeds"]
    held_out = held_out_codes(encoder, options.data) if run.is_main else None

    def loss(mb: MicroBatch) -> tuple[torch.Tensor, dict[str, Any]]:
        target, labels = mb.data, None
        if classes:
            labels = torch.where(mb.rand() < train_cfg["label_dropout"], classes - 1, mb.labels)  # null token: for CFG
        ce = F.cross_entropy(model_ddp(target, labels).float().reshape(-1, cfg["codebook_size"]), target.reshape(-1))
        return ce, {"ce": ce.detach()}

    model.train()
    history = run.loop(
        ImageSet(flat, data.labels, data.name),
        [Phase("transformer", opt, model_ddp, loss, clip=run.clip(1.0))],
        ckpt,
        start=start,
        history=history,
        desc="transformer",
        state={"config": cfg, "ema_decay": train_cfg["ema_decay"]},
        after_step=lambda i: ema.update(model, i),
        validate=None if held_out is None else lambda: {"val_bits": evaluate(ema.model, cfg, held_out)},
    )

    def write() -> dict[str, Any]:
        held_ce = evaluate(ema.model.cpu(), cfg, held_out)
        prior_space = space.as_discrete() if space.kind == "continuous" else space
        return finish_run(
            options,
            ema.model.state_dict(),
            family="transformer",
            component_class="transformer.prior",
            roles=["prior"],
            config=cfg,
            latent_space=prior_space.to_dict(),
            metrics={"held_out_nll_bits_per_code": held_ce},
            history=history,
            description=f"Autoregressive code transformer over the codes of {encoder_name} on {data.name}",
            encoder=encoder_name,
        )

    return run.publish(write)


def held_out_codes(encoder: Any, data_name: str) -> torch.Tensor | None:
    """The held-out split's codes (N, h*w), or None for a dataset without one (a folder)."""
    try:
        held = load_dataset(data_name, split="test", size=int(encoder.sample_size), channels=encoder.image_channels)
    except LatentzooError:
        return None
    return encode_codes(encoder, held.images).flatten(1)


@torch.inference_mode()
def evaluate(model: CodeTransformer, cfg: dict[str, Any], codes: torch.Tensor | None) -> float | None:
    """Held-out negative log-likelihood in bits per code (unconditional)."""
    if codes is None:
        return None
    codes = codes.to(next(model.parameters()).device)
    ce = F.cross_entropy(model(codes).float().reshape(-1, cfg["codebook_size"]), codes.reshape(-1))
    return round(float(ce) / math.log(2.0), 4)
