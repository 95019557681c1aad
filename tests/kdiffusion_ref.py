"""k-diffusion's own sampling.py as a test-only reference, without importing the k_diffusion package.

``import k_diffusion`` pulls its training stack (jsonmerge, clip, kornia, wandb, torchvision
pinned to another torch); ``pip install k-diffusion`` with dependencies replaces the CPU torch.
Its samplers need only scipy, torchsde, torchdiffeq and tqdm, so the installed
``k_diffusion/sampling.py`` is loaded as a module of a stand-in package whose ``utils`` has the
two helpers it uses. Install the reference with:

    pip install --no-deps k-diffusion torchsde torchdiffeq trampoline

Nothing of k-diffusion is vendored or imported by latentzoo at run time.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

import torch

INSTALL = "pip install --no-deps k-diffusion torchsde torchdiffeq trampoline"


def load() -> tuple[Any, str | None]:
    """(k-diffusion's sampling module, None), or (None, the reason it cannot be loaded)."""
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or spec.origin is None:
        return None, f"k-diffusion is not installed ({INSTALL})"
    missing = [m for m in ("scipy", "torchsde", "torchdiffeq", "tqdm") if importlib.util.find_spec(m) is None]
    if missing:
        return None, f"k-diffusion's sampling.py needs {', '.join(missing)} ({INSTALL})"
    name = "_kdiffusion_reference"
    if f"{name}.sampling" in sys.modules:
        return sys.modules[f"{name}.sampling"], None
    package = types.ModuleType(name)
    package.__path__ = []
    utils = types.ModuleType(f"{name}.utils")
    utils.append_dims = lambda x, n: x[(...,) + (None,) * (n - x.ndim)]  # k_diffusion.utils.append_dims
    utils.append_zero = lambda x: torch.cat([x, x.new_zeros([1])])
    package.utils = utils
    sys.modules[name], sys.modules[f"{name}.utils"] = package, utils
    path = Path(spec.origin).with_name("sampling.py")
    module_spec = importlib.util.spec_from_file_location(f"{name}.sampling", path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[f"{name}.sampling"] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:  # a k-diffusion release whose sampling.py imports something else
        del sys.modules[f"{name}.sampling"]
        return None, f"cannot load k-diffusion's sampling.py: {exc}"
    return module, None
