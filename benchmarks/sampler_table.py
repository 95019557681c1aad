"""Fréchet distance of one pipeline under several samplers and step counts (the table in docs/samplers.md).

    python benchmarks/sampler_table.py digits --n 1000 --steps 10 20 50 --out runs/sampler_table.json
    python benchmarks/sampler_table.py digits --samplers ddim euler+karras heun --grids runs/grids   # also one PNG grid per sampler

A row is ``SAMPLER`` (the pipeline's scheduler) or ``SAMPLER+SCHEDULER`` (e.g. ``dpmpp-2m+karras``).

Runs ``benchmarks/quality.py`` in-process for every (sampler, steps) pair, so the classifier
and the held-out features are loaded once; results are appended to ``--out`` as they finish,
and a finished pair found there is not run again. Prints a Markdown table: Fréchet distance
vs the held-out digits, model evaluations per sample (Heun: 2 * steps - 1), and the floor.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import torch

SAMPLERS = ["ddim", "ddpm", "euler", "euler+karras", "heun", "heun+karras", "dpmpp-2m", "dpmpp-2m+karras", "dpmpp-2m+sigmoid"]


def parts(row: str) -> tuple[str, str | None]:
    """(sampler, scheduler or None for the pipeline's own) of a row name."""
    sampler, _, scheduler = row.partition("+")
    return sampler, scheduler or None


def load_quality() -> Any:
    spec = importlib.util.spec_from_file_location("quality", Path(__file__).with_name("quality.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def evaluations(sampler: str, steps: int) -> int:
    return 2 * steps - 1 if sampler.startswith("heun") else steps


def table(results: list[dict[str, Any]], samplers: list[str], steps: list[int]) -> str:
    by = {(r["sampler"], r["steps"]): r for r in results}
    head = "| sampler | " + " | ".join(f"{s} steps (evals)" for s in steps) + " |"
    rows = [head, "|" + "---|" * (len(steps) + 1)]
    for name in samplers:
        cells = [f"{by[(name, s)]['frechet']:.2f} ({evaluations(name, s)})" if (name, s) in by else "-" for s in steps]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    floors = sorted({(r["floor_n"], r["floor"]) for r in results})
    rows.append("")
    rows.extend(f"Floor (training digits vs held-out, {n} images): {f:.2f}" for n, f in floors)
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("pipeline")
    parser.add_argument("--samplers", nargs="+", default=SAMPLERS)
    parser.add_argument("--steps", nargs="+", type=int, default=[10, 20, 50])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--out", type=Path, default=Path("runs/sampler_table.json"))
    parser.add_argument("--grids", type=Path, help="Also write a 64-image grid per sampler (20 steps, seed 0) here.")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    quality = load_quality()
    results = json.loads(args.out.read_text()) if args.out.exists() else []
    done = {(r["sampler"], r["steps"], r["n"], r["seed"]) for r in results}
    for name in args.samplers:
        for steps in args.steps:
            if (name, steps, args.n, args.seed) in done:
                continue
            qargs = argparse.Namespace(
                pipeline=args.pipeline,
                registry=[],
                sampler=parts(name)[0],
                scheduler=parts(name)[1],
                steps=steps,
                eta=None,
                class_label=None,
                guidance=None,
                n=args.n,
                seed=args.seed,
                batch_size=args.batch_size,
                fake_noise=None,
            )
            result = quality.quality(qargs)
            result.update(sampler=name, steps=steps, evaluations=evaluations(name, steps))
            results.append(result)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(results, indent=1))
            print(f"{name} {steps}: FD {result['frechet']:.3f} (floor {result['floor']:.3f}) {result['sample_seconds']} s", flush=True)
    if args.grids:
        import latentzoo

        args.grids.mkdir(parents=True, exist_ok=True)
        for name in args.samplers:
            pipe = quality.build_pipeline(args.pipeline, [], *parts(name))
            latentzoo.save_grid(pipe.sample(64, seed=args.seed, steps=20), args.grids / f"{name}.png", nrow=8)
    print(table([r for r in results if r["n"] == args.n and r["seed"] == args.seed], args.samplers, args.steps))
    return 0


if __name__ == "__main__":
    sys.exit(main())
