"""Tiny random-init Stable Diffusion XL pipelines in diffusers' layout (base and refiner shapes), for the SDXL tests."""

from __future__ import annotations

import json
from pathlib import Path

from sd_tiny import perturb

XL_UNET = dict(
    sample_size=8,
    in_channels=4,
    out_channels=4,
    block_out_channels=[32, 64],
    layers_per_block=1,
    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D"],
    up_block_types=["CrossAttnUpBlock2D", "UpBlock2D"],
    attention_head_dim=[2, 4],
    use_linear_projection=True,
    addition_embed_type="text_time",
    addition_time_embed_dim=8,
    transformer_layers_per_block=[1, 2],
    projection_class_embeddings_input_dim=6 * 8 + 32,  # 6 time ids x 8 + the pooled width
    cross_attention_dim=64,  # 32 (text_encoder) + 32 (text_encoder_2)
    norm_num_groups=16,
)
REFINER_UNET = dict(XL_UNET, projection_class_embeddings_input_dim=5 * 8 + 32, cross_attention_dim=32)
VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=["DownEncoderBlock2D"] * 2,
    up_block_types=["UpDecoderBlock2D"] * 2,
    block_out_channels=[16, 32],
    layers_per_block=1,
    latent_channels=4,
    norm_num_groups=8,
    sample_size=16,
    scaling_factor=0.13025,
    force_upcast=True,
)
XL_SCHED = dict(
    beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1, timestep_spacing="leading",
    interpolation_type="linear", use_karras_sigmas=False,
)  # fmt: skip


def _text_encoders(folder: Path, seed: int):
    import torch
    import transformers
    from test_clip import clip_vocab_files

    tok_dir = folder.parent / f"{folder.name}-tok"
    clip_vocab_files(tok_dir)
    tok2_dir = folder.parent / f"{folder.name}-tok2"
    clip_vocab_files(tok2_dir)
    (tok2_dir / "special_tokens_map.json").write_text(json.dumps({"pad_token": "!"}))  # OpenCLIP pads with "!"
    vocab = json.loads((tok_dir / "vocab.json").read_text())
    common = dict(
        vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
        max_position_embeddings=77, bos_token_id=vocab["<|startoftext|>"], pad_token_id=1,
    )  # fmt: skip
    torch.manual_seed(seed)
    te1 = transformers.CLIPTextModel(transformers.CLIPTextConfig(**common, hidden_act="quick_gelu", eos_token_id=2))
    te2 = transformers.CLIPTextModelWithProjection(
        transformers.CLIPTextConfig(**common, hidden_act="gelu", eos_token_id=vocab["<|endoftext|>"], projection_dim=32)
    )
    tok1 = transformers.CLIPTokenizer.from_pretrained(str(tok_dir), model_max_length=77)
    tok2 = transformers.CLIPTokenizer.from_pretrained(str(tok2_dir), model_max_length=77)
    return te1, te2, tok1, tok2


def build_sdxl(folder: Path, seed: int = 0, *, refiner: bool = False, scheduler: str = "EulerDiscreteScheduler", vae=None):
    """Write a StableDiffusionXLPipeline (or, ``refiner``, a StableDiffusionXLImg2ImgPipeline with
    requires_aesthetics_score and only text_encoder_2) folder (safetensors); return the pipeline.
    ``vae``: another pipeline's (the refiner shares the base's, as the published ones do)."""
    import diffusers

    te1, te2, tok1, tok2 = _text_encoders(folder, seed)
    unet = diffusers.UNet2DConditionModel(**(REFINER_UNET if refiner else XL_UNET))
    shared, vae = vae is not None, vae or diffusers.AutoencoderKL(**VAE)
    cls = getattr(diffusers, scheduler)
    sched = cls.from_config(XL_SCHED)  # keys a class does not take (Euler-ancestral: interpolation_type) are dropped
    for i, m in enumerate((te1, te2, unet) if shared else (te1, te2, unet, vae)):
        perturb(m, seed * 10 + i)
    if refiner:
        pipe = diffusers.StableDiffusionXLImg2ImgPipeline(
            vae=vae, text_encoder=None, text_encoder_2=te2, tokenizer=None, tokenizer_2=tok2, unet=unet, scheduler=sched,
            requires_aesthetics_score=True, force_zeros_for_empty_prompt=False,
        )  # fmt: skip
    else:
        pipe = diffusers.StableDiffusionXLPipeline(
            vae=vae, text_encoder=te1, text_encoder_2=te2, tokenizer=tok1, tokenizer_2=tok2, unet=unet, scheduler=sched,
            force_zeros_for_empty_prompt=True, add_watermarker=False,
        )  # fmt: skip
    pipe.save_pretrained(folder, safe_serialization=True)
    return pipe
