"""``latentzoo check``: does a prior follow the convention of the kind it declares?

A kind is more than a name. The plugin that owns a kind declares its convention as data
(``latentzoo_kinds``: for ``denoiser`` the prediction types and level type, for ``flow``
which end of time is noise and the velocity's sign) and names a conformance check, a
function ``check(prior, x0, convention, *, generator, conditioning) -> list[Reading]``. The
check noises real latents ``x0`` the way the convention says, asks the prior, and returns
how far its prediction lies from the kind's target (the first reading, as the prior
declares itself) and from the reversed conventions (the others). A prior passes when its
declared convention fits best; otherwise it fails in one line naming the convention its
predictions do follow.

The real latents come from real images (``--data``, by default the dataset the space's
autoencoder was trained on, as its registry entry records) encoded by a registered encoder
of the prior's latent space, so a prior named only in a user's registry file, with no
pipeline, is checkable too. Core knows no kind: it only compares the check's numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..contract.errors import LatentzooError

N_IMAGES = 8  # a few images: the gap between conventions is an order of magnitude, not a decimal


@dataclass(frozen=True)
class Reading:
    """One convention the prediction was compared with: its label, the relative error, and the fix if it fits best."""

    convention: str
    error: float
    fix: str = ""


@dataclass
class Verdict:
    prior: str
    kind: str
    data: str
    images: int
    readings: list[Reading] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        if not self.readings:  # the kind declares no check: nothing to fail
            return True
        declared, *others = self.readings
        return math.isfinite(declared.error) and all(declared.error < r.error for r in others)

    def line(self) -> str:
        if not self.readings:
            return f"{self.prior}: kind {self.kind} declares no conformance check; not checked"
        declared, *others = self.readings
        rest = "; ".join(f"{r.convention}: {r.error:.3g}" for r in others)
        where = f"on {self.images} image(s) of {self.data}"
        if self.ok:
            return f"{self.prior}: follows kind {self.kind} ({declared.convention}): relative error {declared.error:.3g} ({rest}) {where}"
        best = min(others, key=lambda r: r.error)
        return (
            f"prior {self.prior} does not follow kind {self.kind}'s convention ({declared.convention}, relative error "
            f"{declared.error:.3g}): its predictions fit {best.convention} ({best.error:.3g}) {where}; {best.fix}"
        )


def kind_declaration(kind: str, prior: str) -> dict[str, Any]:
    """The installed declaration of ``kind``; a kind no plugin declares is refused in one line."""
    from ..contract.plugins import get_manager

    kinds = get_manager().kinds()
    if kind not in kinds:
        known = ", ".join(sorted(kinds)) or "none"
        raise LatentzooError(
            f"prior {prior} is of kind {kind!r}, which no installed plugin declares (declared kinds: {known}); "
            "install the plugin that owns the kind, or declare it (docs/plugins.md, adding a kind)"
        )
    return kinds[kind]


def judge(
    prior: Any, kind: str, latents: Any, *, name: str, data: str, conditioning: Any = None, encoder: Any = None, seed: int = 0
) -> Verdict:
    """Run kind ``kind``'s conformance check on ``prior`` over real ``latents`` (scaled as the prior models them, or codes)."""
    import torch

    from ..contract.registry import import_target

    decl = kind_declaration(kind, name)
    if not decl.get("check"):
        raise LatentzooError(f"kind {kind} (plugin {decl['plugin']}) declares no conformance check; nothing to compare prior {name} with")
    check = import_target(decl["check"])
    generator = torch.Generator().manual_seed(seed)
    with torch.inference_mode():
        readings = list(check(prior, latents, decl["convention"], generator=generator, conditioning=conditioning, encoder=encoder))
    if len(readings) < 2 or not all(isinstance(r, Reading) for r in readings):
        raise LatentzooError(f"kind {kind}'s check {decl['check']} must return the declared convention's Reading and at least one other")
    return Verdict(prior=name, kind=kind, data=data, images=int(latents.shape[0]), readings=readings)


def checkable(registry: Any, entry: Any) -> bool:
    """Whether ``latentzoo check`` can test this prior entry: it has weights and its kind declares a check."""
    from ..contract.plugins import get_manager

    try:
        kind = registry.declaration(entry).get("kind")
    except LatentzooError:
        return False
    return "weights" in entry.data and bool((get_manager().kinds().get(kind) or {}).get("check"))


def _encoder_for(registry: Any, prior_entry: Any) -> Any:
    """A registered encoder of the prior's latent space (the same autoencoder identity; the same shape first)."""
    space = prior_entry.latent_space
    if space is None:
        raise LatentzooError(f"{prior_entry.where}: prior {prior_entry.name} declares no latent_space; add it to check the prior")
    same = [e for e in registry.list(role="encoder") if e.latent_space is not None and e.latent_space.autoencoder == space.autoencoder]
    for entry in sorted(same, key=lambda e: not e.latent_space.same_shape(space)):
        return entry
    raise LatentzooError(
        f"no registered encoder produces prior {prior_entry.name}'s latent space ({space.describe()}); "
        "add the autoencoder that defines it to a registry file (--registry)"
    )


def _conditioning(registry: Any, builder: Any, prior_entry: Any) -> Any:
    """The null (empty-prompt) conditioning from a registered conditioner of the prior's conditioning space, if one exists.

    None otherwise: the prior then runs unconditionally (a class-conditional prior on its null class).
    """
    wanted = prior_entry.data.get("conditioning")
    if not wanted:
        return None
    for entry in registry.list(role="conditioner"):
        have = entry.data.get("conditioning_space")
        if have and all(have.get(k) == v for k, v in wanted.items()):
            return builder.component(entry.name, "conditioner").condition([""])
    return None


def _data_source(data: str | None, encoder_entry: Any, prior_entry: Any) -> str:
    """--data, else the data the autoencoder of the space was trained on, else the prior's own."""
    for source in (data, (encoder_entry.data.get("training") or {}).get("data"), (prior_entry.data.get("training") or {}).get("data")):
        if source:
            return str(source)
    raise LatentzooError(
        f"neither encoder {encoder_entry.name} nor prior {prior_entry.name} records its training data; give images with --data DATASET_OR_FOLDER"
    )


def check(name: str, *, data: str | None = None, n: int = N_IMAGES, extra: Any = (), seed: int = 0) -> Verdict:
    """Check the registered prior ``name`` against its kind's convention on ``n`` real images."""
    import torch

    from ..contract.compose import resolve_component
    from .build import Builder
    from .data import load_dataset

    builder = Builder.from_registry(extra)
    registry = builder.registry
    entry = resolve_component(registry, name, "prior")
    kind = registry.declaration(entry)["kind"]
    if not kind_declaration(kind, name).get("check"):
        return Verdict(prior=name, kind=kind, data="-", images=0)
    enc_entry = _encoder_for(registry, entry)
    source = _data_source(data, enc_entry, entry)
    prior = builder.component(name, "prior")
    encoder = builder.component(enc_entry.name, "encoder")
    size = int(getattr(encoder, "sample_size", 32))
    images = load_dataset(source, split="test", size=size, channels=int(getattr(encoder, "image_channels", 1))).images[:n]
    if len(images) == 0:
        raise LatentzooError(f"{source} holds no images; give others with --data")
    with torch.inference_mode():
        z = encoder.encode(images)
    space = entry.latent_space
    if space.kind != "discrete":
        if space.scaling_factor is not None:
            z = (z - (space.shift or 0.0)) * space.scaling_factor  # the prior models scaled latents (core.runtime.pipeline.Pipeline.scale)
        z = z.reshape(len(images), *prior.latent_shape)
    cond = _conditioning(registry, builder, entry)
    return judge(prior, kind, z, name=name, data=source, conditioning=cond, encoder=encoder, seed=seed)
