"""The format toolkit: what a foreign format's reader and writer share (public; used by formats and families).

A family maps its own classes for a format in a class its component declaration names under
``"formats": {"diffusers": "module:Class"}`` (see ``latentzoo.plugins.diffusers.folders`` for
what such a mapping may define). This module finds those mappings through the declarations
(``mappings``, ``readers``), so a reader of diffusers folders or of single-file checkpoints
converts every family's parts without importing any of them, and carries the shared helpers:

* ``ReadContext``: one conversion (where it reads and stages, what it produced), reading
  configs, loading safetensors (never a pickle), the never-defaulted latent scaling factor
  (``--scaling-factor`` / ``--calibrate``), and ``convert_state``, which hands a config and a
  state dict to the family that maps its class;
* ``WriteContext``: one export (the registry, the folder), verified weights, model folders.
"""

from __future__ import annotations

import inspect
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from latentzoo.core.contract.errors import LatentzooError

FORMAT = "diffusers"
WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"
DIFFUSERS_VERSION = "0.30.0"  # the format written; any diffusers >= 0.30 reads it
SD_VAE_DEFAULT_SCALE = 0.18215


def mappings() -> dict[str, tuple[str, Any]]:
    """{component class name: (its diffusers mapping's target, declaration)} from the loaded plugins."""
    from latentzoo.core.contract.plugins import get_manager

    found = {}
    for cls_name, decl in get_manager().components().items():
        target = (decl.get("formats") or {}).get(FORMAT) if isinstance(decl.get("formats"), dict) else None
        if target:
            found[cls_name] = (target, decl)
    return found


def load_mapping(target: str) -> Any:
    from latentzoo.core.contract.registry import import_target

    obj = import_target(target)
    return obj() if inspect.isclass(obj) else obj


def readers() -> tuple[dict[str, Any], dict[str, Any]]:
    """({diffusers model class: mapping}, {diffusers pipeline class: mapping})."""
    models, pipelines = {}, {}
    for target, _ in mappings().values():
        mapping = load_mapping(target)
        for name in getattr(mapping, "reads", ()):
            models.setdefault(name, mapping)
        for name in getattr(mapping, "pipelines", ()):
            pipelines.setdefault(name, mapping)
    return models, pipelines


# ---------------------------------------------------------------------------------------
# reading


@dataclass
class ReadContext:
    """One conversion: where it reads and writes, what it has produced, and the shared helpers."""

    name: str
    source: Path
    stage: Path
    scaling_factor: float | None = None
    calibrate: str | None = None
    components: dict[str, dict[str, Any]] = field(default_factory=dict)
    pipelines: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    scaling_used: bool = False
    models: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def create(cls, name: str, source: Path, stage: Path, **options: Any) -> ReadContext:
        """A context whose ``models`` are the loaded families' mappings (what ``convert_state`` dispatches on)."""
        models, _ = readers()
        return cls(name, Path(source), Path(stage), models=models, **options)

    @property
    def provenance(self) -> dict[str, str]:
        return {"converted_from": FORMAT, "source": str(self.source.resolve())}

    def read_json(self, path: Path) -> dict[str, Any]:
        from latentzoo.core.contract.configbounds import check_dimensions
        from latentzoo.core.contract.userfiles import open_file

        try:
            with open_file(path, "config", "config") as f:  # a FIFO or a device is refused, not read
                data = json.loads(f.read().decode("utf-8"))
        except RecursionError as exc:
            raise LatentzooError(f"{path} is nested too deeply to be a model config; is this a diffusers folder?") from exc
        except OSError as exc:
            raise LatentzooError(f"cannot read {path}: {exc.strerror or exc}") from exc
        except UnicodeDecodeError as exc:
            raise LatentzooError(f"{path} is not UTF-8 text; is this a diffusers folder?") from exc
        except json.JSONDecodeError as exc:
            raise LatentzooError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg}); is this a diffusers folder?") from exc
        if not isinstance(data, dict):
            raise LatentzooError(f"{path} is not a JSON object; is this a diffusers folder?")
        check_dimensions(data, str(path))
        return data

    def config_of(self, folder: Path) -> tuple[Path, dict[str, Any]]:
        for name in ("config.json", "scheduler_config.json"):
            if (folder / name).is_file():
                return folder / name, self.read_json(folder / name)
        raise LatentzooError(f"{folder} has no model_index.json, config.json or scheduler_config.json; give a diffusers folder")

    @staticmethod
    def with_defaults(config: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
        return {**defaults, **{k: v for k, v in config.items() if not k.startswith("_")}}

    @staticmethod
    def require(cond: bool, where: Path, message: str) -> None:
        if not cond:
            raise LatentzooError(f"{where}: {message}; latentzoo cannot convert this model")

    def weights_file(self, folder: Path) -> Path:
        """The folder's safetensors weights; a pickle-only folder is refused (never unpickled)."""
        path = folder / WEIGHTS_FILE
        if not path.is_file():
            if (folder / "diffusion_pytorch_model.bin").is_file():
                raise LatentzooError(
                    f"{folder} holds only diffusion_pytorch_model.bin (a pickle, never loaded by latentzoo); "
                    "re-save it as safetensors (save_pretrained(..., safe_serialization=True))"
                )
            raise LatentzooError(f"{folder} has no {WEIGHTS_FILE}; give a diffusers model folder saved with safetensors")
        return path

    def load_weights(self, folder: Path) -> dict[str, Any]:
        from safetensors.torch import load_file

        from latentzoo.core.contract.weights import check_layer_dtypes

        path = self.weights_file(folder)
        try:
            tensors = load_file(str(path))
        except Exception as exc:
            raise LatentzooError(f"{path} is not a readable safetensors file ({exc})") from exc
        check_layer_dtypes(tensors, path)
        return tensors

    @staticmethod
    def read_tensors(path: Path) -> dict[str, Any]:
        """A safetensors file's tensors, memory-mapped (``load_file`` maps the file: pages are read on use, not copied)."""
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise LatentzooError(f"{path} is not a readable safetensors file ({first})") from exc

    @staticmethod
    def build_assigned(cls: Any, config: dict[str, Any], state: dict[str, Any], where: Any) -> Any:
        """``cls(**config)`` holding ``state``'s tensors themselves: parameters are never allocated nor
        initialised (built on meta, ``load_state_dict(assign=True)``), so a multi-GB model converts without
        a copy of its weights; a tensor whose shape the config contradicts is refused in one line naming it."""
        from latentzoo.core.contract.weights import load_state, parameters_on_meta

        try:
            with parameters_on_meta():
                model = cls(**config)
        except (TypeError, ValueError, LatentzooError) as exc:
            raise LatentzooError(f"{where}: config does not build a latentzoo model ({exc})") from exc
        load_state(model, state, where, f"latentzoo's {cls.__name__}", assign=True)  # the shared one-line shape / key checks
        return model.eval().requires_grad_(False)

    def convert_state(self, raw: dict[str, Any], state: dict[str, Any], comp: str, where: Any, **context: Any) -> dict[str, Any]:
        """Convert one model given as its config dict + state dict (diffusers / transformers key names) with the
        family that maps its class (``_class_name``, or transformers' ``architectures``); returns what that
        family's ``read_state`` returns (e.g. ``latent_space``, ``conditioning_space``)."""
        kind = raw.get("_class_name") or (raw.get("architectures") or [None])[0]
        mapping = self.models.get(kind)
        if mapping is None or not hasattr(mapping, "read_state"):
            supported = ", ".join(sorted(k for k, m in self.models.items() if hasattr(m, "read_state"))) or "none"
            raise LatentzooError(
                f"{where}: class {kind!r} is not supported here (classes a loaded family converts from tensors: {supported})"
            )
        return mapping.read_state(self, where, raw, state, comp, **context) or {}

    @staticmethod
    def build_and_load(cls: Any, config: dict[str, Any], state: dict[str, Any], where: Path) -> Any:
        """Build ``cls(**config)`` and load ``state`` strictly: the fit proves the key mapping."""
        try:
            model = cls(**config)
        except (TypeError, ValueError) as exc:
            raise LatentzooError(f"{where}: config does not build a latentzoo model ({exc})") from exc
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise LatentzooError(
                f"{where}: weights do not map onto latentzoo's layout: {len(missing)} missing {missing[:3]}, "
                f"{len(unexpected)} unexpected {unexpected[:3]}"
            )
        return model.eval().requires_grad_(False)

    def save(self, comp: str, model: Any, family: str) -> str:
        """Write ``model``'s weights to the stage as ``comp.safetensors``; returns their sha256."""
        from latentzoo.core.contract.weights import save_tensors

        return save_tensors(self.stage / f"{comp}.safetensors", model.state_dict(), metadata={"family": family})

    def scaling(self, path: Path, raw: dict[str, Any], model: Any, *, suspect_default: bool) -> tuple[float, str]:
        """(latent scaling factor, where it came from): --scaling-factor, --calibrate, or a stated config value."""
        self.scaling_used = True
        if self.scaling_factor is not None and self.calibrate is not None:
            raise LatentzooError("give --scaling-factor or --calibrate, not both")
        if self.scaling_factor is not None:
            sf = self.scaling_factor
            if not (isinstance(sf, int | float) and math.isfinite(sf) and sf > 0):
                raise LatentzooError(f"--scaling-factor must be a positive finite number, not {sf}")
            return float(sf), "--scaling-factor"
        if self.calibrate is not None:
            sf, mean, n = calibrate(model, self.calibrate)
            self.notes.append(
                f"calibrated on {self.calibrate} ({n} images): latent std {1 / sf:.6g}, mean {mean:.6g}; "
                "shift stays 0 (diffusers' latents are only scaled, as LDM's scale_factor = 1/std)"
            )
            return sf, f"--calibrate {self.calibrate}"
        stated = raw.get("scaling_factor")
        if stated is None:
            raise LatentzooError(
                f"{path} states no scaling_factor and latentzoo never defaults it: "
                "pass --scaling-factor F, or --calibrate DATA (a dataset name or image folder) to measure 1/std of the latents"
            )
        if not (isinstance(stated, int | float) and math.isfinite(stated) and stated > 0):
            raise LatentzooError(
                f"{path} states scaling_factor {stated!r}, not a positive number; pass --scaling-factor F or --calibrate DATA"
            )
        if suspect_default and abs(float(stated) - SD_VAE_DEFAULT_SCALE) < 1e-9:
            raise LatentzooError(
                f"{path} states scaling_factor {SD_VAE_DEFAULT_SCALE}, diffusers' default (Stable Diffusion's KL-VAE constant), "
                f"not a measurement for this VQ model: pass --calibrate DATA to measure it, "
                f"or --scaling-factor {SD_VAE_DEFAULT_SCALE} to accept it"
            )
        return float(stated), path.name

    def read_part(self, folder: Path, comp: str, **context: Any) -> dict[str, Any]:
        """Convert one model / scheduler folder with the family that maps its class."""
        path, raw = self.config_of(folder)
        kind = raw.get("_class_name") or (raw.get("architectures") or [None])[0]  # diffusers' or transformers' config
        mapping = self.models.get(kind)
        if mapping is None:
            supported = ", ".join(sorted(self.models)) or "none"
            raise LatentzooError(f"{path}: class {kind!r} is not supported (classes a loaded family maps: {supported})")
        return mapping.read(self, folder, raw, comp, **context) or {}


def calibrate(model: Any, data: str, batch: int = 64) -> tuple[float, float, int]:
    """(scaling_factor = 1/std, mean, number of images) of ``model``'s latents (``model.encode``) on ``data``."""
    import torch

    from latentzoo.core.runtime.data import load_dataset

    images = load_dataset(data, split="train", size=int(model.sample_size), channels=int(model.image_channels)).images
    with torch.inference_mode():
        z = torch.cat([model.encode(images[i : i + batch]) for i in range(0, len(images), batch)]).double()
    std = float(z.std())
    if not math.isfinite(std) or std <= 0:
        raise LatentzooError(f"--calibrate {data}: the latents have std {std}; cannot measure a scaling factor")
    return 1.0 / std, float(z.mean()), len(images)


# ---------------------------------------------------------------------------------------
# writing


@dataclass
class WriteContext:
    """One export: the registry, the (temporary) folder, notes, and the shared helpers."""

    registry: Any
    folder: Path
    notes: list[str] = field(default_factory=list)

    def tensors(self, entry: Any) -> dict[str, Any]:
        """An entry's weights, sha256-verified."""
        from latentzoo.core.contract.weights import load_tensors
        from latentzoo.core.runtime.sources import resolve_weights

        if "weights" not in entry.data:
            raise LatentzooError(f"{entry.name} has no weights to export")
        path, sha = resolve_weights(entry)
        return load_tensors(path, sha)

    @staticmethod
    def write_model(folder: Path, config: dict[str, Any], tensors: dict[str, Any], config_name: str = "config.json") -> None:
        from latentzoo.core.contract.weights import save_tensors, write_json

        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / config_name, config)
        if tensors:
            save_tensors(folder / WEIGHTS_FILE, tensors, metadata={"format": "pt"})

    @staticmethod
    def signature_defaults(cls: Any) -> dict[str, Any]:
        """A class's constructor defaults (for config keys a registry entry leaves out)."""
        params = inspect.signature(cls.__init__).parameters.items()
        return {k: p.default for k, p in params if p.default is not inspect.Parameter.empty}

    def options(self, entry: Any) -> dict[str, Any]:
        """An entry's options: its class's declared defaults, then the entry's config."""
        decl = self.registry.declaration(entry)
        defaults = {o["name"]: o.get("default") for o in decl.get("options") or [] if isinstance(o, dict) and "name" in o}
        return {**defaults, **dict(entry.data.get("config") or {})}

    def mapping(self, entry: Any) -> Any | None:
        found = mappings().get(entry.data.get("class", ""))
        return load_mapping(found[0]) if found else None

    def write_part(self, entry: Any, folder: Path, **context: Any) -> str:
        """Write one component with the family that maps its class; returns the diffusers class written."""
        mapping = self.mapping(entry)
        if mapping is None or not hasattr(mapping, "write"):
            exportable = ", ".join(sorted(c for c, (t, _) in mappings().items())) or "none"
            raise LatentzooError(
                f"{entry.name} ({entry.data.get('class')}) has no diffusers counterpart; classes that export: {exportable}, or a pipeline"
            )
        return mapping.write(self, entry, folder, **context)
