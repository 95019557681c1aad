"""latentzoo: a plugin-based zoo of generative-model components.

The public Python API mirrors the CLI; see ``latentzoo.api``. Importing latentzoo does not
import torch: model code loads when a component is built.
"""

from __future__ import annotations

import os as _os
from importlib import metadata as _metadata

# OpenMP workers that wait sleep instead of spinning (unless the user chose): on a machine whose
# cores are shared, torch's default spin-wait made 2 threads 4-5x slower than 1 (core/runtime/devices.py).
# Effective only when latentzoo is imported before torch (the CLI always is).
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

try:
    __version__ = _metadata.version("latentzoo")
except _metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

_API = ("registry", "list_entries", "info", "compose", "load_pipeline", "build", "save_grid", "sample", "describe_options")
_TRAINING = ("train", "TrainOptions", "Run", "Phase", "MicroBatch", "EMA", "split_options", "finish_run")  # the trainer contract
_SCORING = {"classify": "classify", "clip_score": "score", "load_scorer": "load_scorer"}  # core.runtime.scoring


def __getattr__(name: str):  # PEP 562: keep `import latentzoo` light
    if name in _ELSEWHERE:
        import importlib

        return getattr(importlib.import_module(_ELSEWHERE[name], __name__), name)
    if name in _API:
        from .core.runtime import api

        return getattr(api, name)
    if name in _TRAINING:  # imports torch
        from .core import training

        return getattr(training, name)
    if name in _SCORING:
        from .core.runtime import scoring

        return getattr(scoring, _SCORING[name])
    raise AttributeError(f"module 'latentzoo' has no attribute {name!r}")


__all__ = ["__version__", *_API, *_TRAINING, *_SCORING]

# The rest of the CLI's verbs, by module: latentzoo.reconstruct(...), latentzoo.pull(...), ...
_ELSEWHERE = {
    **dict.fromkeys(("reconstruct", "encode", "decode"), ".core.runtime.codec"),
    **dict.fromkeys(("convert", "export", "push", "pull", "formats", "lora_add", "apply_loras", "fuse", "merge"), ".interop.api"),
    **dict.fromkeys(("img2img", "inpaint", "interpolate", "write_edit"), ".core.runtime.editing"),
    **dict.fromkeys(("variations", "interpolate_embeddings"), ".core.runtime.variations"),
}
__all__ += list(_ELSEWHERE)
