"""Sample quality of a pipeline on digits: Fréchet distance in the digit classifier's feature space.

    python benchmarks/quality.py digits --n 1000 --steps 50
    python benchmarks/quality.py digits --sampler ddim --scheduler trailing --steps 20 --json
    python benchmarks/quality.py digits --class 3 --guidance 2.0       # fraction of samples classified as 3
    python benchmarks/quality.py --fake-noise 0.1                       # sanity check: held-out digits + noise
    python benchmarks/quality.py --reconstruction digits-vqgan          # held-out reconstruction PSNR

Prints the Fréchet distance of N samples vs the 360 held-out digits, the floor (training
digits vs held-out, at min(N, 1437) images, since the distance grows as N shrinks) and the
classifier's histogram of the samples' classes. Batch k of the samples uses seed
``seed * 10000 + k``, so a run is reproducible on CPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import torch


def build_pipeline(name: str, registries: list[str], sampler: str | None, scheduler: str | None) -> Any:
    """The pipeline with --sampler / --scheduler swapped in; the old parts' defaults that no longer apply
    (DDIM's eta under dpmpp-2s) are dropped, as ``latentzoo sample --sampler`` does."""
    import latentzoo

    return latentzoo.load_pipeline(name, extra=registries, sampler=sampler, scheduler=scheduler)


def sample_images(pipe: Any, n: int, batch_size: int, seed: int, **overrides: Any) -> torch.Tensor:
    batches = []
    for k, start in enumerate(range(0, n, batch_size)):
        batches.append(pipe.sample(min(batch_size, n - start), seed=seed * 10_000 + k, **overrides))
        print(f"\rsampled {start + len(batches[-1])}/{n}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return torch.cat(batches)


def fake_images(n: int, sigma: float, seed: int) -> torch.Tensor:
    """Held-out digits (drawn with replacement) plus Gaussian noise of std ``sigma``: a stand-in for a model."""
    from latentzoo.core.runtime.data import load_dataset

    held_out = load_dataset("digits", split="test").images
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, len(held_out), (n,), generator=g)
    return (held_out[idx] + sigma * torch.randn(held_out[idx].shape, generator=g)).clamp(-1, 1)


def quality(args: argparse.Namespace) -> dict[str, Any]:
    from latentzoo.plugins.datasets.evaluate import class_histogram, frechet_digits, frechet_floor, label_accuracy, split_features

    start = time.perf_counter()
    if args.fake_noise is not None:
        images = fake_images(args.n, args.fake_noise, args.seed)
        result: dict[str, Any] = {"pipeline": f"fake (held-out digits + N(0, {args.fake_noise}^2) noise)"}
    else:
        pipe = build_pipeline(args.pipeline, args.registry, args.sampler, args.scheduler)
        for warning in pipe.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        overrides = {"steps": args.steps, "eta": args.eta, "class_label": args.class_label, "guidance": args.guidance}
        images = sample_images(pipe, args.n, args.batch_size, args.seed, **overrides)
        result = {"pipeline": pipe.spec.name, "components": pipe.spec.parts(), "options": pipe.options(**overrides)}
    sample_s = time.perf_counter() - start
    n_train = len(split_features("train"))
    hist = class_histogram(images).tolist()
    result.update(
        n=args.n,
        seed=args.seed,
        frechet=round(frechet_digits(images), 3),
        floor=round(frechet_floor(min(args.n, n_train)), 3),
        floor_n=min(args.n, n_train),
        class_histogram=hist,
        sample_seconds=round(sample_s, 1),
    )
    if args.class_label is not None:
        result["class_accuracy"] = round(label_accuracy(images, args.class_label), 4)
    return result


def reconstruction(args: argparse.Namespace) -> dict[str, Any]:
    import latentzoo
    from latentzoo.core.runtime.data import load_dataset
    from latentzoo.core.runtime.metrics import psnr

    model = latentzoo.build(args.reconstruction, "encoder", extra=args.registry)
    held_out = load_dataset("digits", split="test").images
    recs = []
    with torch.inference_mode():
        for i in range(0, len(held_out), args.batch_size):
            recs.append(model.decode(model.encode(held_out[i : i + args.batch_size])).clamp(-1, 1))
    rec = torch.cat(recs)
    return {"autoencoder": args.reconstruction, "n": len(held_out), "psnr_db": round(psnr(rec, held_out), 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pipeline", nargs="?", help="Pipeline registry name or pipeline YAML file.")
    parser.add_argument("--n", type=int, default=1000, help="Number of samples (default 1000).")
    parser.add_argument("--steps", type=int, default=50, help="Sampling steps (default 50).")
    parser.add_argument("--sampler", help="Override the pipeline's sampler.")
    parser.add_argument("--scheduler", help="Override the pipeline's scheduler.")
    parser.add_argument("--eta", type=float, help="DDIM eta.")
    parser.add_argument("--class", dest="class_label", type=int, help="Sample this class (class-conditional priors).")
    parser.add_argument("--guidance", type=float, help="Classifier-free guidance scale (with --class).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--registry", action="append", default=[], help="Extra registry YAML file; repeatable.")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1).")
    parser.add_argument("--fake-noise", type=float, metavar="SIGMA", help="Score held-out digits plus noise instead of a pipeline.")
    parser.add_argument("--reconstruction", metavar="AUTOENCODER", help="Print held-out reconstruction PSNR of this autoencoder.")
    parser.add_argument("--json", action="store_true", help="Print the result as JSON.")
    args = parser.parse_args(argv)
    if args.n < 2 or args.batch_size < 1:
        parser.error("--n must be at least 2 and --batch-size at least 1")
    if not (args.pipeline or args.fake_noise is not None or args.reconstruction):
        parser.error("give a PIPELINE, --fake-noise SIGMA or --reconstruction AUTOENCODER")
    torch.set_num_threads(args.threads)

    from latentzoo.core.contract.errors import LatentzooError

    try:
        result = reconstruction(args) if args.reconstruction else quality(args)
    except LatentzooError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, indent=2))
    elif args.reconstruction:
        print(f"{result['autoencoder']}: held-out reconstruction PSNR {result['psnr_db']:.2f} dB over {result['n']} digits")
    else:
        print(f"pipeline:  {result['pipeline']}")
        print(f"frechet:   {result['frechet']:.3f}  ({result['n']} samples vs 360 held-out digits)")
        print(f"floor:     {result['floor']:.3f}  ({result['floor_n']} training digits vs held-out)")
        print(f"classes:   {' '.join(f'{d}:{c}' for d, c in enumerate(result['class_histogram']))}")
        if "class_accuracy" in result:
            print(f"class {args.class_label}:   {result['class_accuracy']:.1%} of samples classified as {args.class_label}")
        print(f"sampling:  {result['sample_seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
