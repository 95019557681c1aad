"""Editing evidence on held-out digits: inpainting class rate, img2img distance by strength, DDIM inversion round trip.

Usage::

    python benchmarks/editing.py                  # pipeline digits, 40 digits, 20 steps
    python benchmarks/editing.py --pipeline digits-cond --n 40 --steps 50 --json

* inpaint: the bottom (top, left, right) half of each of ``--n`` held-out test digits is masked and
  repainted; the shipped classifier reads the result; rate = share read as the true class
  (chance 10 %). The kept half is compared with the input (max abs pixel change, exactly 0 by
  construction) and the reconstruction error of the autoencoder is printed beside it.
* img2img: mean per-image L2 distance (pixels in [-1, 1]) between input and output at
  strengths 0.2 / 0.5 / 0.8 / 1.0.
* inversion: DDIM-invert then sample back (eta 0) at --steps; PSNR (dB) of the round trip
  against the autoencoder's plain reconstruction.
"""

from __future__ import annotations

import argparse
import json

import torch

from latentzoo.core.runtime import editing
from latentzoo.core.runtime.api import load_pipeline
from latentzoo.core.runtime.metrics import psnr
from latentzoo.plugins.datasets.digits import load as load_digits
from latentzoo.plugins.datasets.evaluate import predicted_labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", default="digits")
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    pipe = load_pipeline(args.pipeline)
    data = load_digits("test")
    x, labels = data.images[: args.n], data.labels[: args.n]
    opts = {"steps": args.steps}
    rec = pipe.reconstruct(x)
    out: dict = {"pipeline": args.pipeline, "n": args.n, "steps": args.steps, "reconstruction_max_abs": float((rec - x).abs().amax())}

    halves = {"bottom": (slice(16, None), slice(None)), "top": (slice(None, 16), slice(None))}
    halves |= {"left": (slice(None), slice(None, 16)), "right": (slice(None), slice(16, None))}
    for half, (rows, cols) in halves.items():
        mask = torch.zeros(1, 1, 32, 32, dtype=torch.bool)
        mask[..., rows, cols] = True
        y = editing.inpaint(pipe, x, mask, seed=args.seed, options=opts).images
        rate = float((predicted_labels(y) == labels).float().mean())
        kept = float((y - x).abs().masked_select(~mask.expand_as(x)).max())
        out[f"inpaint_{half}_class_rate"] = round(rate, 3)
        out[f"inpaint_{half}_kept_max_abs"] = kept

    dists = {}
    for s in (0.2, 0.5, 0.8, 1.0):
        y = editing.img2img(pipe, x, s, seed=args.seed, options=opts).images
        dists[str(s)] = round(float((y - x).flatten(1).norm(dim=1).mean()), 3)
    out["img2img_mean_l2"] = dists
    out["reconstruction_mean_l2"] = round(float((rec - x).flatten(1).norm(dim=1).mean()), 3)

    if callable(getattr(pipe.sampler, "invert", None)):
        plan = pipe.resolve_options(opts)
        levels = pipe.levels(plan)
        noise = editing.invert(pipe, x, plan, levels)
        back = editing.sample_back(pipe, noise, plan, levels, args.seed)
        out["inversion_psnr_db_vs_reconstruction"] = round(psnr(back, rec), 2)
        out["inversion_psnr_db_vs_input"] = round(psnr(back, x), 2)
    out["reconstruction_psnr_db"] = round(psnr(rec, x), 2)
    print(json.dumps(out, indent=2) if args.json else "\n".join(f"{k}: {v}" for k, v in out.items()))


if __name__ == "__main__":
    main()
