"""Progressive and guidance distillation runs under the trainer contract.

One distillation run is a sequence of stages, each a trainer-contract run directory of its own
(``OUT/stage-0/``, ``OUT/round-1/``, ...: checkpoints, exact ``--resume``, torchrun data
parallelism, ``model.safetensors`` + ``registry.yaml``), and ``OUT/registry.yaml`` names every
finished student as a component and a pipeline, so ``latentzoo sample NAME --registry
OUT/registry.yaml`` runs one at once.

- **stage 0** (only when needed): one teacher evaluation per sample at a random training
  timestep. With ``guidance`` it is Meng et al. 2023's first stage: the student takes w as an
  input and matches the guided teacher x_hat^w = x_hat(z, uncond) + w (x_hat(z, cond) -
  x_hat(z, uncond)). Without guidance it only moves the student to the paper's v-prediction
  (an epsilon teacher's output turned into v), so every round starts from a v-model.
- **round k**: Salimans & Ho 2022, Algorithm 2. The student, initialised from its teacher (the
  previous stage's student), learns to take in one DDIM step what the teacher takes in two, on
  the teacher's levels at 2N steps; it samples at N.

Each stage's entry records ``distilled_for`` (core.contract.distilled: method, sampler, scheduler, steps,
guidance range): request validation warns when a student runs otherwise (core.runtime.distilled).
"""

from __future__ import annotations

import copy
import resource
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from latentzoo.core.contract.errors import LatentzooError
from latentzoo.core.training import EMA, MicroBatch, Phase, Run, TrainOptions

from .algorithm import ddim_step, nested, predict_x0, two_step_target, weighted_x_loss
from .teacher import Built, TeacherSpec, build_teacher, levels

PREDICTIONS = ("v_prediction", "sample", "epsilon")


@dataclass
class DistillOptions:
    """A distillation run: the teacher plan, the student's parametrisation and each stage's training options."""

    teacher: TeacherSpec
    out: Path
    name: str
    train: TrainOptions  # steps, batch size, lr, seed, ... of every stage (out is set per stage)
    prediction: str = "v_prediction"
    guidance: tuple[float, float] | None = None  # guidance distillation: w ~ U[low, high]
    dropout: float = 0.1  # conditioning dropout: the student keeps its unconditional branch
    ema_decay: float = 0.999

    def validate(self) -> DistillOptions:
        if self.prediction not in PREDICTIONS:
            raise LatentzooError(
                f"--prediction must be one of {', '.join(PREDICTIONS)} (Salimans & Ho 2022, sec. 4), not {self.prediction!r}"
            )
        if self.guidance is not None:
            lo, hi = self.guidance
            if not (0 <= lo < hi <= 20):
                raise LatentzooError(f"--guidance-range must be LOW HIGH with 0 <= LOW < HIGH <= 20, not {lo:g} {hi:g}")
            if self.teacher.conditioning is None:
                raise LatentzooError(
                    f"teacher {self.teacher.name} is unconditional: there is no guidance to distil; "
                    "use a conditional teacher (digits-cond, digits-t2i) or `distill progressive`"
                )
        self.train.validate()
        return self

    def stages(self) -> list[str]:
        """Stage directory names in order: stage-0 for guidance distillation, then round-1 ...

        An epsilon teacher's first-round student starts from the teacher's weights read as v (or x0):
        the round teaches the new parametrisation together with the halving, on the levels it needs.
        """
        first = ["stage-0"] if self.guidance is not None else []
        return first + [f"round-{k}" for k in range(1, self.teacher.rounds + 1)]


def cpu_seconds() -> float:
    """User + system CPU time of this process (every thread): the cost the issue asks for, not wall time."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Student:
    """A student network of the teacher's architecture (or a GuidedStudent around it) and its entry fields."""

    def __init__(self, component_class: str, config: dict[str, Any], family: str) -> None:
        from latentzoo.core.contract.plugins import get_manager
        from latentzoo.core.contract.registry import import_target

        self.component_class, self.config, self.family = component_class, config, family
        decl = get_manager().components()[component_class]
        self.model: nn.Module = import_target(decl["target"])(**config)

    @classmethod
    def from_teacher(
        cls, opts: DistillOptions, teacher: nn.Module, teacher_class: str, teacher_config: dict[str, Any], family: str
    ) -> Student:
        """Initialised from the teacher (Algorithm 2, line 2), with the student's prediction type and, for
        guidance distillation, the w embedding (zero at first)."""
        if opts.guidance is not None and not getattr(teacher, "guidance_input", False):
            base_config = {**teacher_config, "prediction_type": opts.prediction}
            student = cls(
                "distill.guided", {"base": teacher_class, "base_config": base_config, "guidance_range": list(opts.guidance)}, "distill"
            )
            student.model.net.load_state_dict(teacher.state_dict())
            return student
        if teacher_class == "distill.guided":
            config = {**teacher_config, "base_config": {**teacher_config["base_config"], "prediction_type": opts.prediction}}
        else:
            config = {**teacher_config, "prediction_type": opts.prediction}
        student = cls(teacher_class, config, family)
        student.model.load_state_dict(teacher.state_dict())
        return student


def _call(
    built: Built, model: nn.Module, z: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None, w: torch.Tensor | None
) -> torch.Tensor:
    extra = {"guidance": w} if getattr(_inner(model), "guidance_input", False) else {}
    return built.conditioning.call(model, z, t, cond, **extra)


def _inner(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)  # DistributedDataParallel wraps the student


def stage_loss(opts: DistillOptions, built: Built, teacher: nn.Module, student: nn.Module, round_levels: list[float] | None):
    """The loss of one micro-batch: stage 0 (``round_levels`` None) or a progressive round on ``round_levels``
    (the teacher's 2N levels, then 0)."""
    schedule = built.prior.noise_schedule
    device = built.latents.device
    teacher_type, student_type = teacher.prediction_type, _inner(student).prediction_type
    guided_teacher = opts.guidance is not None and not getattr(teacher, "guidance_input", False)
    lo, hi = opts.guidance or (1.0, 1.0)
    abar_all = schedule.alphas_cumprod.float().to(device)
    if round_levels is not None:
        abar_levels = torch.tensor([schedule.alpha_bar(s) for s in round_levels], dtype=torch.float64)
        t_levels = torch.tensor([schedule.timestep(s) for s in round_levels[:-1]] + [0.0], dtype=torch.float64)
        abar_levels, t_levels = abar_levels.float().to(device), t_levels.float().to(device)
        n_student = (len(round_levels) - 1) // 2

    def teacher_x0(z: torch.Tensor, t: torch.Tensor, abar: torch.Tensor, cond: torch.Tensor | None, w: torch.Tensor) -> torch.Tensor:
        if guided_teacher and cond is not None:
            out = built.conditioning.guided(teacher, z, t, cond, w)
        else:
            out = _call(built, teacher, z, t, cond, w)
        return predict_x0(out.float(), z, abar, teacher_type)

    def loss(mb: MicroBatch) -> tuple[torch.Tensor, dict[str, Any]]:
        x = built.latents[mb.data]
        eps = mb.randn(*x.shape[1:])
        cond = built.conditioning.draw(mb, opts.dropout) if built.conditioning.kind else None
        w = lo + (hi - lo) * mb.rand()
        with torch.no_grad():
            if round_levels is None:  # stage 0: one teacher evaluation at a random training timestep
                step = mb.randint(schedule.num_train_timesteps)
                abar_t, t = abar_all[step], step.float()
                z = abar_t.sqrt().view(-1, 1, 1, 1) * x + (1 - abar_t).sqrt().view(-1, 1, 1, 1) * eps
                target = teacher_x0(z, t, abar_t, cond, w)
            else:  # Algorithm 2: two teacher DDIM steps t -> t' -> t'' give x_tilde
                j = 2 * mb.randint(n_student)
                abar_t, abar_t1, abar_t2 = abar_levels[j], abar_levels[j + 1], abar_levels[j + 2]
                t, t1 = t_levels[j], t_levels[j + 1]
                z = abar_t.sqrt().view(-1, 1, 1, 1) * x + (1 - abar_t).sqrt().view(-1, 1, 1, 1) * eps
                z1 = ddim_step(z, teacher_x0(z, t, abar_t, cond, w), abar_t, abar_t1)
                z2 = ddim_step(z1, teacher_x0(z1, t1, abar_t1, cond, w), abar_t1, abar_t2)
                target = two_step_target(z, z2, abar_t, abar_t2)
        x_hat = predict_x0(_call(built, student, z, t, cond, w).float(), z, abar_t, student_type)
        value = weighted_x_loss(x_hat, target, abar_t)
        return value, {"loss": value.detach()}

    return loss


class _Indices(torch.utils.data.Dataset):
    """The training set as row indices: the loss looks latents (and captions) up by row."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        rows = torch.tensor(indices, dtype=torch.long)
        return rows, rows

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.__getitems__([i])


@dataclass
class Stage:
    """A finished stage: its student (frozen, the next stage's teacher) and registry entry."""

    name: str
    model: nn.Module
    component_class: str
    config: dict[str, Any]
    family: str
    entry: dict[str, Any]


def stage_options(opts: DistillOptions, stage: str) -> TrainOptions:
    o = copy.copy(opts.train)
    o.out, o.config = opts.out / stage, {"stage": stage, "teacher": opts.teacher.name}
    o.name = f"{opts.name}-{stage}"
    o.resume = opts.train.resume and (o.out / "checkpoints").is_dir()  # a stage not begun yet starts afresh
    return o


def run_stage(opts: DistillOptions, built: Built, teacher: Stage, stage: str, index: int) -> Stage:
    """Train one stage (resuming its checkpoints with --resume) and publish its student."""
    from latentzoo.core.training import finish_run

    cpu0 = cpu_seconds()
    options = stage_options(opts, stage)
    run = Run(options)
    student = Student.from_teacher(opts, teacher.model, teacher.component_class, teacher.config, teacher.family)
    model = student.model.to(run.device).train()
    ema = EMA(model, opts.ema_decay)
    round_levels = None
    steps = opts.teacher.steps_after(index) if stage != "stage-0" else opts.teacher.teacher_steps
    if stage != "stage-0":
        round_levels = levels(built.builder, opts.teacher.scheduler, built.prior, 2 * steps)
    opt = torch.optim.AdamW(model.parameters(), lr=options.lr, weight_decay=0.0)
    ckpt = run.checkpointer({"model": model, "ema": ema.model}, {"opt": opt})
    start, history = ckpt.start()
    wrapped = run.wrap(model)
    loss = stage_loss(opts, built, teacher.model, wrapped, round_levels)
    history = run.loop(
        _Indices(len(built.latents)),
        [Phase("student", opt, wrapped, loss, clip=run.clip(1.0))],
        ckpt,
        start=start,
        history=history,
        desc=f"distill {stage}",
        state={"config": student.config, "ema_decay": opts.ema_decay},
        after_step=lambda i: ema.update(model, i),
    )
    distilled = distilled_for(opts, stage, steps)

    def write() -> dict[str, Any]:
        final = sum(h["loss"] for h in history[-10:]) / max(1, len(history[-10:]))
        prior = opts.teacher.prior_entry
        entry = finish_run(
            options,
            {k: v.detach().cpu() for k, v in ema.model.state_dict().items()},
            family=student.family,
            component_class=student.component_class,
            roles=["prior"],
            config=student.config,
            latent_space=dict(prior.data["latent_space"]),
            metrics={"final_loss": round(final, 6), "cpu_minutes": round((cpu_seconds() - cpu0) / 60, 2)},
            history=history,
            description=describe(opts, stage, steps),
        )
        if prior.data.get("conditioning"):
            entry["conditioning"] = dict(prior.data["conditioning"])
        entry["distilled_for"] = distilled
        from latentzoo.core.training import write_fragment

        write_fragment(options.out, options.name, entry)
        return entry

    # As Run.publish, but the process group stays up for the next stage (distill() leaves it at the end).
    entry = write() if run.is_main else {}
    run.world.barrier()
    frozen = ema.model.cpu().eval().requires_grad_(False).to(run.device)
    return Stage(stage, frozen, student.component_class, student.config, student.family, entry)


def distilled_for(opts: DistillOptions, stage: str, steps: int) -> dict[str, Any]:
    """What the student was trained for: the method, and for a round the sampler, scheduler and steps."""
    from latentzoo.core.contract.distilled import DistilledFor

    plan: dict[str, Any] = {}
    if stage != "stage-0":
        plan = {"sampler": opts.teacher.sampler, "scheduler": opts.teacher.scheduler, "steps": steps, "teacher_steps": 2 * steps}
    method = "progressive" if stage != "stage-0" else "single-step"
    return DistilledFor(method=method, teacher=opts.teacher.name, guidance=opts.guidance, **plan).as_dict()


def describe(opts: DistillOptions, stage: str, steps: int) -> str:
    what = f"{opts.teacher.name} student ({opts.prediction})"
    if opts.guidance is not None:
        what += f", guidance w in [{opts.guidance[0]:g}, {opts.guidance[1]:g}] as an input (Meng et al. 2023)"
    if stage == "stage-0":
        return f"{what}: stage 0, matches the teacher at single timesteps"
    return f"{what}: progressive distillation (Salimans & Ho 2022), {opts.teacher.sampler} on {opts.teacher.scheduler} at {steps} steps"


def load_stage(opts: DistillOptions, stage: str, device: torch.device) -> Stage | None:
    """A stage published by an earlier (interrupted) run, or None."""
    import yaml

    from latentzoo.core.contract.weights import load_tensors
    from latentzoo.core.training import latest_checkpoint

    fragment = opts.out / stage / "registry.yaml"
    found = latest_checkpoint(opts.out / stage) if fragment.is_file() else None
    if found is None or found[1]["step"] < opts.train.steps:
        return None  # not published, or --resume with more --steps: the stage continues from its checkpoint
    entry = next(iter(yaml.safe_load(fragment.read_text(encoding="utf-8"))["components"].values()))
    student = Student(entry["class"], entry["config"], entry["family"])
    student.model.load_state_dict(load_tensors(opts.out / stage / "model.safetensors", entry["weights"]["sha256"]))
    return Stage(stage, student.model.to(device).eval().requires_grad_(False), entry["class"], entry["config"], entry["family"], entry)


def distill(opts: DistillOptions) -> dict[str, Any] | None:
    """Run every stage in order (published ones are reused with --resume) and write ``OUT/registry.yaml``;
    returns the document written (None on ranks other than 0)."""
    import os

    from latentzoo.core.contract.weights import output_lock
    from latentzoo.core.runtime.build import Builder
    from latentzoo.core.runtime.distributed import resolve_device

    opts.validate()
    stages = opts.stages()
    if not stages:
        raise LatentzooError("nothing to distil: give --rounds 1 or more (or a guidance range)")
    out = opts.out
    if out.exists() and not out.is_dir():
        raise LatentzooError(f"-o {out} is a file; give a directory for the run")
    if not opts.train.resume and any((out / s).exists() for s in stages):
        raise LatentzooError(f"{out} already holds a distillation run; pass --resume to continue it or choose another -o")
    device = resolve_device(opts.train.device, int(os.environ.get("LOCAL_RANK", "0")))
    main = os.environ.get("RANK", "0") == "0"
    lock = output_lock(out, f"run folder {out}") if main else _nothing()
    created = not out.exists()
    with lock:
        try:
            builder = Builder(opts.teacher.registry)
            check_levels(opts, builder, builder.component(opts.teacher.spec.prior, "prior"))  # before any data is encoded
            built = build_teacher(opts.teacher, device, builder)
            prior = opts.teacher.prior_entry
            teacher = Stage(
                "teacher", built.prior, prior.data["class"], dict(prior.data.get("config") or {}), prior.data.get("family", ""), {}
            )
            finished: list[Stage] = []
            for k, stage in enumerate(stages):
                index = k if stages[0] == "stage-0" else k + 1
                done = load_stage(opts, stage, device) if opts.train.resume else None
                teacher = done or run_stage(opts, built, teacher, stage, index)
                finished.append(teacher)
                if main:
                    write_registry(opts, finished)
            leave_world()
        except BaseException:
            import shutil

            if main and created and out.is_dir() and not any((out / s / "checkpoints").exists() for s in stages):
                shutil.rmtree(out, ignore_errors=True)  # nothing of value: we made it and no stage wrote a checkpoint
            raise
    return write_registry(opts, finished) if main else None


def leave_world() -> None:
    """Leave the torchrun process group the stages shared (nothing on one process)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def check_levels(opts: DistillOptions, builder: Any, prior: Any) -> None:
    """Every round's student levels must be every other level of its teacher's (refused before anything is written)."""
    t = opts.teacher
    for k in range(1, t.rounds + 1):
        n = t.steps_after(k)
        teacher_levels = levels(builder, t.scheduler, prior, 2 * n)
        if not nested(teacher_levels, levels(builder, t.scheduler, prior, n)):
            raise LatentzooError(
                f"scheduler {t.scheduler}'s levels at {n} steps are not every other level of its {2 * n}: two teacher steps "
                "would not span one student step (no deterministic two-step form); pass --scheduler trailing"
            )


def stage_names(opts: DistillOptions, stage: Stage) -> tuple[str, str]:
    """(component, pipeline) names of a stage's student: NAME-N-prior / NAME-N for a round, NAME-guided for stage 0."""
    dist = stage.entry.get("distilled_for", {})
    tag = str(dist["steps"]) if "steps" in dist else ("guided" if opts.guidance is not None else "v")
    return f"{opts.name}-{tag}-prior", f"{opts.name}-{tag}"


def write_registry(opts: DistillOptions, finished: list[Stage]) -> dict[str, Any]:
    """``OUT/registry.yaml``: each stage's student (weights under its stage directory) and a pipeline sampling it
    as it was distilled; the last one also as ``NAME``."""
    import yaml

    from latentzoo.core.contract.weights import write_bytes

    spec = opts.teacher.spec
    components: dict[str, Any] = {}
    pipelines: dict[str, Any] = {}
    for stage in finished:
        if not stage.entry:
            continue
        comp, pipe = stage_names(opts, stage)
        entry = copy.deepcopy(stage.entry)
        entry["weights"]["path"] = f"{stage.name}/model.safetensors"
        components[comp] = entry
        dist = entry["distilled_for"]
        body: dict[str, Any] = {k: v for k, v in spec.parts().items()}
        body["prior"] = comp
        defaults = {k: v for k, v in spec.defaults.items() if k in ("guidance",)}
        if "steps" in dist:
            body.update(sampler=dist["sampler"], scheduler=dist["scheduler"])
            defaults.update(steps=dist["steps"])
        else:
            defaults.update({k: v for k, v in spec.defaults.items() if k == "steps"})
        body["defaults"] = defaults
        body["description"] = entry["description"]
        pipelines[pipe] = body
        last = pipe
    if pipelines:
        pipelines[opts.name] = {**pipelines[last], "description": pipelines[last]["description"] + f" (= {last})"}
    doc = {"components": components, "pipelines": pipelines}
    write_bytes(opts.out / "registry.yaml", yaml.safe_dump(doc, sort_keys=False).encode())
    return doc
