"""Training machinery shared by families: run directories, checkpoints, EMA, batches.

A run directory holds
- ``checkpoint.safetensors``: model, EMA and optimizer tensors and the RNG states,
- ``state.json``: step, optimizer hyper-parameters, config, loss history,
- ``model.safetensors`` + ``config.json``: the trained component (EMA weights for priors),
- ``registry.yaml``: a registry fragment naming it, usable with ``--registry``.
All writes are atomic. ``--resume`` restores everything, so a resumed run continues the
same random stream: stopping at step k and resuming matches an uninterrupted run.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import LatentzooError
from .weights import load_tensors, save_tensors, write_json


@dataclass
class TrainOptions:
    """Options every trainer understands (the CLI's shared flags)."""

    out: Path
    data: str = "digits"
    steps: int = 2000
    batch_size: int = 64
    lr: float = 2e-4
    seed: int = 0
    checkpoint_every: int = 500
    resume: bool = False
    name: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    progress: bool = True


class EMA:
    """Exponential moving average of parameters (Polyak averaging), kept as a frozen copy."""

    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        # Warm-up (as in many diffusion codebases): short runs are not dominated by the init.
        decay = min(self.decay, (1 + step) / (10 + step))
        for ema_p, p in zip(self.model.parameters(), model.parameters(), strict=True):
            ema_p.lerp_(p, 1.0 - decay)
        for ema_b, b in zip(self.model.buffers(), model.buffers(), strict=True):
            ema_b.copy_(b)


def batches(n: int, batch_size: int, seed: int, start_step: int) -> Iterator[torch.Tensor]:
    """Index batches for steps start_step, start_step+1, ...; epoch e is permutation(seed, e).

    A pure function of (seed, step), so resuming at any step sees the same batches.
    """
    if n < batch_size:
        raise LatentzooError(f"the dataset has {n} images, fewer than --batch-size {batch_size}; lower --batch-size")
    per_epoch = n // batch_size
    step = start_step
    while True:
        epoch, j = divmod(step, per_epoch)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        while j < per_epoch:
            yield order[j * batch_size : (j + 1) * batch_size]
            j += 1
            step += 1


def _flatten_optimizer(opt: torch.optim.Optimizer, prefix: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, state in sd["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"{prefix}.{idx}.{key}"] = value
            else:
                scalars[f"{idx}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _unflatten_optimizer(opt: torch.optim.Optimizer, prefix: str, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith(prefix + "."):
            idx, name = key[len(prefix) + 1 :].split(".", 1)
            state.setdefault(int(idx), {})[name] = value
    for key, value in meta["scalars"].items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


class Checkpointer:
    """Saves and restores modules, optimizers and RNG streams of one run directory."""

    def __init__(
        self, options: TrainOptions, modules: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer], generator: torch.Generator
    ) -> None:
        self.out, self.options = Path(options.out), dict(options.config)
        self.modules, self.optimizers, self.generator = modules, optimizers, generator

    @property
    def path(self) -> Path:
        return self.out / "checkpoint.safetensors"

    def save(self, step: int, state: dict[str, Any]) -> None:
        tensors: dict[str, torch.Tensor] = {}
        opt_meta = {}
        for name, module in self.modules.items():
            tensors.update({f"{name}.{k}": v for k, v in module.state_dict().items()})
        for name, opt in self.optimizers.items():
            t, meta = _flatten_optimizer(opt, f"opt_{name}")
            tensors.update(t)
            opt_meta[name] = meta
        tensors["rng.torch"] = torch.get_rng_state()
        tensors["rng.generator"] = self.generator.get_state()
        save_tensors(self.path, tensors)
        write_json(self.out / "state.json", {**state, "step": step, "optimizers": opt_meta, "options": self.options})

    def start(self, resume: bool) -> tuple[int, list[dict[str, Any]]]:
        """(first step, loss history): (0, []) for a new run, the checkpoint's with --resume."""
        if not resume:
            return 0, []
        state = self.restore()
        return state["step"], state["history"]

    def restore(self) -> dict[str, Any]:
        state_file = self.out / "state.json"
        if not (self.path.is_file() and state_file.is_file()):
            raise LatentzooError(f"--resume: no checkpoint in {self.out}; start without --resume")
        tensors = load_tensors(self.path)
        state = json.loads(state_file.read_text())
        for name, module in self.modules.items():
            prefix = f"{name}."
            module.load_state_dict({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)})
        for name, opt in self.optimizers.items():
            _unflatten_optimizer(opt, f"opt_{name}", tensors, state["optimizers"][name])
        torch.set_rng_state(tensors["rng.torch"])
        self.generator.set_state(tensors["rng.generator"])
        return state


def split_options(family: str, config: dict[str, Any], *groups: dict[str, Any], extra: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Each group of defaults overridden by ``config``; ``extra`` keys (optional, no default)
    go to the first group. An unknown key is an error naming the known ones."""
    known = set().union(*groups, extra)
    unknown = set(config) - known
    if unknown:
        raise LatentzooError(f"unknown {family} option(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
    out = [{**group, **{k: v for k, v in config.items() if k in group}} for group in groups]
    out[0].update({k: v for k, v in config.items() if k in extra})
    return out


def prepare_run(options: TrainOptions) -> None:
    """Refuse to overwrite a run by accident; on --resume, reuse the run's own options.

    Options given again with --set override the saved ones (e.g. more --steps is a flag,
    not an option, so a resumed run can be extended).
    """
    out = options.out
    if out.exists() and not out.is_dir():
        raise LatentzooError(f"--out {out} is a file; give a directory for the run")
    if not options.resume and (out / "checkpoint.safetensors").exists():
        raise LatentzooError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    if options.resume:
        state_file = out / "state.json"
        if not state_file.is_file():
            raise LatentzooError(f"--resume: no checkpoint in {out}; start without --resume")
        options.config = {**json.loads(state_file.read_text()).get("options", {}), **options.config}
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LatentzooError(f"cannot create run directory {out}: {exc.strerror or exc}") from exc


def cosine_lr(step: int, total: int, base: float, warmup: int = 100) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    return base * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


def progress_bar(total: int, initial: int, enabled: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, desc=desc, dynamic_ncols=True)


def write_fragment(out: Path, name: str, entry: dict[str, Any]) -> Path:
    """A registry fragment naming the trained component (usable with ``--registry``)."""
    import yaml

    from .weights import write_bytes

    text = yaml.safe_dump({"components": {name: entry}}, sort_keys=False)
    return write_bytes(out / "registry.yaml", text.encode())


def finish_run(
    options: TrainOptions,
    state_dict: dict[str, torch.Tensor],
    *,
    family: str,
    component_class: str,
    roles: list[str],
    config: dict[str, Any],
    latent_space: dict[str, Any] | Callable[[str], dict[str, Any]],
    metrics: dict[str, Any],
    history: list[dict[str, Any]],
    description: str,
    encoder: str | None = None,
) -> dict[str, Any]:
    """Write model.safetensors, config.json, metrics.json and registry.yaml; return the entry.

    ``latent_space`` may be a function of the weights' sha256 (an autoencoder's identity).
    """
    sha = save_tensors(options.out / "model.safetensors", state_dict, metadata={"family": family})
    training = {"data": options.data, "steps": options.steps, "batch_size": options.batch_size, "lr": options.lr, "seed": options.seed}
    if encoder:
        training["encoder"] = encoder
    entry = {
        "family": family,
        "class": component_class,
        "roles": roles,
        "config": config,
        "weights": {"path": "model.safetensors", "sha256": sha},
        "latent_space": latent_space(sha) if callable(latent_space) else latent_space,
        "license": "MIT",
        "description": description,
        "metrics": metrics,
        "training": training,
    }
    write_json(options.out / "config.json", config)
    write_json(options.out / "metrics.json", {"metrics": metrics, "history": history})
    write_fragment(options.out, options.name or f"{family}-{Path(options.out).name}", entry)
    return entry


def finish_autoencoder(options: TrainOptions, model: nn.Module, *, identity: Callable[[str], str], **fields: Any) -> dict[str, Any]:
    """finish_run for an autoencoder: it defines its own latent space, named by its weights."""
    return finish_run(
        options,
        model.state_dict(),
        roles=["encoder", "decoder"],
        latent_space=lambda sha: {**model.shape_fields(), "autoencoder": identity(sha)},
        **fields,
    )


def held_out_split(data_name: str, size: int, channels: int):
    """The held-out split of a named dataset; a folder has none, so all of it."""
    from .data import load_dataset

    try:
        return load_dataset(data_name, split="test", size=size, channels=channels)
    except LatentzooError:
        return load_dataset(data_name, size=size, channels=channels)


def train_loop(
    options: TrainOptions,
    ckpt: Checkpointer,
    *,
    start: int,
    history: list[dict[str, Any]],
    num_examples: int,
    step: Callable[[int, torch.Tensor], dict[str, float]],
    desc: str,
    state: dict[str, Any],
) -> list[dict[str, Any]]:
    """The loop every trainer shares: cosine LR with warm-up on all optimizers, progress
    with the losses, a history row every 50 steps, and checkpoints every N steps and at the end.

    ``step(i, batch_indices)`` does one optimisation step and returns its losses.
    """
    bar = progress_bar(options.steps, start, options.progress, desc)
    stream = batches(num_examples, options.batch_size, options.seed, start)
    for i in range(start, options.steps):
        for opt in ckpt.optimizers.values():
            for group in opt.param_groups:
                group["lr"] = cosine_lr(i, options.steps, options.lr)
        logs = step(i, next(stream))
        bar.set_postfix({k: f"{v:.3g}" for k, v in logs.items()}, refresh=False)
        bar.update(1)
        if (i + 1) % 50 == 0:
            history.append({"step": i + 1, **logs})
        if (i + 1) % options.checkpoint_every == 0 or i + 1 == options.steps:
            ckpt.save(i + 1, {**state, "history": history, "seed": options.seed})
    bar.close()
    return history
