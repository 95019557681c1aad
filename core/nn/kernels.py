"""CPU inference kernels: oneDNN linear layers and prepacked oneDNN convolutions.

Two costs of eager PyTorch on a CPU that a loaded pipeline need not pay at inference:

- ``nn.Linear`` in fp32 calls BLAS ``addmm`` (MKL in the official builds). On AMD CPUs MKL's
  fp32 GEMM runs well below oneDNN's: on this project's AMD EPYC a (2048 x 320) x (320 x 2560)
  product takes 28 ms through ``addmm`` and 12 ms through oneDNN, on the same dense weight.
- ``nn.Conv2d`` calls oneDNN, but hands it the weight in PyTorch's plain OIHW layout, which
  oneDNN reorders into its blocked layout on *every* call. At the low resolutions of a UNet
  (8x8, 4x4 latents) that reorder costs more than the convolution: a 1280 -> 1280 3x3
  convolution of a (2, 1280, 4, 4) input takes 34 ms eager and 7 ms with the weight packed once.

``accelerate(module)`` switches a module's ``nn.Linear`` and ``nn.Conv2d`` layers to classes
that, on CPU, in fp32, with autograd off (inference) and no autocast, call ``torch.ops.mkldnn``'s
``_linear_pointwise`` and ``_convolution_pointwise`` (the kernels ``torch.compile`` emits for
frozen CPU graphs) and otherwise run exactly as before: training, CUDA, bf16 weights, autocast
and ``--precision bf16`` take the eager path. Results agree with eager to float rounding (about 1e-6
relative; ``tests/test_kernels.py``) and are deterministic: the same input gives the same bytes.

A packed convolution weight is a copy in oneDNN's layout, made at the first call for the
input's shape (the layout oneDNN picks depends on it) and remade when the weight changes
(``load_state_dict``, an in-place update) or the shape does. A weight adopted from a
memory-mapped safetensors file (``core.runtime.build``'s no-copy load, as for Stable Diffusion's UNet)
is packed from a temporary mapping of its bytes, unmapped right after (``file_source``): its
dense pages are never touched, so resident memory holds the packed copy instead of the dense
one, not both. A weight that lives only in memory is packed only when small
(``MAX_IN_MEMORY_PACK``); a larger one (a model built in memory) keeps the eager convolution
rather than double its memory.

``LATENTZOO_KERNELS=eager`` turns all of this off (for A/B checks; ``benchmarks/sd_fullsize.py``
reports both).
"""

from __future__ import annotations

import contextlib
import mmap
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

# A weight that lives only in memory (not adopted from a file) is packed only up to this size: the
# packed copy is extra memory there (a few MB at most per layer; a digits model's largest is 0.6 MB).
MAX_IN_MEMORY_PACK = 4 * 2**20


def available() -> bool:
    """oneDNN's pointwise ops are in this torch build and not turned off by ``LATENTZOO_KERNELS=eager``."""
    if os.environ.get("LATENTZOO_KERNELS", "").strip().lower() == "eager":
        return False
    ops = torch.ops.mkldnn
    return torch.backends.mkldnn.is_available() and hasattr(ops, "_linear_pointwise") and hasattr(ops, "_convolution_pointwise")


_AVAILABLE = available()


@contextlib.contextmanager
def eager() -> Iterator[None]:
    """Inside, accelerated layers run PyTorch's eager kernels (an A/B switch, as ``LATENTZOO_KERNELS=eager``)."""
    global _AVAILABLE
    before, _AVAILABLE = _AVAILABLE, False
    try:
        yield
    finally:
        _AVAILABLE = before


def _inference_on_cpu(x: torch.Tensor, weight: torch.Tensor) -> bool:
    # fp32 only. bf16 linears already run on oneDNN in eager; bf16 convolutions packed this way ran a
    # full-size SD 1.5 UNet step 1.4x *slower* than eager on this CPU (1.91 s vs 1.36 s), so bf16 stays eager.
    return (
        _AVAILABLE
        and x.dtype == torch.float32
        and x.device.type == "cpu"
        and weight.device.type == "cpu"
        and weight.dtype == x.dtype
        and weight.layout == torch.strided
        and x.numel() > 0
        and not torch.is_grad_enabled()
        and not torch.is_autocast_enabled("cpu")
    )


class OneDNNLinear(nn.Linear):
    """``nn.Linear`` whose CPU fp32 inference runs oneDNN's GEMM on the same dense weight (no copy)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() in (2, 3) and _inference_on_cpu(x, self.weight):
            return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "")
        return super().forward(x)


class PackedConv2d(nn.Conv2d):
    """``nn.Conv2d`` whose CPU inference runs oneDNN on a weight packed once into oneDNN's layout."""

    _packed: tuple[tuple[object, ...], torch.Tensor | None] | None = None  # (what it was packed for, packed or None: eager)

    def _packed_weight(self, shape: tuple[int, ...]) -> torch.Tensor | None:
        """The weight in oneDNN's layout for inputs of ``shape``, or None where packing would add memory."""
        w = self.weight
        if w.is_inference():
            return None  # made under inference_mode: no version counter, so an in-place change could not be seen
        # Any change of the weight (a new tensor, new storage, an in-place update, a cast) or of the shape repacks.
        key = (id(w), w.data_ptr(), w._version, w.dtype, shape)
        if self._packed is None or self._packed[0] != key:
            self._packed = None  # free the old copy before making the new one
            packed = source = None
            with file_source(w) as dense:
                if dense is None and w.numel() * w.element_size() <= MAX_IN_MEMORY_PACK:
                    dense = w.detach()
                if dense is not None:
                    source = dense.to_mkldnn()
                del dense
            # The temporary mapping is closed before the reorder: at the peak (the largest layer, packed
            # at the first call when nearly every other weight is resident) memory holds two copies of
            # the layer (oneDNN's plain copy and the packed one), not three (the mapped pages as well).
            if source is not None:
                packed = torch._C._nn.mkldnn_reorder_conv2d_weight(
                    source, list(self.padding), list(self.stride), list(self.dilation), self.groups, list(shape)
                )
                del source
            self._packed = (key, packed)  # None remembers "eager" for this weight and shape
        return self._packed[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Packing pays where the weight outweighs the activation (a UNet's low resolutions). Where the
        # activation is larger (a VAE decoder's 128x128 and 256x256 layers) the per-call reorder is
        # negligible and some packed layouts run slower (256 -> 256 3x3 at 128x128: 91 ms eager,
        # 187 ms packed), so those layers stay eager.
        pays = x.dim() == 4 and self.weight.numel() >= x.numel()
        w = self._packed_weight(tuple(x.shape)) if pays and _inference_on_cpu(x, self.weight) else None
        if w is None and self._packed is not None and self._packed[0][:2] != (id(self.weight), self.weight.data_ptr()):
            self._packed = None  # the weight was replaced (a cast, new storage): drop the stale packed copy
        if w is not None:
            return torch.ops.mkldnn._convolution_pointwise(
                x.contiguous(), w, self.bias, list(self.padding), list(self.stride), list(self.dilation), self.groups, "none", [], ""
            )
        return super().forward(x)

    def __getstate__(self) -> dict[str, object]:
        state = self.__dict__.copy()
        state.pop("_packed", None)  # a cache in oneDNN's layout: copies and pickles repack on their first call
        return state


def _packable(conv: nn.Conv2d) -> bool:
    # Output widths under 16 (a UNet's conv_out to 4 latent channels) run slower packed: oneDNN pads them to a block.
    return conv.groups == 1 and conv.padding_mode == "zeros" and not isinstance(conv.padding, str) and conv.out_channels >= 16


def accelerate(module: nn.Module) -> nn.Module:
    """Switch ``module``'s plain ``nn.Linear`` / ``nn.Conv2d`` layers to the oneDNN inference kernels (in place).

    Only layers of exactly those classes change (a subclass keeps its own forward); parameters,
    state-dict keys and the training path are untouched. A no-op where oneDNN is unavailable.
    """
    if not _AVAILABLE:
        return module
    for m in module.modules():
        if type(m) is nn.Linear:
            m.__class__ = OneDNNLinear
        elif type(m) is nn.Conv2d and _packable(m):
            m.__class__ = PackedConv2d
    return module


# -- packing from the file instead of the mapping ---------------------------------------------

_SOURCE = "_latentzoo_file_source"


def _identity(stat: os.stat_result) -> tuple[int, int, int, int]:
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)


def set_file_source(param: torch.Tensor, path: str | Path, start: int, end: int) -> None:
    """Record on ``param`` that it holds bytes ``start:end`` of ``path`` (a memory-mapped load), so packing reads the file."""
    if param.is_inference():
        return  # no version counter to tell a later in-place change (core.nn.kernels packs it eagerly instead)
    ident = _identity(os.stat(path))
    setattr(param, _SOURCE, (Path(path), ident, start, end, param.data_ptr(), param._version, param.dtype, tuple(param.shape)))


@contextlib.contextmanager
def file_source(param: torch.Tensor) -> Iterator[torch.Tensor | None]:
    """``param``'s values from its file, through a temporary private mapping of its byte range that is
    unmapped on exit (its pages leave resident memory with it, and no heap buffer is left behind to
    fragment it); None when it has no file, it changed since the load, or the file was replaced (an
    atomic rewrite is a new file: the model's own mapping still holds the old one)."""
    source = getattr(param, _SOURCE, None)
    region = None
    if source is not None:
        path, ident, start, end, ptr, version, dtype, shape = source
        if (param.data_ptr(), param._version, param.dtype, tuple(param.shape)) == (ptr, version, dtype, shape):
            try:
                with open(path, "rb") as f:
                    if _identity(os.fstat(f.fileno())) == ident and end > start:
                        aligned = start - start % mmap.ALLOCATIONGRANULARITY
                        region = mmap.mmap(f.fileno(), end - aligned, access=mmap.ACCESS_COPY, offset=aligned)
            except (OSError, ValueError):
                region = None
    if region is None:
        yield None
        return
    try:
        count = (end - start) // torch.empty((), dtype=dtype).element_size()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a copy-on-write mapping is writable; nothing writes to it
            tensor = torch.frombuffer(region, dtype=dtype, count=count, offset=start - aligned).reshape(shape)
        yield tensor
        del tensor
    finally:
        try:
            region.close()
        except BufferError:  # a caller kept a view: the mapping lives until that view dies
            pass
