"""Peak memory of `latentzoo sample` against the number of samples (issue 12, item 12).

Each run is a fresh `latentzoo sample PIPELINE -n N` process; its peak resident set size
is read with ``resource.getrusage(RUSAGE_CHILDREN)`` in a wrapper process that runs only
that command. With batching (default ``--batch-size 64``) the peak must be flat in N;
``--batch-size N`` (one batch, as before batching) shows what it would cost otherwise.

    python benchmarks/sample_memory.py                       # digits-vae, n = 200 and 5000
    python benchmarks/sample_memory.py --pipeline digits-dalle --n 64 1000 --unbatched
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

WRAPPER = (
    "import resource, subprocess, sys\n"
    "proc = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
    "if proc.returncode: sys.exit(proc.stderr)\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"  # KiB on Linux
)


def peak_mib(args: list[str]) -> float:
    cmd = [sys.executable, "-c", WRAPPER, sys.executable, "-m", "latentzoo", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return int(out.strip().splitlines()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", default="digits-vae")
    parser.add_argument("--n", type=int, nargs="+", default=[200, 5000])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--unbatched", action="store_true", help="Also run each n as one batch (--batch-size n).")
    parser.add_argument("--per-sample", action="store_true", help="Write -o DIR/ (one PNG per sample) instead of a grid.")
    args = parser.parse_args()
    print(f"pipeline {args.pipeline}: peak RSS of `latentzoo sample -n N` ({'DIR/' if args.per_sample else 'grid'})")
    print(f"{'n':>7}  {'batch ' + str(args.batch_size):>12}" + (f"  {'one batch':>12}" if args.unbatched else ""))
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.n:
            out = str(Path(tmp) / f"n{n}") + "/" if args.per_sample else str(Path(tmp) / f"n{n}.png")
            base = ["sample", args.pipeline, "-n", str(n), "--no-progress", "-o", out]
            row = f"{n:>7}  {peak_mib([*base, '--batch-size', str(args.batch_size)]):>9.0f} MiB"
            if args.unbatched:
                row += f"  {peak_mib([*base, '--batch-size', str(n)]):>9.0f} MiB"
            print(row, flush=True)


if __name__ == "__main__":
    main()
