"""A distilled prior's or adapter's sampling contract: its entry's ``distilled_for`` (core.contract.distilled).

A progressive-distillation student (Salimans & Ho 2022) was trained to take one step of a given
sampler on a given scheduler's levels at a given step count; a guidance-distilled student
(Meng et al. 2023) takes the guidance weight as an input, over a trained range; a consistency
LoRA (Luo et al. 2023) was distilled for the ``lcm`` sampler on its teacher's timestep grid, with
the teacher's guidance folded in. Each states it in one schema, ``distilled_for``, on the prior's
entry or on the adapter's. ``check`` runs in request validation (core.runtime.request) for the
request's prior and each registered ``--lora`` it applies, so the CLI, the Python API and the
server treat a distilled model alike, before anything loads:

- it *warns* where the request runs but not as the model was trained: another sampler,
  scheduler or step count, a stochastic eta, a guidance weight outside the trained range, guiding
  again a model with guidance folded in;
- it *refuses* where the model cannot do what is asked: a negative prompt for a student with w as
  an input (it has no unconditional branch to steer away from), more steps than its sampler can
  walk (``max_steps``; diffusers' ``LCMScheduler`` refuses the same).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

from ..contract.compose import PipelineSpec, resolve_component
from ..contract.distilled import DistilledFor
from ..contract.errors import ContractError
from ..contract.registry import Registry


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None  # a malformed value is refused by the request's own checks
    return number if math.isfinite(number) else None


def _given(values: dict[str, Any], name: str) -> Any:
    """A sampling value given flat (``eta``) or for a role (``sampler.eta``)."""
    for key, value in values.items():
        if str(key).rpartition(".")[2] == name and value is not None:
            return value
    return None


def distilled(registry: Registry, spec: PipelineSpec, loras: Sequence[str] = ()) -> list[tuple[str, DistilledFor]]:
    """(who, contract) for the request's prior and each registered adapter it applies that records ``distilled_for``."""
    from .adapters import parse_spec

    found = []
    entry = resolve_component(registry, spec.prior, "prior") if spec.prior else None
    if entry is not None and entry.section == "components" and isinstance(entry.data.get("distilled_for"), dict):
        trained = DistilledFor.parse(entry.data["distilled_for"])
        found.append((f"prior {spec.prior} (distilled from {trained.teacher or 'a teacher'})", trained))
    for text in loras:
        ref, model_strength, _ = parse_spec(text)
        if ref.endswith(".safetensors") or model_strength == 0.0:
            continue  # a file has no entry; at strength 0 the prior is the base's
        adapter = registry.entries.get(registry.canonical(ref))
        if adapter is not None and isinstance(adapter.data.get("distilled_for"), dict):
            found.append((f"LoRA {ref}", DistilledFor.parse(adapter.data["distilled_for"])))
    return found


def check(
    registry: Registry, spec: PipelineSpec, values: dict[str, Any], conditioning: dict[str, Any], loras: Sequence[str] = ()
) -> list[str]:
    """Warn (and return the warnings) where ``spec`` (with ``loras`` applied) runs a distilled model otherwise
    than it was trained for; refuse where it cannot run the request. ``values``: steps and option values as given."""
    found = []
    given_steps = values.get("steps") if values.get("steps") is not None else spec.defaults.get("steps")
    steps = _number(given_steps)
    w = _number(_given(values, "guidance"))
    w = w if w is not None else _number(spec.defaults.get("guidance"))
    eta = _number(_given(values, "eta"))
    for who, trained in distilled(registry, spec, loras):
        if trained.guidance and conditioning.get("negative_prompt"):
            raise ContractError(
                f"{who} takes the guidance weight as an input and has no unconditional branch to steer away from: "
                f"drop --negative-prompt, or sample its teacher {trained.teacher or ''}".rstrip()
            )
        same_sampler = not (trained.sampler and spec.sampler) or registry.canonical(spec.sampler) == registry.canonical(trained.sampler)
        if same_sampler and trained.max_steps is not None and steps is not None and steps > trained.max_steps:
            raise ContractError(
                f"{who} was distilled on {trained.teacher_steps or trained.max_steps} teacher timesteps; {steps:g} steps is more "
                f"than it can walk: use 1 to {trained.max_steps} steps"
            )
        differs = []
        if not same_sampler:
            differs.append(f"sampler {spec.sampler}")
        if trained.scheduler and spec.scheduler and registry.canonical(spec.scheduler) != registry.canonical(trained.scheduler):
            differs.append(f"scheduler {spec.scheduler}")
        if trained.steps is not None and steps is not None and steps != trained.steps:
            differs.append(f"{steps:g} steps")
        if differs:
            plan = " ".join(
                part
                for part in (
                    f"the {trained.sampler} sampler" if trained.sampler else "",
                    f"on {trained.scheduler}" if trained.scheduler else "",
                    f"at {trained.steps} steps" if trained.steps else "",
                )
                if part
            )
            use = ", ".join(
                f"{k} {v}" for k, v in (("sampler", trained.sampler), ("scheduler", trained.scheduler), ("steps", trained.steps)) if v
            )
            found.append(
                f"{who} was distilled for {plan}; {' and '.join(differs)} run but it was not trained so (expect lower quality; use {use})"
            )
        if eta and trained.method != "consistency":  # a consistency sampler draws fresh noise itself
            found.append(f"{who} was distilled for deterministic steps; eta {eta:g} adds noise it was not trained for (use eta 0)")
        lo_hi = trained.guidance
        if lo_hi and w is not None and not lo_hi[0] <= w <= lo_hi[1]:
            found.append(
                f"{who} learned guidance weights {lo_hi[0]:g} to {lo_hi[1]:g}; {w:g} runs as an extrapolation (expect lower quality)"
            )
        folded = trained.folded_guidance
        if same_sampler and folded not in (None, 1.0) and w not in (None, 1.0):
            found.append(
                f"{who} has the teacher's guidance {folded:g} folded in; guidance {w:g} guides again at twice the evaluations "
                "per step: guidance 1 is what it was distilled for"
            )
    for message in found:
        warnings.warn(message, stacklevel=3)
    return found
