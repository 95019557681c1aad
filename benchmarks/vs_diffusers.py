"""Sampling speed of one converted LDM-shaped pipeline: latentzoo against diffusers, in one run.

A random-init diffusers ``LDMPipeline`` shaped like CompVis/ldm-celebahq-256 (VQModel with three
DownEncoderBlock2D, UNet2DModel with DownBlock2D + three AttnDownBlock2D, DDIM) but CPU-sized
(``--size`` image pixels, ``--width`` base UNet channels) is saved with save_pretrained,
converted with ``latentzoo convert``'s API, and sampled by both libraries with the same weights,
steps, batch and seed. Repetitions are interleaved (the order alternates each rep) so drift in
machine load hits both sides alike; medians are reported with the ratio latentzoo / diffusers
(< 1 means latentzoo is faster) and the max abs difference of the two outputs.

    python benchmarks/vs_diffusers.py --steps 20 --batch 4 --reps 5 [--json]

diffusers is a test-only dependency of latentzoo; this script needs it installed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import diffusers
import torch

import latentzoo


def build(folder: Path, size: int, width: int) -> None:
    torch.manual_seed(0)
    vq = diffusers.VQModel(
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 3,
        up_block_types=["UpDecoderBlock2D"] * 3,
        block_out_channels=[width // 2, width, width],
        layers_per_block=2,
        latent_channels=3,
        num_vq_embeddings=512,
        norm_num_groups=16,
        sample_size=size,
    )
    with torch.no_grad():  # a spread-out codebook (diffusers' init is near-uniform around 0, so nearest-code ties flip on rounding)
        vq.quantize.embedding.weight.normal_()
    unet = diffusers.UNet2DModel(
        sample_size=size // 4,
        in_channels=3,
        out_channels=3,
        block_out_channels=[width, 2 * width, 3 * width, 4 * width],
        down_block_types=["DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"],
        up_block_types=["AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
        layers_per_block=2,
        attention_head_dim=32,
        norm_num_groups=16,
    )
    sched = diffusers.DDIMScheduler(
        beta_start=0.0015, beta_end=0.0195, beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False, steps_offset=1
    )
    diffusers.LDMPipeline(vqvae=vq, unet=unet, scheduler=sched).save_pretrained(folder, safe_serialization=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--size", type=int, default=64, help="image size (latents are size/4)")
    parser.add_argument("--width", type=int, default=64, help="base UNet channels (the real checkpoint has 224)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    scale = 0.5

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "ldm"
        build(folder, args.size, args.width)
        result = latentzoo.convert(
            folder, "bench-ldm", from_format="diffusers", outdir=Path(tmp) / "converted", scaling_factor=scale, register=False
        )
        ours = latentzoo.load_pipeline("bench-ldm", extra=[result.fragment])
        theirs = diffusers.LDMPipeline.from_pretrained(folder)
        theirs.vqvae.register_to_config(scaling_factor=scale)
        theirs.set_progress_bar_config(disable=True)

        def run_ours() -> torch.Tensor:
            return (ours.sample(args.batch, seed=0, steps=args.steps) / 2 + 0.5).clamp(0, 1)

        @torch.inference_mode()
        def run_theirs() -> torch.Tensor:
            gen = torch.Generator().manual_seed(0)
            images = theirs(batch_size=args.batch, generator=gen, num_inference_steps=args.steps, output_type="np").images
            return torch.from_numpy(images).permute(0, 3, 1, 2)

        a, b = run_ours(), run_theirs()  # warm-up, and the outputs must agree
        max_diff = float((a - b).abs().max())
        times: dict[str, list[float]] = {"latentzoo": [], "diffusers": []}
        for rep in range(args.reps):
            order = [("latentzoo", run_ours), ("diffusers", run_theirs)]
            for name, fn in order if rep % 2 == 0 else order[::-1]:
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)

    med = {k: statistics.median(v) for k, v in times.items()}
    report = {
        "steps": args.steps,
        "batch": args.batch,
        "image_size": args.size,
        "unet_width": args.width,
        "reps": args.reps,
        "threads": torch.get_num_threads(),
        "latentzoo_s": round(med["latentzoo"], 4),
        "diffusers_s": round(med["diffusers"], 4),
        "ratio_latentzoo_over_diffusers": round(med["latentzoo"] / med["diffusers"], 3),
        "latentzoo_images_per_s": round(args.batch / med["latentzoo"], 3),
        "diffusers_images_per_s": round(args.batch / med["diffusers"], 3),
        "max_abs_output_diff": max_diff,
        "all_times_s": {k: [round(t, 4) for t in v] for k, v in times.items()},
        "versions": {"latentzoo": latentzoo.__version__, "diffusers": diffusers.__version__, "torch": torch.__version__},
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"LDM-shaped pipeline, {args.size}px images, UNet width {args.width}, {args.steps} DDIM steps, batch {args.batch}, ", end="")
    print(f"{report['threads']} thread(s), median of {args.reps} interleaved reps")
    print(f"{'library':<12}{'median s':>10}{'images/s':>10}")
    for name in ("latentzoo", "diffusers"):
        print(f"{name:<12}{med[name]:>10.3f}{args.batch / med[name]:>10.2f}")
    print(f"ratio latentzoo / diffusers: {report['ratio_latentzoo_over_diffusers']:.3f} (max abs output difference {max_diff:.2g})")


if __name__ == "__main__":
    main()
