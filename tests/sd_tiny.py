"""Tiny random-init Stable Diffusion pipelines in diffusers' layout (SD 1.x- and 2.x-shaped), for the SD tests."""

from __future__ import annotations

from pathlib import Path

SD1_UNET = dict(
    sample_size=8,
    in_channels=4,
    out_channels=4,
    block_out_channels=[32, 64],
    layers_per_block=1,
    down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"],
    cross_attention_dim=32,
    attention_head_dim=4,
    norm_num_groups=16,
)
SD2_UNET = dict(
    SD1_UNET,
    down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    attention_head_dim=[2, 4],
    use_linear_projection=True,
    upcast_attention=True,
    cross_attention_dim=48,
)
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
    scaling_factor=0.18215,
)
SD1_SCHED = dict(
    beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", set_alpha_to_one=False, steps_offset=1, skip_prk_steps=True,
)  # fmt: skip
SD2_SCHED = dict(
    beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False, steps_offset=1,
    prediction_type="v_prediction",
)  # fmt: skip
LAYOUTS = {
    "sd1": dict(unet=SD1_UNET, text=dict(hidden_size=32, hidden_act="quick_gelu", layers=3, eos_legacy=True), sched=("PNDMScheduler", SD1_SCHED), pad=None),
    "sd2": dict(unet=SD2_UNET, text=dict(hidden_size=48, hidden_act="gelu", layers=2, eos_legacy=False), sched=("DDIMScheduler", SD2_SCHED), pad="!"),
}  # fmt: skip


def perturb(model, seed: int, scale: float = 0.05):
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():  # no parameter hides behind an initialisation of zeros
            p.add_(scale * torch.randn(p.shape, generator=g))
    return model.eval()


def build_sd(folder: Path, layout: str, seed: int = 0):
    """Write a StableDiffusionPipeline folder (safetensors) of layout ``sd1`` / ``sd2``; return the pipeline."""
    import json

    import diffusers
    import torch
    import transformers
    from test_clip import clip_vocab_files

    spec = LAYOUTS[layout]
    tok_dir = folder.parent / f"{folder.name}-tok"
    clip_vocab_files(tok_dir)
    if spec["pad"]:
        (tok_dir / "special_tokens_map.json").write_text(json.dumps({"pad_token": spec["pad"]}))
    tokenizer = transformers.CLIPTokenizer.from_pretrained(str(tok_dir), model_max_length=77)
    vocab = json.loads((tok_dir / "vocab.json").read_text())
    t = spec["text"]
    torch.manual_seed(seed)
    text_encoder = transformers.CLIPTextModel(
        transformers.CLIPTextConfig(
            vocab_size=len(vocab),
            hidden_size=t["hidden_size"],
            intermediate_size=2 * t["hidden_size"],
            num_hidden_layers=t["layers"],
            num_attention_heads=4,
            max_position_embeddings=77,
            hidden_act=t["hidden_act"],
            bos_token_id=vocab["<|startoftext|>"],
            eos_token_id=2 if t["eos_legacy"] else vocab["<|endoftext|>"],
            pad_token_id=1,
        )
    )
    unet = diffusers.UNet2DConditionModel(**spec["unet"])
    vae = diffusers.AutoencoderKL(**VAE)
    cls, cfg = spec["sched"]
    scheduler = getattr(diffusers, cls)(**cfg)
    for i, m in enumerate((text_encoder, unet, vae)):
        perturb(m, seed * 10 + i)
    pipe = diffusers.StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip
    pipe.save_pretrained(folder, safe_serialization=True)
    return pipe
