"""Building components and pipelines: import model code, load and verify weights (imports torch)."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, TypeVar, cast

import torch
from torch import nn

from ..contract.compose import PipelineSpec, check_spec, declared_options, resolve_component
from ..contract.errors import ContractError, WeightsError
from ..contract.interfaces import Component, Conditioner, Decoder, Encoder, Prior, Sampler, Scheduler, Scorer
from ..contract.latent import LatentSpace
from ..contract.registry import Entry, Registry, import_target
from ..contract.weights import load_state, load_tensors, parameters_on_meta, record_file_sources, space_identity
from ..nn.kernels import accelerate
from .sources import resolve_weights

if TYPE_CHECKING:
    from .pipeline import Pipeline

Part = TypeVar("Part", bound=Component)


class Builder:
    """Builds each named component once; a VQ-GAN used as encoder and decoder is one object."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.cache: dict[str, Component] = {}
        self.sha256: dict[str, str] = {}

    @classmethod
    def from_registry(cls, extra: Any = ()) -> Builder:
        return cls(Registry.load(list(extra)))

    def component(self, name: str, role: str) -> Component:
        """The built component ``name`` in ``role`` (an Encoder, Decoder, Prior, Sampler, Scheduler or Conditioner)."""
        entry = resolve_component(self.registry, name, role)
        if name in self.cache:
            return self.cache[name]
        # Ordinary tensors even when called under inference_mode (an editing call that builds its
        # pipeline): inference tensors carry no version counter, which core.nn.kernels needs to see
        # an in-place change of a packed weight.
        with torch.inference_mode(False):
            return self._component(entry, name, role)

    def _component(self, entry: Entry, name: str, role: str) -> Component:
        decl = self.registry.declaration(entry)
        cls = import_target(decl["target"])
        config = dict(entry.data.get("config") or {})
        # A class may say its parameters are all in its weights file: then it is built without allocating or
        # initialising them and adopts the (memory-mapped) loaded tensors: no copy, no random init.
        assign = "weights" in entry.data and bool(getattr(cls, "load_by_assignment", False))
        try:
            with parameters_on_meta() if assign else contextlib.nullcontext():
                obj = cls.from_config(config)
        except (TypeError, ValueError) as exc:
            raise WeightsError(f"{entry.where}: cannot build {name} from its config: {exc}") from exc
        if "weights" in entry.data:
            path, sha = resolve_weights(entry)
            load_state(obj, load_tensors(path, sha), path, name, assign=assign)  # names a tensor of the wrong shape
            if assign:
                record_file_sources(obj, path)  # core.nn.kernels packs these weights from the file, not the mapping
            self.sha256[name] = sha
            if hasattr(obj, "load_assets"):  # files shipped beside the weights (e.g. a text encoder's tokenizer.json)
                obj.load_assets(path.parent)
        cond = entry.conditioning_space
        if cond is not None:
            obj.conditioning_space = cond
        space = entry.latent_space
        if space is not None:
            self._check_space(entry, obj, space)
            obj.latent_space = space
        elif {"encoder", "decoder"} & set(entry.roles) and not hasattr(obj, "latent_space"):
            # Every use of an encoder or decoder reads its latent space: refused here, not as an AttributeError later.
            raise ContractError(
                f"{entry.where}: {entry.name} states no latent_space; add one to its registry entry "
                "(e.g. {kind: continuous, channels: 3, factor: 4}; see `latentzoo info digits-klvae`)"
            )
        if hasattr(obj, "eval"):
            obj.eval().requires_grad_(False)
        if isinstance(obj, nn.Module):
            accelerate(obj)  # oneDNN kernels for CPU inference (core.nn.kernels); training and CUDA run as before
        self.cache[name] = obj
        return obj

    def _check_space(self, entry: Entry, obj: Component, space: LatentSpace) -> None:
        """The declared contract must describe the real model."""
        shape = obj.shape_fields() if hasattr(obj, "shape_fields") else {}
        wrong = [f"{k} {getattr(space, k)!r} != {v!r}" for k, v in shape.items() if getattr(space, k) != v]
        if "encoder" in entry.roles and entry.name in self.sha256:
            expected = space_identity(self.sha256[entry.name])
            if space.autoencoder != expected:
                wrong.append(f"autoencoder {space.autoencoder!r} != {expected!r} (from its weights)")
        if wrong:
            raise ContractError(f"{entry.where}: {entry.name}'s declared latent_space does not match the model: {'; '.join(wrong)}")

    def scorer(self, name: str) -> Scorer:
        """A component that scores images against texts (``similarity``), for re-ranking."""
        entry = self.registry.get(name)
        model = self.component(name, entry.roles[0] if entry.roles else "conditioner")
        if not hasattr(model, "similarity"):
            raise ContractError(f"scorer {name} cannot score images against texts; use an image-text model such as digits-clip")
        return cast(Scorer, model)

    def part(self, name: str, role: str, kind: type[Part]) -> Part:
        """``component`` typed by its role's interface; not an isinstance check: a plugin class may
        implement a role without subclassing it (the contract is checked from its declaration)."""
        return cast(Part, self.component(name, role))

    def pipeline(self, spec: PipelineSpec, *, allow_mismatch: bool | None = None) -> Pipeline:
        from .pipeline import Pipeline

        warnings = check_spec(self.registry, spec, allow_mismatch=allow_mismatch)
        prior = self.part(spec.prior, "prior", Prior)
        return Pipeline(
            encoder=self.part(spec.encoder, "encoder", Encoder) if spec.encoder else None,
            prior=prior,
            decoder=self.part(spec.decoder, "decoder", Decoder),
            sampler=self.part(spec.sampler, "sampler", Sampler),
            scheduler=self.part(spec.scheduler, "scheduler", Scheduler) if spec.scheduler else None,
            conditioner=self.part(spec.conditioner, "conditioner", Conditioner) if spec.conditioner else None,
            scorer=self.scorer(spec.scorer) if spec.scorer else None,
            spec=spec,
            sha256=dict(self.sha256),
            warnings=warnings,
            declared=declared_options(self.registry, spec),
        )
