"""A distilled student's sampling contract: what its registry entry's ``distilled_for`` says it was trained for.

A progressive-distillation student (Salimans & Ho 2022) was trained to take one step of a given
sampler on a given scheduler's levels at a given step count; a guidance-distilled student
(Meng et al. 2023) takes the guidance weight as an input, over a trained range. The entry states

    distilled_for: {teacher: digits, method: progressive, sampler: ddim, scheduler: trailing, steps: 4,
                    guidance: [1.0, 4.0]}

(every field optional). ``check`` runs in request validation (core.runtime.request), so the CLI, the
Python API and the server treat a student alike:

- it *warns* where the request runs but not as the student was trained: another sampler,
  scheduler or step count, a stochastic eta, a guidance weight outside the trained range;
- it *refuses* where the student cannot do what is asked: a negative prompt for a student
  with w as an input (it has no unconditional branch to steer away from).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

from ..contract.compose import PipelineSpec, resolve_component
from ..contract.errors import ContractError
from ..contract.registry import Registry


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _given(values: dict[str, Any], name: str) -> Any:
    """A sampling value given flat (``eta``) or for a role (``sampler.eta``)."""
    for key, value in values.items():
        if str(key).rpartition(".")[2] == name and value is not None:
            return value
    return None


def check(registry: Registry, spec: PipelineSpec, values: dict[str, Any], conditioning: dict[str, Any]) -> list[str]:
    """Warn (and return the warnings) where ``spec`` runs its prior otherwise than it was distilled for;
    refuse where the student cannot run the request. ``values``: steps and option values as given."""
    entry = resolve_component(registry, spec.prior, "prior")
    trained = entry.data.get("distilled_for") if entry.section == "components" else None
    if not isinstance(trained, dict):
        return []
    who = f"prior {spec.prior} (distilled from {trained.get('teacher', 'a teacher')})"
    guidance_range = trained.get("guidance")
    if guidance_range and conditioning.get("negative_prompt"):
        raise ContractError(
            f"{who} takes the guidance weight as an input and has no unconditional branch to steer away from: "
            f"drop --negative-prompt, or sample its teacher {trained.get('teacher', '')}".rstrip()
        )
    found = []
    plan = [trained.get(k) for k in ("sampler", "scheduler", "steps")]
    if all(p is not None for p in plan):
        sampler, scheduler, steps = plan
        given_steps = values.get("steps") if values.get("steps") is not None else spec.defaults.get("steps")
        differs = []
        if spec.sampler and registry.canonical(spec.sampler) != registry.canonical(sampler):
            differs.append(f"sampler {spec.sampler}")
        if spec.scheduler and registry.canonical(spec.scheduler) != registry.canonical(scheduler):
            differs.append(f"scheduler {spec.scheduler}")
        number = _number(given_steps)
        if number is not None and number != steps:
            differs.append(f"{number:g} steps")
        if differs:
            found.append(
                f"{who} was distilled for {sampler} on {scheduler} at {steps} steps; {' and '.join(differs)} "
                f"run but it was not trained so (expect lower quality; use {sampler}, {scheduler}, {steps} steps)"
            )
    eta = _number(_given(values, "eta"))
    if eta:
        found.append(f"{who} was distilled for deterministic steps; eta {eta:g} adds noise it was not trained for (use eta 0)")
    w = _number(_given(values, "guidance"))
    if guidance_range and w is not None and not guidance_range[0] <= w <= guidance_range[1]:
        found.append(
            f"{who} learned guidance weights {guidance_range[0]:g} to {guidance_range[1]:g}; {w:g} runs as an extrapolation "
            "(expect lower quality)"
        )
    for message in found:
        warnings.warn(message, stacklevel=3)
    return found
