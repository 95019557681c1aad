"""Text-to-image targets of digits-t2i (issue 14), measured and printed as a table.

    python benchmarks/t2i.py                          # digits-t2i at its defaults vs digits
    python benchmarks/t2i.py --guidance 5 --steps 30  # other settings
    python benchmarks/t2i.py --registry runs/t2i/registry.yaml --pipeline my-t2i --json

Three measurements, every random draw seeded (the same run gives the same numbers on CPU):

1. digit: the shipped digit classifier (plugins/datasets/classifier.py) reads the digit the
   prompt names, over 4 phrasings ("a handwritten seven", "7", "a seven", "the digit 7") x 10
   digits x --per-prompt seeds. Target >= 95%.
2. attributes: for each attribute (thickness, slant, width) and digit, the prompts "a {low}
   {digit}" and "a {high} {digit}" ("a thin seven" / "a thick seven") are sampled from the
   same noise (same seed); a pair counts when the measured attribute
   (plugins/datasets/captions.measure) of the "high" sample is strictly larger. Target >= 85%
   per attribute.
3. FD: Fréchet distance in the classifier's feature space vs the 360 held-out digits (the
   FD of benchmarks/quality.py), of --n samples prompted with the held-out digits' own
   captions (digits-captions[test], cycled), and of --n samples of the unconditional
   ``digits`` pipeline at its defaults, in the same run, plus the floor (training digits at
   the same N). Target: t2i FD <= 1.5 x digits FD. The digit accuracy of those captioned
   samples is printed too.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import torch

NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
TEMPLATES = ("a handwritten {name}", "{digit}", "a {name}", "the digit {digit}")
ATTRIBUTES = {"thickness": ("thin", "thick"), "slant": ("upright", "slanted"), "width": ("narrow", "wide")}


def draw(pipe: Any, prompts: list[str], seed: int, *, guidance: float, steps: int | None, negative: str = "") -> torch.Tensor:
    """One image per prompt, all from one noise batch seeded by ``seed`` (so two calls with
    prompts of equal length share each sample's noise), guided against ``negative``."""
    plan = pipe.resolve_options(steps=steps)
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn((len(prompts), *pipe.prior.latent_shape), generator=generator)
    with torch.inference_mode():
        latents = pipe.sampler.sample(
            pipe.prior,
            noise,
            levels=pipe.levels(plan),
            generator=generator,
            conditioning=pipe.conditioner.condition(prompts),
            null_conditioning=pipe.conditioner.condition([negative]),
            guidance=guidance,
            **plan.per_role.get("sampler", {}),
        )
        return pipe.decode(pipe.unscale(latents))


def draw_many(pipe: Any, prompts: list[str], seed: int, batch: int, **kw: Any) -> torch.Tensor:
    out = [draw(pipe, prompts[i : i + batch], seed * 10_000 + k, **kw) for k, i in enumerate(range(0, len(prompts), batch))]
    return torch.cat(out)


def digit_accuracy(pipe: Any, args: argparse.Namespace, guidance: float) -> dict[str, Any]:
    from latentzoo.plugins.datasets.evaluate import predicted_labels

    prompts, labels = [], []
    for template in TEMPLATES:
        for d, name in enumerate(NAMES):
            prompts += [template.format(name=name, digit=d)] * args.per_prompt
            labels += [d] * args.per_prompt
    images = draw_many(pipe, prompts, args.seed, args.batch_size, guidance=guidance, steps=args.steps)
    right = predicted_labels(images) == torch.tensor(labels)
    per_template = {
        t: round(float(right[i * 10 * args.per_prompt : (i + 1) * 10 * args.per_prompt].float().mean()), 4) for i, t in enumerate(TEMPLATES)
    }
    per_digit = [round(float(right[torch.tensor(labels) == d].float().mean()), 3) for d in range(10)]
    return {"accuracy": round(float(right.float().mean()), 4), "n": len(prompts), "per_template": per_template, "per_digit": per_digit}


def attribute_pairs(pipe: Any, args: argparse.Namespace, guidance: float) -> dict[str, Any]:
    from latentzoo.plugins.datasets.captions import measure

    out: dict[str, Any] = {}
    for attr, (low, high) in ATTRIBUTES.items():
        lows = [f"a {low} {name}" for name in NAMES for _ in range(args.pairs)]
        highs = [f"a {high} {name}" for name in NAMES for _ in range(args.pairs)]
        lo = measure(draw_many(pipe, lows, args.seed + 1, args.batch_size, guidance=guidance, steps=args.steps))[attr]
        hi = measure(draw_many(pipe, highs, args.seed + 1, args.batch_size, guidance=guidance, steps=args.steps))[attr]
        moved = hi > lo
        out[attr] = {
            "words": f"{low} -> {high}",
            "fraction": round(float(moved.float().mean()), 4),
            "pairs": len(lows),
            "mean_low": round(float(lo.mean()), 3),
            "mean_high": round(float(hi.mean()), 3),
            "per_digit": [round(float(moved[d * args.pairs : (d + 1) * args.pairs].float().mean()), 3) for d in range(10)],
        }
    return out


def frechet(pipe: Any, uncond: Any, args: argparse.Namespace, guidance: float) -> dict[str, Any]:
    from latentzoo.plugins.datasets import captions
    from latentzoo.plugins.datasets.evaluate import frechet_digits, frechet_floor, label_accuracy

    held_out = captions.load("test")
    variants = held_out.variants(max(1, -(-args.n // len(held_out))))
    order = [(i, v) for v in range(len(variants[0])) for i in range(len(held_out))][: args.n]
    prompts = [variants[i][v] for i, v in order]
    labels = torch.tensor([int(held_out.labels[i]) for i, _ in order])
    t2i = draw_many(pipe, prompts, args.seed + 2, args.batch_size, guidance=guidance, steps=args.steps)
    base = torch.cat(
        [
            uncond.sample(min(args.batch_size, args.n - i), seed=(args.seed + 2) * 10_000 + k)
            for k, i in enumerate(range(0, args.n, args.batch_size))
        ]
    )
    fd_t2i, fd_base = frechet_digits(t2i), frechet_digits(base)
    return {
        "n": args.n,
        "fd_t2i": round(fd_t2i, 3),
        "fd_digits": round(fd_base, 3),
        "ratio": round(fd_t2i / fd_base, 3),
        "floor": round(frechet_floor(min(args.n, 1437)), 3),
        "held_out_caption_digit_accuracy": round(label_accuracy(t2i, labels), 4),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", default="digits-t2i", help="The text-to-image pipeline (default digits-t2i).")
    parser.add_argument("--baseline", default="digits", help="Unconditional pipeline for the FD ratio (default digits).")
    parser.add_argument("--guidance", type=float, help="Guidance scale (default: the pipeline's).")
    parser.add_argument("--steps", type=int, help="Sampling steps (default: the pipeline's).")
    parser.add_argument("--per-prompt", type=int, default=5, help="Seeds per digit prompt (default 5: 200 samples).")
    parser.add_argument("--pairs", type=int, default=10, help="Pairs per digit and attribute (default 10: 100 per attribute).")
    parser.add_argument("--n", type=int, default=500, help="Samples for each FD (default 500).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--skip", action="append", default=[], choices=["digit", "attributes", "fd"], help="Skip a measurement.")
    parser.add_argument("--registry", action="append", default=[], help="Extra registry YAML file; repeatable.")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1).")
    parser.add_argument("--json", action="store_true", help="Print the result as JSON.")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    import latentzoo
    from latentzoo.core.contract.errors import LatentzooError

    try:
        pipe = latentzoo.load_pipeline(args.pipeline, extra=args.registry)
        if pipe.conditioner is None:
            raise LatentzooError(f"pipeline {args.pipeline} takes no text; give a text-to-image pipeline")
        guidance = args.guidance if args.guidance is not None else float(pipe.options()["guidance"])
        steps = pipe.options(steps=args.steps)["steps"]
        result: dict[str, Any] = {"pipeline": args.pipeline, "guidance": guidance, "steps": steps, "sampler": pipe.spec.sampler}
        t0 = time.perf_counter()
        if "digit" not in args.skip:
            result["digit"] = digit_accuracy(pipe, args, guidance)
            print(f"digit accuracy done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
        if "attributes" not in args.skip:
            result["attributes"] = attribute_pairs(pipe, args, guidance)
            print(f"attribute pairs done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
        if "fd" not in args.skip:
            result["fd"] = frechet(pipe, latentzoo.load_pipeline(args.baseline, extra=args.registry), args, guidance)
        result["seconds"] = round(time.perf_counter() - t0, 1)
    except LatentzooError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    rows = [("measurement", "value", "target", "met")]
    if "digit" in result:
        acc = result["digit"]["accuracy"]
        rows.append((f"digit read as prompted ({result['digit']['n']} samples)", f"{acc:.1%}", ">= 95%", "yes" if acc >= 0.95 else "no"))
    for attr, r in result.get("attributes", {}).items():
        rows.append(
            (f"{attr}: {r['words']} ({r['pairs']} pairs)", f"{r['fraction']:.1%}", ">= 85%", "yes" if r["fraction"] >= 0.85 else "no")
        )
    if "fd" in result:
        f = result["fd"]
        rows.append(
            (
                f"FD t2i / FD digits (n {f['n']})",
                f"{f['fd_t2i']:.2f} / {f['fd_digits']:.2f} = {f['ratio']:.2f}x",
                "<= 1.5x",
                "yes" if f["ratio"] <= 1.5 else "no",
            )
        )
        rows.append(("FD floor (training digits)", f"{f['floor']:.2f}", "", ""))
        rows.append(("digit accuracy on held-out captions", f"{f['held_out_caption_digit_accuracy']:.1%}", "", ""))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    print(f"{args.pipeline}: {result['sampler']}, {result['steps']} steps, guidance {guidance}")
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
