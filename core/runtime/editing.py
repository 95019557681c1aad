"""Editing with a composed pipeline: img2img (SDEdit), inpainting and interpolation (imports torch).

All three work for any pipeline whose sampler walks noise levels of a kind the role contract
defines (core/contract/interfaces.py): ``"sigma"`` (a denoiser prior: x = x0 + sigma eps, handed to
the sampler in the variance-preserving form x / sqrt(1 + sigma^2), the point every sampler
starts from) or ``"flow"`` (x_t = (1 - t) x0 + t eps). Priors whose sampler walks no levels
(autoregressive, analytic) are refused in one line.

The generic mechanism is the *start latent*: a sampler called with ``noise`` = the noised
latent at level ``levels[0]`` and a level list that begins there continues from that point
(``noised``). SDEdit (Meng et al. 2022) keeps the last ``ceil(strength * steps)`` levels of the
scheduler, as diffusers' img2img does, and starts there.

Inpainting is latent blending at each model evaluation (Avrahami et al. 2023, "Blended Latent
Diffusion"; Lugmayr et al. 2022 without the resampling loop): the prior is wrapped so that,
before every call, the region to keep is replaced by the original latent noised to the level
of that call (one fixed eps draw). That works with every sampler unchanged (it needs no access
to the sampler's loop) and costs no extra evaluations, unlike RePaint's resampling. At the end
the original pixels are pasted back outside the mask, so they are kept exactly.

A prior that states ``mask_conditioned`` (an inpainting UNet, e.g. the SD 1.x / 2.x inpainting
checkpoints: 2C + 1 input channels) is instead used as it was trained, as diffusers'
StableDiffusionInpaintPipeline runs it: its input at every call is the latents, the mask
(nearest-resized to the latent grid) and the latents of the masked image (the image with the
region to repaint set to 0, encoded with the posterior mean), concatenated; sampling starts
from pure noise (strength 1). The original pixels are pasted back outside the mask, as above.

Interpolation needs a sampler with ``invert`` (DDIM inversion, Song et al. 2021 sec. 4.3):
both images are inverted to noise, the noises are slerped (Shoemake 1985), and each frame is
sampled back deterministically (eta = 0).

Outputs by index (seeding ``per-index/1``, core.runtime.seeding). Each command is a ``Job``: ``n``
outputs (img2img / inpaint: one per input; interpolate: one per frame) and ``render(indices)``,
which renders those outputs alone. Output i's random draws (its SDEdit / blending noise, the
sampler's) come from its own generator keyed by (seed, i), stream ``edit``; its input is read
when its batch is rendered. So output i's pixels do not depend on the batch size or on which
process renders it: ``-o DIR/`` commits batch by batch, resumes, and shares the indices among
torchrun ranks as ``sample`` does (core.runtime.rundir.run_dir).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..contract.errors import LatentzooError
from . import seeding
from .record import DEFAULT_BATCH_SIZE

# Python API (``pipe``: a Pipeline or a pipeline name; images: tensors in [-1, 1] or image paths):
#     edit = latentzoo.img2img("digits", ["a.png"], 0.6, seed=0)
#     latentzoo.write_edit(edit, "edited.png")       # PNG + JSON sidecar, as the CLI writes
#     latentzoo.inpaint("digits", ["a.png"], "mask.png"); latentzoo.interpolate("digits", ["a.png"], ["b.png"], 8)

LEVEL_KINDS = ("sigma", "flow")  # the level kinds the role contract defines (core/contract/interfaces.py)


def noised(kind: str, x0: torch.Tensor, eps: torch.Tensor, level: float) -> torch.Tensor:
    """The point a sampler of ``kind`` levels starts from at ``level``, for clean latents ``x0``."""
    if kind == "sigma":  # x0 + sigma eps in the variance-preserving form the samplers start from
        return (x0 + level * eps) / math.sqrt(1.0 + level * level)
    if kind == "flow":  # rectified flow: x_t = (1 - t) x0 + t eps
        return (1.0 - level) * x0 + level * eps
    raise LatentzooError(f"editing knows the level kinds {', '.join(LEVEL_KINDS)}, not {kind!r}")


def check_editable(pipe: Any, what: str) -> str:
    """The sampler's level kind, or a one-line refusal for priors that walk no noise levels."""
    kind = getattr(pipe.sampler, "levels", None)
    if kind is None:
        prior_kind = getattr(pipe.prior, "kind", "this")
        raise LatentzooError(
            f"an {prior_kind} prior cannot do {what}: pipeline {pipe.spec.name} ({pipe.spec.prior}) does not denoise from noise levels; "
            "use a denoiser or flow pipeline such as digits or digits-flow"
        )
    if kind not in LEVEL_KINDS:
        raise LatentzooError(f"sampler {pipe.spec.sampler} walks {kind!r} levels; {what} knows {', '.join(LEVEL_KINDS)} levels")
    if pipe.encoder is None:
        raise LatentzooError(f"pipeline {pipe.spec.name} has no encoder; {what} needs one to read images")
    return kind


def check_strength(strength: float) -> float:
    if not (isinstance(strength, int | float) and math.isfinite(strength) and 0.0 < strength <= 1.0):
        raise LatentzooError(f"--strength must be in (0, 1], not {strength}")
    return float(strength)


def strength_levels(levels: list[float], strength: float) -> list[float]:
    """The last ceil(strength * steps) levels and the final 0. diffusers' img2img pipelines keep
    int(strength * steps) (the floor): the two agree where the product is whole (parity tests use such)."""
    steps = len(levels) - 1
    k = max(1, min(steps, math.ceil(strength * steps)))
    return list(levels[steps - k :])


def _finite(x: torch.Tensor, pipe: Any) -> torch.Tensor:
    if not bool(torch.isfinite(x).all()):
        raise LatentzooError(f"sampler {pipe.spec.sampler} produced non-finite latents from prior {pipe.spec.prior}")
    return x


class _Blended:
    """The prior, with the kept region of its input replaced by the noised original at each call."""

    def __init__(self, prior: Any, kind: str, x0: torch.Tensor, eps: torch.Tensor, keep: torch.Tensor) -> None:
        self._prior, self._kind, self._x0, self._eps, self._keep = prior, kind, x0, eps, keep

    def __getattr__(self, name: str) -> Any:
        return getattr(self._prior, name)

    def _level(self, t: torch.Tensor) -> float:
        t = float(t.flatten()[0])
        return self._prior.noise_schedule.sigma(t) if self._kind == "sigma" else t

    def __call__(self, x: torch.Tensor, t: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        known = noised(self._kind, self._x0, self._eps, self._level(t))
        reps = x.shape[0] // known.shape[0]  # classifier-free guidance doubles the batch
        known, keep = known.repeat(reps, 1, 1, 1), self._keep.repeat(reps, 1, 1, 1)
        return self._prior(torch.where(keep, known, x), t, *args, **kwargs)


class _MaskConditioned:
    """An inpainting prior, given the mask and the masked image's latents as extra input channels at each call."""

    def __init__(self, prior: Any, mask: torch.Tensor, masked: torch.Tensor) -> None:
        self._prior, self._extra = prior, torch.cat([mask.to(masked.dtype), masked], dim=1)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._prior, name)

    def __call__(self, x: torch.Tensor, t: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        extra = self._extra.repeat(x.shape[0] // self._extra.shape[0], 1, 1, 1).to(x.dtype)  # guidance doubles the batch
        return self._prior(torch.cat([x, extra], dim=1), t, *args, **kwargs)


def _pipeline(pipe: Any, what: str) -> Any:
    """Accept a pipeline or its name; refuse one that cannot edit."""
    if isinstance(pipe, str):
        from .api import load_pipeline

        pipe = load_pipeline(pipe)
    check_editable(pipe, what)
    return pipe


@dataclass
class Edit:
    images: torch.Tensor  # (B, C, H, W) in [-1, 1]
    record: dict[str, Any]


@dataclass
class Job:
    """An edit as ``n`` outputs rendered by index (module doc): ``render(indices)`` -> their images in [-1, 1]."""

    n: int
    render: Callable[[Sequence[int]], torch.Tensor]
    record: dict[str, Any]

    def images(self, batch_size: int | None = None) -> torch.Tensor:
        """Every output, ``batch_size`` at a time (default: one batch)."""
        size = batch_size or max(1, self.n)
        return torch.cat([self.render(range(i, min(self.n, i + size))) for i in range(0, self.n, size)])

    def edit(self, batch_size: int | None = None) -> Edit:
        return Edit(self.images(batch_size), self.record)


@dataclass
class EditStream:
    """An edit's ``n`` images made batch by batch as ``batches`` is iterated (memory flat in ``n``):
    ``write`` takes it as it takes an ``Edit``, committing each batch as it comes; ``collect`` holds them all."""

    n: int
    batches: Iterable[torch.Tensor]  # (b, C, H, W) in [-1, 1], in order, n rows in all
    record: dict[str, Any]

    def collect(self) -> Edit:
        return Edit(torch.cat(list(self.batches)), self.record)


def spans(n: int, batch_size: int) -> Iterator[range]:
    """Indices 0..n-1 in runs of ``batch_size`` (the last shorter)."""
    from .record import check_run

    check_run(n, 0, batch_size)
    for start in range(0, n, batch_size):
        yield range(start, min(n, start + batch_size))


def stream(job: Job, batch_size: int = DEFAULT_BATCH_SIZE) -> EditStream:
    """A Job's outputs as an EditStream: rendered ``batch_size`` at a time, as it is read."""
    return EditStream(job.n, (job.render(rows) for rows in spans(job.n, batch_size)), job.record)


def edit_generators(seed: int, indices: Sequence[int]) -> seeding.RowGenerators:
    """Output i's generator: keyed by (seed, i), stream ``edit`` (core.runtime.seeding)."""
    return seeding.RowGenerators.for_samples(seed, [(int(i), 0) for i in indices], "edit")


def _source(pipe: Any, images: Any, fit: bool) -> tuple[int, Callable[[Sequence[int]], torch.Tensor]]:
    """(count, read(indices)): input tensors ((B, C, H, W) in [-1, 1]) or image paths, read by index.
    Paths are all read once here first, so a bad input is refused before anything renders."""
    if isinstance(images, torch.Tensor):
        return len(images), lambda idx: images[list(idx)]
    from .codec import _inputs

    paths = [str(p) for p in images]
    for start in range(0, len(paths), 64):  # checked in chunks: memory stays flat in the number of inputs
        _inputs(pipe, paths[start : start + 64], fit)
    return len(paths), lambda idx: _inputs(pipe, [paths[i] for i in idx], fit)


def _plan(pipe: Any, options: Mapping[str, Any] | None, text_options: Mapping[str, str] | None, what: str):
    kind = check_editable(pipe, what)
    plan = pipe.resolve_options(options, text_options)
    return kind, plan, pipe.levels(plan)


@torch.inference_mode()
def img2img(
    pipe: Any,
    images: torch.Tensor | list[str],
    strength: float,
    *,
    seed: int = 0,
    options: Mapping[str, Any] | None = None,
    text_options: Mapping[str, str] | None = None,
    fit: bool = False,
    batch_size: int | None = None,
) -> Edit:
    """SDEdit (Meng et al. 2022): encode, noise to the level ``strength`` picks, denoise, decode."""
    return img2img_job(pipe, images, strength, seed=seed, options=options, text_options=text_options, fit=fit).edit(batch_size)


def img2img_job(
    pipe: Any,
    images: torch.Tensor | list[str],
    strength: float,
    *,
    seed: int = 0,
    options: Mapping[str, Any] | None = None,
    text_options: Mapping[str, str] | None = None,
    fit: bool = False,
) -> Job:
    """``img2img`` as a Job: output i is input i, edited with the draws of (seed, i)."""
    strength = check_strength(strength)
    pipe = _pipeline(pipe, "SDEdit (img2img)")
    kind, plan, levels = _plan(pipe, options, text_options, "SDEdit (img2img)")
    levels = strength_levels(levels, strength)
    count, read = _source(pipe, images, fit)

    @torch.inference_mode()
    def render(indices: Sequence[int]) -> torch.Tensor:
        generator = edit_generators(seed, indices)
        x0 = pipe.scale(pipe.encode(read(indices)))
        start = noised(kind, x0, seeding.randn(x0.shape, generator), levels[0])
        call = pipe._call_options(plan, len(x0))
        z = _finite(pipe.sampler.sample(pipe.prior, start, levels=levels, generator=generator, **call), pipe)
        return pipe.decode(pipe.unscale(z))

    record = {"edit": "img2img", "strength": strength, "start_level": levels[0], "denoising_steps": len(levels) - 1}
    return Job(count, render, {**record, **_rec(pipe, plan, seed)})


def load_mask(path: str, size: tuple[int, int], *, fit: bool = True) -> torch.Tensor:
    """A (1, 1, H, W) bool mask, True = repaint (white): greyscale thresholded at half its full range
    (whatever the depth: see data.full_range); another size is resized (nearest)."""
    from PIL import Image, UnidentifiedImageError

    from ..contract.userfiles import open_file
    from .data import full_range

    try:
        with open_file(path, "mask", "image") as fh, Image.open(fh) as image:
            image = full_range(image, "L")
            if image.size != (size[1], size[0]):
                if not fit:
                    raise LatentzooError(
                        f"mask {path} is {image.width}x{image.height}, the image {size[1]}x{size[0]}; give a mask of the image's size"
                    )
                image = image.resize((size[1], size[0]), Image.Resampling.NEAREST)
            arr = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).reshape(size[0], size[1])
    except (FileNotFoundError, IsADirectoryError) as exc:
        raise LatentzooError(f"cannot read mask {path}: no such file") from exc
    except (UnidentifiedImageError, OSError) as exc:
        raise LatentzooError(f"cannot read mask {path}: not an image Pillow can open") from exc
    return (arr.float() / 255.0 >= 0.5)[None, None]


@torch.inference_mode()
def inpaint(
    pipe: Any,
    images: torch.Tensor | list[str],
    mask: torch.Tensor | str,
    *,
    seed: int = 0,
    options: Mapping[str, Any] | None = None,
    text_options: Mapping[str, str] | None = None,
    fit: bool = False,
    batch_size: int | None = None,
) -> Edit:
    """Repaint where ``mask`` (bool, (1|B, 1, H, W), True = repaint; or a mask file) is set; keep the rest exactly (module doc)."""
    return inpaint_job(pipe, images, mask, seed=seed, options=options, text_options=text_options, fit=fit).edit(batch_size)


def inpaint_job(
    pipe: Any,
    images: torch.Tensor | list[str],
    mask: torch.Tensor | str,
    *,
    seed: int = 0,
    options: Mapping[str, Any] | None = None,
    text_options: Mapping[str, str] | None = None,
    fit: bool = False,
) -> Job:
    """``inpaint`` as a Job: output i is input i repainted under its mask (the one mask, or mask i)."""
    pipe = _pipeline(pipe, "inpainting")
    if len(pipe.prior.latent_shape) != 3:  # a mask needs a latent grid to map onto (not, e.g., unCLIP's embedding vector)
        raise LatentzooError(
            f"inpainting needs a spatial latent grid, but prior {pipe.spec.prior} models {tuple(pipe.prior.latent_shape)} "
            "vectors; use a latent-grid pipeline such as digits"
        )
    count, read = _source(pipe, images, fit)
    size = tuple(read([0]).shape[-2:])
    if not isinstance(mask, torch.Tensor):
        mask = load_mask(str(mask), size)
    kind, plan, levels = _plan(pipe, options, text_options, "inpainting")
    if tuple(mask.shape[-2:]) != size:
        raise LatentzooError(f"the mask is {mask.shape[-1]}x{mask.shape[-2]}, the image {size[1]}x{size[0]}")
    if not bool(mask.any()):
        raise LatentzooError("the mask is all black (nothing to repaint); white marks the region to repaint")
    if mask.shape[0] not in (1, count):
        raise LatentzooError(f"give one mask or one per image ({count}), not {mask.shape[0]}")
    conditioned = bool(getattr(pipe.prior, "mask_conditioned", False))

    @torch.inference_mode()
    def render(indices: Sequence[int]) -> torch.Tensor:
        generator = edit_generators(seed, indices)
        x = read(indices)
        masks = mask[list(indices)] if mask.shape[0] > 1 else mask.expand(len(x), -1, -1, -1)
        if conditioned:
            return _inpaint_conditioned(pipe, x, masks, plan, levels, generator)
        return _inpaint_blended(pipe, kind, x, masks, plan, levels, generator)

    method = "mask-conditioned prior (mask and masked-image latents as input channels)" if conditioned else (
        "latent blending at each model evaluation"
    )  # fmt: skip
    record = {"edit": "inpaint", "method": method, "masked_fraction": round(float(mask.float().mean()), 4)}
    return Job(count, render, {**record, **_rec(pipe, plan, seed)})


def _inpaint_blended(
    pipe: Any, kind: str, images: torch.Tensor, mask: torch.Tensor, plan: Any, levels: list[float], generator: torch.Generator
) -> torch.Tensor:
    """Latent blending (module doc): the kept region is the original noised to each call's level."""
    x0 = pipe.scale(pipe.encode(images))
    # A latent cell is repainted when any pixel it covers is (max-pool to the latent grid).
    repaint = torch.nn.functional.adaptive_max_pool2d(mask.float(), x0.shape[-2:]) > 0.5
    keep = (~repaint).expand(-1, x0.shape[1], -1, -1)
    eps = seeding.randn(x0.shape, generator)  # per row: its blending noise, then its start noise
    noise = seeding.randn(x0.shape, generator)
    prior = _Blended(pipe.prior, kind, x0, eps, keep)
    call = pipe._call_options(plan, len(x0))
    z = _finite(pipe.sampler.sample(prior, noised(kind, x0, noise, levels[0]), levels=levels, generator=generator, **call), pipe)
    z = torch.where(keep, x0, z)
    out = pipe.decode(pipe.unscale(z))
    return torch.where(mask.expand_as(out), out, images)  # the original pixels outside the mask, exactly


def _inpaint_conditioned(
    pipe: Any, images: torch.Tensor, mask: torch.Tensor, plan: Any, levels: list[float], generator: torch.Generator
) -> torch.Tensor:
    """Inpainting with a mask-conditioned prior (module doc): from pure noise, mask and masked-image latents as input channels."""
    masked = pipe.scale(pipe.encode(images * (~mask).to(images.dtype)))
    latent_mask = torch.nn.functional.interpolate(mask.float(), size=masked.shape[-2:])  # nearest, as diffusers
    noise = seeding.randn(masked.shape, generator)
    call = pipe._call_options(plan, len(images))
    prior = _MaskConditioned(pipe.prior, latent_mask, masked)
    z = _finite(pipe.sampler.sample(prior, noise, levels=levels, generator=generator, **call), pipe)
    out = pipe.decode(pipe.unscale(z))
    return torch.where(mask.expand_as(out), out, images)  # the original pixels outside the mask, exactly


def slerp(a: torch.Tensor, b: torch.Tensor, w: float) -> torch.Tensor:
    """Spherical interpolation between ``a`` and ``b`` (Shoemake 1985), flattened per sample; linear when parallel."""
    fa, fb = a.flatten(1), b.flatten(1)
    cos = (fa * fb).sum(1) / (fa.norm(dim=1) * fb.norm(dim=1)).clamp_min(1e-12)
    theta = torch.arccos(cos.clamp(-1.0, 1.0))
    sin = torch.sin(theta)
    linear = sin.abs() < 1e-6
    ca = torch.where(linear, 1.0 - w, torch.sin((1.0 - w) * theta) / sin.where(~linear, 1.0))
    cb = torch.where(linear, w, torch.sin(w * theta) / sin.where(~linear, 1.0))
    return (ca[:, None] * fa + cb[:, None] * fb).reshape(a.shape)


def check_invertible(pipe: Any) -> None:
    if not callable(getattr(pipe.sampler, "invert", None)):
        raise LatentzooError(
            f"sampler {pipe.spec.sampler} cannot invert images to noise; interpolation needs one that can (--sampler ddim, on a denoiser prior)"
        )


@torch.inference_mode()
def invert(pipe: Any, images: torch.Tensor, plan: Any, levels: list[float]) -> torch.Tensor:
    """Clean images -> the sampler's starting noise at ``levels[0]`` (the sampler's ``invert``)."""
    check_invertible(pipe)
    call = pipe._call_options(plan, len(images))
    x0 = pipe.scale(pipe.encode(images))
    if call.get("conditioning") is not None:  # a text-conditioned prior inverts under the prompt, unguided
        return pipe.sampler.invert(pipe.prior, x0, levels=levels, class_labels=call.get("class_labels"), conditioning=call["conditioning"])
    return pipe.sampler.invert(pipe.prior, x0, levels=levels, class_labels=call.get("class_labels"))


@torch.inference_mode()
def sample_back(
    pipe: Any, noise: torch.Tensor, plan: Any, levels: list[float], seed: int, indices: Sequence[int] | None = None
) -> torch.Tensor:
    """Deterministic (eta = 0) sampling of ``noise`` over ``levels``, decoded (any draw from the generators of ``indices``)."""
    call = {**pipe._call_options(plan, len(noise)), "eta": 0.0}
    generator = edit_generators(seed, range(len(noise)) if indices is None else indices)
    z = _finite(pipe.sampler.sample(pipe.prior, noise, levels=levels, generator=generator, **call), pipe)
    return pipe.decode(pipe.unscale(z))


@torch.inference_mode()
def interpolate(
    pipe: Any,
    a: torch.Tensor | list[str],
    b: torch.Tensor | list[str],
    frames: int,
    *,
    seed: int = 0,
    options: Mapping[str, Any] | None = None,
    text_options: Mapping[str, str] | None = None,
    fit: bool = False,
    batch_size: int | None = None,
) -> Edit:
    """``frames`` images from A to B: DDIM-invert both, slerp the noises, sample each frame back (eta = 0)."""
    return interpolate_job(pipe, a, b, frames, seed=seed, options=options, text_options=text_options, fit=fit).edit(batch_size)


def interpolate_job(
    pipe: Any,
    a: torch.Tensor | list[str],
    b: torch.Tensor | list[str],
    frames: int,
    *,
    seed: int = 0,
    options: Mapping[str, Any] | None = None,
    text_options: Mapping[str, str] | None = None,
    fit: bool = False,
) -> Job:
    """``interpolate`` as a Job: output i is frame i, at i / (frames - 1) of the way from A to B. Each
    process inverts A and B once (deterministic), when it renders its first frame."""
    from .record import check_held, check_run

    check_held("--frames", frames, 2)
    check_run(frames, seed)
    if isinstance(pipe, str):
        from .api import load_pipeline

        pipe = load_pipeline(pipe)
    check_invertible(pipe)
    pipe = _pipeline(pipe, "interpolation")
    xa, xb = (_source(pipe, x, fit)[1]([0]) for x in (a, b))
    _, plan, levels = _plan(pipe, options, text_options, "interpolation")
    ends: list[torch.Tensor] = []

    @torch.inference_mode()
    def render(indices: Sequence[int]) -> torch.Tensor:
        if not ends:
            ends.append(invert(pipe, torch.cat([xa, xb]), plan, levels))
        noise = ends[0]
        path = torch.cat([slerp(noise[:1], noise[1:], i / (frames - 1)) for i in indices])
        return sample_back(pipe, path, plan, levels, seed, indices)

    return Job(frames, render, {"edit": "interpolate", "frames": frames, **_rec(pipe, plan, seed)})


def interpolate_stream(
    pipe: Any,
    a: torch.Tensor | list[str],
    b: torch.Tensor | list[str],
    frames: int,
    *,
    seed: int = 0,
    options: Mapping[str, Any] | None = None,
    text_options: Mapping[str, str] | None = None,
    fit: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> EditStream:
    """``interpolate`` as an EditStream: frames sampled back ``batch_size`` at a time as it is read (memory flat in ``frames``)."""
    job = interpolate_job(pipe, a, b, frames, seed=seed, options=options, text_options=text_options, fit=fit)
    return stream(job, batch_size)


def _rec(pipe: Any, plan: Any, seed: int) -> dict[str, Any]:
    from .record import RECORD_FORMAT, versions

    return {
        "format": RECORD_FORMAT,
        **pipe.record(),
        "seed": seed,
        "steps": plan.steps,
        "sampler": pipe.spec.sampler,
        "scheduler": pipe.spec.scheduler,
        "options": plan.recorded(),
        "versions": versions(),
    }


def write(
    edit: Edit | EditStream, output: str, *, nrow: int | None = None, inputs: list[str] | None = None, frames: bool = False
) -> dict[str, Any]:
    """Write the edit's images as a grid PNG (or ``DIR/`` one PNG each) with its JSON sidecar, as one unit.

    An ``EditStream`` is written batch by batch as it is made (a grid holds only its uint8
    canvas, ``DIR/`` nothing), so memory stays flat in the number of images.

    ``frames`` (interpolate): with a grid output ``x.png``, also write each image as
    ``x-000.png, x-001.png, ...`` beside it (staged as temporaries, renamed after the grid and
    sidecar are in place, listed in the sidecar under ``frame_files``).
    """
    import os
    import tempfile
    from pathlib import Path

    from .images import to_uint8
    from .record import SampleOutput, png_bytes

    n, batches = (edit.n, edit.batches) if isinstance(edit, EditStream) else (len(edit.images), [edit.images])
    out = SampleOutput(output, n=n, nrow=nrow)
    staged: list[tuple[Path, Path]] = []
    try:
        record = {**edit.record, "n": n, **({"inputs": inputs} if inputs else {})}
        for images in batches:
            tiles = to_uint8(images)
            out.add(tiles)
            if frames and not out.per_sample:
                out._mkdirs(out.path.parent)
                for tile in tiles:
                    dest = out.path.with_name(f"{out.path.stem}-{len(staged):03d}.png")
                    fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
                    staged.append((Path(name), dest))  # first, so an interrupted write is removed too
                    with os.fdopen(fd, "wb") as f:
                        f.write(png_bytes(tile))
        if frames and not out.per_sample:
            record["frame_files"] = [dest.name for _, dest in staged]
        record = out.commit(record)
        for tmp, dest in staged:
            os.replace(tmp, dest)
        return record
    except OSError as exc:
        out.abort()
        raise LatentzooError(f"cannot write {output}: {exc.strerror or exc}; choose another -o") from exc
    except BaseException:
        out.abort()
        raise
    finally:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)


write_edit = write  # the name latentzoo exports

__all__ = [
    "Edit",
    "EditStream",
    "Job",
    "check_strength",
    "edit_generators",
    "img2img",
    "img2img_job",
    "inpaint",
    "inpaint_job",
    "interpolate",
    "interpolate_job",
    "interpolate_stream",
    "invert",
    "load_mask",
    "noised",
    "slerp",
    "spans",
    "stream",
    "strength_levels",
    "write",
]
