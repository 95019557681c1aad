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

Devices. ``--device cpu|cuda|cuda:N|mps`` is checked against this machine (a device that is
not there is refused in one line); sampling itself runs on the CPU only, so any other
device is refused too, naming why (no GPU path is tested yet).

Ranks. Under ``torchrun`` the run joins the process group (core.runtime.distributed, gloo on CPU) and
``-o DIR/`` renders one share per rank (core.runtime.rundir).
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
    """A device this machine has and sampling supports (only ``cpu`` today); one-line refusals."""
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
    raise LatentzooError(f"--device {name}: sampling runs on the CPU only in this version; use --device cpu")


def join_world() -> Any:
    """The torchrun process group (gloo on CPU), or None for a single process."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    from .distributed import init_world

    return init_world("cpu")


__all__ = ["apply_threads", "check_device", "check_threads", "join_world", "quiet_openmp"]
