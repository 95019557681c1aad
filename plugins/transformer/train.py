"""Train an autoregressive code prior on the codes of a frozen (VQ-GAN or dVAE) encoder.

Cross-entropy on the codes, raster order; with ``num_class_embeds`` the class token is
dropped to the null token with probability ``label_dropout`` (for classifier-free guidance).

What makes a code prior sample well from 1,437 images (issue 15, item 4; numbers in
docs/code-priors.md): the original priors reached 2.6 bits/code on their training codes
but 3.1 on held-out ones, i.e. they memorised grids. So:

- ``augment``: K randomly shifted / rotated / scaled copies of every training image
  (a small affine warp, ``shift`` px, ``rotate`` degrees, ``scale``) are encoded too, so
  the prior sees (K + 1) x as many distinct code grids of the same digits;
- ``dropout`` in attention and MLP;
- early stopping: the held-out NLL is measured at every checkpoint and the EMA weights of
  the best one are shipped (``keep_best``).

DALL-E (``text: true``, a captioned dataset such as ``digits-captions``): the sequence is
[caption tokens, codes] (Ramesh et al. 2021); the caption's token embedding is trained with
the prior and published as its own conditioner component (``<name>-text``, with the
tokenizer beside it). Captions are dropped to the empty prompt with probability
``caption_dropout``, so the empty prompt samples unconditionally and guidance works.
Augmented copies get captions measured on the warped image (the attributes move with it).
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from latentzoo.core.contract.errors import LatentzooError
from latentzoo.core.runtime.data import ImageSet, load_dataset
from latentzoo.core.training import EMA, MicroBatch, Phase, Run, TrainOptions, finish_run, split_options

from .model import CodeTransformer, TextTokens

MODEL_DEFAULTS: dict[str, Any] = {"d_model": 128, "n_layer": 4, "n_head": 4, "num_class_embeds": None, "dropout": 0.0}
TRAIN_DEFAULTS: dict[str, Any] = {
    "label_dropout": 0.1,
    "ema_decay": 0.999,
    "weight_decay": 0.01,
    "augment": 0,
    "shift": 2.0,
    "rotate": 8.0,
    "scale": 0.08,
    "keep_best": True,
    "augment_flag": True,
    "text": False,
    "tokenizer": None,
    "context_length": 16,
    "caption_dropout": 0.2,
}


@torch.inference_mode()
def encode_codes(encoder: Any, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """Code indices (N, h, w): a VQ encoder's nearest codes, or a discrete encoder's output."""
    out = []
    for i in range(0, len(images), batch):
        z = encoder.encode(images[i : i + batch])
        out.append(z if not z.is_floating_point() else encoder.quantize.indices(z))
    return torch.cat(out)


def augment_images(images: torch.Tensor, copies: int, *, shift: float, rotate: float, scale: float, seed: int) -> torch.Tensor:
    """``copies`` affine-warped versions of every image (copy-major): shift in px, rotation in degrees,
    relative scale, drawn uniformly from a generator seeded by ``seed``; background stays -1."""
    if copies <= 0:
        return images[:0]
    g = torch.Generator().manual_seed(seed)
    n, _, h, _ = images.shape
    m = copies * n

    def u(span: float) -> torch.Tensor:
        return (torch.rand(m, generator=g) * 2 - 1) * span

    angle, s = u(math.radians(rotate)), 1 + u(scale)
    tx, ty = u(shift) * 2 / h, u(shift) * 2 / h  # affine_grid works in [-1, 1] coordinates
    cos, sin = torch.cos(angle) / s, torch.sin(angle) / s
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    x = images.repeat(copies, 1, 1, 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return (F.grid_sample(x + 1, grid, mode="bilinear", padding_mode="zeros", align_corners=False) - 1).clamp(-1, 1)


def augmented_captions(data: Any, warped: torch.Tensor, copies: int) -> list[str]:
    """Captions of the warped copies: measured on the warped images for digits-captions, else the originals'."""
    labels = data.labels.repeat(copies)
    if not getattr(data, "attributes", None):
        return list(data.captions) * copies
    from latentzoo.plugins.datasets import captions as cap
    from latentzoo.plugins.datasets import digits

    train32 = digits.load("train", 32, 1)
    cuts = cap.terciles(cap.measure(train32.images), train32.labels)
    small = F.interpolate(warped, size=32, mode="bilinear", align_corners=False) if warped.shape[-1] != 32 else warped
    words = cap.words_for(cap.measure(small), labels, cuts)
    index = data.index.repeat(copies)
    out: list[str] = []
    for k in range(copies):  # copy k uses caption seed k + 1 (seed 0 is the originals')
        sl = slice(k * len(data), (k + 1) * len(data))
        out += cap.captions_for(labels[sl], words[sl], index[sl], data.seed + k + 1)
    return out


class _Joint(nn.Module):
    """The prior plus (for DALL-E) its text-token embedding, trained together."""

    def __init__(self, prior: CodeTransformer, text: TextTokens | None) -> None:
        super().__init__()
        self.prior, self.text = prior, text

    def forward(
        self,
        codes: torch.Tensor,
        labels: torch.Tensor | None = None,
        ids: torch.Tensor | None = None,
        augmented: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self.prior(codes, labels, None if ids is None else self.text(ids), augmented)


def train(options: TrainOptions) -> dict[str, Any] | None:
    from latentzoo.core.runtime import text as text_lib
    from latentzoo.core.runtime.build import Builder

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
    with_text = bool(train_cfg["text"])
    if with_text and not getattr(data, "captions", None):
        raise LatentzooError(f"text: true needs a captioned dataset (digits-captions, or a folder with captions); {options.data} has none")
    copies = int(train_cfg["augment"])
    warped = augment_images(
        data.images, copies, shift=train_cfg["shift"], rotate=train_cfg["rotate"], scale=train_cfg["scale"], seed=options.seed
    )
    codes = encode_codes(encoder, data.images)
    if copies:
        codes = torch.cat([codes, encode_codes(encoder, warped)])
    labels = None if data.labels is None else data.labels.repeat(copies + 1)
    cfg.update(codebook_size=space.codebook_size, grid_size=codes.shape[-1])
    if copies and train_cfg["augment_flag"]:
        cfg["augment_flag"] = True
    flat = codes.flatten(1)
    warped_rows = torch.arange(len(flat)) >= len(data.images)  # 1 for the warped copies' grids
    if cfg["num_class_embeds"] and data.labels is None:
        raise LatentzooError(f"num_class_embeds needs a labelled dataset; {options.data} has no labels")

    tokenizer, empty = None, None
    if with_text:
        if not train_cfg["tokenizer"]:
            raise LatentzooError(
                "text: true needs a tokenizer: --set tokenizer=PATH (a tokenizer.json, e.g. weights/digits-clip.tokenizer.json)"
            )
        tokenizer = text_lib.load(train_cfg["tokenizer"], context_length=int(train_cfg["context_length"]))
        captions = list(data.captions) + augmented_captions(data, warped, copies)
        ids, _ = tokenizer.encode(captions, warn=False)
        empty = tokenizer.encode([""])[0][0]
        flat = torch.cat([ids, flat], dim=1)  # one row: [caption ids, codes]
        cfg["text_length"] = tokenizer.context_length
    flat = torch.cat([warped_rows.long()[:, None], flat], dim=1)  # one row: [warped?, caption ids, codes]

    torch.manual_seed(options.seed)
    prior = CodeTransformer(**cfg)
    text_model = None
    if with_text:
        text_model = TextTokens(vocab_size=tokenizer.vocab_size, width=cfg["d_model"], context_length=tokenizer.context_length)
    model = _Joint(prior, text_model).to(run.device)
    ema = EMA(model, train_cfg["ema_decay"])
    opt = torch.optim.AdamW(model.parameters(), lr=options.lr, weight_decay=train_cfg["weight_decay"], betas=(0.9, 0.95))
    ckpt = run.checkpointer({"model": model, "ema": ema.model}, {"opt": opt})
    start, history = ckpt.start()
    model_ddp = run.wrap(model)
    classes = cfg["num_class_embeds"]
    t_len = cfg.get("text_length") or 0
    held = held_out(encoder, options.data, tokenizer) if run.is_main else None
    best: dict[str, Any] = {"bits": math.inf, "state": None}

    def loss(mb: MicroBatch) -> tuple[torch.Tensor, dict[str, Any]]:
        is_warped, target, labels, ids = mb.data[:, 0], mb.data[:, 1 + t_len :], None, None
        if classes:
            labels = torch.where(mb.rand() < train_cfg["label_dropout"], classes - 1, mb.labels)  # null token: for CFG
        if t_len:
            drop = mb.rand() < train_cfg["caption_dropout"]  # the empty prompt: unconditional, for CFG
            ids = torch.where(drop[:, None], empty.to(mb.data.device)[None], mb.data[:, 1 : 1 + t_len])
        flag = is_warped if cfg.get("augment_flag") else None
        ce = F.cross_entropy(model_ddp(target, labels, ids, flag).float().reshape(-1, cfg["codebook_size"]), target.reshape(-1))
        return ce, {"ce": ce.detach()}

    def validate() -> dict[str, Any]:
        bits = evaluate(ema.model, cfg, held, empty)
        if train_cfg["keep_best"] and bits["val_bits"] is not None and bits["val_bits"] < best["bits"]:
            best.update(bits=bits["val_bits"], state=copy.deepcopy(ema.model.state_dict()))
        return bits

    model.train()
    history = run.loop(
        ImageSet(flat, labels, data.name),
        [Phase("transformer", opt, model_ddp, loss, clip=run.clip(1.0))],
        ckpt,
        start=start,
        history=history,
        desc="transformer",
        state={"config": cfg, "ema_decay": train_cfg["ema_decay"]},
        after_step=lambda i: ema.update(model, i),
        validate=None if held is None else validate,
    )

    def write() -> dict[str, Any]:
        final = ema.model.cpu()
        chosen_step = options.steps
        if best["state"] is not None:
            final.load_state_dict(best["state"])
            chosen_step = next((row["step"] for row in history if row.get("val_bits") == best["bits"]), options.steps)
        metrics = {k: v for k, v in evaluate(final, cfg, held, empty).items() if v is not None}
        metrics = {"held_out_nll_bits_per_code": metrics.pop("val_bits", None), **metrics, "chosen_step": chosen_step}
        metrics["training_grids"] = len(flat)
        prior_space = space.as_discrete() if space.kind == "continuous" else space
        state = {k.removeprefix("prior."): v for k, v in final.state_dict().items() if k.startswith("prior.")}
        entry = finish_run(
            options,
            state,
            family="transformer",
            component_class="transformer.text_prior" if with_text else "transformer.prior",
            roles=["prior"],
            config=cfg,
            latent_space=prior_space.to_dict(),
            metrics=metrics,
            history=history,
            description=("DALL-E: code transformer over [caption tokens, codes]" if with_text else "Autoregressive code transformer")
            + f" of {encoder_name} on {data.name}",
            encoder=encoder_name,
        )
        if with_text:
            entry = publish_text(options, final.text, tokenizer, entry)
        return entry

    return run.publish(write)


def publish_text(options: TrainOptions, text_model: TextTokens, tokenizer: Any, prior_entry: dict[str, Any]) -> dict[str, Any]:
    """Write the text-token conditioner (text.safetensors + tokenizer.json) and a fragment naming both parts."""
    import yaml

    from latentzoo.core.contract.conditioning import ConditioningSpace
    from latentzoo.core.contract.weights import save_tensors, sha256_file, write_bytes

    out = Path(options.out)
    tok_path = tokenizer.save(out / "tokenizer.json")
    sha = save_tensors(out / "text.safetensors", text_model.state_dict(), metadata={"family": "transformer"})
    name = options.name or f"transformer-{out.name}"
    base = name.removesuffix("-prior")  # components and pipelines share one namespace
    pipeline = base if base != name else f"{name}-pipeline"
    space = ConditioningSpace(
        kind="text", width=text_model.embedding.embedding_dim, sequence_length=text_model.context_length, encoder=f"sha256:{sha[:16]}"
    ).to_dict()
    text_entry = {
        "family": "transformer",
        "class": "transformer.text",
        "roles": ["conditioner"],
        "config": {
            "vocab_size": text_model.embedding.num_embeddings,
            "width": text_model.embedding.embedding_dim,
            "context_length": text_model.context_length,
            "tokenizer": {"file": "tokenizer.json", "sha256": sha256_file(tok_path)},
        },
        "weights": {"path": "text.safetensors", "sha256": sha},
        "conditioning_space": space,
        "license": "MIT",
        "description": f"DALL-E caption-token embedding of {name} (tokenizer beside it)",
    }
    prior_entry = {**prior_entry, "conditioning": dict(space)}
    doc = {
        "components": {name: prior_entry, f"{base}-text": text_entry},
        "pipelines": {
            pipeline: {
                "encoder": prior_entry["training"]["encoder"],
                "conditioner": f"{base}-text",
                "prior": name,
                "decoder": prior_entry["training"]["encoder"],
                "sampler": "tokens",
            }
        },
    }
    write_bytes(out / "registry.yaml", yaml.safe_dump(doc, sort_keys=False).encode())
    return prior_entry


def held_out(encoder: Any, data_name: str, tokenizer: Any = None) -> dict[str, torch.Tensor] | None:
    """The held-out split's codes (N, h*w) and, with a tokenizer, caption ids; None for a dataset without one."""
    try:
        held = load_dataset(data_name, split="test", size=int(encoder.sample_size), channels=encoder.image_channels)
    except LatentzooError:
        return None
    out = {"codes": encode_codes(encoder, held.images).flatten(1)}
    if tokenizer is not None:
        out["ids"] = tokenizer.encode(list(held.captions), warn=False)[0]
    return out


def held_out_codes(encoder: Any, data_name: str) -> torch.Tensor | None:
    """The held-out split's codes (N, h*w), or None for a dataset without one (a folder)."""
    held = held_out(encoder, data_name)
    return None if held is None else held["codes"]


@torch.inference_mode()
def evaluate(model: nn.Module, cfg: dict[str, Any], held: dict[str, torch.Tensor] | None, empty: torch.Tensor | None) -> dict[str, Any]:
    """Held-out NLL in bits per code: ``val_bits`` (with the captions for a text prior, else unconditional)
    and, for a text prior, ``val_bits_empty_prompt`` (unconditional)."""
    if held is None:
        return {"val_bits": None}
    was = model.training
    model.eval()
    codes = held["codes"].to(next(model.parameters()).device)

    def bits(ids: torch.Tensor | None) -> float:
        ce = F.cross_entropy(model(codes, None, ids).float().reshape(-1, cfg["codebook_size"]), codes.reshape(-1))
        return round(float(ce) / math.log(2.0), 4)

    out = {"val_bits": bits(held.get("ids"))}
    if "ids" in held:
        out["val_bits_empty_prompt"] = bits(empty[None].expand(len(codes), -1).to(codes.device))
    model.train(was)
    return out
