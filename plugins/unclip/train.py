"""Train the unCLIP prior and decoder on digits-captions (``python -m latentzoo.plugins.unclip.train``).

The frozen CLIP embedder (``digits-clip-embed``) embeds every training image and caption once;
both stages then train on those vectors only, which is what makes them cheap:

- prior: x0 = scaling_factor * (image embedding - shift) (shift = mean, scaling_factor = 1 / std
  over all coordinates, measured on the training set and recorded in the latent-space contract),
  x_t = sqrt(abar) x0 + sqrt(1 - abar) eps, loss ||f(x_t, t, text) - x0||^2 (DALL-E 2 predicts
  the clean embedding, Ramesh et al. 2022 sec. 2.2); the text embedding is replaced by the empty
  prompt's for 10% of examples, so that guidance has an unconditional branch.
- decoder: x0 = the 8x8 digit in [-1, 1], loss ||eps_theta(x_t, t, image embedding) - eps||^2
  (Ho et al. 2020, eq. 14), the embedding zeroed for 10% of examples (classifier-free guidance).

Each caption seen in training is one of 8 seeded variants per image (``CaptionedImageSet.variants``)
or the bare "a seven"-style name, so short prompts are in distribution.
Writes ``OUT/digits-unclip-{prior,decoder}.safetensors`` atomically (float16 storage) and prints their config and sha256.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from latentzoo.core.build import Builder
from latentzoo.core.denoising import NoiseSchedule
from latentzoo.core.weights import save_tensors

from .model import DEFAULT_SCHEDULE, UnCLIPDecoder, UnCLIPPrior

VARIANTS = 8
NULL_P = 0.1  # conditioning dropout for classifier-free guidance (Ho & Salimans 2022)


def embed_data(embedder_name: str = "digits-clip-embed", cache: Path | None = None) -> dict[str, torch.Tensor]:
    """Training images at 8x8, their CLIP image embeddings, and text embeddings of their captions (cached)."""
    if cache is not None and cache.is_file():
        from safetensors.torch import load_file

        return load_file(str(cache))
    from latentzoo.plugins.datasets import captions, digits

    embedder = Builder.from_registry().component(embedder_name, "encoder")
    data = captions.load("train")
    small = digits.load("train", size=8).images  # the digits' native resolution (bilinear 8 -> 8 is the identity)
    image_emb = embedder.encode(data.images)
    texts = [
        [*row, f"{captions._a(captions.NAMES[int(y)])} {captions.NAMES[int(y)]}"]
        for row, y in zip(data.variants(VARIANTS), data.labels, strict=True)
    ]
    flat = [t for row in texts for t in row]
    text_emb = torch.cat([embedder.encode_texts(flat[i : i + 512]) for i in range(0, len(flat), 512)])
    out = {
        "images8": small.contiguous(),
        "labels": data.labels.contiguous(),
        "image_emb": image_emb.contiguous(),
        "text_emb": text_emb.view(len(texts), len(texts[0]), -1).contiguous(),
        "null_text": embedder.encode_texts([""])[0].contiguous(),
    }
    if cache is not None:
        save_tensors(cache, out)
    return out


class EMA:
    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.model, self.decay = copy.deepcopy(model).eval().requires_grad_(False), decay

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        for e, p in zip(self.model.parameters(), model.parameters(), strict=True):
            e.lerp_(p, 1 - d)


def _loop(net, loss_fn, steps: int, lr: float, log: str) -> torch.nn.Module:
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min(1.0, (i + 1) / 200) * 0.5 * (1 + math.cos(math.pi * i / steps)))
    ema = EMA(net, 0.999)
    start, running = time.time(), 0.0
    for i in range(steps):
        loss = loss_fn(i)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        sched.step()
        ema.update(net, i)
        running += float(loss.detach())
        if (i + 1) % 200 == 0:
            print(json.dumps({"stage": log, "step": i + 1, "loss": round(running / 200, 5), "s": round(time.time() - start)}), flush=True)
            running = 0.0
    return ema.model


def _noised(x0: torch.Tensor, schedule: NoiseSchedule, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    t = torch.randint(0, schedule.num_train_timesteps, (x0.shape[0],), generator=g)
    ab = schedule.alphas_cumprod.float()[t][:, None]
    eps = torch.randn(x0.shape, generator=g)
    return ab.sqrt() * x0 + (1 - ab).sqrt() * eps, t, eps  # Ho et al. 2020, eq. 4


def train_prior(
    data: dict[str, torch.Tensor], steps: int, batch: int, lr: float, seed: int, model_cfg: dict[str, Any]
) -> tuple[UnCLIPPrior, dict]:
    emb = data["image_emb"].float()
    shift, scale = float(emb.mean()), float(1.0 / emb.std())
    x_all = (emb - shift) * scale
    texts, null = data["text_emb"].float(), data["null_text"].float()
    torch.manual_seed(seed)
    prior = UnCLIPPrior(embedding_dim=emb.shape[1], cond_dim=texts.shape[-1], training_schedule=DEFAULT_SCHEDULE, **model_cfg)
    g = torch.Generator().manual_seed(seed)

    def loss(_: int) -> torch.Tensor:
        i = torch.randint(0, len(x_all), (batch,), generator=g)
        v = torch.randint(0, texts.shape[1], (batch,), generator=g)
        cond = texts[i, v]
        drop = torch.rand(batch, generator=g) < NULL_P
        cond = torch.where(drop[:, None], null.expand_as(cond), cond)
        x_t, t, _ = _noised(x_all[i], prior.noise_schedule, g)
        return F.mse_loss(prior(x_t, t, encoder_hidden_states=cond[:, None]), x_all[i])  # x0 prediction

    ema = _loop(prior, loss, steps, lr, "prior")
    return ema, {"scaling_factor": scale, "shift": shift}


def train_decoder(data: dict[str, torch.Tensor], steps: int, batch: int, lr: float, seed: int, model_cfg: dict[str, Any]) -> UnCLIPDecoder:
    x_all, emb = data["images8"].flatten(1).float(), data["image_emb"].float()
    torch.manual_seed(seed + 1)
    dec = UnCLIPDecoder(embedding_dim=emb.shape[1], training_schedule=DEFAULT_SCHEDULE, **model_cfg)
    net, g = dec.denoiser, torch.Generator().manual_seed(seed + 1)

    def loss(_: int) -> torch.Tensor:
        i = torch.randint(0, len(x_all), (batch,), generator=g)
        cond = emb[i] * (torch.rand(batch, generator=g) >= NULL_P).float()[:, None]  # null = zero embedding
        x_t, t, eps = _noised(x_all[i], net.noise_schedule, g)
        return F.mse_loss(net(x_t, t, encoder_hidden_states=cond[:, None]), eps)

    ema = _loop(net, loss, steps, lr, "decoder")
    dec.denoiser = ema
    return dec


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stage", choices=["prior", "decoder"])
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--blocks", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", default="runs/unclip/embeddings.safetensors")
    ap.add_argument("-o", "--out", default="weights")
    ap.add_argument("--dtype", choices=["float16", "float32"], default="float16", help="storage dtype (the model computes in float32)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    cache = Path(args.cache)
    cache.parent.mkdir(parents=True, exist_ok=True)
    data = embed_data(cache=cache)
    cfg = {"hidden": args.hidden, "blocks": args.blocks}
    out = Path(args.out) / f"digits-unclip-{args.stage}.safetensors"
    if args.stage == "prior":
        model, extra = train_prior(data, args.steps, args.batch, args.lr, args.seed, cfg)
    else:
        model, extra = train_decoder(data, args.steps, args.batch, args.lr, args.seed, cfg), {}
    # float16 storage halves the files; load_state_dict casts back to the float32 parameters.
    state = {k: v.detach().to(getattr(torch, args.dtype)).contiguous() for k, v in model.state_dict().items()}
    sha = save_tensors(out, state)
    print(
        json.dumps({"stage": args.stage, "weights": str(out), "sha256": sha, "config": {**cfg, **extra}, "steps": args.steps}), flush=True
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
