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

from latentzoo.core.contract.denoising import NoiseSchedule
from latentzoo.core.contract.weights import save_tensors
from latentzoo.core.runtime.build import Builder

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
        [*row, f"{captions.article(captions.NAMES[int(y)])} {captions.NAMES[int(y)]}"]
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


# --- `latentzoo train unclip`: the same objectives through the public trainer API -------------

MODEL_DEFAULTS: dict[str, Any] = {"hidden": None, "blocks": 4}  # hidden: 256 for the prior, 384 for the decoder
TRAIN_DEFAULTS: dict[str, Any] = {"stage": "prior", "variants": VARIANTS, "null_p": NULL_P, "ema_decay": 0.999, "base_size": 8}


def train(options: Any) -> dict[str, Any] | None:
    """``latentzoo train unclip --data digits-captions --set stage=prior|decoder [--encoder EMBEDDER]``.

    One stage per run (each publishes one component): the embedder (default
    ``digits-clip-embed``) embeds the captioned images and their captions once, then the
    stage trains on the vectors with the shared loop (checkpoints, resume, EMA). The
    published prior states the measured scaling and the embedder's conditioning space.
    """
    from latentzoo.core.contract.errors import LatentzooError
    from latentzoo.core.runtime.captions import load_captioned
    from latentzoo.core.runtime.data import ImageSet
    from latentzoo.core.training import EMA as TrainEMA
    from latentzoo.core.training import Phase, Run, finish_run, split_options, write_fragment

    model_cfg, train_cfg = split_options("unclip", options.config, MODEL_DEFAULTS, TRAIN_DEFAULTS)
    stage = train_cfg["stage"]
    if stage not in ("prior", "decoder"):
        raise LatentzooError(f"unclip: stage must be prior or decoder, not {stage!r} (--set stage=prior)")
    null_p = float(train_cfg["null_p"])
    if not 0 <= null_p < 1:
        raise LatentzooError(f"unclip: null_p must be in [0, 1), not {null_p}")
    embedder_name = options.extra.get("encoder") or "digits-clip-embed"
    builder = Builder.from_registry(options.extra.get("registry_files", ()))
    embedder = builder.component(embedder_name, "encoder")
    entry = builder.registry.get(embedder_name)
    run = Run(options)
    data = load_captioned(options.data, split="train", size=embedder.image_size, channels=embedder.image_channels)
    image_emb = embedder.encode(data.images).float()
    cfg = {"hidden": model_cfg["hidden"] or (256 if stage == "prior" else 384), "blocks": int(model_cfg["blocks"])}
    torch.manual_seed(options.seed)
    if stage == "prior":
        variants = data.variants(int(train_cfg["variants"])) if hasattr(data, "variants") else [[c] for c in data.captions]
        flat = [t for row in variants for t in row]
        text = torch.cat([embedder.encode_texts(flat[i : i + 512]) for i in range(0, len(flat), 512)]).float()
        null = embedder.encode_texts([""])[0].float()
        shift, scale = float(image_emb.mean()), float(1.0 / image_emb.std())
        x0 = ((image_emb - shift) * scale).repeat_interleave(len(variants[0]), dim=0)
        rows = torch.cat([x0, text], dim=1)  # one (image embedding, caption embedding) pair per row
        width = image_emb.shape[1]
        model = UnCLIPPrior(embedding_dim=width, cond_dim=text.shape[1], training_schedule=DEFAULT_SCHEDULE, **cfg).to(run.device)
        net = model
    else:
        base = int(train_cfg["base_size"])
        small = load_captioned(options.data, split="train", size=base, channels=embedder.image_channels).images.flatten(1)
        rows = torch.cat([small, image_emb], dim=1)
        width = small.shape[1]
        model = UnCLIPDecoder(
            embedding_dim=image_emb.shape[1],
            image_channels=embedder.image_channels,
            image_size=embedder.image_size,
            base_size=base,
            training_schedule=DEFAULT_SCHEDULE,
            **cfg,
        ).to(run.device)
        net = model.denoiser
    schedule = net.noise_schedule
    abar = schedule.alphas_cumprod.float().to(run.device)
    ema = TrainEMA(net, float(train_cfg["ema_decay"]))
    opt = torch.optim.AdamW(net.parameters(), lr=options.lr, weight_decay=0.0)
    ckpt = run.checkpointer({"model": net, "ema": ema.model}, {"opt": opt})
    start, history = ckpt.start()
    wrapped = run.wrap(net)

    def loss(mb: Any) -> tuple[torch.Tensor, dict[str, Any]]:
        x0, cond = mb.data[:, :width], mb.data[:, width:]
        drop = mb.rand() < null_p
        cond = torch.where(drop[:, None], null.to(cond) if stage == "prior" else torch.zeros_like(cond), cond)
        t = mb.randint(schedule.num_train_timesteps)
        eps = mb.randn(width)
        ab = abar[t][:, None]
        x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * eps  # Ho et al. 2020, eq. 4
        target = x0 if stage == "prior" else eps  # the prior predicts x0 (DALL-E 2), the decoder eps
        value = F.mse_loss(wrapped(x_t, t, encoder_hidden_states=cond[:, None]), target)
        return value, {"loss": value.detach()}

    net.train()
    history = run.loop(
        ImageSet(rows, None, f"{data.name} ({stage} vectors)"),
        [Phase(stage, opt, wrapped, loss, clip=run.clip(1.0))],
        ckpt,
        start=start,
        history=history,
        desc=f"unclip {stage}",
        state={"config": cfg, "train": train_cfg},
        after_step=lambda i: ema.update(net, i),
    )

    def write() -> dict[str, Any]:
        final = sum(h["loss"] for h in history[-10:]) / max(1, len(history[-10:]))
        space = dict(entry.data["latent_space"])
        if stage == "prior":
            config = {"embedding_dim": width, "cond_dim": int(text.shape[1]), **cfg, "prediction_type": "sample"}
            config["training_schedule"] = dict(DEFAULT_SCHEDULE)
            space.update(scaling_factor=scale, shift=shift)
            state = ema.model.cpu().state_dict()
        else:
            config = {k: getattr(model, k) for k in ("embedding_dim", "image_channels", "image_size", "base_size")}
            config.update(
                cfg, prediction_type="epsilon", training_schedule=dict(DEFAULT_SCHEDULE), steps=model.steps, guidance=model.guidance
            )
            model.denoiser = ema.model.cpu()
            state = model.state_dict()
        published = finish_run(
            options,
            {k: v.to(torch.float16) for k, v in state.items()},
            family="unclip",
            component_class=f"unclip.{stage}",
            roles=[stage],
            config=config,
            latent_space=space,
            metrics={"final_loss": round(final, 5)},
            history=history,
            description=f"unCLIP {stage} over {embedder_name} embeddings of {data.name}",
            encoder=embedder_name,
        )
        if stage == "prior":  # the text embedding it was trained on, as a conditioning contract
            published["conditioning"] = dict(entry.data["conditioning_space"])
            write_fragment(options.out, options.name or f"unclip-{Path(options.out).name}", published)
        return published

    return run.publish(write)
