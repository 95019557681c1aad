"""Image variations and embedding interpolation with a stochastic decoder (unCLIP, Ramesh et al. 2022, sec. 3.1-3.2).

A pipeline does variations when its encoder maps an image to the latent its decoder consumes
and that decoder *samples* images from a latent (declares ``stochastic = True`` and takes
``decode(latents, generator=...)``; see ``Pipeline.stochastic_decoder``). unCLIP's decoder is
one: it turns a CLIP image embedding into an image by diffusion, so decoding the embedding of
one input N times with different noise gives N images that share what the embedding holds
(the digit, its style) and differ in what it does not. Variation i's decoder noise comes from
(seed, i) (core.runtime.seeding), so it does not depend on the batch or the process that renders it.
A deterministic decoder (a VQ-GAN's) would return N copies, so such pipelines are refused in one line.

Interpolation (sec. 3.2): the two inputs' embeddings are slerped (Shoemake 1985) and each frame
is decoded from the *same* decoder noise, so only the embedding changes along the strip.

    from latentzoo.core.runtime.variations import variations, interpolate_embeddings
    edit = variations("digits-unclip", ["seven.png"], 8, seed=0)
    latentzoo.write_edit(edit, "variations.png", inputs=["seven.png"])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..contract.errors import LatentzooError
from .editing import Edit, EditStream, Job, slerp, stream
from .record import DEFAULT_BATCH_SIZE


def check_variations(pipe: Any) -> None:
    """Refuse, in one line, a pipeline that cannot make variations (no encoder, or a deterministic decoder)."""
    if pipe.encoder is None:
        raise LatentzooError(f"pipeline {pipe.spec.name} has no encoder to embed the input image; variations need one (e.g. digits-unclip)")
    if not pipe.stochastic_decoder:
        raise LatentzooError(
            f"pipeline {pipe.spec.name}'s decoder {pipe.spec.decoder} decodes deterministically, so every variation would be "
            "the same image; use a pipeline whose decoder samples images from an image embedding, such as digits-unclip"
        )


def _resolve(pipe: Any, images: Any, *, fit: bool) -> tuple[Any, torch.Tensor]:
    if isinstance(pipe, str):
        from .api import load_pipeline

        pipe = load_pipeline(pipe)
    check_variations(pipe)
    if not isinstance(images, torch.Tensor):
        from .codec import _inputs

        images = _inputs(pipe, [str(p) for p in ([images] if isinstance(images, str) else images)], fit)
    if images.ndim != 4 or len(images) != 1:
        raise LatentzooError(f"give one input image, not {len(images)}")
    return pipe, images


def _record(pipe: Any, edit: str, seed: int, **extra: Any) -> dict[str, Any]:
    from .record import RECORD_FORMAT, versions

    return {"format": RECORD_FORMAT, **pipe.record(), "edit": edit, "seed": seed, **extra, "versions": versions()}


def _check_n(n: int, what: str, least: int) -> int:
    from .record import check_held

    return check_held(what, n, least)


@torch.inference_mode()
def variations(pipe: Any, image: Any, n: int, *, seed: int = 0, fit: bool = True, batch_size: int | None = None) -> Edit:
    """``n`` images decoded from the embedding of one input image (a path or a (1, C, H, W) tensor in [-1, 1]).

    ``fit`` (default on) converts the input's mode and size to the encoder's; off, a mismatch is an error.
    The same pipeline, input and seed give identical bytes on CPU.
    """
    return variations_job(pipe, image, n, seed=seed, fit=fit).edit(batch_size)


def variations_job(pipe: Any, image: Any, n: int, *, seed: int = 0, fit: bool = True) -> Job:
    """``variations`` as a Job: variation i is decoded with the decoder noise of (seed, i) (stream
    ``decoder``, as ``sample`` draws a stochastic decoder's), so it does not depend on the batch."""
    from . import seeding
    from .record import check_run

    _check_n(n, "-n", 1)
    check_run(n, seed)
    pipe, x = _resolve(pipe, image, fit=fit)
    z = pipe.encode(x)

    @torch.inference_mode()
    def render(indices: Sequence[int]) -> torch.Tensor:
        rows = seeding.RowGenerators.for_samples(seed, [(int(i), 0) for i in indices], "decoder")
        return pipe.decode(z.expand(len(indices), *z.shape[1:]).contiguous(), generator=rows)

    return Job(n, render, _record(pipe, "variations", seed))


@torch.inference_mode()
def interpolate_embeddings(
    pipe: Any, a: Any, b: Any, frames: int, *, seed: int = 0, fit: bool = True, batch_size: int | None = None
) -> Edit:
    """``frames`` images from A to B: slerp of their embeddings, each frame decoded from the same noise."""
    return interpolate_embeddings_job(pipe, a, b, frames, seed=seed, fit=fit).edit(batch_size)


def interpolate_embeddings_job(pipe: Any, a: Any, b: Any, frames: int, *, seed: int = 0, fit: bool = True) -> Job:
    """``interpolate_embeddings`` as a Job: frame i is decoded alone, from the decoder noise of ``seed``."""
    from .pipeline import decoder_seed
    from .record import check_run

    _check_n(frames, "-n (frames)", 2)
    check_run(frames, seed)
    pipe, xa = _resolve(pipe, a, fit=fit)
    _, xb = _resolve(pipe, b, fit=fit)
    za, zb = pipe.encode(xa), pipe.encode(xb)

    @torch.inference_mode()
    def render(indices: Sequence[int]) -> torch.Tensor:
        from .seeding import RowGenerators

        # every row's generator has the one seed decoder_seed(seed): every frame gets the same decoder noise
        path = torch.cat([slerp(za, zb, i / (frames - 1)) for i in indices])
        return pipe.decode(path, generator=RowGenerators([decoder_seed(seed)] * len(indices)))

    return Job(frames, render, _record(pipe, "interpolate-embeddings", seed, frames=frames))


def variations_stream(
    pipe: Any, image: Any, n: int, *, seed: int = 0, fit: bool = True, batch_size: int = DEFAULT_BATCH_SIZE
) -> EditStream:
    """``variations`` as an EditStream: decoded ``batch_size`` at a time as it is read (memory flat in ``n``)."""
    return stream(variations_job(pipe, image, n, seed=seed, fit=fit), batch_size)


def interpolate_embeddings_stream(
    pipe: Any, a: Any, b: Any, frames: int, *, seed: int = 0, fit: bool = True, batch_size: int = DEFAULT_BATCH_SIZE
) -> EditStream:
    """``interpolate_embeddings`` as an EditStream, ``batch_size`` frames at a time as it is read."""
    return stream(interpolate_embeddings_job(pipe, a, b, frames, seed=seed, fit=fit), batch_size)


__all__ = [
    "check_variations",
    "interpolate_embeddings",
    "interpolate_embeddings_job",
    "interpolate_embeddings_stream",
    "variations",
    "variations_job",
    "variations_stream",
]
