"""Fréchet distance of one pipeline under several samplers, schedulers and step counts (the tables in docs/samplers.md).

    python benchmarks/sampler_table.py digits --n 1000 --steps 10 20 50 --out runs/sampler_table.json
    python benchmarks/sampler_table.py digits --samplers euler-ancestral uni-pc --schedulers karras normal --n 200
    python benchmarks/sampler_table.py digits --samplers ddim euler heun --grids runs/grids   # also one PNG grid per sampler

Every (sampler, scheduler, steps) cell samples ``--n`` images with ``benchmarks/quality.py``'s
helpers (batch k uses seed ``seed * 10000 + k``, so every cell starts from the same noise) and
scores them against the held-out digits in the shipped classifier's feature space; the
classifier and the held-out features are loaded once. Results are appended to ``--out`` as they
finish, and a finished cell found there is not run again, so a long table can be built in
several runs. Prints one Markdown table per scheduler: Fréchet distance and model
evaluations per sample, and the floor (training vs held-out digits at the same n).

The pipeline's own ``defaults`` (the digits pipeline sets DDIM's ``eta: 0.0``) are dropped when
the sampler is replaced, so a stochastic sampler runs with its own eta.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

SAMPLERS = [
    "ddim",
    "euler",
    "euler-ancestral",
    "heun",
    "dpm2",
    "dpm2-ancestral",
    "lms",
    "dpmpp-2s-ancestral",
    "dpmpp-sde",
    "dpmpp-2m",
    "dpmpp-2m-sde",
    "dpmpp-3m-sde",
    "uni-pc",
    "uni-pc-bh2",
    "deis",
    "ipndm",
    "dpm-fast",
    "dpm-adaptive",
]
SCHEDULERS = ["karras", "normal", "exponential", "sgm-uniform"]
TWO_EVALUATIONS = {"heun", "dpm2", "dpm2-ancestral", "dpmpp-2s-ancestral", "dpmpp-sde"}  # the step into sigma = 0 takes one


def load_quality() -> Any:
    spec = importlib.util.spec_from_file_location("quality", Path(__file__).with_name("quality.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def evaluations(sampler: str, steps: int) -> int:
    if sampler in TWO_EVALUATIONS:
        return 2 * steps - 1
    return steps + 1 if sampler == "dpm-fast" else steps  # dpm-fast ends with D(x; sigma_min)


def run_cell(quality: Any, args: argparse.Namespace, sampler: str, scheduler: str, steps: int) -> dict[str, Any]:
    from latentzoo.plugins.datasets.evaluate import frechet_digits, frechet_floor, split_features

    pipe = quality.build_pipeline(args.pipeline, [], sampler, scheduler)
    pipe.spec.defaults = {}  # see the module doc
    start = time.perf_counter()
    nfe, images = [], []
    for k, first in enumerate(range(0, args.n, args.batch_size)):
        images.append(pipe.sample(min(args.batch_size, args.n - first), seed=args.seed * 10_000 + k, steps=steps))
        nfe.append((getattr(pipe.sampler, "info", None) or {}).get("nfe"))
    images = torch.cat(images)
    seconds = time.perf_counter() - start
    n_train = len(split_features("train"))
    evals = round(sum(nfe) / len(nfe) + 1) if all(nfe) else evaluations(sampler, steps)  # dpm-adaptive: its own count (+1 final D)
    return {
        "sampler": sampler,
        "scheduler": scheduler,
        "steps": steps,
        "evaluations": evals,
        "n": args.n,
        "seed": args.seed,
        "frechet": round(frechet_digits(images), 3),
        "floor": round(frechet_floor(min(args.n, n_train)), 3),
        "floor_n": min(args.n, n_train),
        "sample_seconds": round(seconds, 1),
    }


def table(results: list[dict[str, Any]], samplers: list[str], schedulers: list[str], steps: list[int]) -> str:
    by = {(r["sampler"], r["scheduler"], r["steps"]): r for r in results}
    rows = []
    for scheduler in schedulers:
        rows += [f"Scheduler `{scheduler}`:", "", "| sampler | " + " | ".join(f"{s} steps (evals)" for s in steps) + " |"]
        rows.append("|" + "---|" * (len(steps) + 1))
        for name in samplers:
            cells = [by.get((name, scheduler, s)) for s in steps]
            if not any(cells):
                continue
            text = [f"{c['frechet']:.2f} ({c['evaluations']})" if c else "-" for c in cells]
            rows.append(f"| {name} | " + " | ".join(text) + " |")
        rows.append("")
    floors = sorted({(r["floor_n"], r["floor"]) for r in results})
    rows.extend(f"Floor (training digits vs held-out, {n} images): {f:.2f}" for n, f in floors)
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("pipeline")
    parser.add_argument("--samplers", nargs="+", default=SAMPLERS)
    parser.add_argument("--schedulers", nargs="+", default=SCHEDULERS)
    parser.add_argument("--steps", nargs="+", type=int, default=[10, 20, 50])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--out", type=Path, default=Path("runs/sampler_table.json"))
    parser.add_argument("--grids", type=Path, help="Also write a 64-image grid per sampler (first scheduler, 20 steps, seed 0) here.")
    parser.add_argument("--table-only", action="store_true", help="Print the table of what --out holds; sample nothing.")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    quality = load_quality()
    results = json.loads(args.out.read_text()) if args.out.exists() else []
    done = {(r["sampler"], r.get("scheduler"), r["steps"], r["n"], r["seed"]) for r in results}
    for scheduler in [] if args.table_only else args.schedulers:
        for name in args.samplers:
            for steps in args.steps:
                if (name, scheduler, steps, args.n, args.seed) in done:
                    continue
                if name == "dpm-adaptive" and steps != min(args.steps):
                    continue  # it picks its own steps: one cell per scheduler
                result = run_cell(quality, args, name, scheduler, steps)
                results.append(result)
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(json.dumps(results, indent=1))
                print(
                    f"{name} {scheduler} {steps}: FD {result['frechet']:.3f} (floor {result['floor']:.3f}) {result['sample_seconds']} s",
                    flush=True,
                )
    if args.grids:
        import latentzoo

        args.grids.mkdir(parents=True, exist_ok=True)
        for name in args.samplers:
            pipe = quality.build_pipeline(args.pipeline, [], name, args.schedulers[0])
            pipe.spec.defaults = {}
            latentzoo.save_grid(pipe.sample(64, seed=args.seed, steps=20), args.grids / f"{name}.png", nrow=8)
    mine = [r for r in results if r["n"] == args.n and r["seed"] == args.seed and "scheduler" in r]
    print(table(mine, args.samplers, args.schedulers, args.steps))
    return 0


if __name__ == "__main__":
    sys.exit(main())
