"""Every shipped prior x decoder x sampler either composes and samples, or is refused by
the contract with a message naming both parts. Nothing in between. A sampler that walks
levels gets one of the shipped schedulers of its kind (rotating, so each scheduler is used)."""

from __future__ import annotations

import itertools

import pytest
import torch

from latentzoo.core.contract.compose import PipelineSpec, check_spec
from latentzoo.core.contract.conditioning import check_conditioning
from latentzoo.core.contract.errors import ContractError
from latentzoo.core.contract.registry import Registry
from latentzoo.core.runtime.build import Builder

REGISTRY = Registry.load()
BUILTIN = [e for e in REGISTRY.entries.values() if e.layer == "builtin"]
PRIORS = sorted(e.name for e in BUILTIN if "prior" in e.roles)
DECODERS = sorted(e.name for e in BUILTIN if "decoder" in e.roles)
SAMPLERS = sorted(e.name for e in BUILTIN if "sampler" in e.roles)
SCHEDULERS = sorted(e.name for e in BUILTIN if "scheduler" in e.roles)


def scheduler_for(sampler: str, i: int) -> str | None:
    """The i-th shipped scheduler whose levels the sampler walks; None for a sampler that walks none."""
    walks = REGISTRY.declaration(REGISTRY.entries[sampler]).get("levels")
    fitting = [s for s in SCHEDULERS if REGISTRY.declaration(REGISTRY.entries[s]).get("levels", "sigma") == walks]
    return fitting[i % len(fitting)] if walks else None


def conditioner_for(prior: str) -> str | None:
    """A shipped conditioner that fits a prior conditioned on one (a text or embedding prior); None otherwise."""
    accepts = REGISTRY.entries[prior].conditioning
    if accepts is None or not accepts.needs_conditioner:
        return None
    for entry in BUILTIN:
        if "conditioner" in entry.roles:
            try:
                check_conditioning(prior, accepts, entry.name, entry.conditioning_space)
            except ContractError:
                continue
            return entry.name
    return None


@pytest.fixture(scope="module")
def builder() -> Builder:
    torch.set_num_threads(1)
    return Builder(REGISTRY)


def test_the_matrix_is_not_trivial():
    assert len(PRIORS) >= 2 and len(DECODERS) >= 2 and len(SAMPLERS) >= 3
    assert {"leading", "trailing", "linspace", "karras", "sigmoid", "exponential"} <= set(SCHEDULERS)


@pytest.mark.parametrize(("prior", "decoder"), list(itertools.product(PRIORS, DECODERS)))
def test_each_pair_composes_and_samples_or_is_refused(builder, prior, decoder):
    outcomes = {}
    for i, sampler in enumerate(SAMPLERS):
        scheduler = scheduler_for(sampler, i + PRIORS.index(prior))
        conditioner = conditioner_for(prior)  # a text prior gets the text encoder it was trained with, and a prompt
        spec = PipelineSpec(
            prior=prior, decoder=decoder, sampler=sampler, scheduler=scheduler, conditioner=conditioner, name=f"{prior}+{decoder}+{sampler}"
        )
        try:
            check_spec(REGISTRY, spec)
        except ContractError as exc:
            message = str(exc)
            assert "\n" not in message
            names_both = prior in message and decoder in message
            names_sampler = sampler in message and prior in message and "drives" in message
            assert names_both or names_sampler, message
            outcomes[sampler] = "refused"
            continue
        pipe = builder.pipeline(spec)
        images = pipe.sample(2, seed=0, steps=2, **({"prompt": "a seven"} if conditioner else {}))
        assert images.shape[0] == 2 and images.shape[1] == pipe.decoder.image_channels
        assert torch.isfinite(images).all() and images.abs().max() <= 1.0
        outcomes[sampler] = "sampled"
    # A pair whose spaces fit is usable with at least one sampler; a misfit is refused by every one.
    assert set(outcomes.values()) <= {"sampled", "refused"}
    refusals_for_space = {s for s, o in outcomes.items() if o == "refused"}
    if len(refusals_for_space) < len(SAMPLERS):
        assert "sampled" in outcomes.values()
