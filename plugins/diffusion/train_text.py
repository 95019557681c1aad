"""Train a cross-attention UNet (``diffusion.unet_cond``) on captioned images in a frozen
autoencoder's latent space, steered by a frozen text encoder: text-to-image latent diffusion
(Rombach et al. 2022, sec. 3.3 and 4.3.2).

- Latents: the frozen ``--encoder``'s latents of the training images, normalised by their
  *measured* mean and std (recorded in the prior's latent-space contract, as ``train.py``).
- Text: the frozen ``conditioner``'s per-token states (``Conditioner.condition``: tokens and
  mask) of every caption variant, computed once before training (the text encoder never
  changes, so recomputing it every step would only cost time).
- Caption dropout: each sample's caption is replaced by the empty prompt's states with
  probability ``caption_dropout`` (Ho & Salimans 2022, sec. 3.2: one network learns the
  conditional and the unconditional model). At sampling time the empty (or negative) prompt is
  that unconditional branch of classifier-free guidance.
- Captions: ``digits-captions`` has ``captions_per_image`` phrasings per image (each step draws
  one per sample, statelessly); a captioned folder has its one caption.

The prior's registry entry states ``conditioning`` = the conditioner's conditioning space
(kind, width, sequence length, encoder identity), so ``compose`` refuses any other text
encoder. Reached as ``latentzoo train diffusion --encoder AE --data CAPTIONED --set
conditioner=TEXT_ENCODER`` (the diffusion trainer hands runs with a conditioner to this one).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from latentzoo.core.contract.denoising import training_target
from latentzoo.core.contract.errors import LatentzooError
from latentzoo.core.runtime.captions import load_captioned
from latentzoo.core.runtime.data import ImageSet
from latentzoo.core.training import (
    EMA,
    MicroBatch,
    Phase,
    Run,
    TrainOptions,
    encode_dataset,
    finish_run,
    normalise_latents,
    split_options,
    write_fragment,
)

from .unet_cond import UNetCondPrior

MODEL_DEFAULTS: dict[str, Any] = {
    "block_out_channels": [48, 80],
    "layers_per_block": 1,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "attention_head_dim": 4,
    "norm_num_groups": 16,
    "prediction_type": "epsilon",
    "num_train_timesteps": 1000,
}
SCHEDULE_DEFAULTS: dict[str, Any] = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}
TRAIN_DEFAULTS: dict[str, Any] = {
    "conditioner": None,
    "caption_dropout": 0.1,
    "captions_per_image": 8,
    "ema_decay": 0.999,
    "image_size": 32,
    "image_channels": 1,
    "skip_uncaptioned": False,
}


def _split(config: dict[str, Any]) -> list[dict[str, Any]]:
    return split_options("diffusion (text)", config, MODEL_DEFAULTS, SCHEDULE_DEFAULTS, TRAIN_DEFAULTS, extra=("dropout",))


@torch.inference_mode()
def encode_captions(conditioner: Any, captions: list[str], batch: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """The frozen conditioner's per-token states (N, L, W) and masks (N, L) of ``captions``."""
    tokens, masks = [], []
    for i in range(0, len(captions), batch):
        out = conditioner.condition(captions[i : i + batch])
        tokens.append(out["tokens"].float().cpu())
        masks.append(out["mask"].bool().cpu())
    return torch.cat(tokens), torch.cat(masks)


def train(options: TrainOptions) -> dict[str, Any] | None:
    from latentzoo.core.runtime.build import Builder

    model_cfg, schedule_cfg, train_cfg = _split(options.config)
    conditioner_name, encoder_name = train_cfg["conditioner"], options.extra.get("encoder")
    if not conditioner_name:
        raise LatentzooError("text-conditioned diffusion needs a text encoder: --set conditioner=NAME (e.g. digits-clip)")
    if not encoder_name:
        raise LatentzooError("text-conditioned diffusion runs in an autoencoder's latent space: pass --encoder (e.g. digits-vqgan)")
    if not 0.0 <= float(train_cfg["caption_dropout"]) < 1.0:
        raise LatentzooError(f"caption_dropout must be in [0, 1), not {train_cfg['caption_dropout']!r}")
    builder = Builder.from_registry(options.extra.get("registry_files", ()))
    encoder = builder.component(encoder_name, "encoder")
    conditioner = builder.component(conditioner_name, "conditioner")
    produced = getattr(conditioner, "conditioning_space", None)
    if produced is None or produced.sequence_length is None:
        raise LatentzooError(f"conditioner {conditioner_name} states no per-token conditioning_space; pick a text encoder (digits-clip)")
    size = int(getattr(encoder, "sample_size", train_cfg["image_size"]))
    # The data (and its captions) first: a folder with uncaptioned images writes nothing.
    data = load_captioned(
        options.data, split="train", size=size, channels=encoder.image_channels, skip_uncaptioned=bool(train_cfg["skip_uncaptioned"])
    )
    run = Run(options)
    k = int(train_cfg["captions_per_image"])
    variants = data.variants(k) if hasattr(data, "variants") else [[c] * k for c in data.captions]
    flat = [c for row in variants for c in row]
    unique = sorted(set(flat))  # phrasings repeat across images: encode each text once
    tok, msk = encode_captions(conditioner, ["", *unique])
    where = {t: i + 1 for i, t in enumerate(unique)}
    caption_ids = torch.tensor([[where[c] for c in row] for row in variants], dtype=torch.long)  # (N, k) rows of tok; 0 = ""
    tok, msk = tok.to(run.device), msk.to(run.device)

    latents = encode_dataset(encoder, data.images)
    x_data, shift, scaling_factor = normalise_latents(latents)
    model_cfg.update(
        sample_size=x_data.shape[-1], in_channels=x_data.shape[1], out_channels=x_data.shape[1], cross_attention_dim=produced.width
    )
    model_cfg["training_schedule"] = schedule_cfg

    torch.manual_seed(options.seed)
    model = UNetCondPrior(**model_cfg).to(run.device)
    ema = EMA(model, train_cfg["ema_decay"])
    abar = model.noise_schedule.alphas_cumprod
    sqrt_ab, sqrt_1mab = abar.sqrt().float().to(run.device), (1 - abar).sqrt().float().to(run.device)
    opt = torch.optim.AdamW(model.parameters(), lr=options.lr, weight_decay=0.0)
    ckpt = run.checkpointer({"model": model, "ema": ema.model}, {"opt": opt})
    start, history = ckpt.start()
    model_ddp = run.wrap(model)
    T, dropout = model_cfg["num_train_timesteps"], float(train_cfg["caption_dropout"])
    caption_ids = caption_ids.to(run.device)

    def loss(mb: MicroBatch) -> tuple[torch.Tensor, dict[str, Any]]:
        x0, index = mb.data, mb.labels
        t = mb.randint(T)
        noise = mb.randn(*x0.shape[1:])
        pick = mb.randint(k)
        row = torch.where(mb.rand() < dropout, 0, caption_ids[index, pick])  # row 0: the empty prompt (for CFG)
        a, b = sqrt_ab[t].view(-1, 1, 1, 1), sqrt_1mab[t].view(-1, 1, 1, 1)
        x_t = a * x0 + b * noise  # q(x_t | x0), Ho et al. 2020 eq. 4
        pred = model_ddp(x_t, t, encoder_hidden_states=tok[row], encoder_attention_mask=msk[row])
        out = F.mse_loss(pred.float(), training_target(model_cfg["prediction_type"], x0, noise, a, b))
        return out, {"loss": out.detach()}

    model.train()
    history = run.loop(
        ImageSet(x_data, torch.arange(len(x_data)), data.name),  # labels = indices: the loss looks captions up
        [Phase("unet", opt, model_ddp, loss, clip=run.clip(1.0))],
        ckpt,
        start=start,
        history=history,
        desc="diffusion (text)",
        state={"config": model_cfg, "ema_decay": train_cfg["ema_decay"], "train": train_cfg},
        after_step=lambda i: ema.update(model, i),
    )

    def write() -> dict[str, Any]:
        final = sum(h["loss"] for h in history[-10:]) / max(1, len(history[-10:]))
        accepts = {k: v for k, v in produced.to_dict().items() if k in ("kind", "width", "sequence_length", "encoder")}
        entry = finish_run(
            options,
            ema.model.cpu().state_dict(),
            family="diffusion",
            component_class="diffusion.unet_cond",
            roles=["prior"],
            config=model_cfg,
            latent_space=encoder.latent_space.with_scaling(scaling_factor, shift).to_dict(),
            metrics={"final_loss": round(final, 5)},
            history=history,
            description=f"Cross-attention UNet denoiser ({model_cfg['prediction_type']}) on latents of {encoder_name} of {data.name}, "
            f"text from {conditioner_name}",
            encoder=encoder_name,
        )
        entry["conditioning"] = accepts
        entry["training"].update(conditioner=conditioner_name, caption_dropout=dropout)
        write_fragment(options.out, options.name or f"diffusion-{options.out.name}", entry)
        return entry

    return run.publish(write)
