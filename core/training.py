"""Training machinery shared by families: runs, data-parallel loops, checkpoints, EMA.

A run directory holds
- ``checkpoint.safetensors``: model, EMA and optimizer tensors,
- ``state.json``: step, optimizer hyper-parameters, options, loss history, the world size,
- ``model.safetensors`` + ``config.json``: the trained component (EMA weights for priors),
- ``registry.yaml``: a registry fragment naming it, usable with ``--registry``.
All writes are atomic and made by rank 0 only.

Data parallelism (``torchrun --nproc-per-node N -m latentzoo train ...``): ``--batch-size`` is
the *global* batch of one optimizer step. Every rank draws the same global batch (a pure
function of seed and step) and takes its contiguous share; ``--grad-accum`` splits that
share into micro-batches. Gradients are averaged by DistributedDataParallel, so N
processes take the same steps as one process with the same global batch.

Randomness is stateless: per-sample noise is drawn for the whole global batch from a
generator seeded by (seed, step, draw) and sliced (``MicroBatch.randn``), and torch's
global generator (dropout) is reseeded from (seed, step, rank) every step. So a resumed
run needs no RNG state to continue exactly where it stopped, and per-sample noise does not
depend on the world size or on gradient accumulation.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .distributed import all_gather_cat, all_reduce_mean, init_world
from .errors import LatentzooError
from .weights import load_tensors, save_tensors, write_json

PRECISIONS = ("fp32", "bf16")


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
    device: str = "auto"
    precision: str = "fp32"
    grad_accum: int = 1
    clip_grad: float | None = None  # None: the family's default; 0: off
    workers: int = 0


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


def stream_seed(seed: int, step: int, stream: int) -> int:
    """A 63-bit seed for one (run seed, step, stream) triple (splitmix64-style mixing)."""
    x = (seed * 0x9E3779B97F4A7C15 + step * 0xBF58476D1CE4E5B9 + stream * 0x94D049BB133111EB) & (2**64 - 1)
    x ^= x >> 31
    x = (x * 0xBF58476D1CE4E5B9) & (2**64 - 1)
    return (x ^ (x >> 29)) & (2**63 - 1)


def batches(n: int, batch_size: int, seed: int, start_step: int) -> Iterator[torch.Tensor]:
    """Global index batches for steps start_step, start_step+1, ...; epoch e is permutation(seed, e).

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


class StepBatches:
    """Batch sampler of one rank: for each step, its share of the global batch, as
    ``grad_accum`` micro-batches (the distributed sampler: shares of ranks are disjoint)."""

    def __init__(self, n: int, run: Run, start: int) -> None:
        self.n, self.options, self.start = n, run.options, start
        self.rank, self.share, self.micro = run.world.rank, run.share, run.micro

    def __len__(self) -> int:
        return (self.options.steps - self.start) * self.options.grad_accum

    def __iter__(self) -> Iterator[list[int]]:
        stream = batches(self.n, self.options.batch_size, self.options.seed, self.start)
        for _ in range(self.start, self.options.steps):
            share = next(stream)[self.rank * self.share : (self.rank + 1) * self.share]
            for k in range(self.options.grad_accum):
                yield share[k * self.micro : (k + 1) * self.micro].tolist()


def _whole_batch(batch: Any) -> Any:
    """collate_fn: datasets return whole batches from ``__getitems__``."""
    return batch


def _seed_worker(base: int, worker_id: int) -> None:
    """Deterministic per-rank, per-worker seeds for any randomness inside a dataset."""
    import random

    import numpy as np

    seed = stream_seed(base, 0, worker_id)
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


@dataclass
class MicroBatch:
    """One rank's micro-batch of one step, with stateless per-sample random draws."""

    data: torch.Tensor
    labels: torch.Tensor | None
    step: int
    positions: slice  # where these samples sit in the global batch
    global_size: int
    seed: int
    cache: dict[str, Any] = field(default_factory=dict)
    _draws: int = 0

    def __len__(self) -> int:
        return len(self.data)

    def _global(self, draw: Callable[[torch.Generator], torch.Tensor]) -> torch.Tensor:
        self._draws += 1
        generator = torch.Generator().manual_seed(stream_seed(self.seed, self.step, self._draws))
        return draw(generator)[self.positions].to(self.data.device)

    def randn(self, *shape: int) -> torch.Tensor:
        """Standard normal noise (len, *shape): sample j's noise depends on (seed, step, global position)."""
        return self._global(lambda g: torch.randn((self.global_size, *shape), generator=g))

    def rand(self, *shape: int) -> torch.Tensor:
        return self._global(lambda g: torch.rand((self.global_size, *shape), generator=g))

    def randint(self, high: int, *shape: int) -> torch.Tensor:
        return self._global(lambda g: torch.randint(0, high, (self.global_size, *shape), generator=g))


@dataclass
class Phase:
    """One optimizer's part of a step: the loss of a micro-batch, backpropagated and
    accumulated over the step's micro-batches, then clipped and applied."""

    name: str
    optimizer: torch.optim.Optimizer
    module: nn.Module  # what the optimizer trains, as wrapped by Run.wrap
    loss: Callable[[MicroBatch], tuple[torch.Tensor, dict[str, Any]]]  # loss and what to log (detached tensors or floats)
    clip: float | None = None
    when: Callable[[int], bool] | None = None


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
    """Saves (rank 0) and restores (every rank) modules and optimizers of one run directory."""

    def __init__(self, run: Run, modules: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer]) -> None:
        self.run, self.out = run, Path(run.options.out)
        self.modules, self.optimizers = modules, optimizers

    @property
    def path(self) -> Path:
        return self.out / "checkpoint.safetensors"

    def save(self, step: int, state: dict[str, Any]) -> None:
        if not self.run.world.is_main:
            return
        tensors: dict[str, torch.Tensor] = {}
        opt_meta = {}
        for name, module in self.modules.items():
            tensors.update({f"{name}.{k}": v for k, v in module.state_dict().items()})
        for name, opt in self.optimizers.items():
            t, meta = _flatten_optimizer(opt, f"opt_{name}")
            tensors.update(t)
            opt_meta[name] = meta
        save_tensors(self.path, {k: v.detach().cpu() for k, v in tensors.items()})
        write_json(self.out / "state.json", {**state, "step": step, "optimizers": opt_meta, **self.run.record()})

    def start(self) -> tuple[int, list[dict[str, Any]]]:
        """(first step, loss history): (0, []) for a new run, the checkpoint's with --resume."""
        if not self.run.options.resume:
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
        self.run.check_resume(state)
        return state


class Run:
    """One training run on this process: its world (rank, device), run directory and loop."""

    def __init__(self, options: TrainOptions) -> None:
        self.options = options
        if options.precision not in PRECISIONS:
            raise LatentzooError(f"--precision must be one of {', '.join(PRECISIONS)}, not {options.precision!r}")
        if options.grad_accum < 1 or options.workers < 0:
            raise LatentzooError("--grad-accum must be at least 1 and --workers at least 0")
        self.world = init_world(options.device)
        if options.batch_size % (self.world.size * options.grad_accum):
            raise LatentzooError(
                f"--batch-size {options.batch_size} is the global batch: it must divide evenly over {self.world.size} "
                f"process(es) x --grad-accum {options.grad_accum}; use a multiple of {self.world.size * options.grad_accum}"
            )
        self.share = options.batch_size // self.world.size  # this rank's samples per step
        self.micro = self.share // options.grad_accum  # ... per micro-batch
        if options.precision == "bf16" and self.device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise LatentzooError("--precision bf16: this GPU has no bfloat16 support; use --precision fp32")
        prepare_run(options, create=self.world.is_main)
        self.world.barrier()

    @property
    def device(self) -> torch.device:
        return self.world.device

    @property
    def is_main(self) -> bool:
        return self.world.is_main

    def record(self) -> dict[str, Any]:
        """What the checkpoint state says about how the steps were taken."""
        o = self.options
        return {
            "options": o.config,
            "seed": o.seed,
            "world_size": self.world.size,
            "batch_size": o.batch_size,
            "grad_accum": o.grad_accum,
            "precision": o.precision,
            "clip_grad": o.clip_grad,
            "device_type": self.device.type,
        }

    def check_resume(self, state: dict[str, Any]) -> None:
        was = {k: state.get(k) for k in ("world_size", "batch_size", "grad_accum", "precision")}
        now = {k: v for k, v in self.record().items() if k in was}
        changed = [f"{k} {was[k]} -> {now[k]}" for k in was if was[k] is not None and was[k] != now[k]]
        if changed and self.is_main:
            warnings.warn(
                f"resuming with {', '.join(changed)}: the run continues correctly but will not match an uninterrupted run bit for bit",
                stacklevel=3,
            )

    def checkpointer(self, modules: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer]) -> Checkpointer:
        return Checkpointer(self, modules, optimizers)

    def wrap(self, module: nn.Module) -> nn.Module:
        """DistributedDataParallel over the process group (the module itself on one process)."""
        if not self.world.distributed:
            return module
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids)

    def clip(self, family_default: float | None) -> float | None:
        """The gradient-clipping max-norm: --clip-grad, else the family's default; 0 is off."""
        value = family_default if self.options.clip_grad is None else self.options.clip_grad
        return value or None

    def loader(self, dataset: Any, start: int) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """Micro-batches of this rank from ``start`` on; with ``--workers`` decoded in worker processes."""
        from torch.utils.data import DataLoader

        workers = self.options.workers
        base = stream_seed(self.options.seed, 0, 1_000 + self.world.rank)
        return iter(
            DataLoader(
                dataset,
                batch_sampler=StepBatches(len(dataset), self, start),
                num_workers=workers,
                collate_fn=_whole_batch,
                pin_memory=self.device.type == "cuda",
                worker_init_fn=partial(_seed_worker, base) if workers else None,
                generator=torch.Generator().manual_seed(base),
                persistent_workers=False,
            )
        )

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.options.precision == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def loop(
        self,
        dataset: Any,
        phases: list[Phase],
        ckpt: Checkpointer,
        *,
        start: int,
        history: list[dict[str, Any]],
        desc: str,
        state: dict[str, Any],
        after_step: Callable[[int], None] | None = None,
        validate: Callable[[], dict[str, float]] | None = None,
    ) -> list[dict[str, Any]]:
        """The loop every trainer shares: cosine LR with warm-up on all optimizers; per step,
        each active phase accumulates its loss over the micro-batches (DDP synchronises on the
        last), clips and steps; losses are averaged over ranks; rank 0 shows progress, keeps a
        history row every 50 steps and checkpoints every N steps and at the end, where
        ``validate()`` (rank 0) adds held-out metrics to the history.
        """
        o, world = self.options, self.world
        state = {**state, "max_grad_norm": {phase.name: phase.clip for phase in phases}}
        accum, global_batch, micro = o.grad_accum, o.batch_size, self.micro
        bar = progress_bar(o.steps, start, o.progress and world.is_main, desc)
        data = self.loader(dataset, start)
        t0, timed_from = time.perf_counter(), start
        for i in range(start, o.steps):
            for phase in phases:
                for group in phase.optimizer.param_groups:
                    group["lr"] = cosine_lr(i, o.steps, o.lr)
            torch.manual_seed(stream_seed(o.seed, i, -1 - world.rank))  # dropout: a function of (seed, step, rank)
            batch = []
            for k in range(accum):
                x, labels = next(data)
                lo = world.rank * self.share + k * micro
                batch.append(
                    MicroBatch(
                        data=x.to(self.device, non_blocking=True),
                        labels=None if labels is None else labels.to(self.device, non_blocking=True),
                        step=i,
                        positions=slice(lo, lo + micro),
                        global_size=global_batch,
                        seed=o.seed,
                    )
                )
            logs: dict[str, Any] = {}  # tensors or floats, turned into floats once per step
            for phase in phases:
                if phase.when is not None and not phase.when(i):
                    continue
                phase.optimizer.zero_grad(set_to_none=True)
                for k, mb in enumerate(batch):
                    last = k == accum - 1
                    sync = contextlib.nullcontext() if last or not hasattr(phase.module, "no_sync") else phase.module.no_sync()
                    with sync:
                        with self.autocast():
                            loss, parts = phase.loss(mb)
                        (loss / accum).backward()
                    for key, value in parts.items():
                        logs[key] = logs.get(key, 0.0) + value / accum
                if phase.clip:
                    torch.nn.utils.clip_grad_norm_(phase.module.parameters(), phase.clip)
                phase.optimizer.step()
            if after_step is not None:
                after_step(i)
            logs = self.reduce(logs)
            bar.set_postfix({k: f"{v:.3g}" for k, v in logs.items()}, refresh=False)
            bar.update(1)
            checkpoint = (i + 1) % o.checkpoint_every == 0 or i + 1 == o.steps
            if checkpoint and validate is not None and world.is_main:
                logs.update(validate())  # held-out metrics, in the history row of each checkpoint
            if (i + 1) % 50 == 0 or i + 1 == o.steps or (checkpoint and validate is not None):
                history.append({"step": i + 1, **logs})
            if checkpoint:
                seconds = time.perf_counter() - t0
                speed = {"steps": i + 1 - timed_from, "seconds": round(seconds, 3)}
                speed["images_per_second"] = round(speed["steps"] * global_batch / max(seconds, 1e-9), 2)
                extra = {"replicas_identical": self.check_replicas(ckpt.modules)} if world.distributed else {}
                ckpt.save(i + 1, {**state, "history": history, "throughput": speed, **extra})
        bar.close()
        return history

    def check_replicas(self, modules: dict[str, nn.Module]) -> bool:
        """Every rank must hold the same weights; a difference is a bug (e.g. a module changing
        its parameters outside the optimizer on one rank), so it stops the run.

        Compares a float64 fingerprint (sum, sum of squares, a fixed weighted sum) per module.
        """
        prints = []
        for module in modules.values():
            flat = torch.cat([t.detach().double().flatten() for t in module.state_dict().values() if t.is_floating_point()])
            weights = torch.arange(len(flat), dtype=torch.float64, device=flat.device).mul_(0.618034).sin_()
            prints += [flat.sum(), flat.pow(2).sum(), (flat * weights).sum()]
        mine = torch.stack(prints)
        every = all_gather_cat(mine[None])
        differing = [
            name
            for j, name in enumerate(modules)
            if not torch.equal(every[:, 3 * j : 3 * j + 3], mine[None, 3 * j : 3 * j + 3].expand(len(every), 3))
        ]
        if differing:
            raise LatentzooError(
                f"data-parallel ranks hold different weights for {', '.join(differing)}: a module changed its weights outside the optimizer on some ranks"
            )
        return True

    def reduce(self, logs: dict[str, Any]) -> dict[str, float]:
        """Mean of each logged value over ranks (one all-reduce), as floats: the step's only
        device-to-host copy of its losses."""
        if not logs:
            return {}
        keys = sorted(logs)
        values = torch.stack([torch.as_tensor(logs[k], dtype=torch.float64, device=self.device) for k in keys])
        return dict(zip(keys, all_reduce_mean(values).tolist(), strict=True))

    def finish(self) -> None:
        """Wait for rank 0's evaluation and writes, then leave the process group."""
        self.world.barrier()
        self.world.close()

    def publish(self, write: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
        """Rank 0 evaluates and writes the result (``write()`` returns its registry entry);
        every rank then leaves the group. None on the other ranks."""
        entry = write() if self.is_main else None
        self.finish()
        return entry


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


def prepare_run(options: TrainOptions, create: bool = True) -> None:
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
    if not create:
        return
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


def publish_autoencoder(
    run: Run,
    model: nn.Module,
    *,
    family: str,
    config: dict[str, Any],
    history: list[dict[str, Any]],
    evaluate: Callable[[nn.Module, str, dict[str, Any]], dict[str, Any]],
    description: str,
) -> dict[str, Any] | None:
    """The end of an autoencoder run: on rank 0, held-out ``evaluate(model, data, config)`` and
    the run directory's files (class ``<family>.autoencoder``, named by its weights)."""
    from .weights import space_identity

    def write() -> dict[str, Any]:
        model.eval().cpu()
        return finish_autoencoder(
            run.options,
            model,
            family=family,
            component_class=f"{family}.autoencoder",
            config=config,
            metrics=evaluate(model, run.options.data, config),
            history=history,
            identity=space_identity,
            description=description,
        )

    return run.publish(write)


def held_out_split(data_name: str, size: int, channels: int):
    """The held-out split of a named dataset; a folder has none, so all of it."""
    from .data import load_dataset

    try:
        return load_dataset(data_name, split="test", size=size, channels=channels)
    except LatentzooError:
        return load_dataset(data_name, size=size, channels=channels)
