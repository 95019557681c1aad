"""Training machinery shared by families: the public trainer contract, runs, data-parallel
loops, crash-consistent checkpoints, EMA and publishing.

The trainer contract (docs/plugins.md, "Trainer contract"): a family's declaration may name
``"trainer": "module:function"``; ``latentzoo train FAMILY`` (and ``latentzoo.train``) calls
``function(options: TrainOptions) -> dict | None`` and the function returns the registry entry
of what it published (None on ranks other than 0). A trainer builds a ``Run(options)``, takes a
``run.checkpointer(...)``, drives ``run.loop(...)`` and ends with ``run.publish(...)`` (or
``run.publish_component(...)``), so every family gets the same run directory:

- ``checkpoints/step-NNNNNNNN/``: one checkpoint, a single atomic unit: ``checkpoint.safetensors``
  (model, EMA and optimizer tensors), ``state.json`` (step, options, loss history, world
  size, ...) and ``manifest.json`` (written last, the sha256 of both). It is written as
  ``checkpoints/.tmp-step-NNNNNNNN/`` and renamed into place; the last two are kept. A resume
  takes the newest checkpoint whose manifest verifies, never a torn one.
- ``model.safetensors`` + ``config.json``: the trained component (EMA weights for priors),
- ``metrics.json``: held-out metrics and the loss history,
- ``registry.yaml``: a registry fragment naming it, usable with ``--registry``.
All writes are atomic and made by rank 0 only. A run that fails before its first checkpoint
removes the run directory it created.

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
import os
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


MAX_STEPS = 100_000_000  # a bound on --steps that no real run reaches, so a typo is an error, not a hang
MAX_SEED = 2**63


@dataclass
class TrainOptions:
    """What a family's trainer receives: the shared ``latentzoo train`` flags (public API).

    A trainer reads these and nothing else from the command line; family-specific model and
    loss options arrive in ``config`` (from ``--config FILE`` and ``--set KEY=VALUE``), to be
    checked with ``split_options``. ``validate()`` is called by ``latentzoo.train`` before the
    trainer runs.
    """

    out: Path
    """The run directory (created; see the module docstring for its layout)."""
    data: str = "digits"
    """A dataset name declared by a plugin, or a folder of images (``core.data.load_dataset``)."""
    steps: int = 2000
    """Total optimizer steps of the run (a resumed run continues up to this)."""
    batch_size: int = 64
    """The global batch of one optimizer step, over all processes."""
    lr: float = 2e-4
    """Peak learning rate (``run.loop`` applies warm-up and cosine decay)."""
    seed: int = 0
    """Seed of every random draw of the run (0 <= seed < 2**63)."""
    checkpoint_every: int = 500
    """Steps between checkpoints (there is always one at the last step)."""
    resume: bool = False
    """Continue from the newest verified checkpoint in ``out``."""
    name: str | None = None
    """Registry name of the result (default ``<family>-<run directory name>``)."""
    config: dict[str, Any] = field(default_factory=dict)
    """Family options (model shape, loss weights), checked by the trainer with ``split_options``."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Anything else the CLI passes: ``encoder`` (a frozen encoder name) and ``registry_files``."""
    progress: bool = True
    """Show a progress bar (rank 0)."""
    device: str = "auto"
    """``auto`` (CUDA when present), ``cpu`` or ``cuda``."""
    precision: str = "fp32"
    """``fp32`` or ``bf16`` (autocast)."""
    grad_accum: int = 1
    """Micro-batches per optimizer step, of each process's share."""
    clip_grad: float | None = None
    """Max gradient norm: None the family's default, 0 off."""
    workers: int = 0
    """DataLoader worker processes per training process."""

    def validate(self) -> TrainOptions:
        """Refuse impossible values in one line naming the flag (non-finite numbers included)."""
        self.out = Path(self.out)
        ints = {"--steps": self.steps, "--batch-size": self.batch_size, "--checkpoint-every": self.checkpoint_every}
        ints |= {"--grad-accum": self.grad_accum}
        for flag, value in ints.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise LatentzooError(f"{flag} must be a positive integer, not {value!r}")
        if self.steps > MAX_STEPS:
            raise LatentzooError(f"--steps {self.steps} is beyond any real run (at most {MAX_STEPS}); check the number")
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 0:
            raise LatentzooError(f"--workers must be 0 or more, not {self.workers!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < MAX_SEED:
            raise LatentzooError(f"--seed must be an integer from 0 to 2**63-1, not {self.seed!r}")
        if not isinstance(self.lr, (int, float)) or not math.isfinite(self.lr) or self.lr <= 0:
            raise LatentzooError(f"--lr must be a finite positive number, not {self.lr!r}")
        if self.clip_grad is not None and (not math.isfinite(self.clip_grad) or self.clip_grad < 0):
            raise LatentzooError(f"--clip-grad must be a finite number >= 0 (0: off), not {self.clip_grad!r}")
        if self.precision not in PRECISIONS:
            raise LatentzooError(f"--precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}")
        if not isinstance(self.config, dict):
            raise LatentzooError(f"training options (--config / --set) must be a mapping, not {type(self.config).__name__}")
        _check_finite_config(self.config)
        return self


def _check_finite_config(config: Any, path: str = "") -> None:
    """A NaN or Inf family option (``--set lr_decay=.nan``) is refused, naming the key."""
    if isinstance(config, dict):
        for key, value in config.items():
            _check_finite_config(value, f"{path}.{key}" if path else str(key))
    elif isinstance(config, (list, tuple)):
        for i, value in enumerate(config):
            _check_finite_config(value, f"{path}[{i}]")
    elif isinstance(config, float) and not math.isfinite(config):
        raise LatentzooError(f"training option {path} is {config}; give a finite number")


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


CHECKPOINTS = "checkpoints"
KEEP_CHECKPOINTS = 2
_CKPT_FILES = ("checkpoint.safetensors", "state.json")


def _step_dirs(out: Path) -> list[tuple[int, Path]]:
    """Renamed-into-place checkpoint directories of a run, newest first (torn ``.tmp-*`` excluded)."""
    root = Path(out) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        step = child.name.removeprefix("step-")
        if child.name.startswith("step-") and step.isdigit() and child.is_dir():
            found.append((int(step), child))
    return sorted(found, reverse=True)


def verify_checkpoint(directory: Path) -> dict[str, Any]:
    """The state of one checkpoint directory if its manifest names both files with matching
    sha256s; otherwise a LatentzooError saying what is wrong."""
    from .weights import sha256_file

    manifest_file = directory / "manifest.json"
    try:
        manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise LatentzooError(f"{manifest_file} is missing or unreadable ({type(exc).__name__})") from exc
    for name in _CKPT_FILES:
        path = directory / name
        if not path.is_file():
            raise LatentzooError(f"{path} is missing")
        if sha256_file(path) != files.get(name):
            raise LatentzooError(f"{path} does not match its manifest's sha256 (modified or corrupt)")
    try:
        state = json.loads((directory / "state.json").read_text(encoding="utf-8"))
    except ValueError as exc:
        raise LatentzooError(f"{directory / 'state.json'} is not valid JSON ({exc})") from exc
    if not isinstance(state, dict) or state.get("step") != manifest.get("step") or not isinstance(state.get("history"), list):
        raise LatentzooError(f"{directory / 'state.json'} does not hold the state of step {manifest.get('step')}")
    return state


def latest_checkpoint(out: Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint of a run that verifies, with its state; None if the run has none.

    A checkpoint that fails verification is skipped with a warning naming why, so a resume falls
    back to the previous complete one; if none verifies, the error lists what was found.
    """
    problems = []
    for _, directory in _step_dirs(out):
        try:
            state = verify_checkpoint(directory)
        except LatentzooError as exc:
            problems.append(str(exc))
            continue
        for problem in problems:
            warnings.warn(f"skipping a bad checkpoint: {problem}", stacklevel=2)
        return directory, state
    if problems:
        raise LatentzooError(f"no checkpoint in {out} verifies ({'; '.join(problems)}); start a new run in another --out")
    if (Path(out) / "checkpoint.safetensors").exists():
        raise LatentzooError(
            f"{out} holds a checkpoint in the old two-file layout, which cannot be verified; start a new run in another --out"
        )
    return None


class Checkpointer:
    """Saves (rank 0) and restores (every rank) modules and optimizers of one run directory.

    A checkpoint is one atomic unit: a step directory written beside its final place, with a
    manifest (the sha256 of both files) written last, then renamed into place (see the module
    docstring). Each write boundary is a ``crash_point`` for the crash-consistency tests.
    """

    def __init__(self, run: Run, modules: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer]) -> None:
        self.run, self.out = run, Path(run.options.out)
        self.modules, self.optimizers = modules, optimizers

    @property
    def root(self) -> Path:
        return self.out / CHECKPOINTS

    def save(self, step: int, state: dict[str, Any]) -> None:
        if not self.run.world.is_main:
            return
        import shutil

        from .weights import crash_point, sha256_file

        tensors: dict[str, torch.Tensor] = {}
        opt_meta = {}
        for name, module in self.modules.items():
            tensors.update({f"{name}.{k}": v for k, v in module.state_dict().items()})
        for name, opt in self.optimizers.items():
            t, meta = _flatten_optimizer(opt, f"opt_{name}")
            tensors.update(t)
            opt_meta[name] = meta
        final = self.root / f"step-{step:08d}"
        tmp = self.root / f".tmp-{final.name}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        crash_point(f"checkpoint {step}: directory created")
        files = {"checkpoint.safetensors": save_tensors(tmp / "checkpoint.safetensors", {k: v.detach().cpu() for k, v in tensors.items()})}
        crash_point(f"checkpoint {step}: tensors written")
        write_json(tmp / "state.json", {**state, "step": step, "optimizers": opt_meta, **self.run.record()})
        files["state.json"] = sha256_file(tmp / "state.json")
        crash_point(f"checkpoint {step}: state written")
        write_json(tmp / "manifest.json", {"step": step, "files": files})
        crash_point(f"checkpoint {step}: manifest written")
        if final.exists():  # left by a run resumed from an earlier checkpoint: superseded
            final.rename(self.root / f".stale-{final.name}")
        tmp.rename(final)  # the commit point: before it the previous checkpoint stands, after it this one
        crash_point(f"checkpoint {step}: renamed into place")
        self.prune(step)
        crash_point(f"checkpoint {step}: older checkpoints pruned")

    def prune(self, step: int) -> None:
        """Keep the newest KEEP_CHECKPOINTS checkpoints up to ``step``; remove older ones, later
        ones of an abandoned future (a resume from an earlier step) and torn leftovers."""
        import shutil

        if not self.run.world.is_main or not self.root.is_dir():
            return
        kept = [d for s, d in _step_dirs(self.out) if s <= step][:KEEP_CHECKPOINTS]
        for child in self.root.iterdir():
            if child not in kept:
                shutil.rmtree(child, ignore_errors=True)

    def start(self) -> tuple[int, list[dict[str, Any]]]:
        """(first step, loss history): (0, []) for a new run, the checkpoint's with --resume."""
        if not self.run.options.resume:
            return 0, []
        state = self.restore()
        self.prune(state["step"])  # what a kill between a checkpoint's rename and its pruning left
        return state["step"], state["history"]

    def restore(self) -> dict[str, Any]:
        found = self.run.resume_from or latest_checkpoint(self.out)
        if found is None:
            raise LatentzooError(f"--resume: no complete checkpoint in {self.out}; start without --resume")
        directory, state = found
        tensors = load_tensors(directory / "checkpoint.safetensors")
        try:
            for name, module in self.modules.items():
                prefix = f"{name}."
                module.load_state_dict({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)})
            for name, opt in self.optimizers.items():
                _unflatten_optimizer(opt, f"opt_{name}", tensors, state["optimizers"][name])
        except (RuntimeError, KeyError, ValueError) as exc:
            raise LatentzooError(
                f"--resume: the checkpoint in {directory} does not fit this model ({str(exc).splitlines()[0]}); "
                "resume with the run's own options or start a new run"
            ) from exc
        self.run.check_resume(state)
        return state


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


@torch.inference_mode()
def encode_dataset(encoder: Any, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """A frozen encoder's latents of a whole image set, in batches (a latent prior is trained on these)."""
    return torch.cat([encoder.encode(images[i : i + batch]) for i in range(0, len(images), batch)])


def normalise_latents(latents: torch.Tensor) -> tuple[torch.Tensor, float, float]:
    """(latents - shift) * scaling_factor with shift = mean and scaling_factor = 1 / std, both measured.

    The prior's latent-space contract states them (Rombach et al. 2022, sec. 4.3.2 rescales by the
    measured std); they are never defaulted from another model.
    """
    shift = float(latents.mean())
    scaling_factor = float(1.0 / (latents - shift).std())
    return (latents - shift) * scaling_factor, shift, scaling_factor


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


def prepare_run(options: TrainOptions, create: bool = True) -> tuple[Path, dict[str, Any]] | None:
    """Refuse to overwrite a run by accident; on --resume, find the checkpoint to resume from
    (returned) and reuse the run's own options.

    Options given again with --set override the saved ones (e.g. more --steps is a flag,
    not an option, so a resumed run can be extended). A run directory holding only torn
    leftovers of a first checkpoint starts afresh (they are removed).
    """
    import shutil

    out = Path(options.out)
    if out.exists() and not out.is_dir():
        raise LatentzooError(f"--out {out} is a file; give a directory for the run")
    found = None
    if options.resume:
        found = latest_checkpoint(out)
        if found is None:
            raise LatentzooError(f"--resume: no complete checkpoint in {out}; start without --resume")
        saved = found[1].get("options", {})
        options.config = {**(saved if isinstance(saved, dict) else {}), **options.config}
    elif _step_dirs(out) or (out / "checkpoint.safetensors").exists():
        raise LatentzooError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    if not create:
        return found
    if not options.resume:
        shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)  # only torn leftovers can be here (checked above)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LatentzooError(f"cannot create run directory {out}: {exc.strerror or exc}") from exc
    return found


def train(family: str, options: TrainOptions) -> dict[str, Any] | None:
    """Run FAMILY's trainer (the one its plugin declares) with ``options``; return the registry
    entry it published (None on ranks other than 0). The Python API of ``latentzoo train``.

    A run that fails before writing its first checkpoint leaves no run directory behind when it
    created that directory (an existing one is left as it was).
    """
    import shutil

    from .plugins import get_manager
    from .registry import import_target

    trainers = {d["family"]: d["trainer"] for d in get_manager().components().values() if d.get("trainer") and d.get("family")}
    if family not in trainers:
        raise LatentzooError(f"no trainer for family {family!r}; trainable families: {', '.join(sorted(trainers)) or 'none'}")
    options.validate()
    out = Path(options.out)
    from .weights import output_lock

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
