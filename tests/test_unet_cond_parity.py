"""The cross-attention UNet (diffusion.unet_cond) matches diffusers' UNet2DConditionModel key for key and output for output.

Random-init diffusers models shaped like Stable Diffusion, scaled down:
- SD 1.x-like: CrossAttnDownBlock2D x2 + DownBlock2D, 1x1-conv projections, attention_head_dim 8
  (diffusers' name for 8 heads), cross_attention_dim as a CLIP text width.
- SD 2.x-like: linear projections, a per-block list of head counts, v-prediction.
- a class-conditional variant with a two-layer transformer and a padding mask over the tokens.
Each is loaded with load_state_dict(strict=True) (no renaming) and compared in fp32 on CPU.
"""

from __future__ import annotations

import pytest

diffusers = pytest.importorskip("diffusers")
torch = pytest.importorskip("torch")

from latentzoo.plugins.diffusion.unet_cond import UNetCondPrior  # noqa: E402

RTOL = 1e-5  # max |ours - diffusers| / max |diffusers|
SCHEDULE = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}

SD1 = dict(
    sample_size=8,
    in_channels=4,
    out_channels=4,
    block_out_channels=[32, 64, 64],
    layers_per_block=2,
    down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    cross_attention_dim=48,
    attention_head_dim=8,
    norm_num_groups=16,
)
SD2 = dict(
    sample_size=8,
    in_channels=4,
    out_channels=4,
    block_out_channels=[32, 64, 96],
    layers_per_block=2,
    down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    cross_attention_dim=64,
    attention_head_dim=[2, 4, 6],
    use_linear_projection=True,
    norm_num_groups=16,
)
CLASSES = dict(SD1, num_class_embeds=11, transformer_layers_per_block=2, layers_per_block=1)
CASES = {"sd1": (SD1, {}), "sd2": (SD2, {"prediction_type": "v_prediction"}), "class-mask": (CLASSES, {})}


def build(config: dict, extra: dict):
    torch.manual_seed(0)
    theirs = diffusers.UNet2DConditionModel(**config).eval()
    # Random-init diffusers zeroes nothing that matters here, but perturb every tensor so
    # that a swapped or unused parameter cannot hide behind an initialisation of zeros.
    with torch.no_grad():
        for p in theirs.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ours = UNetCondPrior.from_config({**config, **extra, "training_schedule": SCHEDULE}).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    return ours, theirs


@pytest.mark.parametrize("kernels", ["eager", "onednn"])
@pytest.mark.parametrize("case", list(CASES))
def test_keys_and_outputs_match_diffusers(case, kernels):
    config, extra = CASES[case]
    ours, theirs = build(config, extra)
    if kernels == "onednn":  # the oneDNN inference kernels a built component runs on (core.nn.kernels)
        from latentzoo.core.nn.kernels import accelerate

        accelerate(ours)
    assert set(ours.state_dict()) == set(theirs.state_dict())
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, config["in_channels"], 8, 8, generator=g)
    context = torch.randn(3, 7, config["cross_attention_dim"], generator=g)
    t = torch.tensor([999.0, 500.0, 3.0])
    kwargs, ours_kwargs = {}, {}
    labels = None
    if config.get("num_class_embeds"):
        labels = torch.tensor([0, 5, 10])
        mask = torch.ones(3, 7, dtype=torch.bool)
        mask[0, 4:] = False
        mask[2, 1:] = False
        kwargs = {"class_labels": labels, "encoder_attention_mask": mask.float()}
        ours_kwargs = {"encoder_attention_mask": mask}
    with torch.no_grad():
        want = theirs(x, t, encoder_hidden_states=context, **kwargs).sample
        got = ours(x, t, labels, encoder_hidden_states=context, **ours_kwargs)
    err = float((got - want).abs().max() / want.abs().max())
    print(f"unet_cond parity {case} ({kernels}): max relative error {err:.3g}")
    assert err < RTOL, err
    # The conditioning matters: other tokens give another output (a UNet ignoring them would pass the check above).
    with torch.no_grad():
        other = ours(x, t, labels, encoder_hidden_states=torch.randn_like(context), **ours_kwargs)
    assert float((other - got).abs().max()) > 1e-3


def test_wrong_width_and_missing_tokens_are_refused():
    ours, _ = build(SD1, {})
    x, t = torch.randn(1, 4, 8, 8), torch.tensor([10.0])
    with pytest.raises(ValueError, match="encoder_hidden_states"):
        ours(x, t)
    with pytest.raises(ValueError, match="cross_attention_dim 48"):
        ours(x, t, encoder_hidden_states=torch.randn(1, 7, 32))


# --- the prior in the Denoiser and the samplers ------------------------------------------

TINY = dict(SD1, block_out_channels=[16, 32, 32], norm_num_groups=8, layers_per_block=1, cross_attention_dim=24)


def tiny_prior():
    torch.manual_seed(0)
    prior = UNetCondPrior.from_config({**TINY, "training_schedule": SCHEDULE}).eval()
    with torch.no_grad():
        for p in prior.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return prior


def conditions(batch: int, length: int = 5, seed: int = 2) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(batch, length, dtype=torch.bool)
    mask[:, 3:] = False
    return {"tokens": torch.randn(batch, length, 24, generator=g), "mask": mask}


def test_denoiser_guides_against_the_null_conditioning():
    from latentzoo.core.contract.denoising import Denoiser
    from latentzoo.core.contract.errors import LatentzooError

    prior = tiny_prior()
    cond, null = conditions(2), conditions(1, seed=3)
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(4))
    guided = Denoiser(prior, guidance=3.0, batch_size=2, conditioning=cond, null_conditioning=null)
    t = guided.timestep(2.0, x.device)
    with torch.no_grad():
        out = guided.model_output(x, t)
        c = prior(x, t, encoder_hidden_states=cond["tokens"], encoder_attention_mask=cond["mask"])
        u = prior(x, t, encoder_hidden_states=null["tokens"].expand(2, -1, -1), encoder_attention_mask=null["mask"].expand(2, -1))
    assert float((out - (u + 3.0 * (c - u))).abs().max()) < 1e-5
    plain = Denoiser(prior, batch_size=2, conditioning=cond)
    with torch.no_grad():
        assert torch.allclose(plain.model_output(x, t), c, atol=1e-6)
    with pytest.raises(LatentzooError, match="null_conditioning"):
        Denoiser(prior, guidance=3.0, batch_size=2, conditioning=cond)
    with pytest.raises(LatentzooError, match="batch 3"):
        Denoiser(prior, batch_size=2, conditioning=conditions(3))


@pytest.mark.parametrize("sampler_name", ["diffusion.ddim", "diffusion.euler", "ksampling.dpmpp_2m_sde"])
def test_samplers_pass_the_conditioning(sampler_name):
    """Every sigma sampler reaches the prior with the tokens: same inputs same bytes, another prompt another image."""
    from latentzoo.core.contract.plugins import get_manager
    from latentzoo.core.contract.registry import import_target

    decls = get_manager().components()
    sampler = import_target(decls[sampler_name]["target"]).from_config({})
    scheduler = import_target(decls["diffusion.karras"]["target"]).from_config({})
    prior = tiny_prior()
    levels = scheduler.schedule(prior, 4)

    def draw(cond):
        g = torch.Generator().manual_seed(0)
        noise = torch.randn(2, 4, 8, 8, generator=g)
        return sampler.sample(
            prior, noise, levels=levels, generator=g, guidance=2.0, conditioning=cond, null_conditioning=conditions(1, seed=9)
        )

    a, b, other = draw(conditions(2)), draw(conditions(2)), draw(conditions(2, seed=5))
    assert torch.equal(a, b) and torch.isfinite(a).all()
    assert float((a - other).abs().max()) > 1e-3
