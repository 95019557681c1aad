"""``latentzoo train lora``: LoRA on a frozen text-conditioned denoiser (a UNet or transformer prior).

    latentzoo train lora --base digits-t2i --data captioned-folder/ --rank 4 [--alpha A] [--targets to_q to_k ...] -o runs/NAME

The base (a pipeline, or a prior with ``--encoder`` and ``--set conditioner=NAME``) is built
frozen; trainable (down, up) pairs are hooked onto its Linear layers (or the ``--targets``:
paths, path suffixes or globs, Conv2d layers too; ``core.runtime.adapters.lora_layers``). The loss is
the base's own denoising objective (Ho et al. 2020, eq. 14, in the prediction type the prior
declares) on the frozen encoder's latents of the captioned images, scaled into the prior's
latent space as the pipeline does, with the frozen text encoder's states of each caption
(encoded once) and caption dropout for classifier-free guidance. The run follows the trainer
contract (``core.training``: checkpoints, exact ``--resume``, torchrun); only the pairs and
their optimizer are checkpointed. The result is a kohya-ss ``.safetensors`` (``lora_unet_*``)
and a registry fragment naming an adapter entry that records the base it fits (name, sha256,
fingerprint), usable with ``--registry OUT/registry.yaml`` and ``sample --lora NAME``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from latentzoo.core.contract.denoising import training_target
from latentzoo.core.contract.errors import LatentzooError
from latentzoo.core.contract.weights import save_tensors, write_json
from latentzoo.core.runtime.adapters import fingerprint, lora_layers, select_targets
from latentzoo.core.runtime.captions import load_captioned
from latentzoo.core.runtime.data import ImageSet
from latentzoo.core.training import MicroBatch, Phase, Run, TrainOptions, encode_dataset, split_options, write_fragment

TRAIN_DEFAULTS: dict[str, Any] = {
    "base": None,
    "rank": 4,
    "alpha": None,
    "targets": None,
    "conditioner": None,
    "caption_dropout": 0.1,
    "skip_uncaptioned": False,
}


class WithLora(nn.Module):
    """The frozen base and its trainable pairs as one module (DDP then sees the pairs' gradients)."""

    def __init__(self, base: nn.Module, lora: nn.Module) -> None:
        super().__init__()
        self.base, self.lora = base, lora

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.base(*args, **kwargs)


def _parts(options: TrainOptions, reg: Any, base: str, conditioner: str | None) -> tuple[str, str, str]:
    """(prior, encoder, conditioner) names from a pipeline base, or a prior + --encoder + conditioner."""
    entry = reg.get(base)
    if entry.section == "pipelines":
        prior, encoder, cond = entry.data.get("prior"), entry.data.get("encoder"), entry.data.get("conditioner")
    elif "prior" not in entry.roles:
        raise LatentzooError(f"{base} is a {'/'.join(entry.roles)}; train lora adapts a prior or a text-to-image pipeline")
    else:
        prior, encoder, cond = base, options.extra.get("encoder"), conditioner
    if not encoder or not cond:
        raise LatentzooError(
            f"LoRA training on {base} needs its encoder and text encoder: give a text-to-image pipeline as --base, "
            "or a prior with --encoder NAME --set conditioner=NAME"
        )
    return prior, encoder, cond


def train(options: TrainOptions) -> dict[str, Any] | None:
    from latentzoo.core.runtime.build import Builder

    cfg = split_options("lora", options.config, TRAIN_DEFAULTS)[0]
    if not cfg["base"]:
        raise LatentzooError("train lora needs --base PIPELINE_OR_PRIOR (e.g. digits-t2i)")
    rank = cfg["rank"]
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise LatentzooError(f"--rank {rank!r} must be a positive integer (e.g. 4)")
    alpha = float(cfg["alpha"] if cfg["alpha"] is not None else rank)
    targets = cfg["targets"]
    if isinstance(targets, str):
        targets = [t for t in targets.replace(",", " ").split() if t]
    if not 0.0 <= float(cfg["caption_dropout"]) < 1.0:
        raise LatentzooError(f"caption_dropout must be in [0, 1), not {cfg['caption_dropout']!r}")
    builder = Builder.from_registry(options.extra.get("registry_files", ()))
    prior_name, encoder_name, cond_name = _parts(options, builder.registry, cfg["base"], cfg["conditioner"])
    prior_entry = builder.registry.get(prior_name)
    decl = builder.registry.declaration(prior_entry)
    if decl.get("kind") != "denoiser" or prior_entry.conditioning is None or prior_entry.conditioning.kind != "text":
        raise LatentzooError(f"{prior_name} is not a text-conditioned denoiser; train lora adapts text-to-image diffusion priors")
    encoder = builder.component(encoder_name, "encoder")
    conditioner = builder.component(cond_name, "conditioner")
    prior = builder.component(prior_name, "prior")
    data = load_captioned(
        options.data, split="train", size=int(getattr(encoder, "sample_size", 32)), channels=encoder.image_channels,
        skip_uncaptioned=bool(cfg["skip_uncaptioned"]),
    )  # fmt: skip
    run = Run(options)
    captions = list(data.captions)
    unique = sorted(set(captions))
    with torch.no_grad():
        out = conditioner.condition(["", *unique])  # the frozen text encoder, once per distinct caption
    tok = out["tokens"].float()
    msk = out["mask"].bool() if "mask" in out else None
    where = {t: i + 1 for i, t in enumerate(unique)}
    caption_ids = torch.tensor([where[c] for c in captions], dtype=torch.long, device=run.device)  # 0: the empty prompt
    tok = tok.to(run.device)
    msk = None if msk is None else msk.to(run.device)
    space = prior.latent_space
    z = encode_dataset(encoder, data.images)
    x_data = (z - (space.shift or 0.0)) * space.scaling_factor if space.scaling_factor else z  # as Pipeline.scale

    prior.to(run.device)
    paths = select_targets(prior, targets)
    torch.manual_seed(options.seed)
    lora = lora_layers(prior, paths, rank, alpha).to(run.device)
    model = WithLora(prior, lora)
    abar = prior.noise_schedule.alphas_cumprod
    sqrt_ab, sqrt_1mab = abar.sqrt().float().to(run.device), (1 - abar).sqrt().float().to(run.device)
    opt = torch.optim.AdamW(lora.parameters(), lr=options.lr, weight_decay=0.0)
    ckpt = run.checkpointer({"lora": lora}, {"opt": opt})
    start, history = ckpt.start()
    model_ddp = run.wrap(model)
    T = int(prior.noise_schedule.alphas_cumprod.shape[0])
    prediction = prior_entry.data.get("config", {}).get("prediction_type", "epsilon")
    dropout = float(cfg["caption_dropout"])

    def loss(mb: MicroBatch) -> tuple[torch.Tensor, dict[str, Any]]:
        x0, index = mb.data, mb.labels
        t = mb.randint(T)
        noise = mb.randn(*x0.shape[1:])
        row = torch.where(mb.rand() < dropout, 0, caption_ids[index])
        a, b = sqrt_ab[t].view(-1, 1, 1, 1), sqrt_1mab[t].view(-1, 1, 1, 1)
        x_t = a * x0 + b * noise  # q(x_t | x0), Ho et al. 2020 eq. 4
        kwargs = {"encoder_hidden_states": tok[row]}
        if msk is not None:
            kwargs["encoder_attention_mask"] = msk[row]
        pred = model_ddp(x_t, t, **kwargs)
        value = F.mse_loss(pred.float(), training_target(prediction, x0, noise, a, b))
        return value, {"loss": value.detach()}

    lora.train()
    history = run.loop(
        ImageSet(x_data, torch.arange(len(x_data)), data.name),
        [Phase("lora", opt, model_ddp, loss, clip=run.clip(1.0))],
        ckpt,
        start=start,
        history=history,
        desc="lora",
        state={"config": {"rank": rank, "alpha": alpha, "targets": paths}, "train": cfg},
    )

    def write() -> dict[str, Any]:
        state = lora.kohya_state("lora_unet_")
        sha = save_tensors(options.out / "model.safetensors", state, metadata={"format": "kohya"})
        shapes = {p: tuple(prior.get_submodule(p).weight.shape) for p in paths}
        final = sum(h["loss"] for h in history[-10:]) / max(1, len(history[-10:]))
        base_sha = (prior_entry.data.get("weights") or {}).get("sha256")
        config = {
            "format": "kohya",
            "rank": rank,
            "alpha": alpha,
            "base": cfg["base"],
            "parts": {
                "prior": {"base": prior_name, "sha256": base_sha, "fingerprint": fingerprint(shapes), "modules": len(paths), "unmatched": 0}
            },
        }
        entry = {
            "family": "lora",
            "class": "lora",
            "roles": ["adapter"],
            "config": config,
            "weights": {"path": "model.safetensors", "sha256": sha},
            "license": "MIT",
            "description": f"LoRA (rank {rank}, {len(paths)} layers) for {prior_name}, trained on {data.name}",
            "metrics": {"final_loss": round(final, 5)},
            "training": {
                "data": options.data,
                "steps": options.steps,
                "batch_size": options.batch_size,
                "lr": options.lr,
                "seed": options.seed,
                "base": cfg["base"],
                "encoder": encoder_name,
                "conditioner": cond_name,
                "caption_dropout": dropout,
            },
        }
        write_json(options.out / "config.json", config)
        write_json(options.out / "metrics.json", {"metrics": entry["metrics"], "history": history})
        write_fragment(options.out, options.name or f"lora-{options.out.name}", entry)
        return entry

    return run.publish(write)
