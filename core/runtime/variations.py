"""Image variations and embedding interpolation with a stochastic decoder (unCLIP, Ramesh et al. 2022, sec. 3.1-3.2).

A pipeline does variations when its encoder maps an image to the latent its decoder consumes
and that decoder *samples* images from a latent (declares ``stochastic = True`` and takes
``decode(latents, generator=...)``; see ``Pipeline.stochastic_decoder``). unCLIP's decoder is
one: it turns a CLIP image embedding into an image by diffusion, so decoding the embedding of
one input N times with different noise gives N images that share what the embedding holds
(the digit, its style) and differ in what it does not. A deterministic decoder (a VQ-GAN's)
would return N copies, so such pipelines are refused in one line.

Interpolation (sec. 3.2): the two inputs' embeddings are slerped (Shoemake 1985) and each frame
is decoded from the *same* decoder noise, so only the embedding changes along the strip.

    from latentzoo.core.runtime.variations import variations, interpolate_embeddings
    edit = variations("digits-unclip", ["seven.png"], 8, seed=0)
    latentzoo.write_edit(edit, "variations.png", inputs=["seven.png"])
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from ..contract.errors import LatentzooError
from .editing import Edit, EditStream, slerp, spans
from .record import DEFAULT_BATCH_SIZE, check_run
from .seeding import SEEDING


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
def variations(pipe: Any, image: Any, n: int, *, seed: int = 0, fit: bool = True, batch_size: int = DEFAULT_BATCH_SIZE) -> Edit:
    """``n`` images decoded from the embedding of one input image (a path or a (1, C, H, W) tensor in [-1, 1]).

    ``fit`` (default on) converts the input's mode and size to the encoder's; off, a mismatch is an error.
    The same pipeline, input and seed give identical bytes on CPU.
    """
    return variations_stream(pipe, image, n, seed=seed, fit=fit, batch_size=batch_size).collect()


def variations_stream(
    pipe: Any, image: Any, n: int, *, seed: int = 0, fit: bool = True, batch_size: int = DEFAULT_BATCH_SIZE
) -> EditStream:
    """``variations`` as an ``EditStream``: decoded ``batch_size`` at a time (memory flat in ``n``).
    Variation i's decoder noise comes from its own generator, keyed (seed, i) as a sampled image's
    decoder noise is (core.runtime.seeding), so its bytes do not depend on the batch size or on ``n``."""
    from .seeding import RowGenerators

    _check_n(n, "-n", 1)
    check_run(n, seed, batch_size)
    pipe, x = _resolve(pipe, image, fit=fit)
    z = pipe.encode(x)

    @torch.inference_mode()
    def batches() -> Iterator[torch.Tensor]:
        for rows in spans(n, batch_size):
            generator = RowGenerators.for_samples(seed, [(i, 0) for i in rows], "decoder")
            yield pipe.decode(z.expand(len(rows), *z.shape[1:]).contiguous(), generator=generator)

    return EditStream(n, batches(), _record(pipe, "variations", seed, seeding=SEEDING))


@torch.inference_mode()
def interpolate_embeddings(
    pipe: Any, a: Any, b: Any, frames: int, *, seed: int = 0, fit: bool = True, batch_size: int = DEFAULT_BATCH_SIZE
) -> Edit:
    """``frames`` images from A to B: slerp of their embeddings, each frame decoded from the same noise."""
    return interpolate_embeddings_stream(pipe, a, b, frames, seed=seed, fit=fit, batch_size=batch_size).collect()


def interpolate_embeddings_stream(
    pipe: Any, a: Any, b: Any, frames: int, *, seed: int = 0, fit: bool = True, batch_size: int = DEFAULT_BATCH_SIZE
) -> EditStream:
    """``interpolate_embeddings`` as an ``EditStream``, ``batch_size`` frames at a time. Every row's
    generator has the one seed ``decoder_seed(seed)``, so every frame gets the same decoder noise
    (what a batch of one seeded so draws), whatever the batch."""
    from .pipeline import decoder_seed
    from .seeding import RowGenerators

    _check_n(frames, "-n (frames)", 2)
    check_run(frames, seed, batch_size)
    pipe, xa = _resolve(pipe, a, fit=fit)
    _, xb = _resolve(pipe, b, fit=fit)
    za, zb = pipe.encode(xa), pipe.encode(xb)

    @torch.inference_mode()
    def batches() -> Iterator[torch.Tensor]:
        for rows in spans(frames, batch_size):
            path = torch.cat([slerp(za, zb, i / (frames - 1)) for i in rows])
            yield pipe.decode(path, generator=RowGenerators([decoder_seed(seed)] * len(rows)))

    return EditStream(frames, batches(), _record(pipe, "interpolate-embeddings", seed, frames=frames))


__all__ = ["check_variations", "interpolate_embeddings", "interpolate_embeddings_stream", "variations", "variations_stream"]
