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


# ---------------------------------------------------------------------------------------
# whole files through the CLI: a single file converts to the same tensors as its diffusers folder

TINY_UNET = dict(  # widths divisible by 32 norm groups and SD's head conventions (SD 1.x: 8 heads; SD 2.x: 64 channels a head)
    sample_size=8,
    block_out_channels=[64, 128],
    layers_per_block=1,
    down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"],
    cross_attention_dim=64,
    attention_head_dim=8,
)
TINY_VAE = dict(
    down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2, block_out_channels=[32, 64], latent_channels=4
)


def tiny_sd(tmp_path, layout: str):
    """(diffusers folder, the same model as an original single file) of a tiny random SD 1.x / 2.x."""
    import json

    import transformers
    from safetensors.torch import save_file
    from test_clip import clip_vocab_files

    tok = tmp_path / "tok"
    clip_vocab_files(tok)
    vocab = json.loads((tok / "vocab.json").read_text())
    sd2 = layout == "sd2"
    unet_cfg = dict(TINY_UNET, attention_head_dim=[1, 2], use_linear_projection=True) if sd2 else TINY_UNET
    layers = 3 if sd2 else 2  # SD 2.x files hold one more OpenCLIP block than the conditioning uses
    text_cfg = transformers.CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=64, intermediate_size=128, num_hidden_layers=layers, num_attention_heads=1,
        max_position_embeddings=77, hidden_act="gelu" if sd2 else "quick_gelu", eos_token_id=vocab["<|endoftext|>"],
    )  # fmt: skip
    text = hf_state_dict(perturbed(transformers.CLIPTextModel(text_cfg)))
    unet = perturbed(diffusers.UNet2DConditionModel(**unet_cfg))
    vae = perturbed(diffusers.AutoencoderKL(**TINY_VAE))
    ckpt = {keys.UNET + k: v for k, v in keys.unet_to_original(unet, 1, up_attention(unet_cfg)).items()}
    ckpt |= {keys.VAE + k: v for k, v in keys.ae_to_original(vae, 2).items()}
    if sd2:
        ckpt |= {keys.OPENCLIP + k: v for k, v in keys.openclip_to_original(text).items()}
        text = {k: v for k, v in text.items() if f".layers.{layers - 1}." not in k}
        text_cfg.num_hidden_layers = layers - 1
    else:
        ckpt |= {keys.CLIP + k: v for k, v in text.items()}
    single = tmp_path / f"{layout}.safetensors"
    save_file({k: v.contiguous() for k, v in ckpt.items()}, str(single))
    # the same weights as a diffusers folder
    folder = tmp_path / f"{layout}-folder"
    m_unet = diffusers.UNet2DConditionModel(**{**unet_cfg, "sample_size": 96 if sd2 else 64, "upcast_attention": sd2})
    m_unet.load_state_dict(unet)
    m_vae = diffusers.AutoencoderKL(**TINY_VAE, scaling_factor=0.18215, sample_size=m_unet.config.sample_size * 8)
    m_vae.load_state_dict(vae)
    m_text = transformers.CLIPTextModel(text_cfg)
    m_text.load_state_dict(
        {k.removeprefix("text_model."): v for k, v in text.items()}
        if not any(k.startswith("text_model.") for k in m_text.state_dict())
        else text
    )
    sched = diffusers.DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False, steps_offset=1,
        prediction_type="v_prediction" if sd2 else "epsilon",
    )  # fmt: skip
    if sd2:
        (tok / "special_tokens_map.json").write_text(json.dumps({"pad_token": "!"}))
    pipe = diffusers.StableDiffusionPipeline(
        vae=m_vae, text_encoder=m_text, tokenizer=transformers.CLIPTokenizer.from_pretrained(str(tok)), unet=m_unet, scheduler=sched,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder, single, tok


def weights_of(out) -> dict:
    import yaml

    frag = yaml.safe_load((out / "registry.yaml").read_text())
    return {n: e["weights"]["sha256"] for n, e in frag["components"].items() if "weights" in e}


@pytest.mark.parametrize("layout", ["sd1", "sd2"])
def test_single_file_converts_to_the_folders_tensors_and_exports_back(tmp_path, layout):
    from safetensors.torch import load_file
    from test_interop import cli, latentzoo_env

    from latentzoo.interop.formats import convert

    env = latentzoo_env(tmp_path)
    folder, single, tok = tiny_sd(tmp_path, layout)
    extra = ["--prediction-type", "v_prediction"] if layout == "sd2" else []
    convert(folder, "f", fmt="diffusers", outdir=tmp_path / "f", register=False)  # the reference, in-process
    b = cli("convert", str(single), "--name", "f", "-o", str(tmp_path / "s"), "--tokenizer", str(tok), *extra, env=env, cwd=tmp_path)
    assert b.returncode == 0, b.stderr
    assert weights_of(tmp_path / "f") == weights_of(tmp_path / "s")  # same names, same sha256: identical tensors
    # and back out as a diffusers folder holding the original tensors
    e = cli("export", "f", "--to", "diffusers", "-o", str(tmp_path / "exp"), env=env, cwd=tmp_path)
    assert e.returncode == 0, e.stderr
    for part in ("unet", "vae"):
        ref = load_file(str(folder / part / "diffusion_pytorch_model.safetensors"))
        got = load_file(str(tmp_path / "exp" / part / "diffusion_pytorch_model.safetensors"))
        same(got, ref)
    ref = hf_state_dict(load_file(str(folder / "text_encoder" / "model.safetensors")))
    got = hf_state_dict(load_file(str(tmp_path / "exp" / "text_encoder" / "model.safetensors")))
    same(got, ref)


@pytest.fixture(scope="module")
def sd1_file(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sd1")
    _, single, tok = tiny_sd(tmp, "sd1")
    return single, tok


def _save(path, tensors):
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return path


def _kl_vae_file(path):
    return _save(path, keys.ae_to_original(perturbed(diffusers.AutoencoderKL(**TINY_VAE)), 2))


V1_YAML = """model:
  target: ldm.models.diffusion.ddpm.LatentDiffusion
  params:
    linear_start: 0.00085
    linear_end: 0.0120
    timesteps: 1000
    scale_factor: 0.18215
    unet_config:
      target: ldm.modules.diffusionmodules.openaimodel.UNetModel
      params:
        in_channels: 4
        out_channels: 4
        model_channels: 64
        channel_mult: [1, 2]
        num_res_blocks: 1
        num_heads: 8
        context_dim: CONTEXT
    first_stage_config:
      params:
        embed_dim: 4
        ddconfig: {z_channels: 4, ch: 32, ch_mult: [1, 2], num_res_blocks: 1}
    cond_stage_config:
      target: ldm.modules.encoders.modules.FrozenCLIPEmbedder
"""


def _bad(tmp_path, sd1_file, case):
    """(argv after `convert`, fragment of the one-line error) for one class of bad input."""
    single, tok = sd1_file
    if case == "pickle-suffix":
        (tmp_path / "m.ckpt").write_bytes(b"\x80\x02}q\x00.")
        return [str(tmp_path / "m.ckpt")], "never unpickles"
    if case == "pickle-in-safetensors-name":
        (tmp_path / "m.safetensors").write_bytes(b"PK\x03\x04" + b"\x00" * 64)  # torch.save's zip, renamed
        return [str(tmp_path / "m.safetensors")], "is a pickle"
    if case == "truncated":
        data = single.read_bytes()
        (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
        return [str(tmp_path / "cut.safetensors")], "is truncated"
    if case == "not-safetensors":
        (tmp_path / "t.safetensors").write_bytes(b"hello world, not a checkpoint at all")
        return [str(tmp_path / "t.safetensors")], "not a safetensors file"
    if case == "unknown-layout":
        _save(tmp_path / "u.safetensors", {"conditioner.embedders.0.w": torch.zeros(2), "model.diffusion_model.x": torch.zeros(2)})
        return [str(tmp_path / "u.safetensors")], "unknown checkpoint layout (found"
    if case == "vae-only-as-full":
        return [str(_kl_vae_file(tmp_path / "vae.safetensors"))], "holds only a first stage"
    if case == "vae-only-with-full-config":
        (tmp_path / "v1.yaml").write_text(V1_YAML.replace("CONTEXT", "64"))
        cfg = ["--config", str(tmp_path / "v1.yaml"), "--scaling-factor", "0.18215"]
        return [str(_kl_vae_file(tmp_path / "vae.safetensors")), *cfg], "describes a full latent diffusion model"
    if case == "config-disagrees":
        (tmp_path / "v1.yaml").write_text(V1_YAML.replace("CONTEXT", "768"))
        return [str(single), "--config", str(tmp_path / "v1.yaml"), "--tokenizer", str(tok)], "context_dim is 768 but"
    if case == "config-other-text-encoder":
        (tmp_path / "v2.yaml").write_text(V1_YAML.replace("CONTEXT", "64").replace("FrozenCLIPEmbedder", "FrozenOpenCLIPEmbedder"))
        return [str(single), "--config", str(tmp_path / "v2.yaml"), "--tokenizer", str(tok)], "FrozenOpenCLIPEmbedder"
    raise AssertionError(case)


BAD = [
    "pickle-suffix",
    "pickle-in-safetensors-name",
    "truncated",
    "not-safetensors",
    "unknown-layout",
    "vae-only-as-full",
    "vae-only-with-full-config",
    "config-disagrees",
    "config-other-text-encoder",
]


@pytest.mark.parametrize("case", BAD)
def test_bad_single_files_fail_in_one_line_writing_nothing(tmp_path, sd1_file, case):
    from test_interop import cli, latentzoo_env, one_line_error

    env = latentzoo_env(tmp_path)
    args, fragment = _bad(tmp_path, sd1_file, case)
    out = tmp_path / "out"
    proc = cli("convert", *args, "--name", "m", "-o", str(out), env=env, cwd=tmp_path)
    one_line_error(proc, fragment)
    assert not out.exists()
    assert (tmp_path / "user" / "registry.yaml").read_text() == "version: 1\n"


def test_a_matching_yaml_is_accepted_and_sd2_needs_its_prediction_type(tmp_path, sd1_file):
    from latentzoo.core.contract.errors import LatentzooError
    from latentzoo.plugins.checkpoints import single

    path, tok = sd1_file
    (tmp_path / "v1.yaml").write_text(V1_YAML.replace("CONTEXT", "64"))
    out = single.convert(path, "m", tmp_path, config=tmp_path / "v1.yaml", tokenizer=tok)
    assert "m" in out["pipelines"] and any("checked against" in n for n in out["notes"])
    det = single.detect(single.read_header(path), path)
    assert det.kind == "sd1" and det.unet["block_out_channels"] == [64, 128] and det.text["num_hidden_layers"] == 2
    det.kind = "sd2"
    with pytest.raises(LatentzooError, match="--prediction-type epsilon"):
        single._convert_sd(
            _ctx(path, tmp_path),
            det,
            {},
            {},
            prediction_type=None,
            tokenizer=tok,
            scaling_factor=None,
        )


def _ctx(path, stage):
    from latentzoo.plugins.diffusers.folders import ReadContext

    return ReadContext.create("m", path, stage)


def test_a_taming_vqgan_file_converts_key_for_key(tmp_path):
    from safetensors.torch import load_file

    from latentzoo.plugins.checkpoints import single

    theirs = perturbed(diffusers.VQModel(**VQ))
    ckpt = keys.ae_to_original(theirs, 2) | {"loss.discriminator.main.0.weight": torch.zeros(4, 3, 4, 4)}
    path = _save(tmp_path / "vqgan.safetensors", ckpt)
    out = single.convert(path, "vq", tmp_path, scaling_factor=0.5)
    entry = out["components"]["vq"]
    assert entry["class"] == "vqgan.autoencoder" and entry["latent_space"]["scaling_factor"] == 0.5
    assert any("loss" in n for n in out["notes"])
    same(load_file(str(tmp_path / "vq.safetensors")), theirs)


def test_clip_bpe_from_an_installed_package_gives_openai_ids(monkeypatch):
    from latentzoo.core.contract.errors import LatentzooError
    from latentzoo.core.runtime import text
    from latentzoo.plugins.checkpoints import single

    path = single.bundled_bpe()
    if path is None:
        pytest.skip("no package shipping bpe_simple_vocab_16e6.txt.gz (pip install --no-deps open_clip_torch)")
    tok = text.clip_bpe_from_merges(path)
    assert tok.vocab_size == 49408  # = openai/clip-vit-large-patch14's vocab.json
    # ids published with OpenAI's CLIP / used in diffusers' docs for this prompt: not derived from our own files
    assert tok.ids(["a photo of a cat"])[0] == [49406, 320, 1125, 539, 320, 2368, 49407]
    monkeypatch.setattr(single, "BPE_PACKAGES", ("no_such_package_here",))
    det = single.Detected("sd1", text={"max_position_embeddings": 77})
    with pytest.raises(LatentzooError, match=r"pip install --no-deps open_clip_torch.*--tokenizer DIR"):
        single.load_tokenizer(None, det)


def test_a_converted_unet_is_adopted_not_copied_and_gives_the_same_outputs(tmp_path, sd1_file, monkeypatch):
    """Builder builds load_by_assignment classes on meta and adopts the memory-mapped tensors: same outputs as copying."""
    from latentzoo.core.runtime.build import Builder
    from latentzoo.interop.formats import convert
    from latentzoo.plugins.diffusion.unet_cond import UNetCondPrior

    path, tok = sd1_file
    monkeypatch.setenv("LATENTZOO_REGISTRY", str(tmp_path / "user.yaml"))
    done = convert(path, "m", fmt="single-file", outdir=tmp_path / "m", register=False, tokenizer=tok)
    outs = []
    for adopt in (False, True):
        monkeypatch.setattr(UNetCondPrior, "load_by_assignment", adopt)
        unet = Builder.from_registry([done.fragment]).component("m-unet", "prior")
        assert not any(p.is_meta for p in unet.parameters())
        torch.manual_seed(0)
        x, c = torch.randn(2, 4, 8, 8), torch.randn(2, 77, 64)
        with torch.inference_mode():
            outs.append(unet(x, torch.tensor(10), encoder_hidden_states=c))
    assert torch.equal(outs[0], outs[1])


# ---------------------------------------------------------------------------------------
# CompVis LDM (unconditional UNet over a VQ first stage)


def test_ldm_legacy_qkv_split_matches_the_original_attention_block():
    """openaimodel's AttentionBlock (QKVAttentionLegacy: per-head q|k|v rows), written out here, equals our Attention on mapped weights."""
    from latentzoo.core.nn.layers import Attention

    torch.manual_seed(0)
    c, head, hw = 64, 16, 5
    norm_w, norm_b = torch.randn(c), torch.randn(c)
    qkv_w, qkv_b, proj_w, proj_b = torch.randn(3 * c, c, 1), torch.randn(3 * c), torch.randn(c, c, 1), torch.randn(c)
    x = torch.randn(2, c, hw, hw)
    # the original: norm -> qkv conv1d -> (B*H, 3*ch, T) split per head -> softmax(q k / sqrt(ch)) v -> proj_out -> residual
    h = torch.nn.functional.group_norm(x, 32, norm_w, norm_b, eps=1e-5).reshape(2, c, -1)
    qkv = torch.nn.functional.conv1d(h, qkv_w, qkv_b).reshape(2 * (c // head), 3 * head, -1)
    q, k, v = qkv.split(head, dim=1)
    w = torch.softmax(torch.einsum("bct,bcs->bts", q, k) / head**0.5, dim=-1)
    a = torch.einsum("bts,bcs->bct", w, v).reshape(2, c, -1)
    reference = x + torch.nn.functional.conv1d(a, proj_w, proj_b).reshape(x.shape)
    original = {"m.attentions.0.norm.weight": norm_w, "m.attentions.0.norm.bias": norm_b, "m.attentions.0.qkv.weight": qkv_w}
    original |= {"m.attentions.0.qkv.bias": qkv_b, "m.attentions.0.proj_out.weight": proj_w, "m.attentions.0.proj_out.bias": proj_b}
    mapped = keys.ldm_attention_to_diffusers(original, head)
    ours = Attention(c, head_dim=head, groups=32, eps=1e-5)
    ours.load_state_dict({k.removeprefix("m.attentions.0."): v for k, v in mapped.items()})
    with torch.no_grad():
        assert torch.allclose(ours(x), reference, rtol=1e-4, atol=1e-4)
    back = keys.ldm_attention_to_original(mapped, head)
    same(back, original)


LDM_UNET = dict(
    sample_size=8, in_channels=3, out_channels=3, block_out_channels=[32, 64], layers_per_block=1,
    down_block_types=["DownBlock2D", "AttnDownBlock2D"], up_block_types=["AttnUpBlock2D", "UpBlock2D"], attention_head_dim=16,
)  # fmt: skip
LDM_YAML = """model:
  params:
    linear_start: 0.0015
    linear_end: 0.0195
    timesteps: 1000
    unet_config:
      params: {image_size: 8, in_channels: 3, out_channels: 3, model_channels: 32, channel_mult: [1, 2], num_res_blocks: 1, num_head_channels: 16}
    first_stage_config:
      params: {embed_dim: 3, ddconfig: {z_channels: 3, ch: 16, ch_mult: [1, 2], num_res_blocks: 2}}
"""


def test_a_compvis_ldm_file_converts_to_the_tensors_of_its_diffusers_pipeline(tmp_path, monkeypatch):
    from latentzoo.core.contract.errors import LatentzooError
    from latentzoo.interop.formats import convert

    monkeypatch.setenv("LATENTZOO_REGISTRY", str(tmp_path / "user.yaml"))
    unet = perturbed(diffusers.UNet2DModel(**LDM_UNET))
    vq = perturbed(diffusers.VQModel(**VQ, scaling_factor=1.0))
    ups = ["Attn" in t for t in LDM_UNET["up_block_types"]]
    ckpt = {keys.UNET + k: v for k, v in keys.unet_to_original(keys.ldm_attention_to_original(unet, 16), 1, ups).items()}
    ckpt |= {keys.VAE + k: v for k, v in keys.ae_to_original(vq, 2).items()}
    assert keys.UNET + "input_blocks.3.1.qkv.weight" in ckpt  # LDM's fused 1-D conv
    path = _save(tmp_path / "ldm.safetensors", ckpt)
    (tmp_path / "ldm.yaml").write_text(LDM_YAML)
    m_unet, m_vq = diffusers.UNet2DModel(**LDM_UNET), diffusers.VQModel(**VQ, scaling_factor=1.0)
    m_unet.load_state_dict(unet), m_vq.load_state_dict(vq)
    sched = diffusers.DDIMScheduler(
        beta_start=0.0015, beta_end=0.0195, beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False, steps_offset=1
    )
    diffusers.LDMPipeline(vqvae=m_vq, unet=m_unet, scheduler=sched).save_pretrained(tmp_path / "folder", safe_serialization=True)
    convert(tmp_path / "folder", "l", fmt="diffusers", outdir=tmp_path / "f", register=False)
    with pytest.raises(LatentzooError, match=r"pass --config its \.yaml"):
        convert(path, "l", fmt="single-file", outdir=tmp_path / "s", register=False)
    done = convert(path, "l", fmt="single-file", outdir=tmp_path / "s", register=False, config=tmp_path / "ldm.yaml")
    assert weights_of(tmp_path / "f") == weights_of(tmp_path / "s")
    assert any("1 from the .yaml states none" in n for n in done.notes)
    assert done.pipelines["l"]["prior"] == "l-unet" and done.pipelines["l"]["decoder"] == "l-vqvae"


@pytest.mark.parametrize("chunk", [16, 2**20])
def test_scan_file_hashes_and_finds_nan_in_one_read(tmp_path, monkeypatch, chunk):
    """sha256 and the finiteness check share one read (chunked through a tensor too); non-float tensors are hashed, not checked."""
    from safetensors.torch import save_file

    from latentzoo.core.contract import weights

    monkeypatch.setattr(weights, "_SCAN_CHUNK", chunk)
    tensors = {"a": torch.randn(1000), "b": torch.randn(3, 5).bfloat16(), "c": torch.arange(7), "h": torch.randn(9).half()}
    path = tmp_path / "w.safetensors"
    save_file(tensors, str(path))
    assert weights.scan_file(path) == (weights.sha256_file(path), None, set())
    tensors["b"][1, 2] = float("nan")
    tensors["h"][0] = float("-inf")
    save_file(tensors, str(path))
    sha, bad, _ = weights.scan_file(path)
    assert sha == weights.sha256_file(path) and bad == ("b", 1, 15)  # the first in file order
    with pytest.raises(weights.WeightsError, match="tensor 'b' holds 1 NaN/Inf"):
        weights.load_tensors(path, sha)
