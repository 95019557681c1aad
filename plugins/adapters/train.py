"""``latentzoo train lora``: LoRA on a frozen text-conditioned denoiser (a UNet or transformer prior).

    latentzoo train lora --base digits-t2i --data captioned-folder/ --rank 4 [--alpha A] [--targets to_q to_k ...]
        [--parts prior,conditioner,decoder] -o runs/NAME

The base (a pipeline, or a prior with ``--encoder`` and ``--set conditioner=NAME``) is built
frozen; trainable (down, up) pairs are hooked onto its Linear layers (or the ``--targets``:
paths, path suffixes or globs, Conv2d layers too; ``core.runtime.adapters.lora_layers``). The loss is
the base's own denoising objective (Ho et al. 2020, eq. 14, in the prediction type the prior
declares) on the frozen encoder's latents of the captioned images, scaled into the prior's
latent space as the pipeline does, with the frozen text encoder's states of each caption
(encoded once) and caption dropout for classifier-free guidance.

``--parts`` adds pairs beyond the prior (``plugins.adapters.parts``):
- ``conditioner``: on the text encoder's Linear layers (``--set text_targets=...``); the
  captions are then encoded through the adapted encoder at every step, so the denoising loss
  trains both (kohya-ss ``lora_te_``, scaled by the text strength);
- ``decoder``: on the layers the decoder runs (``--set decoder_targets=...``), trained to draw
  the captioned images from their (frozen encoder's) latents with the autoencoder's L1 loss,
  added to the denoising loss (``lora_vae_``, scaled by the model strength). It lets a concept
  that the autoencoder cannot draw (thin outlines, for a decoder fit to solid digits) be taught
  at all.

The run follows the trainer
contract (``core.training``: checkpoints, exact ``--resume``, torchrun); only the pairs and
their optimizer are checkpointed. The result is a kohya-ss ``.safetensors`` (``lora_unet_*``, ...)
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

from .parts import decoder_targets, parse_parts, text_targets, trainable_condition

TRAIN_DEFAULTS: dict[str, Any] = {
    "base": None,
    "rank": 4,
    "alpha": None,
    "targets": None,
    "parts": "prior",
    "text_targets": None,
    "decoder_targets": None,
    "conditioner": None,
    "caption_dropout": 0.1,
    "skip_uncaptioned": False,
}
PREFIX = {"prior": "lora_unet_", "conditioner": "lora_te_", "decoder": "lora_vae_"}  # kohya-ss (lora_vae_: latentzoo's)
CKPT = {"prior": "lora", "conditioner": "lora_te", "decoder": "lora_vae"}  # checkpoint names ("lora": as before parts)


class WithLora(nn.Module):
    """The frozen base and its trainable pairs as one module (DDP then sees the pairs' gradients)."""

    def __init__(self, base: nn.Module, lora: nn.Module) -> None:
        super().__init__()
        self.base, self.lora = base, lora

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.base(*args, **kwargs)


class PartsWithLora(nn.Module):
    """The frozen parts and their trainable pairs as one module, whose forward computes every
    adapted part's output (DDP then sees all the pairs' gradients)."""

    def __init__(self, prior: nn.Module, lora: dict[str, nn.Module], condition: Any = None, decoder: Any = None) -> None:
        super().__init__()
        self.base, self.lora = prior, nn.ModuleDict(lora)
        self.condition, self.decoder = condition, decoder

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: dict[str, torch.Tensor], z: torch.Tensor | None = None) -> Any:
        kwargs = {"encoder_hidden_states": cond["tokens"]}
        if cond.get("mask") is not None:
            kwargs["encoder_attention_mask"] = cond["mask"]
        pred = self.base(x_t, t, **kwargs)
        return pred, (None if z is None else self.decoder.decode(z))


def _parts(options: TrainOptions, reg: Any, base: str, conditioner: str | None) -> tuple[str, str, str, str | None]:
    """(prior, encoder, conditioner, decoder) names from a pipeline base, or a prior + --encoder + conditioner."""
    entry = reg.get(base)
    decoder = None
    if entry.section == "pipelines":
        prior, encoder, cond = entry.data.get("prior"), entry.data.get("encoder"), entry.data.get("conditioner")
        decoder = entry.data.get("decoder")
    elif "prior" not in entry.roles:
        raise LatentzooError(f"{base} is a {'/'.join(entry.roles)}; train lora adapts a prior or a text-to-image pipeline")
    else:
        prior, encoder, cond = base, options.extra.get("encoder"), conditioner
    if not encoder or not cond:
        raise LatentzooError(
            f"LoRA training on {base} needs its encoder and text encoder: give a text-to-image pipeline as --base, "
            "or a prior with --encoder NAME --set conditioner=NAME"
        )
    return prior, encoder, cond, decoder


def _config(options: TrainOptions) -> dict[str, Any]:
    cfg = split_options("lora", options.config, TRAIN_DEFAULTS)[0]
    if not cfg["base"]:
        raise LatentzooError("train lora needs --base PIPELINE_OR_PRIOR (e.g. digits-t2i)")
    rank = cfg["rank"]
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise LatentzooError(f"--rank {rank!r} must be a positive integer (e.g. 4)")
    cfg["alpha"] = float(cfg["alpha"] if cfg["alpha"] is not None else rank)
    for key in ("targets", "text_targets", "decoder_targets"):
        if isinstance(cfg[key], str):
            cfg[key] = [t for t in cfg[key].replace(",", " ").split() if t]
    cfg["parts"] = parse_parts(cfg["parts"])
    if not 0.0 <= float(cfg["caption_dropout"]) < 1.0:
        raise LatentzooError(f"caption_dropout must be in [0, 1), not {cfg['caption_dropout']!r}")
    return cfg


def _layers(cfg: dict[str, Any], prior: Any, conditioner: Any, decoder: Any, z: torch.Tensor, device: Any) -> dict[str, Any]:
    """Part -> its trainable LoRA pairs (hooked onto the frozen component), in the order of PARTS."""
    comps = {"prior": prior, "conditioner": conditioner, "decoder": decoder}
    paths = {
        "prior": lambda: select_targets(prior, cfg["targets"]),
        "conditioner": lambda: text_targets(conditioner, cfg["text_targets"]),
        "decoder": lambda: decoder_targets(decoder, z[:1], cfg["decoder_targets"]),
    }
    out = {}
    for part in cfg["parts"]:
        comps[part].to(device)
        out[part] = lora_layers(comps[part], paths[part](), cfg["rank"], cfg["alpha"]).to(device)
    return out


def train(options: TrainOptions) -> dict[str, Any] | None:
    from latentzoo.core.runtime.build import Builder

    cfg = _config(options)
    rank, alpha, parts = cfg["rank"], cfg["alpha"], cfg["parts"]
    builder = Builder.from_registry(options.extra.get("registry_files", ()))
    prior_name, encoder_name, cond_name, decoder_name = _parts(options, builder.registry, cfg["base"], cfg["conditioner"])
    prior_entry = builder.registry.get(prior_name)
    decl = builder.registry.declaration(prior_entry)
    if decl.get("kind") != "denoiser" or prior_entry.conditioning is None or prior_entry.conditioning.kind != "text":
        raise LatentzooError(f"{prior_name} is not a text-conditioned denoiser; train lora adapts text-to-image diffusion priors")
    if "decoder" in parts and not decoder_name:
        raise LatentzooError(f"--parts decoder: {cfg['base']} names no decoder; give a text-to-image pipeline as --base")
    encoder = builder.component(encoder_name, "encoder")
    conditioner = builder.component(cond_name, "conditioner")
    prior = builder.component(prior_name, "prior")
    decoder = builder.component(decoder_name, "decoder") if "decoder" in parts else None
    data = load_captioned(
        options.data, split="train", size=int(getattr(encoder, "sample_size", 32)), channels=encoder.image_channels,
        skip_uncaptioned=bool(cfg["skip_uncaptioned"]),
    )  # fmt: skip
    run = Run(options)
    captions = list(data.captions)
    unique = ["", *sorted(set(captions))]  # row 0: the empty prompt (caption dropout)
    where = {t: i for i, t in enumerate(unique)}
    caption_ids = torch.tensor([where[c] for c in captions], dtype=torch.long, device=run.device)
    space = prior.latent_space
    z = encode_dataset(encoder, data.images)
    x_data = (z - (space.shift or 0.0)) * space.scaling_factor if space.scaling_factor else z  # as Pipeline.scale
    images = data.images.to(run.device) if decoder is not None else None
    z = z.to(run.device)

    torch.manual_seed(options.seed)
    layers = _layers(cfg, prior, conditioner, decoder, z, run.device)
    encode_text = trainable_condition(conditioner)
    if "conditioner" in layers:
        fixed = None
    else:
        with torch.no_grad():
            fixed = {k: v.to(run.device) for k, v in conditioner.condition(unique).items()}  # the frozen text encoder, once
    model = PartsWithLora(prior, layers, encode_text, decoder)
    abar = prior.noise_schedule.alphas_cumprod
    sqrt_ab, sqrt_1mab = abar.sqrt().float().to(run.device), (1 - abar).sqrt().float().to(run.device)
    params = [p for part in parts for p in layers[part].parameters()]
    opt = torch.optim.AdamW(params, lr=options.lr, weight_decay=0.0)
    ckpt = run.checkpointer({CKPT[p]: layers[p] for p in parts}, {"opt": opt})
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
        if fixed is None:  # the adapted text encoder, on this batch's captions
            texts = [unique[int(i)] for i in row]
            cond = {k: v.float() if v.is_floating_point() else v for k, v in encode_text(texts).items()}
        else:
            cond = {k: v[row] for k, v in fixed.items()}
        cond = {"tokens": cond["tokens"].float(), "mask": cond["mask"].bool() if "mask" in cond else None}
        pred, recon = model_ddp(x_t, t, cond, z[index] if decoder is not None else None)
        value = F.mse_loss(pred.float(), training_target(prediction, x0, noise, a, b))
        logs = {"loss": value.detach()}
        if recon is not None:  # the decoder's part: draw the concept's images from their latents (L1, as the autoencoder)
            rec = F.l1_loss(recon.float(), images[index])
            value = value + rec
            logs["recon"] = rec.detach()
        return value, logs

    for part in parts:
        layers[part].train()
    history = run.loop(
        ImageSet(x_data, torch.arange(len(x_data)), data.name),
        [Phase("lora", opt, model_ddp, loss, clip=run.clip(1.0))],
        ckpt,
        start=start,
        history=history,
        desc="lora",
        state={"config": {"rank": rank, "alpha": alpha, "parts": {p: layers[p].targets for p in parts}}, "train": cfg},
    )
    comps = {"prior": (prior_name, prior), "conditioner": (cond_name, conditioner), "decoder": (decoder_name, decoder)}
    names = {"encoder": encoder_name, "conditioner": cond_name, "decoder": decoder_name}
    return run.publish(lambda: _write(options, cfg, layers, comps, builder.registry, history, data.name, names))


def _write(
    options: TrainOptions,
    cfg: dict[str, Any],
    layers: dict[str, Any],
    comps: dict[str, tuple[str, Any]],
    registry: Any,
    history: list[dict[str, Any]],
    data_name: str,
    names: dict[str, str | None],
) -> dict[str, Any]:
    """The kohya-ss file (one prefix per part), its config, metrics and registry fragment."""
    state: dict[str, torch.Tensor] = {}
    parts_config = {}
    for part, lora in layers.items():
        name, module = comps[part]
        state.update(lora.kohya_state(PREFIX[part]))
        shapes = {p: tuple(module.get_submodule(p).weight.shape) for p in lora.targets}
        sha = (registry.get(name).data.get("weights") or {}).get("sha256")
        parts_config[part] = {"base": name, "sha256": sha, "fingerprint": fingerprint(shapes), "modules": len(lora.targets), "unmatched": 0}
    sha = save_tensors(options.out / "model.safetensors", state, metadata={"format": "kohya"})
    tail = history[-10:]
    final = sum(h["loss"] for h in tail) / max(1, len(tail))
    config = {"format": "kohya", "rank": cfg["rank"], "alpha": cfg["alpha"], "base": cfg["base"], "parts": parts_config}
    count = sum(len(lora.targets) for lora in layers.values())
    entry = {
        "family": "lora",
        "class": "lora",
        "roles": ["adapter"],
        "config": config,
        "weights": {"path": "model.safetensors", "sha256": sha},
        "license": "MIT",
        "description": f"LoRA (rank {cfg['rank']}, {count} layers of its {', '.join(layers)}) for {cfg['base']}, trained on {data_name}",
        "metrics": {"final_loss": round(final, 5)},
        "training": {
            "data": options.data,
            "steps": options.steps,
            "batch_size": options.batch_size,
            "lr": options.lr,
            "seed": options.seed,
            "base": cfg["base"],
            "parts": list(layers),
            **{k: v for k, v in names.items() if v},
            "caption_dropout": float(cfg["caption_dropout"]),
        },
    }
    write_json(options.out / "config.json", config)
    write_json(options.out / "metrics.json", {"metrics": entry["metrics"], "history": history})
    write_fragment(options.out, options.name or f"lora-{options.out.name}", entry)
    return entry
