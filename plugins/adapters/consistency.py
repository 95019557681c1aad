"""Consistency distillation into a LoRA (LCM-LoRA; Luo et al. 2023, "LCM-LoRA", and "Latent Consistency Models", alg. 1).

    latentzoo distill consistency --teacher digits-t2i --lora-rank 8 -o runs/NAME

The teacher is a frozen text-conditioned denoiser (a pipeline's prior); the student is the same
prior with trainable low-rank pairs hooked onto it (``core.runtime.adapters.lora_layers``), so the base
weights are never touched and the result is an ordinary kohya-ss LoRA file plus an adapter entry.
Per training example (latent consistency distillation, Luo et al. 2023, alg. 1):

1. a latent x0 of a captioned image (the frozen encoder's, scaled into the prior's space) and an
   index n of the skipping-step grid t_n = (n + 1) k - 1, k = T / teacher_steps (LCM's DDIM
   timesteps; k = 20 for T = 1000 and 50 teacher steps), t_prev = max(t_n - k, 0);
2. x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps (Ho et al. 2020, eq. 4);
3. the teacher's guided estimate with classifier-free guidance folded in (Luo et al. 2023, eq. 9):
   x0_w = x0_u + w (x0_c - x0_u), eps_w likewise (Ho & Salimans 2022, eq. 6), and one DDIM step
   of it (Song et al. 2021, eq. 12, eta = 0) to t_prev: x_prev = sqrt(abar_prev) x0_w + sqrt(1 - abar_prev) eps_w;
4. the loss d(f_student(x_t, t), stopgrad f_student(x_prev, t_prev)), with the consistency
   function f(x, t) = c_skip(t) x + c_out(t) x0(x, t) of ``ksampling.consistency`` (the same
   boundary condition the ``lcm`` sampler uses) and d the pseudo-Huber distance
   sqrt(||a - b||^2 + c^2) - c (Song & Dhariwal 2023; LCM's released code, c = 0.001).
   The target network is the LoRA'd student itself under stop-grad (the LCM-LoRA recipe; no EMA copy).

The run follows the trainer contract (``core.training``: checkpoints of the pairs and their
optimizer, exact ``--resume``, torchrun). The published entry records what it was distilled
for in the registry's one schema (``distilled_for``, core.contract.distilled: method, sampler, teacher steps,
the most steps it can walk, the guidance folded in), which request validation checks for ``sample --lora``.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn

from latentzoo.core.contract.denoising import split_prediction
from latentzoo.core.contract.distilled import DistilledFor
from latentzoo.core.contract.errors import LatentzooError
from latentzoo.core.contract.weights import save_tensors, write_json
from latentzoo.core.runtime.adapters import fingerprint, lora_layers, select_targets
from latentzoo.core.runtime.captions import load_captioned
from latentzoo.core.runtime.data import ImageSet
from latentzoo.core.training import MicroBatch, Phase, Run, TrainOptions, encode_dataset, split_options, write_fragment
from latentzoo.plugins.ksampling.consistency import boundary_scalings

from .train import WithLora, _parts

# LCM-LoRA's targets (diffusers' train_lcm_distill_lora_sd_wds.py): attention, feed-forward, resnet convs, time projections
LCM_TARGETS = [
    "to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2",
    "conv1", "conv2", "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv", "time_emb_proj",
]  # fmt: skip

DEFAULTS: dict[str, Any] = {
    "base": None,
    "rank": 8,
    "alpha": None,
    "targets": None,
    "conditioner": None,
    "guidance": None,  # the teacher's classifier-free guidance folded in (default: the pipeline's guidance)
    "teacher_steps": 50,  # the skipping-step DDIM grid (LCM: 50 steps, k = 20)
    "huber_c": 0.001,  # 0: plain L2
}


def check_config(cfg: dict[str, Any], num_train_timesteps: int) -> None:
    """Refuse impossible distillation options in one line naming the option."""
    n = cfg["teacher_steps"]
    if isinstance(n, bool) or not isinstance(n, int) or not 2 <= n <= num_train_timesteps // 2:
        raise LatentzooError(
            f"teacher_steps {n!r}: the skipping-step DDIM grid takes 2 to {num_train_timesteps // 2} steps of the teacher "
            f"({num_train_timesteps} training timesteps); LCM uses 50"
        )
    w = cfg["guidance"]
    if isinstance(w, bool) or not isinstance(w, int | float) or not math.isfinite(w) or not 0 <= w <= 20:
        raise LatentzooError(f"guidance {w!r} must be a number from 0 to 20 (the teacher's classifier-free guidance, e.g. 2)")
    c = cfg["huber_c"]
    if isinstance(c, bool) or not isinstance(c, int | float) or not math.isfinite(c) or c < 0:
        raise LatentzooError(f"huber_c {c!r} must be a finite number >= 0 (0: L2 loss)")


def skip_grid(num_train_timesteps: int, teacher_steps: int) -> tuple[torch.Tensor, int]:
    """LCM's DDIM timesteps t_n = (n + 1) k - 1 (n < teacher_steps) and the skip k = T // teacher_steps."""
    k = num_train_timesteps // teacher_steps
    return torch.arange(1, teacher_steps + 1, dtype=torch.long) * k - 1, k


class ConsistencyLoss:
    """The latent-consistency-distillation loss of one micro-batch (the module docstring, steps 1-4)."""

    def __init__(
        self, model: nn.Module, teacher: nn.Module, schedule: Any, prediction: str, cfg: dict[str, Any], text: dict[str, Any]
    ) -> None:
        self.model, self.teacher, self.prediction, self.cfg = model, teacher, prediction, cfg
        abar = schedule.alphas_cumprod.float()
        self.sqrt_ab, self.sqrt_1mab = abar.sqrt(), (1 - abar).sqrt()
        self.grid, self.k = skip_grid(schedule.num_train_timesteps, cfg["teacher_steps"])
        self.text = text  # tokens / mask of every distinct caption, row 0 the empty prompt; caption_ids per image
        T = schedule.num_train_timesteps
        scalings = [boundary_scalings(float(t)) for t in range(T)]
        self.c_skip = torch.tensor([s for s, _ in scalings])
        self.c_out = torch.tensor([o for _, o in scalings])

    def prior(self, x: torch.Tensor, t: torch.Tensor, rows: torch.Tensor, model: nn.Module | None = None) -> torch.Tensor:
        kwargs = {"encoder_hidden_states": self.text["tokens"][rows]}
        if self.text["mask"] is not None:
            kwargs["encoder_attention_mask"] = self.text["mask"][rows]
        return (model or self.model)(x, t, **kwargs)

    def x0(self, out: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = self.sqrt_ab[t].view(-1, 1, 1, 1), self.sqrt_1mab[t].view(-1, 1, 1, 1)
        return split_prediction_batch(out, x_t, a, b, self.prediction)

    def f(self, x_t: torch.Tensor, t: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """c_skip x + c_out x0, with x in the sigma form x_t / sqrt(abar_t), as the lcm sampler walks it."""
        x0, _ = self.x0(out, x_t, t)
        x_sigma = x_t / self.sqrt_ab[t].view(-1, 1, 1, 1)
        return self.c_skip[t].view(-1, 1, 1, 1) * x_sigma + self.c_out[t].view(-1, 1, 1, 1) * x0

    def __call__(self, mb: MicroBatch) -> tuple[torch.Tensor, dict[str, Any]]:
        x0, index = mb.data, mb.labels
        n = mb.randint(len(self.grid))
        eps = mb.randn(*x0.shape[1:])
        t = self.grid.to(x0.device)[n]
        t_prev = (t - self.k).clamp(min=0)
        rows = self.text["caption_ids"][index]
        x_t = self.sqrt_ab[t].view(-1, 1, 1, 1) * x0 + self.sqrt_1mab[t].view(-1, 1, 1, 1) * eps
        w = float(self.cfg["guidance"])
        with torch.no_grad():
            # the teacher, guided: the prompt and the null (empty) prompt in one batch
            both = self.prior(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([rows, torch.zeros_like(rows)]), self.teacher)
            cond, uncond = both.float().chunk(2)
            x0_c, eps_c = self.x0(cond, x_t, t)
            x0_u, eps_u = self.x0(uncond, x_t, t)
            x0_w, eps_w = x0_u + w * (x0_c - x0_u), eps_u + w * (eps_c - eps_u)
            x_prev = self.sqrt_ab[t_prev].view(-1, 1, 1, 1) * x0_w + self.sqrt_1mab[t_prev].view(-1, 1, 1, 1) * eps_w  # DDIM, eta = 0
            target = self.f(x_prev, t_prev, self.prior(x_prev, t_prev, rows).float())  # stop-grad student
        pred = self.f(x_t, t, self.prior(x_t, t, rows).float())
        c = float(self.cfg["huber_c"])
        diff = (pred - target) ** 2
        value = (torch.sqrt(diff + c * c) - c).mean() if c > 0 else diff.mean()
        return value, {"loss": value.detach()}


def split_prediction_batch(
    out: torch.Tensor, x_t: torch.Tensor, a: torch.Tensor, b: torch.Tensor, prediction: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """``core.contract.denoising.split_prediction`` with per-sample sqrt(abar) ``a`` and sqrt(1 - abar) ``b``."""
    if prediction == "epsilon":
        return (x_t - b * out) / a, out
    if prediction == "v_prediction":
        return a * x_t - b * out, a * out + b * x_t
    if prediction == "sample":
        return out, (x_t - a * out) / b
    return split_prediction(out, x_t, 0.5, prediction)  # refuses the unknown type in one line


def train(options: TrainOptions) -> dict[str, Any] | None:
    from latentzoo.core.runtime.build import Builder

    cfg = split_options("consistency", options.config, DEFAULTS)[0]
    if not cfg["base"]:
        raise LatentzooError("distill consistency needs --teacher PIPELINE (e.g. digits-t2i)")
    rank = cfg["rank"]
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise LatentzooError(f"--lora-rank {rank!r} must be a positive integer (e.g. 8)")
    alpha = float(cfg["alpha"] if cfg["alpha"] is not None else rank)
    targets = cfg["targets"] or LCM_TARGETS
    if isinstance(targets, str):
        targets = [t for t in targets.replace(",", " ").split() if t]
    builder = Builder.from_registry(options.extra.get("registry_files", ()))
    reg = builder.registry
    base_entry = reg.get(cfg["base"])
    teacher_prior = base_entry.data.get("prior") if base_entry.section == "pipelines" else cfg["base"]
    kind = reg.declaration(reg.get(teacher_prior)).get("kind") if teacher_prior else None
    if teacher_prior and "prior" in reg.get(teacher_prior).roles and kind != "denoiser":
        raise LatentzooError(
            f"teacher {cfg['base']}: its prior {teacher_prior} is a {kind or 'non-denoiser'} prior, not a denoiser; "
            "consistency distillation needs a diffusion (denoiser) teacher"
        )
    prior_name, encoder_name, cond_name, _ = _parts(options, reg, cfg["base"], cfg["conditioner"])
    prior_entry = reg.get(prior_name)
    if prior_entry.conditioning is None or prior_entry.conditioning.kind != "text":
        raise LatentzooError(
            f"teacher {cfg['base']}: {prior_name} is not text-conditioned; distill consistency adapts text-to-image priors"
        )
    if cfg["guidance"] is None:
        cfg["guidance"] = float((base_entry.data.get("defaults") or {}).get("guidance", 1.0)) if base_entry.section == "pipelines" else 1.0
    prior = builder.component(prior_name, "prior")
    teacher = builder.component(prior_name, "prior")  # a second, hook-free copy: the frozen teacher (the base weights, never written)
    if teacher is prior:
        teacher = copy.deepcopy(prior)
    check_config(cfg, prior.noise_schedule.num_train_timesteps)
    encoder = builder.component(encoder_name, "encoder")
    conditioner = builder.component(cond_name, "conditioner")
    data = load_captioned(options.data, split="train", size=int(getattr(encoder, "sample_size", 32)), channels=encoder.image_channels)
    run = Run(options)
    captions = list(data.captions)
    unique = sorted(set(captions))
    with torch.no_grad():
        out = conditioner.condition(["", *unique])  # the frozen text encoder, once per distinct caption
    where = {c: i + 1 for i, c in enumerate(unique)}
    text = {
        "tokens": out["tokens"].float().to(run.device),
        "mask": out["mask"].bool().to(run.device) if "mask" in out else None,
        "caption_ids": torch.tensor([where[c] for c in captions], dtype=torch.long, device=run.device),
    }
    space = prior.latent_space
    z = encode_dataset(encoder, data.images)
    x_data = (z - (space.shift or 0.0)) * space.scaling_factor if space.scaling_factor else z  # as Pipeline.scale

    for frozen in (prior, teacher):
        frozen.to(run.device).requires_grad_(False)
    teacher.eval()
    paths = select_targets(prior, targets)
    torch.manual_seed(options.seed)
    lora = lora_layers(prior, paths, rank, alpha).to(run.device)
    model = WithLora(prior, lora)
    opt = torch.optim.AdamW(lora.parameters(), lr=options.lr, weight_decay=0.0)
    ckpt = run.checkpointer({"lora": lora}, {"opt": opt})
    start, history = ckpt.start()
    model_ddp = run.wrap(model)
    prediction = prior_entry.data.get("config", {}).get("prediction_type", "epsilon")
    loss = ConsistencyLoss(model_ddp, teacher, prior.noise_schedule, prediction, cfg, text)
    loss.c_skip, loss.c_out = loss.c_skip.to(run.device), loss.c_out.to(run.device)
    loss.sqrt_ab, loss.sqrt_1mab = loss.sqrt_ab.to(run.device), loss.sqrt_1mab.to(run.device)
    lora.train()
    history = run.loop(
        ImageSet(x_data, torch.arange(len(x_data)), data.name),
        [Phase("consistency", opt, model_ddp, loss, clip=run.clip(1.0))],
        ckpt,
        start=start,
        history=history,
        desc="consistency",
        state={"config": {"rank": rank, "alpha": alpha, "targets": paths}, "train": cfg},
    )

    def write() -> dict[str, Any]:
        state = lora.kohya_state("lora_unet_")
        sha = save_tensors(options.out / "model.safetensors", state, metadata={"format": "kohya", "distilled": "consistency"})
        shapes = {p: tuple(prior.get_submodule(p).weight.shape) for p in paths}
        final = sum(h["loss"] for h in history[-10:]) / max(1, len(history[-10:]))
        base_sha = (prior_entry.data.get("weights") or {}).get("sha256")
        distilled = DistilledFor(
            method="consistency",
            teacher=cfg["base"],
            sampler="lcm",
            teacher_steps=cfg["teacher_steps"],
            max_steps=cfg["teacher_steps"],  # more would walk levels between and below the grid it learned
            folded_guidance=float(cfg["guidance"]),
        )
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
            "description": (
                f"Consistency LoRA (LCM-LoRA, rank {rank}, {len(paths)} layers) for {cfg['base']}: "
                f"sample {cfg['base']} --lora NAME --sampler lcm --scheduler sgm_uniform --steps 4 --guidance 1"
            ),
            "distilled_for": distilled.as_dict(),
            "metrics": {"final_loss": round(final, 6)},
            "training": {
                "data": options.data,
                "steps": options.steps,
                "batch_size": options.batch_size,
                "lr": options.lr,
                "seed": options.seed,
                "teacher": cfg["base"],
                "encoder": encoder_name,
                "conditioner": cond_name,
                "teacher_steps": cfg["teacher_steps"],
                "guidance": cfg["guidance"],
                "huber_c": cfg["huber_c"],
            },
        }
        write_json(options.out / "config.json", config)
        write_json(options.out / "metrics.json", {"metrics": entry["metrics"], "history": history})
        write_fragment(options.out, options.name or f"{cfg['base']}-lcm", entry)
        return entry

    return run.publish(write)
