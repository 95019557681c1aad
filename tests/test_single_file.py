"""Original single-file checkpoints (SD 1.x / 2.x, CompVis LDM, taming VQ-GAN) -> latentzoo.

The reference is diffusers' own single-file converter (``diffusers.loaders.single_file_utils``),
used only here. Checkpoints in the original layout are built from random-init, scaled-down
diffusers / transformers models through our inverse mapping (``keys.*_to_original``); then
diffusers' converter and ours must both give back the model's own tensors, name for name and
bit for bit. The inverse is checked independently: diffusers' converter reads it.
"""

from __future__ import annotations

import pytest

diffusers = pytest.importorskip("diffusers")
torch = pytest.importorskip("torch")
sfu = pytest.importorskip("diffusers.loaders.single_file_utils")

from latentzoo.plugins.checkpoints import keys  # noqa: E402
from latentzoo.plugins.clip.model import hf_state_dict  # noqa: E402

SD1_UNET = dict(
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
SD2_UNET = dict(
    SD1_UNET,
    down_block_types=["CrossAttnDownBlock2D"] * 3,
    up_block_types=["CrossAttnUpBlock2D"] * 3,
    attention_head_dim=[2, 4, 4],
    use_linear_projection=True,
    cross_attention_dim=64,
)
LEVELS = dict(down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2, block_out_channels=[16, 32])
VAE = dict(LEVELS, layers_per_block=1, latent_channels=4, norm_num_groups=8)
VQ = dict(LEVELS, layers_per_block=2, latent_channels=3, num_vq_embeddings=32, vq_embed_dim=3, norm_num_groups=8)
OPENCLIP_TEXT = dict(  # 24 layers: diffusers' converter drops block 23 by name, as SD 2.x's penultimate-layer conditioning needs
    vocab_size=99,
    hidden_size=16,
    num_hidden_layers=24,
    num_attention_heads=2,
    intermediate_size=32,
    max_position_embeddings=12,
    hidden_act="gelu",
)


def perturbed(model):
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def up_attention(config):
    return [t.startswith("CrossAttn") for t in config["up_block_types"]]


def same(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b), (sorted(set(a) - set(b))[:5], sorted(set(b) - set(a))[:5])
    for k in a:
        assert a[k].shape == b[k].shape and torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("case", ["sd1", "sd2"])
def test_unet_keys_match_diffusers_converter(case):
    config = SD1_UNET if case == "sd1" else SD2_UNET
    theirs = perturbed(diffusers.UNet2DConditionModel(**config))
    original = keys.unet_to_original(theirs, config["layers_per_block"], up_attention(config))
    ckpt = {keys.UNET + k: v for k, v in original.items()}
    same(sfu.convert_ldm_unet_checkpoint(ckpt, dict(config)), theirs)  # diffusers reads our inverse
    same(keys.unet_to_diffusers(original, config["layers_per_block"]), theirs)  # ours reads it back


@pytest.mark.parametrize("kind", ["kl", "vq"])
def test_autoencoder_keys_match_diffusers_converter(kind):
    model = diffusers.AutoencoderKL(**VAE) if kind == "kl" else diffusers.VQModel(**VQ)
    theirs = perturbed(model)
    levels = len(model.config.block_out_channels)
    original = keys.ae_to_original(theirs, levels)
    assert original["encoder.mid.attn_1.q.weight"].ndim == 4  # CompVis' 1x1 convs
    if kind == "kl":
        ckpt = {keys.VAE + k: v for k, v in original.items()}
        same(sfu.convert_ldm_vae_checkpoint(ckpt, dict(model.config)), theirs)
    same(keys.ae_to_diffusers(original, levels), theirs)


def test_openclip_keys_match_diffusers_converter():
    transformers = pytest.importorskip("transformers")
    config = transformers.CLIPTextConfig(**OPENCLIP_TEXT)
    full = hf_state_dict(perturbed(transformers.CLIPTextModel(config)))  # text_model.* names, as transformers < 5 saved them
    last = {k: v for k, v in full.items() if ".layers.23." in k}
    kept = {k: v for k, v in full.items() if ".layers.23." not in k}
    original = keys.openclip_to_original(full)  # all 24 blocks, as SD 2.x files hold them
    original["text_projection"] = torch.randn(16, 8)
    assert "transformer.resblocks.23.attn.in_proj_weight" in original and last
    ckpt = {keys.OPENCLIP + k: v for k, v in original.items()}
    config23 = transformers.CLIPTextConfig(**{**OPENCLIP_TEXT, "num_hidden_layers": 23})
    reference = sfu.convert_open_clip_checkpoint(transformers.CLIPTextModel(config23), ckpt)
    ours, dropped = keys.openclip_to_transformers(original)
    same(ours, kept)
    same(reference, kept)
    assert "text_projection" in dropped and any("resblocks.23." in k for k in dropped)


def test_clip_keys_both_transformers_layouts():
    t = torch.zeros(1)
    new = keys.clip_to_transformers({"text_model.final_layer_norm.weight": t, "text_model.embeddings.position_ids": t})
    old = keys.clip_to_transformers({"final_layer_norm.weight": t, "embeddings.position_ids": t})
    assert list(new) == list(old) == ["text_model.final_layer_norm.weight"]
