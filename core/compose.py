"""Composition from declarations: pick entries, check the contract, write pipeline YAML.

Everything here works on registry data and plugin declarations, so ``compose`` and
``info`` validate a pipeline without importing torch or any model code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ContractError, RegistryError
from .latent import LatentSpace, check_sampler, check_spaces
from .registry import Entry, Registry, parse_file

ROLE_FIELDS = ("encoder", "prior", "decoder", "sampler", "scheduler")


@dataclass
class PipelineSpec:
    """Names of the parts plus sampling defaults (steps, eta, ...)."""

    prior: str
    decoder: str
    sampler: str
    encoder: str | None = None
    scheduler: str | None = None
    defaults: dict[str, Any] = field(default_factory=dict)
    name: str = "composed"
    description: str | None = None
    allow_mismatch: bool = False

    @classmethod
    def from_entry(cls, entry: Entry) -> PipelineSpec:
        d = entry.data
        return cls(
            prior=d["prior"],
            decoder=d["decoder"],
            sampler=d["sampler"],
            encoder=d.get("encoder"),
            scheduler=d.get("scheduler"),
            defaults=dict(d.get("defaults") or {}),
            name=entry.name,
            description=d.get("description"),
            allow_mismatch=bool(d.get("allow_mismatch", False)),
        )

    def parts(self) -> dict[str, str]:
        return {role: getattr(self, role) for role in ROLE_FIELDS if getattr(self, role)}

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = dict(self.parts())
        if self.defaults:
            body["defaults"] = dict(self.defaults)
        if self.allow_mismatch:
            body["allow_mismatch"] = True
        if self.description:
            body["description"] = self.description
        return body

    def to_yaml(self) -> str:
        return yaml.safe_dump({"pipelines": {self.name: self.to_dict()}}, sort_keys=False)


def resolve_component(registry: Registry, name: str, role: str) -> Entry:
    """A registry entry of ``role``, or a plugin-declared class used with its default config."""
    if name in registry.entries:
        return registry.get(name, role)
    from .plugins import get_manager

    decl = get_manager().components().get(name)
    if decl is not None:
        if role not in decl["roles"]:
            raise RegistryError(f"{name} is a {'/'.join(decl['roles'])}, not a {role}")
        return Entry(
            name,
            "components",
            {"class": name, "roles": list(decl["roles"]), "family": decl.get("family", "")},
            Path("<plugin>"),
            0,
            "plugin",
        )
    return registry.get(name, role)  # raises with suggestions


def accepted_spaces(registry: Registry, entry: Entry) -> list[LatentSpace]:
    space = entry.latent_space
    if space is None:
        raise ContractError(f"{entry.name} ({entry.where}) states no latent_space; add one to its registry entry")
    spaces = [space]
    if space.codebook_size and registry.declaration(entry).get("accepts_codes"):
        spaces.append(space.as_discrete())
    return spaces


def check_spec(registry: Registry, spec: PipelineSpec, *, allow_mismatch: bool | None = None) -> list[str]:
    """Check every link of a pipeline; return warnings, raise ContractError / RegistryError."""
    allow = spec.allow_mismatch if allow_mismatch is None else allow_mismatch
    prior = resolve_component(registry, spec.prior, "prior")
    decoder = resolve_component(registry, spec.decoder, "decoder")
    sampler = resolve_component(registry, spec.sampler, "sampler")
    prior_decl, sampler_decl = registry.declaration(prior), registry.declaration(sampler)
    check_sampler(spec.sampler, sampler_decl["drives"], spec.prior, prior_decl["kind"])
    if sampler_decl.get("levels") and not spec.scheduler:
        raise ContractError(f"sampler {spec.sampler} needs a scheduler; pass --scheduler (see `latentzoo list --role scheduler`)")
    if spec.scheduler:
        scheduler = resolve_component(registry, spec.scheduler, "scheduler")
        levels = registry.declaration(scheduler).get("levels", "sigma")
        if sampler_decl.get("levels") and levels != sampler_decl["levels"]:
            raise ContractError(
                f"scheduler {spec.scheduler} picks {levels} levels but sampler {spec.sampler} walks {sampler_decl['levels']} levels; "
                "choose a matching scheduler"
            )
    prior_space = prior.latent_space
    if prior_space is None:
        raise ContractError(f"prior {spec.prior} states no latent_space; add one to its registry entry")
    if prior_space.kind == "continuous" and prior_decl["kind"] == "denoiser" and prior_space.scaling_factor is None:
        raise ContractError(
            f"prior {spec.prior} does not state scaling_factor; measure it from data (1/std of the latents), never default it"
        )
    _, warnings = check_spaces(
        f"prior {spec.prior}", prior_space, f"decoder {spec.decoder}", accepted_spaces(registry, decoder), allow_mismatch=allow
    )
    if spec.encoder:
        encoder = resolve_component(registry, spec.encoder, "encoder")
        enc_space = encoder.latent_space
        if enc_space is None:
            raise ContractError(f"encoder {spec.encoder} states no latent_space")
        _, more = check_spaces(
            f"encoder {spec.encoder}", enc_space, f"decoder {spec.decoder}", accepted_spaces(registry, decoder), allow_mismatch=allow
        )
        warnings += more
    return warnings


def load_spec(registry: Registry, target: str) -> tuple[PipelineSpec, Registry]:
    """A pipeline by registry name, or from a YAML file holding one pipeline (and maybe components)."""
    path = Path(target)
    if target.endswith((".yaml", ".yml")) or (path.is_file() and target not in registry.entries):
        if not path.is_file():
            raise RegistryError(f"pipeline file {target} does not exist")
        entries = [e for e in parse_file(path, "cli")]
        pipelines = [e for e in entries if e.section == "pipelines"]
        if len(pipelines) != 1:
            raise RegistryError(f"{target} must define exactly one pipeline, found {len(pipelines)}")
        for entry in entries:
            registry.entries[entry.name] = entry
        return PipelineSpec.from_entry(pipelines[0]), registry
    return PipelineSpec.from_entry(registry.get(target, "pipeline")), registry
