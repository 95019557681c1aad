"""Encoding, decoding and reconstructing image files with an autoencoder: what the CLI verbs do.

    import latentzoo
    latentzoo.reconstruct("digits-vqgan", ["a.png", "b.png"], "out/")   # out/reconstruction.png
    latentzoo.encode("digits-vqgan", ["a.png"], "z.safetensors")
    latentzoo.decode("digits-vqgan", "z.safetensors", "decoded/")      # one PNG per latent

``name`` is a pipeline (its encoder and decoder) or an autoencoder component. An output that
ends with ``/`` or is an existing directory gets the default file name inside it (decode:
one PNG per image); nothing is ever written under a file name that looks like a directory.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..contract.errors import LatentzooError


def _is_dir_target(output: str | Path) -> bool:
    text = str(output)
    return text.endswith(("/", os.sep)) or Path(text).is_dir()


def output_path(output: str | Path, default_name: str, *, each: bool = False) -> Path:
    """Where a verb writes: a file, or ``default_name`` inside a directory target (``each``: the directory itself)."""
    text = str(output)
    if not text:
        raise LatentzooError("-o is empty; give a file or a directory ending in /")
    directory = _is_dir_target(text)
    path = Path(text) if each or not directory else Path(text) / default_name
    parent = Path(text) if directory else path.parent
    if parent.exists() and not parent.is_dir():
        raise LatentzooError(f"-o {text}: {parent} is a file, not a directory; choose another -o")
    probe = parent
    while not probe.exists():
        probe = probe.parent
    if not os.access(probe, os.W_OK):
        raise LatentzooError(f"cannot write {text}: {probe} is not writable; choose another -o")
    if not each and path.is_dir():
        raise LatentzooError(f"-o {text}: {path} is a directory; give a file name")
    return path


def autoencoder(name: str, *, extra: Any = ()) -> Any:
    """A pipeline (its encoder and decoder), or an autoencoder component used as both."""
    from ..contract.compose import PipelineSpec, load_spec
    from .api import registry
    from .build import Builder

    reg = registry(extra)
    entry = reg.entries.get(name)
    if entry is not None and entry.section == "components":
        from .pipeline import Pipeline

        builder = Builder(reg)
        roles = entry.roles
        if "encoder" not in roles and "decoder" not in roles:
            raise LatentzooError(f"{name} is a {'/'.join(roles)}; give an autoencoder or a pipeline (see `latentzoo list --role encoder`)")
        spec = PipelineSpec(prior="-", decoder=name, sampler="-", encoder=name if "encoder" in roles else None, name=name)
        return Pipeline(
            prior=None,
            decoder=builder.component(name, "decoder") if "decoder" in roles else None,
            sampler=None,
            spec=spec,
            encoder=builder.component(name, "encoder") if "encoder" in roles else None,
            sha256=builder.sha256,
        )
    spec, reg = load_spec(reg, name)
    return Builder(reg).pipeline(spec)


def _inputs(pipe: Any, images: list[str | Path], fit: bool) -> Any:
    from .images import load_images

    enc = pipe.encoder
    if enc is None:
        raise LatentzooError(f"{pipe.spec.name} has no encoder; give an autoencoder or a pipeline with one")
    if not images:
        raise LatentzooError("give at least one image file")
    size = int(getattr(enc, "sample_size", 32))
    return load_images([str(p) for p in images], size=size, channels=enc.image_channels, fit=fit, expects=pipe.spec.encoder)


@dataclass
class Reconstruction:
    output: Path
    psnr_db: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def reconstruct(
    name: str, images: list[str | Path], output: str | Path = "reconstruction.png", *, fit: bool = False, extra: Any = ()
) -> Reconstruction:
    """Encode and decode ``images``; write inputs (top row) above reconstructions as one PNG; PSNR per image."""
    import torch

    from .images import save_grid
    from .metrics import psnr

    out = output_path(output, "reconstruction.png")
    pipe = autoencoder(name, extra=extra)
    x = _inputs(pipe, images, fit)
    if pipe.decoder is None:
        raise LatentzooError(f"{name} has no decoder")
    rec = pipe.reconstruct(x)
    save_grid(torch.cat([x, rec]), out, nrow=len(x))
    scores = {str(p): round(psnr(rec[i : i + 1], x[i : i + 1]), 2) for i, p in enumerate(images)}
    return Reconstruction(out, scores, constant_warning(rec, f"the reconstructions in {output}"))


@dataclass
class Encoded:
    output: Path
    shape: tuple[int, ...]
    latent_space: Any


def encode(
    name: str, images: list[str | Path], output: str | Path = "latents.safetensors", *, fit: bool = False, extra: Any = ()
) -> Encoded:
    """Encode ``images`` to a .safetensors file: raw latents plus their latent space (for ``decode``)."""
    from ..contract.weights import output_lock, save_tensors

    out = output_path(output, "latents.safetensors")
    pipe = autoencoder(name, extra=extra)
    z = pipe.encode(_inputs(pipe, images, fit))
    meta = {
        "latent_space": json.dumps(pipe.encoder.latent_space.to_dict()),
        "encoder": pipe.spec.encoder or "",
        "files": json.dumps([str(p) for p in images]),
    }
    with output_lock(out, f"-o {out}"):  # one writer per output
        save_tensors(out, {"latents": z}, metadata=meta)
    return Encoded(out, tuple(z.shape), pipe.encoder.latent_space)


def _checked_latents(z: Any, space: Any, source: Any) -> Any:
    """The file's latents as a decoder takes them: a batch (N, *latent shape) of float32 for a
    continuous space (fp16 / bf16 are widened), whole numbers for a discrete one; anything
    else is one line naming the file."""
    import torch

    continuous = getattr(space, "kind", "continuous") == "continuous"
    channels = getattr(space, "channels", None)
    if continuous and (z.ndim != 4 or (channels and z.shape[1] != channels)):
        raise LatentzooError(
            f"{source} holds latents of shape {tuple(z.shape)}, not (N, {channels or 'C'}, H, W); write it with `latentzoo encode`"
        )
    if not continuous and z.ndim not in (3, 4):
        raise LatentzooError(f"{source} holds codes of shape {tuple(z.shape)}, not (N, H, W); write it with `latentzoo encode`")
    if z.is_floating_point():
        z = z.float()
        if not bool(torch.isfinite(z).all()):
            raise LatentzooError(f"{source} holds NaN or Inf latents; write it again with `latentzoo encode`")
    elif continuous or z.dtype == torch.bool:
        raise LatentzooError(
            f"{source} holds {str(z.dtype).replace('torch.', '')} latents, but a continuous latent space takes floats; write it with `latentzoo encode`"
        )
    return z


@dataclass
class Decoded:
    output: Path
    files: list[Path]
    warnings: list[str] = field(default_factory=list)


def decode(name: str, latents: str | Path, output: str | Path = "decoded.png", *, allow_mismatch: bool = False, extra: Any = ()) -> Decoded:
    """Decode a latent file from ``encode``: a PNG grid, or one PNG per latent into a directory."""
    from ..contract.latent import LatentSpace, check_spaces
    from ..contract.weights import load_tensors, output_lock, read_metadata
    from .images import save_each, save_grid

    each = _is_dir_target(output)
    out = output_path(output, "decoded.png", each=each)
    tensors = load_tensors(latents)
    if "latents" not in tensors:
        raise LatentzooError(f"{latents} holds no 'latents' tensor; write it with `latentzoo encode`")
    meta = read_metadata(latents)
    if "latent_space" not in meta:
        raise LatentzooError(f"{latents} does not say which latent space it is in; write it with `latentzoo encode`")
    pipe = autoencoder(name, extra=extra)
    if pipe.decoder is None:
        raise LatentzooError(f"{name} has no decoder")
    try:
        space = LatentSpace.from_dict(json.loads(meta["latent_space"]))
    except (ValueError, TypeError, KeyError) as exc:
        raise LatentzooError(f"{latents}: its latent_space metadata is unreadable ({exc}); write it with `latentzoo encode`") from exc
    _, warnings = check_spaces(
        f"latents {latents}", space, f"decoder {pipe.spec.decoder}", pipe.decoder.accepted_spaces, allow_mismatch=allow_mismatch
    )
    images = pipe.decode(_checked_latents(tensors["latents"], space, latents))
    with output_lock(out, f"-o {output}"):
        files = save_each(images, out) if each else [save_grid(images, out)]
    return Decoded(out, list(files), [*warnings, *constant_warning(images, str(output))])


def constant_warning(images: Any, output: str) -> list[str]:
    """The warning ``SampleOutput`` gives a constant output (every pixel one value: an all-zero or untrained decoder)."""
    from .images import to_uint8

    pixels = to_uint8(images)
    lo, hi = int(pixels.min()), int(pixels.max())
    if lo != hi:
        return []
    return [f"every pixel of {output} is {lo}: the output is constant (an all-zero or untrained decoder?)"]
