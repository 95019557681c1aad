"""DALL-E on digits: prompted-digit accuracy (with and without CLIP re-ranking) and
unconditional Fréchet distance of the code priors (issue 15's targets).

    python benchmarks/dalle.py                                # the table (about 5 min on one core)
    python benchmarks/dalle.py --n 500 --per-digit 20 --candidates 8 --json
    python benchmarks/dalle.py --skip-fd --guidance 1 --guidance 2 --temperature 1.0
    python benchmarks/dalle.py --pipeline digits-vqgan-dalle           # the VQ-GAN variant (or both: repeat)
    python benchmarks/dalle.py --skip-prompted --seeds 0 1 2 3 --fd-candidates 1 2 4 8  # FD with re-ranking

Prompted accuracy: for every digit d, ``--per-digit`` samples of ``digits-dalle --prompt
"a <name of d>"`` (seed 0; ``--pipeline`` picks other text pipelines, e.g. digits-vqgan-dalle), read by the shipped digit classifier; once plainly and once with
``--candidates N`` (N draws per output, the best by digits-clip against the prompt kept).
FD: ``--n`` unconditional samples (no prompt / no class) vs the 360 held-out digits, beside
two floors at the same n: real training digits, and training digits passed through the
pipeline's own stage 1 (encode -> decode), which is the best any code prior can reach.
FD at n = 500 moves by several points with the seed, so it is measured at every ``--seeds``
(default 0 1 2 3) and the mean is the figure to quote. ``--fd-candidates N`` (text pipelines)
adds rows re-ranked without a prompt: each output's caption drawn from the training captions
(random_prompt), its N candidates drawn for it and the best by digits-clip against it kept,
i.e. ``latentzoo sample digits-dalle -n 500 --seed S --candidates N``.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import torch

NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def prompted_accuracy(pipe: Any, per_digit: int, candidates: int | None, **options: Any) -> float:
    from latentzoo.plugins.datasets.evaluate import predicted_labels

    hits = 0
    for d, name in enumerate(NAMES):
        images = pipe.sample(per_digit, seed=0, prompt=f"a {name}", candidates=candidates, **options)
        hits += int((predicted_labels(images) == d).sum())
    return hits / (10 * per_digit)


def unconditional_fd(name: str, n: int, seeds: list[int], candidates: int | None = None, **options: Any) -> dict[str, Any]:
    """FD of ``n`` samples at each seed (and their mean), with the two floors; ``candidates`` re-ranks unprompted."""
    import latentzoo
    from latentzoo.core.runtime.data import load_dataset
    from latentzoo.plugins.datasets.evaluate import frechet_digits, frechet_floor

    pipe = latentzoo.load_pipeline(name)
    start = time.perf_counter()
    per_seed = [round(frechet_digits(pipe.sample(n, seed=s, candidates=candidates, **options)), 2) for s in seeds]
    seconds = time.perf_counter() - start
    train = load_dataset("digits", split="train").images
    idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[: min(n, len(train))]
    return {
        **({"candidates": candidates} if candidates else {}),
        "fd_per_seed": dict(zip(map(str, seeds), per_seed, strict=True)),
        "fd_mean": round(sum(per_seed) / len(per_seed), 2),
        "floor_data": round(frechet_floor(min(n, len(train))), 2),
        "floor_stage1": round(frechet_digits(pipe.reconstruct(train[idx])), 2),
        "sample_seconds_per_seed": round(seconds / len(seeds), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=500, help="unconditional samples for FD")
    parser.add_argument("--per-digit", type=int, default=20)
    parser.add_argument("--candidates", type=int, default=8)
    parser.add_argument("--guidance", type=float, action="append", help="guidance scale(s) for the prompted rows (default: pipeline's)")
    parser.add_argument("--temperature", type=float, default=None)
    parser.add_argument("--pipeline", action="append", help="text pipeline(s) to measure (default: digits-dalle)")
    parser.add_argument("--skip-fd", action="store_true")
    parser.add_argument("--skip-prompted", action="store_true")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3], help="FD seeds (the mean is reported)")
    parser.add_argument(
        "--fd-candidates",
        type=int,
        nargs="+",
        default=[],
        help="also FD re-ranked unprompted, best of N by digits-clip vs the drawn caption",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    import latentzoo

    rows: list[dict[str, Any]] = []
    start = time.perf_counter()
    pipelines = args.pipeline or ["digits-dalle"]
    for name in pipelines:
        pipe = latentzoo.load_pipeline(name)
        for g in [] if args.skip_prompted else args.guidance or [None]:
            opts = {k: v for k, v in {"guidance": g, "temperature": args.temperature}.items() if v is not None}
            plain = prompted_accuracy(pipe, args.per_digit, None, **opts)
            ranked = prompted_accuracy(pipe, args.per_digit, args.candidates, **opts)
            rows.append({"what": f"{name} prompted accuracy", **opts, "plain": plain, f"best_of_{args.candidates}": ranked})
    if not args.skip_fd:
        for name in (*pipelines, "digits-vqgan-ar"):
            opts = {"temperature": args.temperature} if args.temperature else {}
            what = f"{name} unconditional FD (n={args.n} vs 360 held-out)"
            rows.append({"what": what, **opts, **unconditional_fd(name, args.n, args.seeds, **opts)})
            if name == "digits-vqgan-ar":  # no scorer, no captions: nothing to re-rank
                continue
            for count in args.fd_candidates:
                command = f"latentzoo sample {name} -n {args.n} --seed S --candidates {count}"
                rows.append({"what": f"{what}, re-ranked: {command}", **opts, **unconditional_fd(name, args.n, args.seeds, count, **opts)})
    if args.json:
        print(json.dumps({"rows": rows, "seconds": round(time.perf_counter() - start, 1)}, indent=2))
        return
    for row in rows:
        print(" | ".join(f"{k}: {v}" for k, v in row.items()))
    print(f"({time.perf_counter() - start:.0f} s; targets: prompted >= 0.75 plain, >= 0.90 re-ranked; FD <= 45 on the mean over seeds)")


if __name__ == "__main__":
    main()
