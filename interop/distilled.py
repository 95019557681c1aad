"""What a distilled adapter was trained for, checked when a request applies it (``sample --lora``).

A consistency LoRA (``latentzoo distill consistency``) records ``distilled`` in its entry's
config: the method, the sampler it was distilled for (``lcm``), the teacher's skipping-step grid
(``teacher_steps``) and the classifier-free guidance folded into it. Applied with another
sampler or with guidance again, it runs but was not trained so: a warning. More steps than its
teacher's grid would walk levels between and below the timesteps it learned: refused in one line
(diffusers' ``LCMScheduler`` refuses the same, num_inference_steps > original_inference_steps).
"""

from __future__ import annotations

import warnings
from typing import Any

from latentzoo.core.contract.errors import LatentzooError


def _number(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None  # a malformed value is refused by the request's own checks


def check_request(pipe: Any, request: Any, name: str, distilled: dict[str, Any]) -> None:
    """Refuse a step count the adapter ``name`` cannot run; warn on a sampler or guidance it was not distilled for."""
    sampler = str(getattr(pipe.sampler, "name", pipe.spec.sampler))
    want = distilled.get("sampler")
    defaults = pipe.spec.defaults or {}
    steps = _number(request.steps if request.steps is not None else defaults.get("steps"))
    most = distilled.get("teacher_steps")
    if want == sampler and steps is not None and most is not None and steps > most:
        raise LatentzooError(
            f"LoRA {name} was consistency-distilled on {most} teacher timesteps; --steps {steps:g} is more than it can walk: "
            f"use 1 to {most} steps (2-8 are what it is for)"
        )
    if want and want != sampler:
        warnings.warn(
            f"LoRA {name} was distilled for the {want} sampler; it runs with {sampler} but was not trained so: use --sampler {want}",
            stacklevel=2,
        )
    folded = _number(distilled.get("guidance"))
    guidance = _number(request.guidance if request.guidance is not None else defaults.get("guidance"))
    if want == sampler and folded not in (None, 1.0) and guidance not in (None, 1.0):
        warnings.warn(
            f"LoRA {name} has the teacher's guidance {folded:g} folded in; --guidance {guidance:g} guides again at twice the "
            "evaluations per step: --guidance 1 is what it was distilled for",
            stacklevel=2,
        )


def check_adapters(pipe: Any, request: Any, reg: Any) -> None:
    """``check_request`` for each registered ``--lora`` of ``request`` that records ``distilled``."""
    from latentzoo.core.runtime.adapters import parse_spec

    for spec in request.loras:
        ref, model_strength, _ = parse_spec(spec)
        entry = None if ref.endswith(".safetensors") or model_strength == 0.0 else reg.entries.get(reg.canonical(ref))
        distilled = (entry.data.get("config") or {}).get("distilled") if entry is not None else None
        if isinstance(distilled, dict):
            check_request(pipe, request, ref, distilled)
