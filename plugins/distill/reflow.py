"""Reflow of a rectified flow (Liu et al. 2022, "Flow Straight and Fast", sec. 2.3; InstaFlow, Liu et al. 2024).

A flow teacher's ODE couples each noise z0 with the data point x1 it flows to. The straight
interpolation between such a coupled pair is a path the teacher's own (curved) field only
approximates; training on it straightens the flow, so Euler with few steps lands closer to the
teacher's endpoint. One round (``latentzoo distill reflow``):

- **stage 1, pairs.** N noises z0 ~ N(0, I) from a generator seeded by ``--seed``, and
  x1 = the teacher's sampler (its pipeline's flow solver and scheduler) run from z0 at K steps.
  They are written to ``OUT/pairs.safetensors`` (sha256 in ``OUT/pairs.json``), so ``--resume``
  reads them instead of drawing them again.
- **stage 2, student.** Initialised from the teacher's prior, trained with the teacher's own
  flow-matching convention (plugins/flow: noise at t = 1, v = dx_t/dt = noise - data) on the
  straight path between the pair:

      x_t = (1 - t) x1 + t z0,   loss = || v_theta(x_t, t) - (z0 - x1) ||^2,   t ~ U(0, 1)

  (Liu et al. 2022, eq. 1 and alg. 1, with their time reversed to this family's convention). It
  follows the trainer contract (``core.training``: checkpoints, exact ``--resume``, torchrun).

``OUT/registry.yaml`` names the student ``NAME-prior`` and a pipeline ``NAME`` (the teacher's
parts, its sampler and scheduler, ``--sample-steps`` by default), with
``distilled_for: {method: reflow, teacher: ..., sampler: ..., scheduler: ..., teacher_steps: K}``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from latentzoo.core.contract.errors import LatentzooError
from latentzoo.core.training import EMA, MicroBatch, Phase, Run, TrainOptions

from .rounds import _Indices, cpu_seconds

PAIRS_FILE = "pairs.safetensors"
PAIRS_BATCH = 250  # teacher samples per solver call while drawing pairs


@dataclass
class ReflowTeacher:
    """The teacher pipeline, checked (no torch): its flow prior, sampler and scheduler."""

    name: str
    spec: Any  # core.contract.compose.PipelineSpec
    registry: Any
    prior_entry: Any
    sampler: str
    scheduler: str


@dataclass
class ReflowOptions:
    teacher: ReflowTeacher
    out: Path
    name: str
    train: TrainOptions
    pairs: int
    teacher_steps: int
    sample_steps: int = 1
    ema_decay: float = 0.999

    def validate(self) -> ReflowOptions:
        for flag, value in (("--pairs", self.pairs), ("--teacher-steps", self.teacher_steps), ("--sample-steps", self.sample_steps)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise LatentzooError(f"{flag} must be a whole number >= 1, not {value!r}")
        if self.pairs < self.train.batch_size:
            raise LatentzooError(
                f"--pairs {self.pairs} is fewer than --batch-size {self.train.batch_size}: draw more pairs or lower --batch-size"
            )
        if not 0 <= self.ema_decay < 1:
            raise LatentzooError(f"ema decay must be in [0, 1), not {self.ema_decay!r}")
        self.train.validate()
        return self


def resolve_reflow_teacher(
    name: str, *, sampler: str | None = None, scheduler: str | None = None, registries: tuple[str, ...] = ()
) -> ReflowTeacher:
    """The teacher: a pipeline whose prior is a ``flow`` prior, sampled by a flow sampler on a flow scheduler."""
    from latentzoo.core.contract.compose import resolve_component

    from .teacher import load_teacher

    spec, registry, prior = load_teacher(
        name,
        "flow",
        "reflow straightens the ODE of a rectified flow: pick a flow pipeline such as digits-flow "
        "(for a denoiser use `distill progressive`)",
        registries,
    )
    if prior.conditioning is not None:
        raise LatentzooError(f"teacher {name} is conditional ({prior.conditioning.kind}); reflow here takes an unconditional flow")
    sampler_name, scheduler_name = sampler or spec.sampler, scheduler or spec.scheduler
    sampler_entry = resolve_component(registry, sampler_name, "sampler")
    if "flow" not in tuple(registry.declaration(sampler_entry).get("drives") or ()):
        raise LatentzooError(f"teacher {name}: sampler {sampler_name} does not drive a flow prior; pass --sampler flow-euler")
    if not scheduler_name:
        raise LatentzooError(f"teacher {name} has no scheduler; pass --scheduler flow-shift")
    resolve_component(registry, scheduler_name, "scheduler")
    return ReflowTeacher(name, spec, registry, prior, sampler_name, scheduler_name)


@torch.no_grad()
def draw_pairs(opts: ReflowOptions, builder: Any, prior: torch.nn.Module, device: torch.device) -> dict[str, torch.Tensor]:
    """Stage 1: (z0, x1) with z0 ~ N(0, I) seeded by ``--seed`` and x1 the teacher's solver from z0 at K steps."""
    t = opts.teacher
    sampler = builder.component(t.sampler, "sampler")
    levels = [float(s) for s in builder.component(t.scheduler, "scheduler").schedule(prior, opts.teacher_steps)]
    generator = torch.Generator().manual_seed(opts.train.seed)
    z0 = torch.randn((opts.pairs, *prior.latent_shape), generator=generator)
    x1 = torch.empty_like(z0)
    for lo in range(0, opts.pairs, PAIRS_BATCH):
        noise = z0[lo : lo + PAIRS_BATCH].to(device)
        out = sampler.sample(prior, noise, levels=levels, generator=torch.Generator().manual_seed(lo))
        x1[lo : lo + PAIRS_BATCH] = out.float().cpu()
    return {"z0": z0.contiguous(), "x1": x1.contiguous()}


def pairs_stamp(opts: ReflowOptions) -> dict[str, Any]:
    """What the saved pairs were drawn with: a resume with other values would train on other data."""
    return {
        "teacher": opts.teacher.name,
        "pairs": opts.pairs,
        "teacher_steps": opts.teacher_steps,
        "seed": opts.train.seed,
        "sampler": opts.teacher.sampler,
        "scheduler": opts.teacher.scheduler,
    }


def load_or_draw_pairs(opts: ReflowOptions, run: Run, builder: Any, prior: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The pairs of ``OUT/pairs.safetensors`` (checked against their sha256 and stamp), or drawn and written by rank 0."""
    from latentzoo.core.contract.weights import load_tensors, save_tensors, write_bytes

    path, meta = opts.out / PAIRS_FILE, opts.out / "pairs.json"
    stamp = pairs_stamp(opts)
    if run.is_main and not (path.is_file() and meta.is_file()):
        pairs = draw_pairs(opts, builder, prior, run.device)
        sha = save_tensors(path, pairs, metadata={"kind": "reflow-pairs"})
        write_bytes(meta, json.dumps({**stamp, "sha256": sha}, indent=1).encode())
    run.world.barrier()
    saved = json.loads(meta.read_text(encoding="utf-8"))
    if {k: saved.get(k) for k in stamp} != stamp:
        changed = ", ".join(f"{k} {saved.get(k)} -> {v}" for k, v in stamp.items() if saved.get(k) != v)
        raise LatentzooError(f"{path} was drawn with other settings ({changed}); resume with the same ones or choose another -o")
    return load_tensors(path, saved["sha256"])


def reflow_loss(student: torch.nn.Module, pairs: dict[str, torch.Tensor]):
    """Flow matching on the straight path between a coupled pair (this family's convention: noise at t = 1)."""
    z0_all, x1_all = pairs["z0"], pairs["x1"]

    def loss(mb: MicroBatch) -> tuple[torch.Tensor, dict[str, Any]]:
        rows = mb.data.cpu()
        z0, x1 = z0_all[rows].to(mb.data.device), x1_all[rows].to(mb.data.device)
        t = mb.rand()
        tt = t.view(-1, 1, 1, 1)
        x_t = (1 - tt) * x1 + tt * z0  # Liu et al. 2022, eq. 1, time reversed: x_1 = noise, x_0 = data
        value = F.mse_loss(student(x_t, t).float(), z0 - x1)  # the straight path's velocity dx_t/dt
        return value, {"loss": value.detach()}

    return loss


def reflow(opts: ReflowOptions) -> dict[str, Any] | None:
    """Draw (or reload) the pairs, train the student and write ``OUT/registry.yaml``; the document (None off rank 0)."""
    import shutil

    from latentzoo.core.contract.plugins import get_manager
    from latentzoo.core.contract.registry import import_target
    from latentzoo.core.runtime.build import Builder

    opts.validate()
    out = opts.out
    if out.exists() and not out.is_dir():
        raise LatentzooError(f"-o {out} is a file; give a directory for the run")
    created = not out.exists()
    options = opts.train
    options.out, options.name = out, f"{opts.name}-prior"
    options.config = {"method": "reflow", "teacher": opts.teacher.name, "pairs": opts.pairs, "teacher_steps": opts.teacher_steps}
    cpu0 = cpu_seconds()
    run = Run(options)  # refuses an existing run without --resume, before anything is written
    try:
        builder = Builder(opts.teacher.registry)
        prior = builder.component(opts.teacher.spec.prior, "prior").to(run.device).eval()
        pairs = load_or_draw_pairs(opts, run, builder, prior)
        entry_data = opts.teacher.prior_entry.data
        config = dict(entry_data.get("config") or {})
        decl = get_manager().components()[entry_data["class"]]
        torch.manual_seed(options.seed)
        model = import_target(decl["target"])(**config)
        model.load_state_dict(prior.state_dict())  # the student starts as its teacher (Liu et al. 2022, alg. 1)
        model = model.to(run.device).train()
        ema = EMA(model, opts.ema_decay)
        opt = torch.optim.AdamW(model.parameters(), lr=options.lr, weight_decay=0.0)
        ckpt = run.checkpointer({"model": model, "ema": ema.model}, {"opt": opt})
        start, history = ckpt.start()
        wrapped = run.wrap(model)
        history = run.loop(
            _Indices(opts.pairs),
            [Phase("student", opt, wrapped, reflow_loss(wrapped, pairs), clip=run.clip(1.0))],
            ckpt,
            start=start,
            history=history,
            desc="distill reflow",
            state={"config": config, "ema_decay": opts.ema_decay},
            after_step=lambda i: ema.update(model, i),
        )
    except BaseException:
        if run.is_main and created and out.is_dir() and not (out / "checkpoints").exists():
            shutil.rmtree(out, ignore_errors=True)  # nothing of value: we made it and no checkpoint was written
        raise

    def write() -> dict[str, Any]:
        from latentzoo.core.contract.distilled import DistilledFor
        from latentzoo.core.training import finish_run

        final = sum(h["loss"] for h in history[-10:]) / max(1, len(history[-10:]))
        t = opts.teacher
        entry = finish_run(
            options,
            {k: v.detach().cpu() for k, v in ema.model.state_dict().items()},
            family=entry_data.get("family", "flow"),
            component_class=entry_data["class"],
            roles=["prior"],
            config=config,
            latent_space=dict(entry_data["latent_space"]),
            metrics={"final_loss": round(final, 6), "cpu_minutes": round((cpu_seconds() - cpu0) / 60, 2)},
            history=history,
            description=(
                f"{t.name} reflowed once (Liu et al. 2022): flow matching on {opts.pairs} straight (noise, "
                f"{t.sampler} at {opts.teacher_steps} steps) pairs"
            ),
        )
        entry["distilled_for"] = DistilledFor(
            method="reflow", teacher=t.name, sampler=t.sampler, scheduler=t.scheduler, teacher_steps=opts.teacher_steps
        ).as_dict()
        return write_registry(opts, entry)

    return run.publish(write)


def write_registry(opts: ReflowOptions, entry: dict[str, Any]) -> dict[str, Any]:
    """``OUT/registry.yaml``: ``NAME-prior`` and a pipeline ``NAME`` (the teacher's parts, the student as prior)."""
    import yaml

    from latentzoo.core.contract.weights import write_bytes

    spec = opts.teacher.spec
    body: dict[str, Any] = dict(spec.parts())
    body.update(prior=f"{opts.name}-prior", sampler=opts.teacher.sampler, scheduler=opts.teacher.scheduler)
    body["defaults"] = {**{k: v for k, v in spec.defaults.items() if k != "steps"}, "steps": opts.sample_steps}
    body["description"] = entry["description"] + f"; {opts.sample_steps} step(s) by default"
    doc = {"components": {f"{opts.name}-prior": entry}, "pipelines": {opts.name: body}}
    write_bytes(opts.out / "registry.yaml", yaml.safe_dump(doc, sort_keys=False).encode())
    return doc
