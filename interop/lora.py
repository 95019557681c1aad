"""LoRA files in (kohya-ss and diffusers / PEFT layouts) and their use: ``lora add``, ``sample --lora``, ``fuse``.

Formats (detected from the keys; the math is ``latentzoo.core.runtime.adapters``):

- **kohya-ss sd-scripts**: ``lora_unet_<module path with "_">`` (the prior) and ``lora_te_...``
  (the text encoder), plus latentzoo's ``lora_vae_...`` (the decoder), each with ``.lora_down.weight``, ``.lora_up.weight`` and ``.alpha``.
  A missing ``alpha`` is kohya's default, alpha = rank (scale 1), said in a note.
- **diffusers / PEFT** (``save_lora_weights``): ``unet.<module path>.lora_A.weight`` /
  ``.lora_B.weight``, ``text_encoder.<...>`` and ``vae.<...>`` (the decoder); alpha from a ``.alpha`` tensor, else from
  diffusers' ``lora_adapter_metadata`` (``lora_alpha``), else rank (PEFT's default scale 1).

Module paths are those of latentzoo's components, which for converted Stable Diffusion 1.x / 2.x
are diffusers' UNet and transformers' CLIPTextModel paths, so these files apply unchanged.
SDXL's ``lora_te1_`` / ``lora_te2_`` and LyCORIS variants (LoHa, LoKr, DoRA) are refused by name.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from latentzoo.core.contract.errors import LatentzooError
from latentzoo.core.runtime.adapters import PARTS, Adapter, LoraModule, fit, part_strengths, require_fit, weight_shapes

KOHYA_PARTS = {"lora_unet_": "prior", "lora_te_": "conditioner", "lora_vae_": "decoder"}
PEFT_PARTS = {"unet.": "prior", "transformer.": "prior", "text_encoder.": "conditioner", "vae.": "decoder"}
KOHYA_PREFIX = {"prior": "lora_unet_", "conditioner": "lora_te_", "decoder": "lora_vae_"}
PEFT_PREFIX = {"prior": "unet.", "conditioner": "text_encoder.", "decoder": "vae."}
KOHYA_SUFFIXES = (".lora_down.weight", ".lora_up.weight", ".alpha")
PEFT_RE = re.compile(r"^(.*)\.lora_([AB])(?:\.default)?\.weight$")
UNSUPPORTED = {
    "lora_te1_": "an SDXL LoRA (two text encoders); latentzoo converts SD 1.x / 2.x",
    "lora_te2_": "an SDXL LoRA (two text encoders); latentzoo converts SD 1.x / 2.x",
    ".hada_w": "a LyCORIS LoHa, not a LoRA",
    ".lokr_w": "a LyCORIS LoKr, not a LoRA",
    ".dora_scale": "a DoRA, not a plain LoRA",
    "lora_magnitude_vector": "a DoRA, not a plain LoRA",
}


def read(path: str | Path, sha256: str | None = None) -> Adapter:
    """Read a LoRA ``.safetensors`` (sha256-checked when given, every tensor finite) into an Adapter."""
    from latentzoo.core.contract.weights import load_tensors, read_metadata, sha256_file

    path = Path(path)
    if path.suffix != ".safetensors" or not path.is_file():
        raise LatentzooError(f"{path}: not a .safetensors file; give a LoRA saved as safetensors (kohya-ss or diffusers / PEFT)")
    tensors = load_tensors(path, sha256)  # a NaN / Inf is refused here, naming the tensor
    for marker, what in UNSUPPORTED.items():
        if any(marker in k for k in tensors):
            raise LatentzooError(f"{path} is {what}; latentzoo applies kohya-ss and diffusers / PEFT LoRA files")
    if any(k.startswith(tuple(KOHYA_PARTS)) for k in tensors):
        adapter = _kohya(path, tensors)
    elif any(PEFT_RE.match(k) for k in tensors):
        adapter = _peft(path, tensors, read_metadata(path))
    else:
        prefixes = sorted({k.split(".")[0].split("_")[0] for k in tensors})[:5]
        raise LatentzooError(
            f"{path}: no LoRA keys found (first prefixes {prefixes}); expected kohya-ss lora_unet_ / lora_te_ or diffusers unet. / text_encoder. ... lora_A"
        )
    adapter.path, adapter.sha256 = path, sha256 or sha256_file(path)
    return adapter


def _alpha(path: Path, key: str, t: Any) -> float:
    if t.numel() != 1:
        raise LatentzooError(f"{path}: {key} holds {t.numel()} values; an alpha is one number")
    return float(t.reshape(()).item())


def _kohya(path: Path, tensors: dict[str, Any]) -> Adapter:
    groups: dict[str, dict[str, Any]] = {}
    for k, t in tensors.items():
        suffix = next((s for s in KOHYA_SUFFIXES if k.endswith(s)), None)
        prefix = next((p for p in KOHYA_PARTS if k.startswith(p)), None)
        if suffix is None or prefix is None:
            raise LatentzooError(f"{path}: key {k!r} is not kohya-ss LoRA (lora_unet_ / lora_te_ + lora_down / lora_up / alpha)")
        groups.setdefault(k[: -len(suffix)], {})[suffix] = t
    modules, no_alpha = [], 0
    for key, g in sorted(groups.items()):
        for s in (".lora_down.weight", ".lora_up.weight"):
            if s not in g:
                raise LatentzooError(f"{path}: {key} has no {s[1:]}; the file is incomplete")
        prefix = next(p for p in KOHYA_PARTS if key.startswith(p))
        rank = int(g[".lora_down.weight"].shape[0])
        if ".alpha" in g:
            alpha = _alpha(path, f"{key}.alpha", g[".alpha"])
        else:
            alpha, no_alpha = float(rank), no_alpha + 1
        modules.append(LoraModule(KOHYA_PARTS[prefix], key[len(prefix) :], key, g[".lora_down.weight"], g[".lora_up.weight"], alpha))
    notes = [f"{no_alpha} module(s) have no alpha: kohya's default alpha = rank (scale 1) is used"] if no_alpha else []
    return Adapter("kohya", modules, flat=True, notes=notes)


def _peft(path: Path, tensors: dict[str, Any], metadata: dict[str, str]) -> Adapter:
    meta_alpha: dict[str, float] = {}
    raw = metadata.get("lora_adapter_metadata")
    if raw:  # diffusers >= 0.34 writes the LoraConfig of each part: {"unet.lora_alpha": 8, ...} or nested
        try:
            data = json.loads(raw)
            for k, v in data.items():
                if isinstance(v, dict) and "lora_alpha" in v:
                    meta_alpha[k.split(".")[0]] = float(v["lora_alpha"])
                elif k.endswith("lora_alpha"):
                    meta_alpha[k.split(".")[0]] = float(v)
        except (ValueError, TypeError, AttributeError):
            raise LatentzooError(f"{path}: lora_adapter_metadata is not valid JSON; re-save the LoRA") from None
    groups: dict[str, dict[str, Any]] = {}
    for k, t in tensors.items():
        m = PEFT_RE.match(k)
        if m:
            groups.setdefault(m.group(1), {})[m.group(2)] = t
        elif k.endswith(".alpha"):
            groups.setdefault(k[: -len(".alpha")], {})["alpha"] = t
        else:
            raise LatentzooError(f"{path}: key {k!r} is not diffusers / PEFT LoRA (... .lora_A.weight / .lora_B.weight)")
    modules, defaulted = [], 0
    for key, g in sorted(groups.items()):
        if "A" not in g or "B" not in g:
            raise LatentzooError(f"{path}: {key} has no lora_{'A' if 'A' not in g else 'B'}; the file is incomplete")
        prefix = next((p for p in PEFT_PARTS if key.startswith(p)), None)
        if prefix is None:
            raise LatentzooError(
                f"{path}: {key} names no part (unet. / text_encoder. / transformer.); save it with diffusers' save_lora_weights"
            )
        rank = int(g["A"].shape[0])
        if "alpha" in g:
            alpha = _alpha(path, f"{key}.alpha", g["alpha"])
        elif prefix[:-1] in meta_alpha:
            alpha = meta_alpha[prefix[:-1]]
        else:
            alpha, defaulted = float(rank), defaulted + 1
        modules.append(LoraModule(PEFT_PARTS[prefix], key[len(prefix) :], key, g["A"], g["B"], alpha))
    notes = [f"{defaulted} module(s) state no alpha: PEFT's default lora_alpha = rank (scale 1) is used"] if defaulted else []
    return Adapter("peft", modules, notes=notes)


# ---------------------------------------------------------------------------------------
# specs, bases, fit


def base_parts(registry: Any, base: str) -> dict[str, Any]:
    """Part -> component entry of a pipeline (its prior, conditioner and decoder) or of one such component."""
    entry = registry.get(base)
    if entry.section == "pipelines":
        names = {p: entry.data.get(p) for p in PARTS}
        return {p: registry.get(n) for p, n in names.items() if n}
    part = next((r for r in entry.roles if r in PARTS), None)
    if part is None:
        raise LatentzooError(
            f"{base} is a {'/'.join(entry.roles)}; a LoRA adapts a prior, a conditioner or a decoder (or a pipeline holding them)"
        )
    return {part: entry}


def _weights_file(entry: Any) -> Path:
    from latentzoo.core.runtime.sources import resolve_weights

    if "weights" not in entry.data:
        raise LatentzooError(f"{entry.name} has no weights file; a LoRA adapts trained weights")
    return resolve_weights(entry)[0]


def fits(
    adapter: Adapter, parts: dict[str, Any], name: str, base: str, *, allow_partial: bool = False, whole: bool = True
) -> tuple[dict[str, Any], list[str]]:
    """Fit ``adapter`` to a base's parts; refused in one line unless it fits (see core.runtime.adapters.require_fit).

    ``whole``: the base is a pipeline, so a part of the LoRA it lacks is unmatched; a single
    component base (a UNet alone) takes the LoRA's part for it, the others said in a note."""
    missing = [p for p in adapter.parts if p not in parts]
    skipped = [] if whole else missing
    missing = missing if whole else []
    if not any(p in parts for p in adapter.parts):
        missing = adapter.parts
    out = {}
    for part in adapter.parts:
        if part in parts:
            out[part] = fit(adapter, part, weight_shapes(_weights_file(parts[part])), f"LoRA {name} on {parts[part].name}")
    found = list(out.values())
    if missing:  # modules of a part the base does not have count as unmatched
        from latentzoo.core.runtime.adapters import Fit

        found.append(Fit(missing[0], {}, [m.key for m in adapter.modules if m.part in missing]))
    notes = require_fit(found, name, base, allow_partial=allow_partial)
    notes += [f"LoRA {name}: its {p} part is not applied ({base} is one component)" for p in skipped if p not in missing]
    return out, notes


# ---------------------------------------------------------------------------------------
# lora add


def add(file: str | Path, *, base: str, name: str, allow_partial: bool = False, extra: Any = ()) -> tuple[dict[str, Any], list[str]]:
    """Register a LoRA file after checking that it fits ``base``; return (entry, notes). Nothing is written on refusal."""
    from latentzoo.core.contract.registry import user_registry_path
    from latentzoo.core.contract.userregistry import add_entries, relative_weights
    from latentzoo.core.runtime.api import registry as load_registry

    from .hub import check_name

    check_name(name)
    reg = load_registry(extra)
    if name in reg.entries:
        raise LatentzooError(f"the registry already names {name}; choose another --name")
    adapter = read(file)
    parts = base_parts(reg, base)
    found, notes = fits(adapter, parts, name, base, allow_partial=allow_partial, whole=reg.get(base).section == "pipelines")
    user = user_registry_path()
    entry = {
        "family": "lora",
        "class": "lora",
        "roles": ["adapter"],
        "config": {
            "format": adapter.format,
            "rank": adapter.rank,
            "alpha": adapter.alpha,
            "base": base,
            "parts": {
                part: {
                    "base": parts[part].name,
                    "sha256": (parts[part].data.get("weights") or {}).get("sha256"),
                    "fingerprint": f.fingerprint(),
                    "modules": len(f.matched),
                    "unmatched": len(f.unmatched),
                }
                for part, f in found.items()
            },
        },
        "weights": {"path": relative_weights(Path(file), user), "sha256": adapter.sha256},
        "description": f"LoRA ({adapter.format}, rank {adapter.rank}) for {base}",
    }
    add_entries({name: entry}, path=user)  # refuses a name the user registry already has
    return entry, [*adapter.notes, *notes]


# ---------------------------------------------------------------------------------------
# applying: sample --lora, fuse


def resolve(ref: str, reg: Any) -> tuple[str, Adapter, dict[str, Any] | None]:
    """A registered adapter's name, or a path -> (name, Adapter, its entry's config or None)."""
    canonical = reg.canonical(ref)
    if canonical in reg.entries:
        entry = reg.entries[canonical]
        if "adapter" not in entry.roles:
            raise LatentzooError(
                f"--lora {ref}: {ref} is a {'/'.join(entry.roles) or 'pipeline'}, not a LoRA; see `latentzoo list --role adapter`"
            )
        from latentzoo.core.runtime.sources import resolve_weights

        path, sha = resolve_weights(entry)
        return canonical, read(path, sha), dict(entry.data.get("config") or {})
    if Path(ref).suffix == ".safetensors" or Path(ref).exists():
        return Path(ref).name, read(ref), None
    raise LatentzooError(f"--lora {ref}: no LoRA of that name and no such file; see `latentzoo list --role adapter` or give a path")


def plan(
    reg: Any, target: str, parts: dict[str, Any], specs: list[tuple[str, float, float]], *, whole: bool = True
) -> tuple[list[Any], dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """Read and fit each ``--lora``: (adapters with strengths, part -> summed delta, sidecar records)."""
    from latentzoo.core.runtime.adapters import deltas

    chosen, fitted, records = [], {}, []
    for ref, s_model, s_text in specs:
        name, adapter, config = resolve(ref, reg)
        partial = bool(config and any(p.get("unmatched") for p in config["parts"].values()))
        found, _ = fits(adapter, parts, name, target, allow_partial=partial, whole=whole)
        for part, f in found.items():
            want = ((config or {}).get("parts") or {}).get(part, {}).get("fingerprint")
            if want is not None and want != f.fingerprint():
                raise LatentzooError(
                    f"LoRA {name} fits {config['parts'][part]['base']}, whose structure differs from {parts[part].name}'s; "
                    "use it with the model it was made for"
                )
        fitted[id(adapter)] = found
        strengths = part_strengths(s_model, s_text)
        chosen.append((adapter, strengths))
        records.append(
            {"name": name, "sha256": adapter.sha256, "format": adapter.format, "model_strength": s_model, "text_strength": s_text}
        )
    delta = {}
    for part in PARTS:
        if part in parts:
            fits_for = {key: f[part] for key, f in fitted.items() if part in f}
            d = deltas([(a, s) for a, s in chosen if id(a) in fits_for], part, fits_for)
            if d:
                delta[part] = d
    return chosen, delta, records


def apply_request(pipe: Any, request: Any) -> list[dict[str, Any]]:
    """A typed request's ``loras`` applied to its built pipeline: the adapter plugin's declared
    ``apply``, which ``core.runtime.request`` finds through the declaration (core knows no LoRA format)."""
    from latentzoo.core.runtime.adapters import parse_spec

    # a distilled LoRA's distilled_for was checked in request validation (core.runtime.distilled), with the prior's
    return apply_to_pipeline(pipe, [parse_spec(v) for v in request.loras], request.registries)


def apply_to_pipeline(pipe: Any, specs: list[tuple[str, float, float]], extra: Any = ()) -> list[dict[str, Any]]:
    """Apply ``--lora`` specs to a built pipeline's prior / conditioner / decoder in memory; record them in its sidecar."""
    if not specs:
        return []
    from latentzoo.core.runtime.adapters import apply
    from latentzoo.core.runtime.api import registry as load_registry

    reg = load_registry(extra)
    names = {p: getattr(pipe.spec, p, None) for p in PARTS}
    parts = {p: reg.get(n) for p, n in names.items() if n}
    _, delta, records = plan(reg, pipe.spec.name or pipe.spec.prior, parts, specs)
    for part, d in delta.items():
        apply(getattr(pipe, part), d)
    pipe.adapters = records
    return records


def fuse(
    target: str, specs: list[tuple[str, float, float]], *, name: str, outdir: str | Path | None = None, extra: Any = ()
) -> dict[str, Any]:
    """Fuse LoRA(s) into a pipeline's (or a component's) weights: new components and a pipeline ``name``, registered."""
    from latentzoo.core.contract.registry import user_registry_path
    from latentzoo.core.contract.userregistry import add_entries
    from latentzoo.core.runtime.adapters import fuse_file
    from latentzoo.core.runtime.api import registry as load_registry

    from .derived import derived_component, derived_names, derived_pipeline, rollback
    from .hub import check_name

    check_name(name)
    reg = load_registry(extra)
    base_entry = reg.get(target)
    parts = base_parts(reg, target)
    is_pipe = base_entry.section == "pipelines"
    _, delta, records = plan(reg, target, parts, specs, whole=is_pipe)
    new_names = derived_names(reg, name, delta, is_pipe)
    user = user_registry_path()
    out = Path(outdir) if outdir else user.parent / "fused" / name
    recipe = {"operation": "fuse", "base": target, "adapters": records}
    fused = ", ".join(r["name"] for r in records)
    components: dict[str, dict[str, Any]] = {}
    pipelines: dict[str, dict[str, Any]] = {}
    written: list[Path] = []
    with rollback(written):
        for part, d in delta.items():
            src = parts[part]
            path = out / f"{new_names[part]}.safetensors"
            part_recipe = {**recipe, "part": part, "base_sha256": src.data["weights"]["sha256"]}
            sha = fuse_file(_weights_file(src), d, path, {"recipe": json.dumps(part_recipe, sort_keys=True)})
            written.append(path)
            components[new_names[part]] = derived_component(
                src, path, sha, user=user, assets=_weights_file(src).parent, written=written, recipe=part_recipe,
                description=f"{src.name} with LoRA {fused} fused",
            )  # fmt: skip
        if is_pipe:
            pipelines[name] = derived_pipeline(base_entry, new_names, f"{target} with LoRA {fused} fused")
        add_entries(components, pipelines, path=user)
    return {"components": components, "pipelines": pipelines, "records": records, "outdir": str(out)}


# ---------------------------------------------------------------------------------------
# out: export --to kohya-lora / peft-lora


def _export_adapter(registry: Any, name: str) -> Adapter:
    from latentzoo.core.runtime.sources import resolve_weights

    entry = registry.get(name)
    if "adapter" not in entry.roles:
        raise LatentzooError(
            f"{name} is a {'/'.join(entry.roles) or 'pipeline'}, not a LoRA; export a registered adapter (see `latentzoo list --role adapter`)"
        )
    path, sha = resolve_weights(entry)
    return read(path, sha)


def _pairs(adapter: Adapter, registry: Any, name: str) -> list[tuple[LoraModule, str]]:
    """Each module with its dotted path (a kohya file's flattened names resolved against the base it was registered for)."""
    if not adapter.flat:
        return [(m, m.target) for m in adapter.modules]
    config = dict(registry.get(name).data.get("config") or {})
    out = []
    for part in adapter.parts:
        base = ((config.get("parts") or {}).get(part) or {}).get("base")
        if base is None:
            raise LatentzooError(f"{name} records no base for its {part}; register it with `latentzoo lora add --base`")
        index = {k.replace(".", "_"): k for k in weight_shapes(_weights_file(registry.get(base)))}
        out += [(m, index[m.target]) for m in adapter.modules if m.part == part and m.target in index]
    return out


def export_kohya(registry: Any, name: str, folder: Path) -> list[str]:
    """``NAME.safetensors`` in kohya-ss' layout (lora_unet_ / lora_te_ + lora_down / lora_up / alpha)."""
    import torch

    from latentzoo.core.contract.weights import save_tensors

    adapter = _export_adapter(registry, name)
    prefix = KOHYA_PREFIX
    tensors = {}
    for m, path in _pairs(adapter, registry, name):
        key = prefix[m.part] + path.replace(".", "_")
        tensors[f"{key}.lora_down.weight"], tensors[f"{key}.lora_up.weight"] = m.down.contiguous(), m.up.contiguous()
        tensors[f"{key}.alpha"] = torch.tensor(float(m.alpha))
    save_tensors(folder / f"{name}.safetensors", tensors, {"format": "pt"})
    return [f"kohya-ss LoRA: {len(tensors) // 3} modules"]


def export_peft(registry: Any, name: str, folder: Path) -> list[str]:
    """``pytorch_lora_weights.safetensors`` as diffusers' ``save_lora_weights`` writes it (``load_lora_weights`` reads it);
    alpha / rank is folded into lora_B, so it applies with PEFT's default scale 1."""
    from latentzoo.core.contract.weights import save_tensors

    adapter = _export_adapter(registry, name)
    prefix = PEFT_PREFIX
    tensors = {}
    for m, path in _pairs(adapter, registry, name):
        tensors[f"{prefix[m.part]}{path}.lora_A.weight"] = m.down.contiguous()
        tensors[f"{prefix[m.part]}{path}.lora_B.weight"] = (m.up.float() * (m.alpha / m.rank)).to(m.up.dtype).contiguous()
    save_tensors(folder / "pytorch_lora_weights.safetensors", tensors, {"format": "pt"})
    return [f"diffusers / PEFT LoRA: {len(tensors) // 2} modules, alpha / rank folded into lora_B"]
