"""The latent-space contract: LatentSpace, check_spaces, check_sampler and compose.check_spec."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from latentzoo.core.contract.compose import PipelineSpec, accepted_spaces, check_spec
from latentzoo.core.contract.errors import ContractError, RegistryError
from latentzoo.core.contract.latent import LatentSpace, check_sampler, check_spaces
from latentzoo.core.contract.plugins import get_manager
from latentzoo.core.contract.registry import Entry, Registry

AE_A = "sha256:aaaaaaaaaaaaaaaa"
AE_B = "sha256:bbbbbbbbbbbbbbbb"


def vq_space(**over) -> dict:
    return {"kind": "continuous", "channels": 4, "factor": 4, "codebook_size": 256, "autoencoder": AE_A, **over}


def autoencoder(space: dict) -> dict:
    return {"family": "vqgan", "class": "vqgan.autoencoder", "roles": ["encoder", "decoder"], "latent_space": space}


def prior(space: dict, cls: str = "diffusion.unet") -> dict:
    return {"family": "diffusion", "class": cls, "roles": ["prior"], "latent_space": space}


COMPONENTS = {
    # autoencoders (decoders)
    "vq-a": autoencoder(vq_space()),
    "vq-a-scaled": autoencoder(vq_space(scaling_factor=0.5)),
    "vq-b": autoencoder(vq_space(autoencoder=AE_B)),
    "vq-a-codes-only": autoencoder({"kind": "discrete", "channels": 1, "factor": 4, "codebook_size": 256, "autoencoder": AE_A}),
    "kl-a": autoencoder({"kind": "continuous", "channels": 4, "factor": 4, "autoencoder": AE_A}),
    "no-space": {"class": "vqgan.autoencoder", "roles": ["encoder", "decoder"]},
    # priors
    "prior-ok": prior(vq_space(scaling_factor=0.5)),
    "prior-ok-shift": prior(vq_space(scaling_factor=0.5, shift=0.1)),
    "prior-other-ae": prior(vq_space(scaling_factor=0.5, autoencoder=AE_B)),
    "prior-channels": prior(vq_space(scaling_factor=0.5, channels=8)),
    "prior-factor": prior(vq_space(scaling_factor=0.5, factor=8)),
    "prior-codebook": prior(vq_space(scaling_factor=0.5, codebook_size=512)),
    "prior-kind": prior(
        {"kind": "continuous", "channels": 1, "factor": 4, "codebook_size": 256, "autoencoder": AE_A, "scaling_factor": 0.5}
    ),
    "prior-discrete-4ch": prior({"kind": "discrete", "channels": 4, "factor": 4, "codebook_size": 256, "autoencoder": AE_A}),
    "prior-many": prior(vq_space(scaling_factor=0.5, channels=8, factor=8, autoencoder=AE_B)),
    "prior-scale": prior(vq_space(scaling_factor=0.7)),
    "prior-noscale": prior(vq_space()),
    "prior-codes": prior({"kind": "discrete", "channels": 1, "factor": 4, "codebook_size": 256, "autoencoder": AE_A}),
    "prior-codes-other": prior({"kind": "discrete", "channels": 1, "factor": 4, "codebook_size": 256, "autoencoder": AE_B}),
    "prior-nospace": {"class": "diffusion.unet", "roles": ["prior"]},
    "ar-prior": prior({"kind": "discrete", "channels": 1, "factor": 4, "codebook_size": 256, "autoencoder": AE_A}, cls="test.ar"),
}

PIPELINES = {
    "good": {"prior": "prior-ok", "decoder": "vq-a", "sampler": "ddim", "scheduler": "leading"},
    "lenient": {"prior": "prior-other-ae", "decoder": "vq-a", "sampler": "ddim", "scheduler": "leading", "allow_mismatch": True},
    "strict": {"prior": "prior-other-ae", "decoder": "vq-a", "sampler": "ddim", "scheduler": "leading"},
}


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Registry:
    # isolate from any user registry on this machine
    monkeypatch.delenv("LATENTZOO_REGISTRY", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    # The diffusion family declares its samplers' levels and its prior's scaled_latents; on a branch
    # where it does not yet, give the declarations what this contract test assumes (a no-op once it does).
    components = get_manager().components()
    for name in ("diffusion.ddim", "diffusion.ddpm"):
        if not components[name].get("levels"):
            monkeypatch.setitem(components, name, {**components[name], "levels": "sigma"})
    if "scaled_latents" not in components["diffusion.unet"]:
        monkeypatch.setitem(components, "diffusion.unet", {**components["diffusion.unet"], "scaled_latents": True})
    path = tmp_path / "contract.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "components": COMPONENTS, "pipelines": PIPELINES}, sort_keys=False))
    reg = Registry.load([path])
    assert reg.entries["prior-ok"].layer == "cli"
    return reg


def spec(prior: str, decoder: str = "vq-a", sampler: str = "ddim", scheduler: str | None = "leading", **kw) -> PipelineSpec:
    return PipelineSpec(prior=prior, decoder=decoder, sampler=sampler, scheduler=scheduler, **kw)


def diff_fields(msg: str) -> list[str]:
    """The field names listed in a mismatch message ('... vs decoder d: f1 a != b; f2 c != d (hint)')."""
    diffs = msg.split(": ", 2)[2].split(" (")[0]
    return [part.split(" ", 1)[0] for part in diffs.split("; ")]


def refused(registry: Registry, s: PipelineSpec, **kw) -> str:
    with pytest.raises(ContractError) as info:
        check_spec(registry, s, **kw)
    return str(info.value)


# --- accepted pipelines ----------------------------------------------------------------------


def test_matching_pipeline_is_accepted(registry: Registry) -> None:
    assert check_spec(registry, spec("prior-ok")) == []
    # a scaling factor on one side only is fine (the autoencoder takes raw latents)
    assert check_spec(registry, spec("prior-ok", encoder="vq-a")) == []
    # equal scaling on both sides is fine
    assert check_spec(registry, spec("prior-ok", decoder="vq-a-scaled")) == []
    # plugin class names work as sampler / scheduler with their default config
    assert check_spec(registry, spec("prior-ok", sampler="diffusion.ddpm", scheduler="diffusion.karras")) == []


def test_registry_pipeline_entry(registry: Registry) -> None:
    good = PipelineSpec.from_entry(registry.get("good", "pipeline"))
    assert check_spec(registry, good) == []
    msg = refused(registry, PipelineSpec.from_entry(registry.get("strict", "pipeline")))
    assert "autoencoder" in msg


def test_discrete_codes_accepted_by_vq_decoder(registry: Registry) -> None:
    decoder = registry.get("vq-a", "decoder")
    spaces = accepted_spaces(registry, decoder)
    assert spaces == [LatentSpace.from_dict(vq_space()), LatentSpace("discrete", 1, 4, AE_A, 256)]
    # a code-index prior over the same autoencoder and codebook: accepted, no warnings
    assert check_spec(registry, spec("prior-codes")) == []
    # ... but not over another autoencoder's codebook
    msg = refused(registry, spec("prior-codes-other"))
    assert "prior prior-codes-other" in msg and "decoder vq-a" in msg
    assert f"autoencoder {AE_B!r} != {AE_A!r}" in msg
    # the discrete view is the one compared against (only the autoencoder differs)
    assert diff_fields(msg) == ["autoencoder"]


def test_no_discrete_view_without_codebook(registry: Registry) -> None:
    assert accepted_spaces(registry, registry.get("kl-a", "decoder")) == [LatentSpace("continuous", 4, 4, AE_A)]


# --- refused pipelines: one differing field at a time --------------------------------------------


@pytest.mark.parametrize(
    ("prior_name", "decoder", "field", "ours", "theirs"),
    [
        ("prior-other-ae", "vq-a", "autoencoder", AE_B, AE_A),
        ("prior-channels", "vq-a", "channels", 8, 4),
        ("prior-factor", "vq-a", "factor", 8, 4),
        ("prior-codebook", "vq-a", "codebook_size", 512, 256),
        ("prior-kind", "vq-a-codes-only", "kind", "continuous", "discrete"),
        ("prior-scale", "vq-a-scaled", "scaling_factor", 0.7, 0.5),
    ],
)
def test_single_field_mismatch(registry: Registry, prior_name: str, decoder: str, field: str, ours, theirs) -> None:
    msg = refused(registry, spec(prior_name, decoder=decoder))
    assert f"prior {prior_name}" in msg
    assert f"decoder {decoder}" in msg
    assert f"{field} {ours!r} != {theirs!r}" in msg
    assert diff_fields(msg) == [field]
    assert "--allow-mismatch" in msg


def test_kind_and_codebook_mismatch_against_decoder_without_codebook(registry: Registry) -> None:
    msg = refused(registry, spec("prior-discrete-4ch", decoder="kl-a"))
    assert "prior prior-discrete-4ch" in msg and "decoder kl-a" in msg
    assert "kind 'discrete' != 'continuous'" in msg
    assert "codebook_size 256 != None" in msg
    assert diff_fields(msg) == ["kind", "codebook_size"]


def test_several_fields_at_once(registry: Registry) -> None:
    msg = refused(registry, spec("prior-many"))
    assert "prior prior-many" in msg and "decoder vq-a" in msg
    for part in ("channels 8 != 4", "factor 8 != 4", f"autoencoder {AE_B!r} != {AE_A!r}"):
        assert part in msg
    assert diff_fields(msg) == ["channels", "factor", "autoencoder"]


def test_scaling_and_shift_both_stated_and_different(registry: Registry, tmp_path: Path) -> None:
    path = tmp_path / "more.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "components": {
                    "vq-a-shift": autoencoder(vq_space(scaling_factor=0.5, shift=0.3)),
                    "prior-both": prior(vq_space(scaling_factor=0.25, shift=0.1)),
                }
            }
        )
    )
    reg = Registry.load([path])
    msg = refused(reg, spec("prior-both", decoder="vq-a-shift"))
    assert "prior prior-both" in msg and "decoder vq-a-shift" in msg
    assert "scaling_factor 0.25 != 0.5" in msg and "shift 0.1 != 0.3" in msg
    assert diff_fields(msg) == ["scaling_factor", "shift"]
    # same scaling, shift on one side only: accepted
    assert check_spec(registry, spec("prior-ok-shift", decoder="vq-a-scaled")) == []


def test_denoiser_prior_without_scaling_factor_refused(registry: Registry) -> None:
    msg = refused(registry, spec("prior-noscale"))
    assert "prior-noscale" in msg and "scaling_factor" in msg
    # even when the decoder matches it exactly otherwise, and even with allow_mismatch
    msg = refused(registry, spec("prior-noscale"), allow_mismatch=True)
    assert "scaling_factor" in msg


def test_missing_latent_space_refused(registry: Registry) -> None:
    msg = refused(registry, spec("prior-nospace"))
    assert "prior-nospace" in msg and "latent_space" in msg
    msg = refused(registry, spec("prior-ok", decoder="no-space"))
    assert "no-space" in msg and "latent_space" in msg
    msg = refused(registry, spec("prior-ok", encoder="no-space"))
    assert "no-space" in msg and "latent_space" in msg


def test_encoder_mismatch_refused(registry: Registry) -> None:
    msg = refused(registry, spec("prior-ok", encoder="vq-b"))
    assert "encoder vq-b" in msg and "decoder vq-a" in msg
    assert f"autoencoder {AE_B!r} != {AE_A!r}" in msg


# --- samplers and schedulers ------------------------------------------------------------------


def test_check_sampler_directly() -> None:
    check_sampler("ddim", ("denoiser",), "prior-ok", "denoiser")  # no error
    with pytest.raises(ContractError) as info:
        check_sampler("ddim", ("denoiser",), "my-transformer", "autoregressive")
    msg = str(info.value)
    assert "ddim" in msg and "my-transformer" in msg
    assert "denoiser" in msg and "autoregressive" in msg
    with pytest.raises(ContractError, match="analytic"):
        check_sampler("ancestral", ["autoregressive", "denoiser"], "gauss", "analytic")


def test_sampler_cannot_drive_prior_kind(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    # a fake autoregressive prior class, declared for this test only
    components = get_manager().components()
    monkeypatch.setitem(
        components,
        "test.ar",
        {"name": "test.ar", "roles": ["prior"], "kind": "autoregressive", "target": "x:Y", "family": "test", "plugin": "test"},
    )
    msg = refused(registry, spec("ar-prior"))
    assert "ddim" in msg and "ar-prior" in msg
    assert "denoiser" in msg and "autoregressive" in msg
    msg = refused(registry, spec("ar-prior", sampler="ddpm"))
    assert "ddpm" in msg and "ar-prior" in msg


def test_sampler_needs_scheduler(registry: Registry) -> None:
    msg = refused(registry, spec("prior-ok", scheduler=None))
    assert "ddim" in msg and "scheduler" in msg
    msg = refused(registry, spec("prior-ok", sampler="ddpm-large", scheduler=None))
    assert "ddpm-large" in msg and "scheduler" in msg


def _declare(monkeypatch: pytest.MonkeyPatch, name: str, **decl) -> None:
    """Declare a component class for one test (as a plugin's latentzoo_components would)."""
    body = {"name": name, "target": "x:Y", "family": "test", "plugin": "test", **decl}
    monkeypatch.setitem(get_manager().components(), name, body)


def test_levels_must_match_and_levelless_samplers_take_no_scheduler(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    _declare(monkeypatch, "test.flow-levels", roles=["scheduler"], levels="flow")
    _declare(monkeypatch, "test.closed-form", roles=["sampler"], drives=["denoiser"])
    _declare(monkeypatch, "test.legacy", roles=["sampler"], drives=["denoiser"], needs_scheduler=True)
    registry.entries["flow-sched"] = Entry(
        "flow-sched", "components", {"class": "test.flow-levels", "roles": ["scheduler"]}, Path("t.yaml"), 1, "cli"
    )
    for name, cls in (("closed", "test.closed-form"), ("legacy", "test.legacy")):
        registry.entries[name] = Entry(name, "components", {"class": cls, "roles": ["sampler"]}, Path("t.yaml"), 1, "cli")
    msg = refused(registry, spec("prior-ok", scheduler="flow-sched"))
    assert "flow-sched" in msg and "ddim" in msg and "flow levels" in msg and "sigma levels" in msg
    closed = spec("prior-ok", sampler="closed")
    msg = refused(registry, closed)
    assert "closed" in msg and closed.scheduler in msg and "drop the scheduler" in msg
    assert check_spec(registry, spec("prior-ok", sampler="closed", scheduler=None)) == []
    msg = refused(registry, spec("prior-ok", sampler="legacy"))
    assert "needs_scheduler" in msg and "levels" in msg


def test_scaled_latents_is_a_declaration_not_a_kind_name(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    """The scaling_factor rule follows the prior class's scaled_latents declaration, whatever its kind."""
    components = get_manager().components()
    monkeypatch.setitem(components, "diffusion.unet", {**components["diffusion.unet"], "scaled_latents": False})
    assert check_spec(registry, spec("prior-noscale")) == []
    monkeypatch.setitem(components, "diffusion.unet", {**components["diffusion.unet"], "kind": "flow", "scaled_latents": True})
    _declare(monkeypatch, "diffusion.ddim", roles=["sampler"], drives=["flow"], levels="sigma")
    assert "scaling_factor" in refused(registry, spec("prior-noscale"))


def test_wrong_roles_are_registry_errors(registry: Registry) -> None:
    with pytest.raises(RegistryError, match="not a scheduler"):
        check_spec(registry, spec("prior-ok", scheduler="ddim"))
    with pytest.raises(RegistryError, match="not a sampler"):
        check_spec(registry, spec("prior-ok", sampler="leading"))
    with pytest.raises(RegistryError, match="not a decoder"):
        check_spec(registry, spec("prior-ok", decoder="prior-ok"))


# --- allow_mismatch ---------------------------------------------------------------------------


def test_allow_mismatch_equal_shape_other_identity_warns(registry: Registry) -> None:
    warnings = check_spec(registry, spec("prior-other-ae"), allow_mismatch=True)
    assert len(warnings) == 1
    w = warnings[0]
    assert "prior prior-other-ae" in w and "decoder vq-a" in w
    assert f"autoencoder {AE_B!r} != {AE_A!r}" in w
    assert diff_fields(w.removeprefix("--allow-mismatch: ")) == ["autoencoder"]
    # the spec's own flag works the same, and the explicit argument overrides it
    assert len(check_spec(registry, spec("prior-other-ae", allow_mismatch=True))) == 1
    refused(registry, spec("prior-other-ae", allow_mismatch=True), allow_mismatch=False)
    lenient = PipelineSpec.from_entry(registry.get("lenient", "pipeline"))
    assert lenient.allow_mismatch is True
    assert len(check_spec(registry, lenient)) == 1
    # encoder and prior warnings both come back
    assert len(check_spec(registry, spec("prior-other-ae", encoder="vq-b"), allow_mismatch=True)) == 2


@pytest.mark.parametrize("prior_name", ["prior-channels", "prior-factor", "prior-codebook", "prior-many"])
def test_allow_mismatch_still_refuses_other_shapes(registry: Registry, prior_name: str) -> None:
    msg = refused(registry, spec(prior_name), allow_mismatch=True)
    assert f"prior {prior_name}" in msg and "decoder vq-a" in msg
    assert "only covers spaces of equal kind and shape" in msg


def test_allow_mismatch_lets_different_scaling_through_with_warning(registry: Registry) -> None:
    # scaling is not shape: allow_mismatch lets it through with a warning naming the field
    warnings = check_spec(registry, spec("prior-scale", decoder="vq-a-scaled"), allow_mismatch=True)
    assert len(warnings) == 1 and "scaling_factor 0.7 != 0.5" in warnings[0]


# --- check_spaces directly -------------------------------------------------------------------------


def test_check_spaces_kind_only() -> None:
    produced = LatentSpace("discrete", 4, 4, AE_A, 256)
    accepted = [LatentSpace("continuous", 4, 4, AE_A, 256)]
    with pytest.raises(ContractError) as info:
        check_spaces("prior p", produced, "decoder d", accepted)
    msg = str(info.value)
    assert "prior p" in msg and "decoder d" in msg and "kind 'discrete' != 'continuous'" in msg
    assert diff_fields(msg) == ["kind"]
    # kind is part of the shape: allow_mismatch does not cover it
    with pytest.raises(ContractError, match="only covers"):
        check_spaces("prior p", produced, "decoder d", accepted, allow_mismatch=True)


def test_check_spaces_returns_the_matched_space() -> None:
    cont = LatentSpace("continuous", 4, 4, AE_A, 256)
    disc = cont.as_discrete()
    assert check_spaces("p", disc, "d", [cont, disc]) == (disc, [])
    assert check_spaces("p", cont.with_scaling(0.5), "d", [cont, disc]) == (cont, [])
    with pytest.raises(ContractError, match="accepts no latent space"):
        check_spaces("p", cont, "decoder d", [])


# --- LatentSpace ------------------------------------------------------------------------------------


def test_from_dict_round_trip() -> None:
    data = vq_space(scaling_factor=0.18215, shift=0.0)
    space = LatentSpace.from_dict(data)
    assert space.to_dict() == data
    assert LatentSpace.from_dict(space.to_dict()) == space
    assert "scaling_factor" not in LatentSpace.from_dict(vq_space()).to_dict()


def test_from_dict_rejects_unknown_fields() -> None:
    with pytest.raises(ContractError) as info:
        LatentSpace.from_dict(vq_space(scale=0.5, zz_top=1))
    msg = str(info.value)
    assert "scale" in msg and "zz_top" in msg
    assert "scaling_factor" in msg  # lists the known fields


@pytest.mark.parametrize("missing", ["kind", "channels", "factor", "autoencoder"])
def test_from_dict_rejects_missing_required_fields(missing: str) -> None:
    data = vq_space()
    del data[missing]
    with pytest.raises(ContractError, match=f"missing {missing}"):
        LatentSpace.from_dict(data)


def test_from_dict_names_all_missing_fields() -> None:
    with pytest.raises(ContractError) as info:
        LatentSpace.from_dict({"kind": "continuous"})
    msg = str(info.value)
    assert "channels" in msg and "factor" in msg and "autoencoder" in msg


def test_invalid_spaces() -> None:
    with pytest.raises(ContractError, match="kind"):
        LatentSpace("categorical", 4, 4, AE_A)  # type: ignore[arg-type]
    with pytest.raises(ContractError, match="codebook_size"):
        LatentSpace("discrete", 1, 4, AE_A)
    with pytest.raises(ContractError, match="positive"):
        LatentSpace("continuous", 0, 4, AE_A)
    with pytest.raises(ContractError, match="positive"):
        LatentSpace("continuous", 4, 0, AE_A)
    with pytest.raises(ContractError, match="codebook"):
        LatentSpace("continuous", 4, 4, AE_A).as_discrete()


@pytest.mark.parametrize("scaling_factor", [0, 0.0, -1.5, float("nan"), float("inf"), float("-inf"), True, "0.5"])
def test_bad_scaling_factor_refused(scaling_factor) -> None:
    with pytest.raises(ContractError, match="scaling_factor must be a finite number > 0"):
        LatentSpace("continuous", 4, 4, AE_A, scaling_factor=scaling_factor)


@pytest.mark.parametrize("shift", [float("nan"), float("inf"), float("-inf"), "0.1"])
def test_bad_shift_refused(shift) -> None:
    with pytest.raises(ContractError, match="shift must be a finite number"):
        LatentSpace("continuous", 4, 4, AE_A, scaling_factor=1.0, shift=shift)


@pytest.mark.parametrize(("field", "value"), [("channels", "4"), ("factor", 2.0), ("codebook_size", "16"), ("channels", True)])
def test_non_integer_shape_fields_refused(field, value) -> None:
    data = {"kind": "continuous", "channels": 4, "factor": 4, "autoencoder": AE_A, field: value}
    with pytest.raises(ContractError, match=field):
        LatentSpace.from_dict(data)


def test_differences_and_scaling_tolerance() -> None:
    a = LatentSpace("continuous", 4, 4, AE_A, 256, scaling_factor=0.5)
    assert a.differences(a) == []
    assert a.differences(LatentSpace("continuous", 4, 4, AE_A, 256)) == []  # scaling only on one side
    assert a.differences(LatentSpace("continuous", 4, 4, AE_A, 256, scaling_factor=0.5 + 1e-9)) == []
    b = LatentSpace("continuous", 8, 2, AE_B, 256, scaling_factor=0.6)
    assert a.differences(b) == [("channels", 4, 8), ("factor", 4, 2), ("autoencoder", AE_A, AE_B), ("scaling_factor", 0.5, 0.6)]
    assert a.same_shape(LatentSpace("continuous", 4, 4, AE_B, 256))
    assert not a.same_shape(b)


def test_registry_rejects_bad_latent_space_with_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LATENTZOO_REGISTRY", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    path = tmp_path / "bad.yaml"
    path.write_text(
        textwrap.dedent(
            f"""\
            components:
              p:
                class: diffusion.unet
                roles: [prior]
                latent_space: {{kind: continuous, channels: 4, factor: 4, autoencoder: "{AE_A}", scale: 0.5}}
            """
        )
    )
    with pytest.raises(RegistryError) as info:
        Registry.load([path])
    msg = str(info.value)
    assert f"{path}:5" in msg and "latent_space" in msg and "scale" in msg
