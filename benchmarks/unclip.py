"""unCLIP on digits: prompted-digit accuracy, variations that keep the class, Fréchet distance.

    python benchmarks/unclip.py                       # digits-unclip, defaults, prints a table
    python benchmarks/unclip.py --per-class 50 --guidance 1 2 4 --decoder-guidance 1 3 --json

1. Prompts: for each digit, ``--per-class`` samples of ``"a <name>"`` and of ``"a handwritten <d>"``
   (seeded); the shipped classifier (plugins/datasets/evaluate.py) reads each one; the table
   gives the fraction read as the prompted digit, and the FD of all of them (balanced over the
   classes) against the 360 held-out digits, with the floor (training digits vs held-out, at
   the same number of images).
2. Variations: ``--inputs-per-class`` held-out digits per class, ``--variations`` each; the
   fraction the classifier reads as the input's label, and the FD of the variations.

Everything is drawn through the public API (``Pipeline.sample``, ``latentzoo.variations``), so a
run is reproducible on CPU.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import torch

NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def prompts(d: int) -> list[str]:
    article = "an" if NAMES[d][0] in "aeiou" else "a"
    return [f"{article} {NAMES[d]}", f"a handwritten {d}"]


def prompted(
    pipe: Any, per_class: int, guidance: float, steps: int, seed: int, text: dict[str, str] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = [], []
    for d in range(10):
        for k, prompt in enumerate(prompts(d)):
            options = pipe.resolve_options(None, text or {}, prompt=prompt, guidance=guidance, steps=steps)
            x = torch.cat(list(pipe.iter_batches(per_class, seed=seed + 100 * d + k, plan=options)))
            images.append(x)
            labels.append(torch.full((per_class,), d))
    return torch.cat(images), torch.cat(labels)


def variations(pipe: Any, per_class: int, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    from latentzoo.core.runtime.variations import variations as run
    from latentzoo.plugins.datasets import digits

    data = digits.load("test")
    images, labels = [], []
    for d in range(10):
        for j, i in enumerate((data.labels == d).nonzero()[:per_class, 0].tolist()):
            images.append(run(pipe, data.images[i : i + 1], n, seed=seed + 1000 * d + j).images)
            labels.append(torch.full((n,), d))
    return torch.cat(images), torch.cat(labels)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pipeline", nargs="?", default="digits-unclip")
    ap.add_argument("--registry", action="append", default=[])
    ap.add_argument("--per-class", type=int, default=25, help="samples per prompt (2 prompts per digit)")
    ap.add_argument("--guidance", type=float, nargs="+", default=[None], help="prior guidance (default: the pipeline's)")
    ap.add_argument("--decoder-guidance", type=float, nargs="+", default=[None], help="decoder guidance (default: its config)")
    ap.add_argument("--steps", type=int, default=None, help="prior steps (default: the pipeline's)")
    ap.add_argument("--decoder-steps", type=int, default=None, help="decoder DDIM steps (default: its config)")
    ap.add_argument("--no-variations", action="store_true")
    ap.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE", help="any declared option, e.g. eta=1")
    ap.add_argument("--inputs-per-class", type=int, default=10)
    ap.add_argument("--variations", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    import latentzoo
    from latentzoo.plugins.datasets.evaluate import frechet_digits, frechet_floor, predicted_labels

    pipe = latentzoo.load_pipeline(args.pipeline, extra=args.registry)
    if args.decoder_steps:
        pipe.decoder.steps = args.decoder_steps
    rows: list[dict[str, Any]] = []
    default_dg = pipe.decoder.guidance
    for dg in args.decoder_guidance:
        pipe.decoder.guidance = default_dg if dg is None else dg
        for g in args.guidance:
            start = time.perf_counter()
            text = dict(item.split("=", 1) for item in args.settings)
            x, y = prompted(pipe, args.per_class, g, args.steps, args.seed, text)
            acc = float((predicted_labels(x) == y).float().mean())
            per_digit = [round(float((predicted_labels(x[y == d]) == d).float().mean()), 3) for d in range(10)]
            rows.append(
                {
                    "test": "prompt",
                    "guidance": pipe.options(guidance=g)["guidance"],
                    "options": pipe.resolve_options(None, text, guidance=g).recorded(),
                    "decoder_guidance": pipe.decoder.guidance,
                    "n": len(x),
                    "accuracy": round(acc, 4),
                    "per_digit": per_digit,
                    "fd": round(frechet_digits(x), 2),
                    "floor": round(frechet_floor(min(len(x), 1437)), 2),
                    "seconds": round(time.perf_counter() - start, 1),
                }
            )
        if args.no_variations:
            continue
        start = time.perf_counter()
        x, y = variations(pipe, args.inputs_per_class, args.variations, args.seed)
        rows.append(
            {
                "test": "variations",
                "decoder_guidance": pipe.decoder.guidance,
                "n": len(x),
                "accuracy": round(float((predicted_labels(x) == y).float().mean()), 4),
                "fd": round(frechet_digits(x), 2),
                "floor": round(frechet_floor(min(len(x), 1437)), 2),
                "seconds": round(time.perf_counter() - start, 1),
            }
        )
    if args.json:
        print(json.dumps({"pipeline": args.pipeline, "rows": rows}, indent=2))
        return 0
    print(f"{'test':<11}{'guidance':>9}{'dec.guid':>9}{'n':>6}{'class acc':>10}{'FD':>8}{'floor':>8}{'s':>7}")
    for r in rows:
        g = "-" if r.get("guidance") is None else f"{r['guidance']:g}"
        print(
            f"{r['test']:<11}{g:>9}{r['decoder_guidance']:>9g}{r['n']:>6}{r['accuracy']:>10.3f}{r['fd']:>8.2f}{r['floor']:>8.2f}{r['seconds']:>7.1f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
