"""Crash-consistent checkpoints: ``checkpoints/step-NNNNNNNN/`` written as a temporary folder
and renamed (one atomic unit, manifest last), verified on resume; EMA weights; and the run
directory's preparation (fresh, resumed or refused).
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..contract.errors import LatentzooError
from ..contract.weights import load_tensors, save_tensors, write_json
from .options import TrainOptions

if TYPE_CHECKING:
    from .run import Run


class EMA:
    """Exponential moving average of parameters (Polyak averaging), kept as a frozen copy."""

    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        # Warm-up (as in many diffusion codebases): short runs are not dominated by the init.
        decay = min(self.decay, (1 + step) / (10 + step))
        for ema_p, p in zip(self.model.parameters(), model.parameters(), strict=True):
            ema_p.lerp_(p, 1.0 - decay)
        for ema_b, b in zip(self.model.buffers(), model.buffers(), strict=True):
            ema_b.copy_(b)


def _flatten_optimizer(opt: torch.optim.Optimizer, prefix: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, state in sd["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"{prefix}.{idx}.{key}"] = value
            else:
                scalars[f"{idx}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _unflatten_optimizer(opt: torch.optim.Optimizer, prefix: str, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith(prefix + "."):
            idx, name = key[len(prefix) + 1 :].split(".", 1)
            state.setdefault(int(idx), {})[name] = value
    for key, value in meta["scalars"].items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


CHECKPOINTS = "checkpoints"


KEEP_CHECKPOINTS = 2


_CKPT_FILES = ("checkpoint.safetensors", "state.json")


def _step_dirs(out: Path) -> list[tuple[int, Path]]:
    """Renamed-into-place checkpoint directories of a run, newest first (torn ``.tmp-*`` excluded)."""
    root = Path(out) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        step = child.name.removeprefix("step-")
        if child.name.startswith("step-") and step.isdigit() and child.is_dir():
            found.append((int(step), child))
    return sorted(found, reverse=True)


def verify_checkpoint(directory: Path) -> dict[str, Any]:
    """The state of one checkpoint directory if its manifest names both files with matching
    sha256s; otherwise a LatentzooError saying what is wrong."""
    from ..contract.weights import sha256_file

    manifest_file = directory / "manifest.json"
    try:
        manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise LatentzooError(f"{manifest_file} is missing or unreadable ({type(exc).__name__})") from exc
    for name in _CKPT_FILES:
        path = directory / name
        if not path.is_file():
            raise LatentzooError(f"{path} is missing")
        if sha256_file(path) != files.get(name):
            raise LatentzooError(f"{path} does not match its manifest's sha256 (modified or corrupt)")
    try:
        state = json.loads((directory / "state.json").read_text(encoding="utf-8"))
    except ValueError as exc:
        raise LatentzooError(f"{directory / 'state.json'} is not valid JSON ({exc})") from exc
    if not isinstance(state, dict) or state.get("step") != manifest.get("step") or not isinstance(state.get("history"), list):
        raise LatentzooError(f"{directory / 'state.json'} does not hold the state of step {manifest.get('step')}")
    return state


def latest_checkpoint(out: Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint of a run that verifies, with its state; None if the run has none.

    A checkpoint that fails verification is skipped with a warning naming why, so a resume falls
    back to the previous complete one; if none verifies, the error lists what was found.
    """
    problems = []
    for _, directory in _step_dirs(out):
        try:
            state = verify_checkpoint(directory)
        except LatentzooError as exc:
            problems.append(str(exc))
            continue
        for problem in problems:
            warnings.warn(f"skipping a bad checkpoint: {problem}", stacklevel=2)
        return directory, state
    if problems:
        raise LatentzooError(f"no checkpoint in {out} verifies ({'; '.join(problems)}); start a new run in another --out")
    if (Path(out) / "checkpoint.safetensors").exists():
        raise LatentzooError(
            f"{out} holds a checkpoint in the old two-file layout, which cannot be verified; start a new run in another --out"
        )
    return None


class Checkpointer:
    """Saves (rank 0) and restores (every rank) modules and optimizers of one run directory.

    A checkpoint is one atomic unit: a step directory written beside its final place, with a
    manifest (the sha256 of both files) written last, then renamed into place (see the module
    docstring). Each write boundary is a ``crash_point`` for the crash-consistency tests.
    """

    def __init__(self, run: Run, modules: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer]) -> None:
        self.run, self.out = run, Path(run.options.out)
        self.modules, self.optimizers = modules, optimizers

    @property
    def root(self) -> Path:
        return self.out / CHECKPOINTS

    def save(self, step: int, state: dict[str, Any]) -> None:
        if not self.run.world.is_main:
            return
        import shutil

        from ..contract.weights import crash_point, sha256_file

        tensors: dict[str, torch.Tensor] = {}
        opt_meta = {}
        for name, module in self.modules.items():
            tensors.update({f"{name}.{k}": v for k, v in module.state_dict().items()})
        for name, opt in self.optimizers.items():
            t, meta = _flatten_optimizer(opt, f"opt_{name}")
            tensors.update(t)
            opt_meta[name] = meta
        final = self.root / f"step-{step:08d}"
        tmp = self.root / f".tmp-{final.name}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        crash_point(f"checkpoint {step}: directory created")
        files = {"checkpoint.safetensors": save_tensors(tmp / "checkpoint.safetensors", {k: v.detach().cpu() for k, v in tensors.items()})}
        crash_point(f"checkpoint {step}: tensors written")
        write_json(tmp / "state.json", {**state, "step": step, "optimizers": opt_meta, **self.run.record()})
        files["state.json"] = sha256_file(tmp / "state.json")
        crash_point(f"checkpoint {step}: state written")
        write_json(tmp / "manifest.json", {"step": step, "files": files})
        crash_point(f"checkpoint {step}: manifest written")
        if final.exists():  # left by a run resumed from an earlier checkpoint: superseded
            final.rename(self.root / f".stale-{final.name}")
        tmp.rename(final)  # the commit point: before it the previous checkpoint stands, after it this one
        crash_point(f"checkpoint {step}: renamed into place")
        self.prune(step)
        crash_point(f"checkpoint {step}: older checkpoints pruned")

    def prune(self, step: int) -> None:
        """Keep the newest KEEP_CHECKPOINTS checkpoints up to ``step``; remove older ones, later
        ones of an abandoned future (a resume from an earlier step) and torn leftovers."""
        import shutil

        if not self.run.world.is_main or not self.root.is_dir():
            return
        kept = [d for s, d in _step_dirs(self.out) if s <= step][:KEEP_CHECKPOINTS]
        for child in self.root.iterdir():
            if child not in kept:
                shutil.rmtree(child, ignore_errors=True)

    def start(self) -> tuple[int, list[dict[str, Any]]]:
        """(first step, loss history): (0, []) for a new run, the checkpoint's with --resume."""
        if not self.run.options.resume:
            return 0, []
        state = self.restore()
        self.prune(state["step"])  # what a kill between a checkpoint's rename and its pruning left
        return state["step"], state["history"]

    def restore(self) -> dict[str, Any]:
        found = self.run.resume_from or latest_checkpoint(self.out)
        if found is None:
            raise LatentzooError(f"--resume: no complete checkpoint in {self.out}; start without --resume")
        directory, state = found
        tensors = load_tensors(directory / "checkpoint.safetensors")
        try:
            for name, module in self.modules.items():
                prefix = f"{name}."
                module.load_state_dict({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)})
            for name, opt in self.optimizers.items():
                _unflatten_optimizer(opt, f"opt_{name}", tensors, state["optimizers"][name])
        except (RuntimeError, KeyError, ValueError) as exc:
            raise LatentzooError(
                f"--resume: the checkpoint in {directory} does not fit this model ({str(exc).splitlines()[0]}); "
                "resume with the run's own options or start a new run"
            ) from exc
        self.run.check_resume(state)
        return state


def prepare_run(options: TrainOptions, create: bool = True) -> tuple[Path, dict[str, Any]] | None:
    """Refuse to overwrite a run by accident; on --resume, find the checkpoint to resume from
    (returned) and reuse the run's own options.

    Options given again with --set override the saved ones (e.g. more --steps is a flag,
    not an option, so a resumed run can be extended). A run directory holding only torn
    leftovers of a first checkpoint starts afresh (they are removed).
    """
    import shutil

    out = Path(options.out)
    if out.exists() and not out.is_dir():
        raise LatentzooError(f"--out {out} is a file; give a directory for the run")
    found = None
    if options.resume:
        found = latest_checkpoint(out)
        if found is None:
            raise LatentzooError(f"--resume: no complete checkpoint in {out}; start without --resume")
        saved = found[1].get("options", {})
        options.config = {**(saved if isinstance(saved, dict) else {}), **options.config}
    elif _step_dirs(out) or (out / "checkpoint.safetensors").exists():
        raise LatentzooError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    if not create:
        return found
    if not options.resume:
        shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)  # only torn leftovers can be here (checked above)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LatentzooError(f"cannot create run directory {out}: {exc.strerror or exc}") from exc
    return found
