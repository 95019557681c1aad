"""Where an SDXL UNet step's CPU time goes (docs/checkpoints.md, "Where an SDXL step's time goes, and its floor").

    python benchmarks/sdxl_roofline.py gemm [--threads 1]       # GFLOP/s of addmm / oneDNN dense / oneDNN packed at the UNet's shapes
    python benchmarks/sdxl_roofline.py flops                    # FLOPs of one CFG step by op (meta-device diffusers UNet, no memory)
    python benchmarks/sdxl_roofline.py profile latentzoo|diffusers|eager   # CPU seconds by op type, one step, 1 thread

``profile`` needs the UNet that ``sd_fullsize.py --models sdxl --build-only`` writes (--work). At one
thread the times are the thread's CPU time (``time.thread_time``), so other jobs on a shared machine
do not enter them (their effect on caches and memory bandwidth still does: ~3 % between runs).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sd_fullsize import SDXL_UNET

SHAPES = [
    (512, 1280, 1280),
    (512, 1280, 10240),
    (512, 5120, 1280),
    (154, 2048, 1280),
    (2048, 640, 640),
    (2048, 640, 5120),
    (2048, 2560, 640),
    (2048, 2048, 2048),
]


def gemm(threads: int) -> None:
    torch.set_num_threads(threads)
    clock = time.thread_time if threads == 1 else time.perf_counter

    def rate(fn, flops: float) -> float:
        fn()
        t0 = clock()
        fn()
        reps = max(2, int(0.6 / max(clock() - t0, 1e-4)))
        best = float("inf")
        for _ in range(3):
            t0 = clock()
            for _ in range(reps):
                fn()
            best = min(best, (clock() - t0) / reps)
        return flops / best / 1e9

    print(f"GFLOP/s at {threads} thread(s): M x K x N | addmm | oneDNN dense | oneDNN packed")
    torch.manual_seed(0)
    with torch.no_grad():
        for m, k, n in SHAPES:
            x, w, b = torch.randn(m, k), torch.randn(n, k) * 0.02, torch.randn(n)
            packed = torch.ops.mkldnn._reorder_linear_weight(w, m)
            fl = 2 * m * k * n
            rates = [
                rate(lambda x=x, w=w, b=b: F.linear(x, w, b), fl),
                rate(lambda x=x, w=w, b=b: torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], ""), fl),
                rate(lambda x=x, p=packed, b=b: torch.ops.mkldnn._linear_pointwise(x, p, b, "none", [], ""), fl),
            ]
            print(f"{m} x {k} x {n} | " + " | ".join(f"{r:.1f}" for r in rates), flush=True)


def flops() -> None:
    import diffusers
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        unet = diffusers.UNet2DConditionModel(**SDXL_UNET).eval()
        x, ctx = torch.randn(2, 4, 64, 64), torch.randn(2, 77, 2048)
        added = {"text_embeds": torch.randn(2, 1280), "time_ids": torch.randn(2, 6)}
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            unet(x, torch.tensor(501), encoder_hidden_states=ctx, added_cond_kwargs=added)
    total = counter.get_total_flops()
    print(f"one CFG step (batch 2, 64x64 latents): {total / 1e9:.1f} GFLOP")
    for op, n in sorted(counter.get_flop_counts()["Global"].items(), key=lambda kv: -kv[1]):
        print(f"  {op}: {n / 1e9:.1f} GFLOP ({100 * n / total:.1f} %)")  # addmm + mm: linear; bmm: attention


def _kind(name: str) -> str:
    if "linear" in name or name in ("aten.addmm.default", "aten.mm.default"):
        return "linear"
    if "conv" in name:
        return "conv"
    if "scaled_dot" in name or name in ("aten.bmm.default", "aten.baddbmm.default", "aten._softmax.default"):
        return "attention"
    return "rest"


def profile(lib: str, work: Path) -> None:
    from torch.utils._python_dispatch import TorchDispatchMode

    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(2, 4, 64, 64, generator=g), torch.tensor(501)
    context, pooled = torch.randn(2, 77, 2048, generator=g), torch.randn(2, 1280, generator=g)
    time_ids = torch.tensor([[512.0, 512, 0, 0, 512, 512]] * 2)
    if lib == "diffusers":
        import diffusers

        unet = diffusers.UNet2DConditionModel.from_pretrained(work / "sdxl-unet").eval()

        def step():
            return unet(x, t, encoder_hidden_states=context, added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids}).sample
    else:
        from latentzoo.core.nn import kernels
        from latentzoo.core.runtime.build import Builder

        unet = Builder.from_registry([str(work / "sdxl-registry.yaml")]).component("sdxl-unet", "prior")
        if lib == "eager":
            kernels._AVAILABLE = False

        def step():
            return unet(x, t, encoder_hidden_states=context, pooled=pooled, time_ids=time_ids)

    seconds: dict[str, float] = defaultdict(float)

    class Timed(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            t0 = time.thread_time()
            out = func(*args, **(kwargs or {}))
            seconds[_kind(str(func))] += time.thread_time() - t0
            return out

    with torch.inference_mode():
        step()  # warm-up: latentzoo packs its weights here
        t0 = time.thread_time()
        step()
        cpu = time.thread_time() - t0
        with Timed():
            step()
    print(f"{lib}: one step {cpu:.2f} s of CPU at 1 thread; by op type: " + ", ".join(f"{k} {v:.2f} s" for k, v in seconds.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["gemm", "flops", "profile"])
    ap.add_argument("lib", nargs="?", default="latentzoo", choices=["latentzoo", "diffusers", "eager"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--work", default="/tmp/latentzoo-sd-fullsize")
    args = ap.parse_args()
    if args.what == "gemm":
        gemm(args.threads)
    elif args.what == "flops":
        flops()
    else:
        profile(args.lib, Path(args.work))


if __name__ == "__main__":
    main()
