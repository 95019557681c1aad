"""What the studio shows of the registry (no FastAPI, no torch): pipelines, components, and the composer's check.

``compose`` answers what ``latentzoo compose`` would, plus, for each role, every registry entry
of that role tried in the combination's place: whether it fits and, if not, the contract's reason
(the page disables those entries and shows why).
"""

from __future__ import annotations

from typing import Any

from latentzoo.core.contract.errors import LatentzooError

from .adapter import PARTS
from .worker import error_body


def pipelines(registry: Any) -> list[dict[str, Any]]:
    """Each pipeline: parts, defaults, whether it composes, declared options (flat rows), text / editable flags."""
    from latentzoo.core.contract.compose import PipelineSpec, check_spec, pipeline_options_table

    out = []
    for entry in registry.list(role="pipeline"):
        spec = PipelineSpec.from_entry(entry)
        item: dict[str, Any] = {"name": entry.name, "description": entry.data.get("description"), "parts": spec.parts()}
        item["defaults"] = spec.defaults
        try:
            check_spec(registry, spec)
            item["composes"] = {"ok": True}
        except LatentzooError as exc:
            item["composes"] = {"ok": False, **error_body(exc)}
        item["options"] = _options(pipeline_options_table(registry, spec))
        item["text"] = any(o["name"] == "prompt" for o in item["options"])
        item["editable"] = bool(spec.encoder)
        prior = registry.entries.get(spec.prior)
        item["latent_space"] = prior.data.get("latent_space") if prior else None
        out.append(item)
    return out


def components(registry: Any) -> list[dict[str, Any]]:
    """Each component: roles, spaces, what a sampler drives and the levels it walks, declared options."""
    from latentzoo.core.contract.compose import component_options_table

    out = []
    for entry in registry.list():
        if entry.section != "components":
            continue
        item: dict[str, Any] = {"name": entry.name, "roles": entry.roles, "family": entry.data.get("family", "")}
        item["description"] = entry.data.get("description")
        for key in ("latent_space", "conditioning", "conditioning_space"):
            if entry.data.get(key):
                item[key] = entry.data[key]
        try:
            decl = registry.declaration(entry)
            item.update({key: decl[key] for key in ("drives", "levels", "kind") if decl.get(key)})
        except LatentzooError as exc:
            item["declaration_error"] = str(exc)
        item["options"] = component_options_table(registry, entry)
        out.append(item)
    return out


def compose(registry: Any, pipeline: str | None, parts: dict[str, str]) -> dict[str, Any]:
    """``{"ok": True, "spec", "yaml", ...}`` or ``{"error", "fix", ...}``, both with ``parts`` and ``alternatives``."""
    from latentzoo.core.contract.compose import PipelineSpec, check_spec, replace_parts

    for value in parts.values():
        if "/" in value or "\\" in value:
            raise LatentzooError(f"{value!r} is not a registry name; give a name from GET /api/v1/components")
    if pipeline:
        if registry.canonical(pipeline) not in registry.entries:
            raise LatentzooError(f"pipeline {pipeline!r} is not in the registry; give a name from GET /api/v1/pipelines")
        spec = PipelineSpec.from_entry(registry.get(pipeline, "pipeline"))
        replace_parts(registry, spec, parts)
    else:
        missing = [r for r in ("prior", "decoder", "sampler") if not parts.get(r)]
        if missing:
            raise LatentzooError(f"missing {', '.join(missing)}; give a pipeline, or all of prior, decoder and sampler")
        spec = PipelineSpec(**parts)

    def refusal(candidate: PipelineSpec) -> dict[str, str] | None:
        try:
            check_spec(registry, candidate)
            return None
        except LatentzooError as exc:
            return error_body(exc)

    alternatives: dict[str, list[dict[str, Any]]] = {}
    for role in PARTS:
        rows = []
        for entry in registry.list(role=role):
            reason = refusal(PipelineSpec(**{**spec.parts(), role: entry.name}))
            rows.append({"name": entry.name, "ok": reason is None, **({"reason": reason["error"]} if reason else {})})
        alternatives[role] = rows
    reason = refusal(spec)
    if reason is not None:
        return {**reason, "parts": spec.parts(), "alternatives": alternatives}
    return {"ok": True, "parts": spec.parts(), "spec": spec.to_dict(), "yaml": spec.to_yaml(), "alternatives": alternatives}


def _options(table: dict[str, Any]) -> list[dict[str, Any]]:
    """``pipeline_options_table`` flattened: one row per option with the role and part it belongs to."""
    rows = [{"name": "steps", "role": "pipeline", "part": None, **table.get("steps", {})}]
    for key, options in table.items():
        if key == "steps":
            continue
        role, _, part = key.partition(" ")
        rows += [{**o, "role": role, "part": part} for o in options]
    return rows
