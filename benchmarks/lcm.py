"""Consistency LoRA targets (issue 25, item 4): digits-t2i with its LCM-LoRA vs the base at the same evaluations.

    python benchmarks/lcm.py                                   # the shipped digits-t2i-lcm, n 1000, seeds 0 1 2
    python benchmarks/lcm.py --registry runs/lcm/registry.yaml --lora digits-t2i-lcm --n 500 --seeds 0
    python benchmarks/lcm.py --grid docs/lcm-grid.png          # also the sample grid of docs/distillation.md, "Consistency distillation"

Model evaluations are Denoiser calls (one per step for every sampler here; the base's guided call
evaluates the prompt and the null prompt in one batch, the student's unguided call only the prompt).
At each budget (2 and 4 evaluations):

* the student: ``lcm`` sampler, ``sgm_uniform`` scheduler, guidance 1 (guidance is folded in);
* the base with each training-free candidate (dpmpp-2m / uni-pc on karras, euler on sgm_uniform,
  ddim on trailing) at its guidance; the best (lowest mean FD) is the comparison;
* the base at its defaults (dpmpp-2m, karras, 20 steps, guidance 2): the reference quality.

FD: Fréchet distance in the digit classifier's features vs the 360 held-out digits (as
benchmarks/t2i.py), of --n samples prompted with the held-out digits' captions, mean over --seeds.
Read rate: the classifier reads the prompted digit (4 phrasings x 10 digits x --per-prompt).
Every draw is seeded: the same run prints the same numbers on CPU. Targets (PASS / FAIL lines):

* student FD at 4 steps <= 1.25x the base's FD at its defaults;
* student FD at 4 steps >= 30 % lower than the best training-free sampler at 4 evaluations;
* student FD at 2 steps <= 2x the base's FD at its defaults;
* the prompted digit is read in >= 95 % of the student's 4-step samples.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from t2i import NAMES, digit_accuracy, draw_many  # the t2i benchmark's seeded draws and read rate

CANDIDATES = (("dpmpp-2m", "karras"), ("uni-pc", "karras"), ("euler", "sgm_uniform"), ("ddim", "trailing"))
BUDGETS = (2, 4)


def build(pipeline: str, registry: list[str], lora: str | None, sampler: str, scheduler: str) -> Any:
    import latentzoo
    from latentzoo.interop.lora import apply_to_pipeline

    pipe = latentzoo.load_pipeline(pipeline, extra=registry, sampler=sampler, scheduler=scheduler)
    if lora:
        apply_to_pipeline(pipe, [(lora, 1.0, 1.0)], registry)
    return pipe


def held_out_prompts(n: int) -> list[str]:
    from latentzoo.plugins.datasets import captions

    held_out = captions.load("test")
    variants = held_out.variants(max(1, -(-n // len(held_out))))
    order = [(i, v) for v in range(len(variants[0])) for i in range(len(held_out))][:n]
    return [variants[i][v] for i, v in order]


def fd(pipe: Any, args: argparse.Namespace, *, steps: int, guidance: float) -> dict[str, Any]:
    """FD of n prompted samples vs the held-out digits, per seed and their mean."""
    from latentzoo.plugins.datasets.evaluate import frechet_digits

    prompts = held_out_prompts(args.n)
    per_seed = [frechet_digits(draw_many(pipe, prompts, 2 + s, args.batch_size, guidance=guidance, steps=steps)) for s in args.seeds]
    return {"fd": round(sum(per_seed) / len(per_seed), 3), "per_seed": [round(v, 3) for v in per_seed]}


def read_rate(pipe: Any, args: argparse.Namespace, *, steps: int, guidance: float) -> float:
    ns = argparse.Namespace(per_prompt=args.per_prompt, seed=args.seeds[0], batch_size=args.batch_size, steps=steps)
    return float(digit_accuracy(pipe, ns, guidance)["accuracy"])


def measure(args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    base = build(args.pipeline, args.registry, None, "dpmpp-2m", "karras")
    w = float(base.options()["guidance"])
    default_steps = int(base.options()["steps"])
    out: dict[str, Any] = {"pipeline": args.pipeline, "lora": args.lora, "guidance": w, "n": args.n, "seeds": args.seeds}
    out["base_default"] = {
        "sampler": "dpmpp-2m",
        "scheduler": "karras",
        "steps": default_steps,
        **fd(base, args, steps=default_steps, guidance=w),
    }
    out["base_default"]["read"] = read_rate(base, args, steps=default_steps, guidance=w)
    print(f"base at its defaults done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    student = build(args.pipeline, args.registry, args.lora, "lcm", "sgm_uniform")
    out["student"], out["training_free"] = {}, {}
    for steps in BUDGETS:
        row = fd(student, args, steps=steps, guidance=1.0)
        row["read"] = read_rate(student, args, steps=steps, guidance=1.0)
        out["student"][steps] = row
        rows = {}
        for sampler, scheduler in CANDIDATES:
            pipe = build(args.pipeline, args.registry, None, sampler, scheduler)
            rows[f"{sampler}/{scheduler}"] = fd(pipe, args, steps=steps, guidance=w)
        best = min(rows, key=lambda k: rows[k]["fd"])
        out["training_free"][steps] = {"candidates": rows, "best": best, "fd": rows[best]["fd"]}
        print(f"{steps} evaluations done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def targets(r: dict[str, Any]) -> list[tuple[str, str, bool]]:
    ref = r["base_default"]["fd"]
    s2, s4 = r["student"][2]["fd"], r["student"][4]["fd"]
    best4 = r["training_free"][4]["fd"]
    return [
        (
            f"student FD at 4 steps / base FD at {r['base_default']['steps']} steps <= 1.25x",
            f"{s4:.2f} / {ref:.2f} = {s4 / ref:.2f}x",
            s4 <= 1.25 * ref,
        ),
        (
            f"student FD at 4 steps vs best training-free at 4 evaluations ({r['training_free'][4]['best']}): >= 30 % lower",
            f"{s4:.2f} vs {best4:.2f} = {1 - s4 / best4:+.0%} lower",
            s4 <= 0.7 * best4,
        ),
        (
            f"student FD at 2 steps / base FD at {r['base_default']['steps']} steps <= 2x",
            f"{s2:.2f} / {ref:.2f} = {s2 / ref:.2f}x",
            s2 <= 2 * ref,
        ),
        ("prompted digit read at 4 steps >= 95 %", f"{r['student'][4]['read']:.1%}", r["student"][4]["read"] >= 0.95),
    ]


def grid(args: argparse.Namespace, path: str) -> None:
    """Rows: base dpmpp-2m at 2 and 4 steps (guided), the student at 2 and 4 steps, the base at its defaults; columns "a 0".."a 9"."""
    from latentzoo.core.runtime.images import save_grid

    prompts = [f"a {name}" for name in NAMES]
    base = build(args.pipeline, args.registry, None, "dpmpp-2m", "karras")
    student = build(args.pipeline, args.registry, args.lora, "lcm", "sgm_uniform")
    w = float(base.options()["guidance"])
    rows = [draw_many(base, prompts, 7, 10, guidance=w, steps=s) for s in BUDGETS]
    rows += [draw_many(student, prompts, 7, 10, guidance=1.0, steps=s) for s in BUDGETS]
    rows.append(draw_many(base, prompts, 7, 10, guidance=w, steps=int(base.options()["steps"])))
    save_grid(torch.cat(rows), path, nrow=10)
    print(f"wrote {path}: rows base 2 / 4 steps, student 2 / 4 steps, base {base.options()['steps']} steps", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", default="digits-t2i")
    parser.add_argument("--lora", default="digits-t2i-lcm", help="The consistency LoRA (registered name).")
    parser.add_argument("--registry", action="append", default=[], help="Extra registry YAML file; repeatable.")
    parser.add_argument("--n", type=int, default=1000, help="Samples per FD (default 1000).")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="FD seeds, averaged (default 0 1 2).")
    parser.add_argument("--per-prompt", type=int, default=5, help="Seeds per digit prompt for the read rate (default 5: 200 samples).")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1).")
    parser.add_argument("--grid", help="Also write the sample grid PNG here.")
    parser.add_argument("--json", action="store_true", help="Print the result as JSON.")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from latentzoo.core.contract.errors import LatentzooError

    try:
        if args.grid:
            grid(args, args.grid)
        r = measure(args)
    except LatentzooError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(r, indent=2))
    print(
        f"{args.pipeline} + {args.lora} (lcm, sgm_uniform, guidance 1) vs the base (guidance {r['guidance']:g}); n {r['n']}, seeds {r['seeds']}"
    )
    print(f"  base at its defaults: FD {r['base_default']['fd']:.2f}, read {r['base_default']['read']:.1%}")
    for steps in BUDGETS:
        s, tf = r["student"][steps], r["training_free"][steps]
        cands = ", ".join(f"{k} {v['fd']:.2f}" for k, v in tf["candidates"].items())
        print(f"  {steps} evaluations: student FD {s['fd']:.2f} (read {s['read']:.1%}); training-free {cands}; best {tf['best']}")
    ok = True
    for label, value, met in targets(r):
        ok &= met
        print(f"{'PASS' if met else 'FAIL'}  {label}: {value}")
    return 0 if ok else 2


if __name__ == "__main__":
    sys.exit(main())
