"""Where a sampling run executes: its device, its CPU threads, its ranks (torch imported inside).

Threads. PyTorch's CPU kernels run on an OpenMP pool (libgomp in the pip wheels) of
``torch.get_num_threads()`` threads, by default one per usable core. Unless OMP_WAIT_POLICY
is set, a libgomp worker that reaches the end of a parallel region early *spin-waits*
(GOMP_SPINCOUNT, 300,000 iterations) before sleeping. When other processes share the cores,
the spinning worker burns the quantum its descheduled sibling needs to finish the region,
and every one of the model's thousands of regions waits for it. Measured on this 2-core
machine shared with other jobs (load average ~10; benchmarks/sample_scale.py threads, 64
``digits`` samples, 10 DDIM steps): torch's default gives 9.3 s at 1 thread and 41.5 s at 2;
with OMP_WAIT_POLICY=PASSIVE (waiting workers sleep) 9.8 s and 9.5 s; with ACTIVE 8.9 s and
51.8 s. With two more busy loops on the cores: default 30.0 / 123.9 s, PASSIVE 31.3 / 27.7 s.
So importing latentzoo sets OMP_WAIT_POLICY=PASSIVE unless the user chose a policy (it takes
effect when latentzoo is imported before torch, as the CLI always is), and the thread count
stays torch's default; ``--threads N`` / ``threads=N`` sets it (recorded in the sidecar,
``threads``): another thread count may round a grey level differently (as another batch shape).

Devices. ``--device cpu|cuda|cuda:N|mps`` (sample, the editing commands, serve, train; ``device=``
in the API) is checked against this machine by ``check_device``: a device that is not there is
refused in one line. On another device than the CPU, ``place`` moves the weights of every model
part (prior, decoder, encoder, conditioner, scorer) there and wraps each in ``OnDevice``: its
calls get their tensor arguments moved to the device and run under the precision's autocast,
and return float32 tensors on the CPU. So samplers, schedulers and per-index generators stay
on the CPU, unchanged: every sample's noise is drawn on the CPU from its (seed, i) generator and
only then moved (as diffusers does with a CPU generator), so the noise bytes match a CPU run's;
the pixels agree as far as the device's kernels round alike. What crosses per model call is
the latent batch and its conditioning, small beside the model's own work.

Precision (``--precision``): ``fp32``; ``bf16`` (autocast to bfloat16: CPU, CUDA and MPS);
``bf16-weights`` (the same, weights held in bfloat16); ``fp16`` (autocast to float16, weights
held in float32): CUDA only, since the CPU's float16 kernels are slow and incomplete, so
``--precision fp16`` elsewhere is refused in one line naming bf16. bf16 on the CPU runs (it did
before devices existed): bf16 is the CPU's native reduced precision.

Ranks. Under ``torchrun`` the run joins the process group (core.runtime.distributed: gloo on the CPU,
NCCL with ``--device cuda``, each rank on its own GPU) and renders one share of the indices per
rank (core.runtime.rundir): ``sample`` and the editing commands alike.
"""

from __future__ import annotations

import os
import re
from typing import Any

from ..contract.errors import LatentzooError

DEVICE = re.compile(r"cpu|mps|cuda(?::(\d+))?")


def quiet_openmp() -> None:
    """OMP_WAIT_POLICY=PASSIVE unless the user set it (effective only before torch loads libgomp;
    ``import latentzoo`` does it too)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def check_threads(threads: Any) -> int | None:
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= 1024:
        raise LatentzooError(f"--threads must be a whole number from 1 to 1024 (CPU threads for torch), not {threads!r}")
    return threads


def apply_threads(threads: int | None) -> int:
    """Set torch's CPU thread pool to ``threads`` (None: leave it); the pool size in effect."""
    import torch

    if check_threads(threads) is not None:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def check_device(name: Any) -> str:
    """``name`` if this machine has that device (cpu, cuda, cuda:N, mps); one-line refusals otherwise."""
    match = DEVICE.fullmatch(name) if isinstance(name, str) else None
    if match is None:
        raise LatentzooError(f"--device must be cpu, cuda, cuda:N or mps, not {name!r}")
    if name == "cpu":
        return name
    import torch

    if name.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise LatentzooError(f"--device {name}: this machine (or this torch build) has no CUDA device; use --device cpu")
        index = int(match.group(1) or 0)
        if index >= count:
            raise LatentzooError(f"--device {name}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    elif not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise LatentzooError("--device mps: this machine (or this torch build) has no MPS device; use --device cpu")
    return name


def check_precision_on(precision: str, device: str) -> None:
    """Refuse a precision the device does not run (fp16 off CUDA), in one line."""
    if precision == "fp16" and not device.startswith("cuda"):
        raise LatentzooError(
            f"--precision fp16 runs on CUDA only (the {device.split(':')[0].upper()}'s float16 kernels are slow and incomplete); "
            "use --precision bf16 there, or --device cuda"
        )


def autocast_dtype(precision: str) -> Any:
    """The dtype a precision autocasts the models' matmuls and convolutions to (None: fp32)."""
    import torch

    return {"fp32": None, "bf16": torch.bfloat16, "bf16-weights": torch.bfloat16, "fp16": torch.float16}[precision]


def _move(value: Any, device: Any, *, host: bool = False) -> Any:
    """Tensors in ``value`` (nested in tuples, lists and dicts) moved to ``device``; ``host``: to the
    CPU, floating ones as float32 (what the samplers compute in)."""
    import torch

    if isinstance(value, torch.Tensor):
        if host and value.is_floating_point():
            return value.to("cpu", torch.float32)
        return value.to(device)
    if isinstance(value, tuple | list):
        return type(value)(_move(v, device, host=host) for v in value)
    if isinstance(value, dict):
        return {k: _move(v, device, host=host) for k, v in value.items()}
    return value


class OnDevice:
    """A model part whose weights live on ``device``: each call (and each of its methods) takes
    CPU tensors and returns CPU tensors; attribute tensors (buffers a sampler reads) come back on
    the CPU. See the module doc."""

    def __init__(self, module: Any, device: str, precision: str) -> None:
        self.module, self.device, self.precision = module, device, precision

    def _run(self, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        import contextlib

        import torch

        dtype = autocast_dtype(self.precision)
        kind = self.device.split(":")[0]
        cast = torch.autocast(device_type=kind, dtype=dtype) if dtype is not None else contextlib.nullcontext()
        args, kwargs = _move((args, kwargs), self.device)
        with cast:
            out = fn(*args, **kwargs)
        return _move(out, "cpu", host=True)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._run(self.module, args, kwargs)

    def __getattr__(self, name: str) -> Any:
        import inspect

        import torch

        value = getattr(self.module, name)
        if isinstance(value, torch.Tensor):
            return value.to("cpu")
        if inspect.ismethod(value) and value.__self__ is self.module:
            return lambda *args, **kwargs: self._run(value, args, kwargs)
        return value


PARTS = ("prior", "decoder", "encoder", "conditioner", "scorer")


def place(pipe: Any, device: str, precision: str = "fp32") -> Any:
    """Put a built pipeline's model parts (and its refiner's) on ``device`` (module doc): wrapped in
    ``OnDevice`` off the CPU, unwrapped and moved back on it (a server's warm pipeline may serve
    both). Returns the pipeline."""
    import torch

    check_precision_on(precision, device)
    for role in PARTS:
        part = getattr(pipe, role, None)
        if isinstance(part, OnDevice):
            part = part.module
        if isinstance(part, torch.nn.Module):
            placed = part.to(device)
            setattr(pipe, role, placed if device == "cpu" else OnDevice(placed, device, precision))
    pipe.device = device
    if getattr(pipe, "refiner", None) is not None:
        place(pipe.refiner[0], device, precision)
    return pipe


def join_world(device: str = "cpu") -> Any:
    """The torchrun process group, or None for a single process: gloo on the CPU (and MPS), NCCL on
    CUDA (core.runtime.distributed.init_world, as training joins it)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    from .distributed import init_world

    return init_world("cuda" if device.startswith("cuda") else "cpu")


def rank_device(device: str, world: Any) -> str:
    """The device this rank renders on: under torchrun, ``--device cuda`` is each rank's own GPU
    (cuda:LOCAL_RANK, as training takes it); an explicit ``cuda:N`` or any other device is used as given."""
    if world is not None and device == "cuda" and str(world.device).startswith("cuda"):
        return str(world.device)
    return device


__all__ = [
    "OnDevice",
    "apply_threads",
    "autocast_dtype",
    "check_device",
    "check_precision_on",
    "check_threads",
    "join_world",
    "place",
    "quiet_openmp",
    "rank_device",
]
