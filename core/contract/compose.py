"""Composition from declarations: pick entries, check the contract, write pipeline YAML.

Everything here works on registry data and plugin declarations, so ``compose`` and
``info`` validate a pipeline without importing torch or any model code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .conditioning import check_conditioning
from .errors import ContractError, RegistryError
from .latent import LatentSpace, check_sampler, check_spaces
from .options import OPTION_ROLES, STEPS, Option, OptionError, canonical, parse_options, resolve
from .registry import Entry, Registry, parse_file

ROLE_FIELDS = ("encoder", "conditioner", "prior", "decoder", "sampler", "scheduler")
# Conditioning inputs: they go to the pipeline's conditioner, not to any part's options.
TEXT_INPUTS = {
    "prompt": "Text the conditioner encodes (empty: unconditional)",
    "negative_prompt": "Text guidance steers away from (the unconditional branch; empty: the empty prompt)",
}


@dataclass
class PipelineSpec:
    """Names of the parts plus sampling defaults (steps, eta, ...)."""

    prior: str
    decoder: str
    sampler: str
    encoder: str | None = None
    scheduler: str | None = None
    conditioner: str | None = None
    # A component that scores images against texts (``similarity``), for re-ranking candidates.
    scorer: str | None = None
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
            conditioner=d.get("conditioner"),
            scorer=d.get("scorer"),
            defaults=dict(d.get("defaults") or {}),
            name=entry.name,
            description=d.get("description"),
            allow_mismatch=bool(d.get("allow_mismatch", False)),
        )

    def parts(self) -> dict[str, str]:
        return {role: getattr(self, role) for role in ROLE_FIELDS if getattr(self, role)}

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = dict(self.parts())
        if self.scorer:
            body["scorer"] = self.scorer
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


def check_levels(spec: PipelineSpec, sampler_decl: dict[str, Any], scheduler_decl: dict[str, Any] | None) -> None:
    """A sampler that walks levels needs a scheduler of the same levels; one that walks none takes no scheduler."""
    walks = sampler_decl.get("levels")
    if walks and not spec.scheduler:
        raise ContractError(
            f"sampler {spec.sampler} walks {walks} levels but the pipeline has no scheduler; "
            f"add a scheduler of {walks} levels (see `latentzoo list --role scheduler`)"
        )
    if scheduler_decl is None:
        return
    picks = scheduler_decl.get("levels") or "sigma"
    if not walks:
        legacy = " (its declaration uses needs_scheduler, which is now levels: <kind>)" if sampler_decl.get("needs_scheduler") else ""
        raise ContractError(
            f"sampler {spec.sampler} walks no levels{legacy}, so scheduler {spec.scheduler} ({picks} levels) would be ignored; drop the scheduler"
        )
    if picks != walks:
        raise ContractError(
            f"scheduler {spec.scheduler} picks {picks} levels but sampler {spec.sampler} walks {walks} levels; "
            f"choose a scheduler of {walks} levels (see `latentzoo list --role scheduler`)"
        )


def applies(option: Option, entry: Entry) -> bool:
    """An option declared ``conditioning: KIND`` exists only on instances conditioned on KIND."""
    if option.conditioning is None:
        return True
    space = entry.conditioning if entry.section == "components" and "prior" in entry.roles else None
    return space is not None and space.kind == option.conditioning


def _role_options(registry: Registry, spec: PipelineSpec) -> dict[str, tuple[Entry, list[Option]]]:
    out: dict[str, tuple[Entry, list[Option]]] = {}
    for role in OPTION_ROLES:
        name = getattr(spec, role)
        if name:
            entry = resolve_component(registry, name, role)
            decl = registry.declaration(entry)
            out[role] = (entry, parse_options(decl.get("options"), f"component {decl['name']!r}"))
    return out


def declared_options(registry: Registry, spec: PipelineSpec) -> dict[str, list[Option]]:
    """The options the pipeline's prior, sampler and scheduler declare and that apply to these instances (what --set reaches)."""
    return {role: [o for o in options if applies(o, entry)] for role, (entry, options) in _role_options(registry, spec).items()}


def inapplicable_options(registry: Registry, spec: PipelineSpec) -> dict[str, str]:
    """Declared options that do not apply to this pipeline's instances, each with its one-line refusal."""
    out: dict[str, str] = {}
    for role, (entry, options) in _role_options(registry, spec).items():
        for option in options:
            if not applies(option, entry):
                space = entry.conditioning
                what = "is unconditional" if space is None else f"is conditioned on {space.kind}, not {option.conditioning}"
                out[option.name] = f"{role} {entry.name} {what}; option {option.name} needs {option.conditioning} conditioning: drop it"
    return out


def replace_parts(registry: Registry, spec: PipelineSpec, parts: dict[str, str | None]) -> list[str]:
    """Swap parts of ``spec`` in place (``--sampler ddpm`` on a pipeline); return the defaults dropped.

    A pipeline's ``defaults`` were chosen for its own parts. After a swap, a default that the
    replaced part declared (``eta: 0.0`` of a DDIM pipeline sampled with ``euler_ancestral``)
    or that no part declares any more (``eta`` under DDPM) no longer applies and is dropped,
    so the caller can say so; the new part runs with its own defaults. Any other default is
    still checked as usual.
    """
    changed = {role: value for role, value in parts.items() if value and getattr(spec, role) != value}
    before = declared_options(registry, spec) if changed and spec.defaults else {}
    owned = {o.name for role in changed for o in before.get(role, [])} | {
        f"{role}.{o.name}" for role in changed for o in before.get(role, [])
    }
    for role, value in changed.items():
        setattr(spec, role, value)
    if not changed or not spec.defaults:
        return []
    declared = declared_options(registry, spec)
    known = (
        {"steps"} | {o.name for opts in declared.values() for o in opts} | {f"{r}.{o.name}" for r, opts in declared.items() for o in opts}
    )
    dropped = [key for key in spec.defaults if key not in known or key in owned]
    spec.defaults = {k: v for k, v in spec.defaults.items() if k not in dropped}
    return dropped


def samplers_for(registry: Registry, kind: str) -> list[str]:
    """The registry's samplers that drive priors of ``kind``."""
    out = []
    for entry in registry.list(role="sampler"):
        try:
            if kind in registry.declaration(entry).get("drives", ()):
                out.append(entry.name)
        except RegistryError:  # a broken plugin's sampler is not offered
            continue
    return out


def check_defaults(registry: Registry, spec: PipelineSpec) -> tuple[int | None, dict[str, dict[str, Any]]]:
    """A pipeline's ``defaults`` checked against the declared options (a typo'd key is an error)."""
    return resolve(declared_options(registry, spec), spec.defaults, where=f"pipeline {spec.name} (its defaults)")


def check_spec(registry: Registry, spec: PipelineSpec, *, allow_mismatch: bool | None = None) -> list[str]:
    """Check every link of a pipeline; return warnings, raise ContractError / RegistryError."""
    allow = spec.allow_mismatch if allow_mismatch is None else allow_mismatch
    prior = resolve_component(registry, spec.prior, "prior")
    decoder = resolve_component(registry, spec.decoder, "decoder")
    # Conditioning first: a text prior without its text encoder is the most basic misfit.
    conditioner = resolve_component(registry, spec.conditioner, "conditioner") if spec.conditioner else None
    cond_warnings = check_conditioning(
        spec.prior,
        prior.conditioning,
        spec.conditioner,
        conditioner.conditioning_space if conditioner else None,
        allow_mismatch=allow,
    )
    sampler = resolve_component(registry, spec.sampler, "sampler")
    prior_decl, sampler_decl = registry.declaration(prior), registry.declaration(sampler)
    if prior_decl["kind"] not in sampler_decl["drives"]:
        check_sampler(spec.sampler, sampler_decl["drives"], spec.prior, prior_decl["kind"], samplers_for(registry, prior_decl["kind"]))
    scheduler_decl = registry.declaration(resolve_component(registry, spec.scheduler, "scheduler")) if spec.scheduler else None
    check_levels(spec, sampler_decl, scheduler_decl)
    prior_space = prior.latent_space
    if prior_space is None:
        raise ContractError(f"prior {spec.prior} states no latent_space; add one to its registry entry")
    # A prior class that models normalised latents declares scaled_latents: the instance must state its scale.
    if prior_space.kind == "continuous" and prior_decl.get("scaled_latents") and prior_space.scaling_factor is None:
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
    if spec.scorer:
        registry.get(spec.scorer)  # a scorer (re-ranking) must be a registry entry; its ability is checked at build
    check_defaults(registry, spec)
    return cond_warnings + warnings


def text_pipelines(registry: Registry) -> list[str]:
    """Registry pipelines that take text (they have a conditioner)."""
    return sorted(e.name for e in registry.list() if e.section == "pipelines" and e.data.get("conditioner"))


def check_text(registry: Registry | None, spec: PipelineSpec, given: list[str]) -> None:
    """Text goes to a conditioner: a pipeline without one refuses ``given`` (flags such as --prompt), naming the pipelines that take text."""
    if spec.conditioner or not given:
        return
    names = (", ".join(text_pipelines(registry)) or "none is registered") if registry is not None else "see `latentzoo list`"
    raise ContractError(
        f"prior {spec.prior} of pipeline {spec.name} takes no text (no conditioner); {given[0]} needs a text pipeline: {names}"
    )


def check_options(
    registry: Registry, spec: PipelineSpec, options: dict[str, Any] | None = None, text_options: dict[str, str] | None = None
) -> None:
    """Check sample-time options (and the conditioning inputs among them) before anything is built (no torch)."""
    declared = declared_options(registry, spec)
    names = {o.name for opts in declared.values() for o in opts}
    refused = inapplicable_options(registry, spec)
    given = {**(options or {}), **(text_options or {})}
    for key in given:
        name = str(key).rpartition(".")[2]
        if name in refused and name not in names:
            raise ContractError(refused[name])
    check_text(registry, spec, [f"--{k.replace('_', '-')}" for k in TEXT_INPUTS if k in given])
    for key in TEXT_INPUTS:
        value = given.get(key)
        if value is not None and not isinstance(value, str):
            raise ContractError(f"--{key.replace('_', '-')} must be text, not {value!r}")
    resolve(declared, {k: v for k, v in (options or {}).items() if k not in TEXT_INPUTS}, where=f"pipeline {spec.name}")
    resolve(declared, {k: v for k, v in (text_options or {}).items() if k not in TEXT_INPUTS}, where=f"pipeline {spec.name}", text=True)


def typed_defaults(registry: Registry, spec: PipelineSpec, text_options: dict[str, str]) -> dict[str, Any]:
    """Command-line ``KEY=VALUE`` strings as validated, typed pipeline defaults (what ``compose --set`` stores)."""
    declared = declared_options(registry, spec)
    steps, per_role = resolve(declared, text_options, where=f"pipeline {spec.name}", text=True)
    out: dict[str, Any] = {} if steps is None else {"steps": steps}
    out.update(canonical(declared, per_role))
    return out


def component_options_table(registry: Registry, entry: Entry, defaults: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """What ``info`` shows for one component: each declared option (name, type, range, default, help).

    The default shown is the one this instance uses: the pipeline's ``defaults``, else the
    registry entry's ``config``, else the declared default.
    """
    try:
        decl = registry.declaration(entry)
        options = [o for o in parse_options(decl.get("options"), f"component {decl['name']!r}") if applies(o, entry)]
    except (RegistryError, OptionError):
        return []
    config = entry.data.get("config") or {}
    rows = []
    for option in options:
        row = option.describe()
        if option.name in config:
            row["default"] = config[option.name]
        if defaults and option.name in defaults:
            row["default"] = defaults[option.name]
        rows.append(row)
    return rows


def pipeline_options_table(registry: Registry, spec: PipelineSpec) -> dict[str, Any]:
    """``info`` of a pipeline: steps and the declared options of each part that takes options at sample time."""
    table: dict[str, Any] = {"steps": STEPS.describe() | {"range": "[1, inf)", "default": spec.defaults.get("steps")}}
    for role in OPTION_ROLES:
        name = getattr(spec, role)
        if not name:
            continue
        try:
            entry = resolve_component(registry, name, role)
        except RegistryError:
            continue
        table[f"{role} {name}"] = component_options_table(registry, entry, spec.defaults)
    if spec.conditioner:  # its conditioning inputs (--prompt, --negative-prompt)
        table[f"conditioner {spec.conditioner}"] = [
            {"name": k, "type": "str", "range": "", "default": "", "help": text} for k, text in TEXT_INPUTS.items()
        ]
    return table


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
