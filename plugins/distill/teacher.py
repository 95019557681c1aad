"""What a distillation run needs of its teacher: the checks (before anything is written) and,
built, the teacher's prior, levels, encoded data and conditioning.

A teacher is a registry pipeline whose prior is a denoiser. Progressive rounds also need its
sampler to have a deterministic two-step form: DDIM at eta = 0 (or Euler on the same sigma
levels, the same method; docs/samplers.md), on a scheduler whose N-step levels are every other
level of its 2N-step ones (``trailing`` nests; ``leading`` and ``karras`` do not). Each refusal
is one line naming the fix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from latentzoo.core.contract.errors import LatentzooError

# Sampler classes whose one step is the deterministic DDIM step at eta = 0 (Euler on the schedule's
# sigmas is the same update: docs/samplers.md, "DDIM equivalence").
DDIM_FORMS = ("diffusion.ddim", "diffusion.euler")


@dataclass
class TeacherSpec:
    """The teacher pipeline resolved from the registry (no torch): names, kinds and the sampling plan."""

    name: str
    spec: Any  # core.contract.compose.PipelineSpec
    registry: Any  # core.contract.registry.Registry
    prior_entry: Any
    kind: str
    conditioning: str | None  # None, "class" or "text"
    sampler: str
    scheduler: str | None
    teacher_steps: int
    rounds: int
    data: str
    defaults: dict[str, Any] = field(default_factory=dict)

    def steps_after(self, round_index: int) -> int:
        """Student steps after ``round_index`` rounds (0: the teacher's)."""
        return self.teacher_steps // 2**round_index


def load_teacher(name: str, kind: str, why: str, registries: tuple[str, ...] = ()) -> tuple[Any, Any, Any]:
    """(spec, registry, prior entry) of pipeline ``name``, refused in one line unless its prior is of ``kind``
    (``why`` says what the method needs and what to pick instead)."""
    from latentzoo.core.contract.compose import load_spec, resolve_component
    from latentzoo.core.contract.registry import Registry

    spec, registry = load_spec(Registry.load(list(registries)), name)
    prior = resolve_component(registry, spec.prior, "prior")
    found = registry.declaration(prior).get("kind")
    if found != kind:
        raise LatentzooError(f"teacher {name}: its prior {spec.prior} is a {found or 'kind-less'} prior, not a {kind}; {why}")
    return spec, registry, prior


def resolve_teacher(
    name: str,
    *,
    rounds: int,
    teacher_steps: int | None,
    sampler: str | None,
    scheduler: str | None,
    data: str | None,
    registries: tuple[str, ...] = (),
) -> TeacherSpec:
    """The teacher and the rounds' plan, checked: a denoiser prior, a deterministic two-step sampler
    (when rounds > 0) and a step count that halves ``rounds`` times to at least 1."""
    from latentzoo.core.contract.compose import resolve_component

    spec, registry, prior = load_teacher(
        name, "denoiser", "distillation matches DDIM steps of a diffusion denoiser: pick a denoiser pipeline such as digits", registries
    )
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 0:
        raise LatentzooError(f"--rounds must be 0 or more, not {rounds!r}")
    steps = teacher_steps if teacher_steps is not None else int(spec.defaults.get("steps") or 0)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise LatentzooError(f"--teacher-steps must be a positive integer, not {steps!r}")
    if rounds and steps % 2**rounds:
        chain = " -> ".join(f"{steps / 2**k:g}" for k in range(rounds + 1))
        fewest = max((k for k in range(rounds + 1) if steps % 2**k == 0), default=0)
        below = steps / 2**rounds < 1
        raise LatentzooError(
            f"--rounds {rounds} from {steps} teacher steps would go {'below 1 step' if below else 'to a fractional step count'} "
            f"({chain}); use --rounds {fewest} or less, or --teacher-steps {2**rounds * max(1, round(steps / 2**rounds))}"
        )
    sampler_name = sampler or spec.sampler
    scheduler_name = scheduler or spec.scheduler
    if rounds:
        entry = resolve_component(registry, sampler_name, "sampler")
        cls = registry.declaration(entry)["name"]
        eta = (entry.data.get("config") or {}).get("eta", 0.0)
        if sampler is None and isinstance(spec.defaults.get("eta"), (int, float)):
            eta = spec.defaults["eta"]
        if cls not in DDIM_FORMS or eta:
            what = f"{sampler_name} (eta {eta})" if cls in DDIM_FORMS else sampler_name
            raise LatentzooError(
                f"teacher {name} samples with {what}, which has no deterministic two-step form; "
                "progressive rounds match two DDIM steps with one: pass --sampler ddim --scheduler trailing"
            )
        if not scheduler_name:
            raise LatentzooError(f"teacher {name} has no scheduler; pass --scheduler trailing")
    cond = prior.conditioning
    data_name = data or (prior.data.get("training") or {}).get("data") or "digits"
    return TeacherSpec(
        name=name,
        spec=spec,
        registry=registry,
        prior_entry=prior,
        kind="denoiser",
        conditioning=None if cond is None else cond.kind,
        sampler=sampler_name,
        scheduler=scheduler_name,
        teacher_steps=steps,
        rounds=rounds,
        data=data_name,
        defaults=dict(spec.defaults),
    )


class Conditioning:
    """Per-sample conditioning of the training set and the prior's keywords for a batch of it.

    ``None``: unconditional. ``class``: the dataset's labels (the null class, last, for the
    unconditional branch). ``text``: every caption variant of each image, encoded once by the
    teacher's conditioner; row 0 is the empty prompt, the unconditional branch.
    """

    def __init__(self, kind: str | None, *, labels: torch.Tensor | None = None, num_classes: int | None = None) -> None:
        self.kind, self.labels, self.num_classes = kind, labels, num_classes
        self.tokens: torch.Tensor | None = None
        self.masks: torch.Tensor | None = None
        self.caption_rows: torch.Tensor | None = None  # (N, k): rows of tokens per image

    def draw(self, mb: Any, dropout: float) -> torch.Tensor | None:
        """Each sample's condition (a label or a token row), replaced by the null one with probability ``dropout``."""
        index = mb.labels
        if self.kind is None:
            return None
        if self.kind == "class":
            assert self.labels is not None and self.num_classes is not None
            return torch.where(mb.rand() < dropout, self.num_classes - 1, self.labels[index])
        assert self.caption_rows is not None
        pick = mb.randint(self.caption_rows.shape[1])
        return torch.where(mb.rand() < dropout, 0, self.caption_rows[index, pick])

    def null(self, cond: torch.Tensor | None) -> torch.Tensor | None:
        if cond is None:
            return None
        return torch.full_like(cond, self.num_classes - 1 if self.kind == "class" else 0)

    def call(self, model: Any, z: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None, **extra: Any) -> torch.Tensor:
        """model(z, t, labels, tokens...) for conditions ``cond`` (labels or token rows)."""
        if self.kind == "text":
            assert self.tokens is not None and self.masks is not None and cond is not None
            return model(z, t, None, encoder_hidden_states=self.tokens[cond], encoder_attention_mask=self.masks[cond], **extra)
        return model(z, t, cond, **extra)

    def guided(self, model: Any, z: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None, w: torch.Tensor) -> torch.Tensor:
        """Classifier-free guidance uncond + w (cond - uncond) in one batch (Ho & Salimans 2022, eq. 6)."""
        both = torch.cat([cond, self.null(cond)])
        out_c, out_u = self.call(model, torch.cat([z, z]), torch.cat([t, t]), both).chunk(2)
        return out_u + w.view(-1, *([1] * (z.ndim - 1))).to(out_u.dtype) * (out_c - out_u)


@dataclass
class Built:
    """The teacher built on this process: prior, levels and the training data in the prior's space."""

    prior: Any
    latents: torch.Tensor  # (N, C, H, W), normalised as the prior models them
    indices: torch.Tensor  # (N,) row of each latent (labels of the training ImageSet)
    conditioning: Conditioning
    builder: Any


def build_teacher(teacher: TeacherSpec, device: torch.device, builder: Any = None) -> Built:
    """Build the teacher's parts, encode the training images once and, for text, every caption variant."""
    from latentzoo.core.runtime.build import Builder
    from latentzoo.core.training import encode_dataset

    builder = builder or Builder(teacher.registry)
    spec = teacher.spec
    prior = builder.component(spec.prior, "prior")
    if not spec.encoder:
        raise LatentzooError(f"teacher {teacher.name} has no encoder to encode its training images with; add one to the pipeline")
    encoder = builder.component(spec.encoder, "encoder")
    size = int(getattr(encoder, "sample_size", 32))
    space = prior.latent_space
    cond = Conditioning(teacher.conditioning, num_classes=getattr(prior, "num_classes", None))
    if teacher.conditioning == "text":
        from latentzoo.core.runtime.captions import load_captioned
        from latentzoo.plugins.diffusion.train_text import encode_captions

        data = load_captioned(teacher.data, split="train", size=size, channels=encoder.image_channels)
        conditioner = builder.component(spec.conditioner, "conditioner")
        k = 8
        variants = data.variants(k) if hasattr(data, "variants") else [[c] * k for c in data.captions]
        unique = sorted({c for row in variants for c in row})
        tok, msk = encode_captions(conditioner, ["", *unique])
        where = {t: i + 1 for i, t in enumerate(unique)}
        cond.tokens, cond.masks = tok.to(device), msk.to(device)
        cond.caption_rows = torch.tensor([[where[c] for c in row] for row in variants], dtype=torch.long, device=device)
    else:
        from latentzoo.core.runtime.data import load_dataset

        data = load_dataset(teacher.data, split="train", size=size, channels=encoder.image_channels)
        if teacher.conditioning == "class":
            if data.labels is None:
                raise LatentzooError(f"teacher {teacher.name} is class-conditional but dataset {teacher.data} has no labels")
            cond.labels = data.labels.to(device)
        elif teacher.conditioning is not None:
            raise LatentzooError(
                f"teacher {teacher.name}: conditioning {teacher.conditioning!r} cannot be distilled here (class or text only)"
            )
    latents = encode_dataset(encoder, data.images)
    if space.scaling_factor is not None:
        latents = (latents - (space.shift or 0.0)) * space.scaling_factor  # as the prior models them (core.runtime.pipeline)
    return Built(prior.to(device), latents.float(), torch.arange(len(latents)), cond, builder)


def levels(builder: Any, scheduler: str, prior: Any, steps: int) -> list[float]:
    """The scheduler's sigma levels at ``steps`` steps (then 0.0)."""
    return [float(s) for s in builder.component(scheduler, "scheduler").schedule(prior, steps)]
