"""Training throughput: 1 process versus N data-parallel processes at the same global batch.

    python benchmarks/train_speed.py                          # vae on digits, 40 steps, batch 64
    python benchmarks/train_speed.py --family vqgan --steps 30
    python benchmarks/train_speed.py --device cuda --procs 1  # one GPU, same command
    python benchmarks/train_speed.py --json

Runs the installed ``latentzoo train`` as a user would: one process with 1 thread, one
process with N threads (all cores to one process), and ``torchrun --nproc-per-node N``
with 1 thread each, interleaved for ``--rounds`` rounds (this machine is noisy), and reports
the median training images per second of each (from the run's ``state.json``: the loop
alone, without start-up and evaluation) and the ratios to the 1-process, 1-thread run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

FAMILY_ARGS = {  # what each family needs besides the shared flags
    "vae": [],
    "vqgan": ["--set", "disc_start=0"],
    "dvae": [],
    "diffusion": ["--encoder", "digits-vqgan"],
    "transformer": ["--encoder", "digits-vqgan"],
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_once(args: argparse.Namespace, out: Path, procs: int, threads: int) -> float:
    cmd = ["train", args.family, "-o", str(out), "--steps", str(args.steps), "--batch-size", str(args.batch_size)]
    cmd += ["--checkpoint-every", str(args.steps), "--no-progress", "--device", args.device, "--workers", str(args.workers)]
    cmd += FAMILY_ARGS[args.family]
    if procs == 1:
        launch = [sys.executable, "-m", "latentzoo"]
    else:
        launch = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(procs)]
        launch += ["--master-addr", "127.0.0.1", "--master-port", str(free_port()), "-m", "latentzoo"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.run(launch + cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"{' '.join(launch + cmd)} failed:\n{proc.stderr[-2000:]}")
    from latentzoo.core.training import latest_checkpoint

    _, state = latest_checkpoint(out)  # state.json of the newest verified checkpoint
    return float(state["throughput"]["images_per_second"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", default="vae", choices=sorted(FAMILY_ARGS))
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=64, help="Global batch (default 64).")
    parser.add_argument("--procs", type=int, default=2, help="Data-parallel processes (default 2).")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    configs = {"1 process, 1 thread": (1, 1)}
    if args.procs > 1:
        configs[f"1 process, {args.procs} threads"] = (1, args.procs)
        configs[f"{args.procs} processes (DDP), 1 thread each"] = (args.procs, 1)
    speeds: dict[str, list[float]] = {name: [] for name in configs}
    root = Path(tempfile.mkdtemp(prefix="lz-train-speed-"))
    try:
        for r in range(args.rounds):
            for name, (procs, threads) in configs.items():
                out = root / f"{r}-{procs}-{threads}"
                speeds[name].append(train_once(args, out, procs, threads))
                shutil.rmtree(out)
                print(f"round {r + 1}/{args.rounds}: {name}: {speeds[name][-1]:.1f} images/s", file=sys.stderr)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    base = statistics.median(speeds["1 process, 1 thread"])
    result = {
        "family": args.family,
        "global_batch": args.batch_size,
        "steps": args.steps,
        "device": args.device,
        "cpu_count": os.cpu_count(),
        "images_per_second": {name: round(statistics.median(v), 2) for name, v in speeds.items()},
        "ratio_to_1_process_1_thread": {name: round(statistics.median(v) / base, 3) for name, v in speeds.items()},
        "runs": speeds,
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{args.family}, global batch {args.batch_size}, {args.steps} steps, {args.device}, {os.cpu_count()} cores")
        for name in configs:
            print(f"  {name:<36} {result['images_per_second'][name]:8.1f} images/s  x{result['ratio_to_1_process_1_thread'][name]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
