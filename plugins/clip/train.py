"""Train CLIP on captioned images: symmetric InfoNCE with a learned temperature (Radford et al. 2021, fig. 3).

logits = exp(t) * I_e T_e^T over the batch's unit-norm image and text embeddings; the loss
is the mean of the cross-entropies image -> text and text -> image. ``t`` (``logit_scale``)
is learned and clipped so that exp(t) <= 100, as CLIP does. Captions that are the same
token sequence (two sevens both captioned "a handwritten 7") are both positives: the
target of a row is uniform over its identical captions, instead of calling one of them a
negative.

Each image has several captions (``digits-captions``: 8 phrasings per image; a folder: its
one caption); each step picks one per image from a stateless per-sample draw. Images are
shifted by up to ``max_shift`` pixels (a per-sample draw), which changes no attribute.
A word-level tokenizer is trained on the training captions and saved as tokenizer.json
beside the weights.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from latentzoo.core.contract.errors import LatentzooError
from latentzoo.core.contract.weights import save_tensors, sha256_file, space_identity, write_json
from latentzoo.core.runtime.captions import load_captioned
from latentzoo.core.runtime.text import TextTokenizer, train_word_level
from latentzoo.core.training import EMA, MicroBatch, Phase, Run, TrainOptions, split_options, write_fragment

from .model import CLIPModel

MODEL_DEFAULTS: dict[str, Any] = {
    "image_size": 32,
    "image_channels": 1,
    "patch_size": 4,
    "vision_width": 96,
    "vision_layers": 4,
    "vision_heads": 4,
    "text_width": 64,
    "text_layers": 3,
    "text_heads": 4,
    "context_length": 16,
    "projection_dim": 64,
}
TRAIN_DEFAULTS: dict[str, Any] = {
    "captions_per_image": 8,
    "max_shift": 2,
    "weight_decay": 0.05,
    "ema_decay": 0.995,
    "skip_uncaptioned": False,
}
MAX_LOGIT_SCALE = math.log(100.0)


def model_config(cfg: dict[str, Any], tokenizer: TextTokenizer) -> dict[str, Any]:
    """CLIPModel's config (transformers names) from the trainer's short options."""
    return {
        "text_config": {
            "vocab_size": tokenizer.vocab_size,
            "hidden_size": cfg["text_width"],
            "intermediate_size": 4 * cfg["text_width"],
            "num_hidden_layers": cfg["text_layers"],
            "num_attention_heads": cfg["text_heads"],
            "max_position_embeddings": cfg["context_length"],
            "hidden_act": "quick_gelu",
            "layer_norm_eps": 1e-5,
            "eos_token_id": tokenizer.eos_token_id,
        },
        "vision_config": {
            "hidden_size": cfg["vision_width"],
            "intermediate_size": 4 * cfg["vision_width"],
            "num_hidden_layers": cfg["vision_layers"],
            "num_attention_heads": cfg["vision_heads"],
            "num_channels": cfg["image_channels"],
            "image_size": cfg["image_size"],
            "patch_size": cfg["patch_size"],
            "hidden_act": "quick_gelu",
            "layer_norm_eps": 1e-5,
        },
        "projection_dim": cfg["projection_dim"],
        "image_mean": [0.5] * cfg["image_channels"],  # images in [-1, 1], as every latentzoo model takes them
        "image_std": [0.5] * cfg["image_channels"],
    }


class Indexed:
    """A dataset whose batches are (images, their indices): the loss looks captions up by index."""

    def __init__(self, data: Any) -> None:
        self.data, self.name = data, data.name

    def __len__(self) -> int:
        return len(self.data)

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        images, _ = self.data.__getitems__(indices)
        return images, torch.as_tensor(indices, dtype=torch.long)


def shift(images: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor, max_shift: int) -> torch.Tensor:
    """Translate each image by (dx, dy) pixels, filling with background (-1)."""
    if max_shift == 0:
        return images
    n, _, h, w = images.shape
    padded = F.pad(images, (max_shift,) * 4, value=-1.0)
    out = torch.empty_like(images)
    for i in range(n):
        y, x = max_shift - int(dy[i]), max_shift - int(dx[i])
        out[i] = padded[i, :, y : y + h, x : x + w]
    return out


def contrastive_loss(logits: torch.Tensor, same: torch.Tensor) -> torch.Tensor:
    """Symmetric cross-entropy; ``same`` (B, B) marks identical captions (all positives)."""
    target = same.float() / same.float().sum(1, keepdim=True)
    loss_i = -(target * logits.log_softmax(1)).sum(1).mean()
    loss_t = -(target * logits.t().log_softmax(1)).sum(1).mean()  # ``same`` is symmetric
    return (loss_i + loss_t) / 2


def train(options: TrainOptions) -> dict[str, Any] | None:
    cfg, train_cfg = split_options("clip", options.config, MODEL_DEFAULTS, TRAIN_DEFAULTS)
    data = load_captioned(  # before the run directory exists: bad data writes nothing
        options.data,
        split="train",
        size=cfg["image_size"],
        channels=cfg["image_channels"],
        skip_uncaptioned=bool(train_cfg["skip_uncaptioned"]),
    )
    run = Run(options)
    k = int(train_cfg["captions_per_image"])
    variants = data.variants(k) if hasattr(data, "variants") else [[c] * k for c in data.captions]
    tokenizer = train_word_level([c for row in variants for c in row], context_length=cfg["context_length"])
    ids, mask = tokenizer.encode([c for row in variants for c in row])
    ids, mask = ids.view(len(variants), k, -1), mask.view(len(variants), k, -1)
    config = model_config(cfg, tokenizer)

    torch.manual_seed(options.seed)
    model = CLIPModel(**config).to(run.device)
    ema = EMA(model, train_cfg["ema_decay"])
    decay, no_decay = [], []
    for name, p in model.named_parameters():  # no weight decay on gains, biases, embeddings' class token and the temperature
        (no_decay if p.ndim < 2 or name.endswith("logit_scale") else decay).append(p)
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": train_cfg["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}],
        lr=options.lr,
        betas=(0.9, 0.98),
    )
    ckpt = run.checkpointer({"model": model, "ema": ema.model}, {"opt": opt})
    start, history = ckpt.start()
    model_ddp = run.wrap(model)
    ids, mask = ids.to(run.device), mask.to(run.device)
    s = int(train_cfg["max_shift"])

    def loss(mb: MicroBatch) -> tuple[torch.Tensor, dict[str, Any]]:
        index = mb.labels
        pick = mb.randint(k)
        dx, dy = mb.randint(2 * s + 1) - s, mb.randint(2 * s + 1) - s
        x = shift(mb.data, dx, dy, s)
        text, text_mask = ids[index, pick], mask[index, pick]
        out = model_ddp(text, model.pixel_values(x), text_mask)
        # Identical token rows are positives of each other; in a data-parallel run each rank
        # contrasts its own share (a smaller batch of negatives), which DDP then averages.
        same = (text[:, None, :] == text[None, :, :]).all(-1)
        logits = out["logits_per_image"].float()
        value = contrastive_loss(logits, same)
        acc = (logits.argmax(1) == torch.arange(len(logits), device=logits.device)).float().mean()
        return value, {"loss": value.detach(), "batch_acc": acc.detach(), "temperature": model.logit_scale.detach().exp()}

    def after_step(i: int) -> None:
        with torch.no_grad():
            model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)  # CLIP: exp(t) never above 100
        ema.update(model, i)

    model.train()
    history = run.loop(
        Indexed(data),
        [Phase("clip", opt, model_ddp, loss, clip=run.clip(1.0))],
        ckpt,
        start=start,
        history=history,
        desc="clip",
        state={"config": cfg, "train": train_cfg},
        after_step=after_step,
        validate=(lambda: evaluate(ema.model, tokenizer, options.data)) if run.is_main else None,
    )

    def write() -> dict[str, Any]:
        final = ema.model.eval().cpu()
        final.set_tokenizer(tokenizer)
        metrics = evaluate(final, tokenizer, options.data)
        return finish_clip(options, final, tokenizer, config, metrics, history, f"CLIP trained on {data.name}, {options.steps} steps")

    return run.publish(write)


def finish_clip(
    options: TrainOptions,
    model: CLIPModel,
    tokenizer: TextTokenizer,
    config: dict[str, Any],
    metrics: dict[str, Any],
    history: list[dict[str, Any]],
    description: str,
) -> dict[str, Any]:
    """Write model.safetensors, tokenizer.json, config.json, metrics.json and a registry fragment."""
    out = Path(options.out)
    tok_path = tokenizer.save(out / "tokenizer.json")
    full = {**config, "tokenizer": {"file": "tokenizer.json", "sha256": sha256_file(tok_path)}}
    sha = save_tensors(out / "model.safetensors", model.state_dict(), metadata={"family": "clip"})
    entry = {
        "family": "clip",
        "class": "clip.model",
        "roles": ["conditioner"],
        "config": full,
        "weights": {"path": "model.safetensors", "sha256": sha},
        "conditioning_space": {**model.conditioning_fields(), "encoder": space_identity(sha)},
        "license": "MIT",
        "description": description,
        "metrics": metrics,
        "training": {
            "data": options.data,
            "steps": options.steps,
            "batch_size": options.batch_size,
            "lr": options.lr,
            "seed": options.seed,
        },
    }
    write_json(out / "config.json", full)
    write_json(out / "metrics.json", {"metrics": metrics, "history": history})
    write_fragment(out, options.name or f"clip-{out.name}", entry)
    return entry


@torch.inference_mode()
def evaluate(model: CLIPModel, tokenizer: TextTokenizer, data_name: str) -> dict[str, Any]:
    """Zero-shot accuracy on the held-out split: digits with "a handwritten <name>", and each
    attribute's two words ("a thick handwritten digit" vs "a thin ...") on images that have one."""
    from .zero_shot import attribute_accuracy, digit_accuracy

    was_training = model.training
    model.eval()
    model.tokenizer = tokenizer
    try:
        held = load_captioned(data_name, split="test", size=model.image_size, channels=model.image_channels)
    except LatentzooError:
        return {}
    metrics: dict[str, Any] = {}
    if held.labels is not None and getattr(held, "words", None) is not None:
        metrics["zero_shot_accuracy"] = round(digit_accuracy(model, held.images, held.labels), 4)
        metrics.update({f"{k}_accuracy": round(v, 4) for k, v in attribute_accuracy(model, held).items()})
        metrics["held_out_images"] = len(held)
    model.train(was_training)
    return metrics
