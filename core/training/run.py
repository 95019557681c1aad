"""The data-parallel run (``Run``): world set-up, the step loop over phases and micro-batches,
progress, and ``train`` (``latentzoo train FAMILY``: look up the family's trainer and call it).
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..contract.errors import LatentzooError
from ..runtime.distributed import all_gather_cat, all_reduce_mean, init_world
from .checkpoints import Checkpointer, _step_dirs, prepare_run
from .options import TrainOptions, cosine_lr
from .publish import finish_run
from .streams import MicroBatch, Phase, StepBatches, _seed_worker, _whole_batch, stream_seed


class Run:
    """One training run on this process: its world (rank, device), run directory and loop."""

    def __init__(self, options: TrainOptions) -> None:
        self.options = options.validate()
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
        self.resume_from = prepare_run(options, create=self.world.is_main)
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

    def publish_component(self, state_dict: dict[str, torch.Tensor] | nn.Module, **fields: Any) -> dict[str, Any] | None:
        """Publish a trained component the way every family does: on rank 0, ``finish_run``
        writes ``model.safetensors``, ``config.json``, ``metrics.json`` and ``registry.yaml``
        (the fragment naming it); every rank then leaves the group. ``fields`` are
        ``finish_run``'s (family, component_class, roles, config, latent_space, metrics,
        history, description, encoder). Returns the registry entry (None on other ranks).
        """

        def write() -> dict[str, Any]:
            state = state_dict.state_dict() if isinstance(state_dict, nn.Module) else state_dict
            return finish_run(self.options, state, **fields)

        return self.publish(write)


def train(family: str, options: TrainOptions | None = None, **fields: Any) -> dict[str, Any] | None:
    """Run FAMILY's trainer (the one its plugin declares) with ``options`` (a ``TrainOptions``,
    or its fields as keywords, ``out=`` required); return the registry entry it published (None
    on ranks other than 0). ``latentzoo.train``, the Python API of ``latentzoo train``.

    A run that fails before writing its first checkpoint leaves no run directory behind when it
    created that directory (an existing one is left as it was).
    """
    import shutil

    if options is None:
        options = TrainOptions(**fields)
    elif fields:
        raise TypeError("give a TrainOptions or keyword fields, not both")

    from ..contract.plugins import get_manager
    from ..contract.registry import import_target

    trainers = {d["family"]: d["trainer"] for d in get_manager().components().values() if d.get("trainer") and d.get("family")}
    if family not in trainers:
        raise LatentzooError(f"no trainer for family {family!r}; trainable families: {', '.join(sorted(trainers)) or 'none'}")
    options.validate()
    out = Path(options.out)
    from ..contract.weights import output_lock

    # One writer per run folder (rank 0 of a distributed run holds it for all ranks): a second
    # `train` on it is refused before it reads or removes anything.
    lock = output_lock(out, f"run folder {out}") if os.environ.get("RANK", "0") == "0" else contextlib.nullcontext()
    with lock:
        created = not out.exists()
        try:
            return import_target(trainers[family])(options)
        except BaseException:
            if created and out.is_dir() and not _step_dirs(out):
                shutil.rmtree(out, ignore_errors=True)  # nothing of value: we made it and no checkpoint was written
            raise


def progress_bar(total: int, initial: int, enabled: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, desc=desc, dynamic_ncols=True)
