"""Sampling speed of a pipeline, side by side with what this CPU can do, in one run.

Reports images per second for ``PIPELINE`` at ``--steps`` steps and batch ``--batch``, the
UNet forward's achieved GFLOP/s (FLOPs counted by torch.utils.flop_counter), and a plain
float32 matrix multiply's GFLOP/s measured in the same process, so the ratio tells how
close the denoiser runs to the machine's dense-math throughput. Medians of ``--reps``.

    python benchmarks/sample_speed.py digits --steps 50 --batch 16
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

import latentzoo


def median_time(fn, reps: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pipeline", nargs="?", default="digits")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    pipe = latentzoo.load_pipeline(args.pipeline)
    sample_s = median_time(lambda: pipe.sample(args.batch, seed=0, steps=args.steps), args.reps)

    prior = pipe.prior
    x = torch.randn(args.batch, *prior.latent_shape)
    t = torch.tensor(500)
    with torch.inference_mode():
        with FlopCounterMode(display=False) as counter:
            prior(x, t)
        flops = counter.get_total_flops()
        unet_s = median_time(lambda: prior(x, t), args.reps * 10)
        n = 512
        a, b = torch.randn(n, n), torch.randn(n, n)
        mm_s = median_time(lambda: a @ b, args.reps * 10)
    unet_gflops = flops / unet_s / 1e9
    mm_gflops = 2 * n**3 / mm_s / 1e9
    result = {
        "pipeline": args.pipeline,
        "steps": args.steps,
        "batch": args.batch,
        "threads": torch.get_num_threads(),
        "images_per_s": round(args.batch / sample_s, 2),
        "seconds_per_batch": round(sample_s, 3),
        "unet_forward_ms": round(unet_s * 1e3, 3),
        "unet_gflop_per_forward": round(flops / 1e9, 4),
        "unet_gflops": round(unet_gflops, 2),
        "matmul_gflops": round(mm_gflops, 2),
        "unet_vs_matmul": round(unet_gflops / mm_gflops, 3),
        "unet_share_of_sampling": round(unet_s * args.steps / sample_s, 3),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    for key, value in result.items():
        print(f"{key:24s} {value}")


if __name__ == "__main__":
    main()
