"""Peak memory of the editing commands against their counts (issue 22, item 4): flat means ~1.0x.

``interpolate --frames``, ``variations -n`` and ``sample --candidates`` make their images
``--batch-size`` at a time and write each batch as it comes, so their peak resident set
size must not grow with the count. Both counts run at one batch size (default: the low
count), so the ratio measures growth with the count, not a larger first batch. Each run is a fresh ``latentzoo`` process;
its peak RSS is read with ``resource.getrusage(RUSAGE_CHILDREN)`` in a wrapper process that
runs only that command (as benchmarks/sample_memory.py does). Outputs go to ``-o DIR/``.

For each command it prints the peak at the low and the high count, their ratio, and a
PASS / FAIL line against ``--max-ratio`` (default 1.10). ``--unbatched`` adds a run of the
high count as one batch (``--batch-size COUNT``): what it costs without batching.

    python benchmarks/edit_memory.py                      # 10 vs 1000 of each (several minutes)
    python benchmarks/edit_memory.py --low 10 --high 300  # quicker
    python benchmarks/edit_memory.py --only interpolate --unbatched
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
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"latentzoo {' '.join(args)} failed: {proc.stderr.strip()}")
    return int(proc.stdout.strip().splitlines()[-1]) / 1024


def digit_pngs(folder: Path) -> tuple[str, str]:
    """Two held-out digits (scikit-learn's, via the shipped dataset plugin) as 32x32 PNGs."""
    import numpy as np
    from PIL import Image

    from latentzoo.plugins.datasets.digits import load

    paths = []
    for i, image in enumerate(load("test").images[:2]):
        path = folder / f"digit{i}.png"
        Image.fromarray(((image[0].numpy() + 1) * 127.5).round().astype(np.uint8), mode="L").save(path)
        paths.append(str(path))
    return paths[0], paths[1]


def commands(a: str, b: str, steps: int) -> dict[str, tuple[str, list[str]]]:
    """Each command's argv before its count flag, and the count flag."""
    return {
        "interpolate": ("--frames", ["interpolate", "digits", a, b, "--steps", str(steps)]),
        "variations": ("-n", ["variations", "digits-unclip", a]),
        "candidates": ("--candidates", ["sample", "digits-dalle", "-n", "1", "--prompt", "a seven", "--no-progress"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--low", type=int, default=10)
    parser.add_argument("--high", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=5, help="interpolate's DDIM steps (the memory does not depend on them)")
    parser.add_argument("--batch-size", type=int, help="default: --low, so both counts run in full batches of one shape")
    parser.add_argument("--max-ratio", type=float, default=1.10)
    parser.add_argument("--only", choices=["interpolate", "variations", "candidates"], action="append")
    parser.add_argument("--unbatched", action="store_true", help="Also run the high count as one batch.")
    args = parser.parse_args()
    args.batch_size = args.batch_size or args.low
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        a, b = digit_pngs(Path(tmp))
        for name, (flag, argv) in commands(a, b, args.steps).items():
            if args.only and name not in args.only:
                continue
            peaks = {}
            for count in (args.low, args.high):
                out = f"{tmp}/{name}-{count}/"
                peaks[count] = peak_mib([*argv, flag, str(count), "--batch-size", str(args.batch_size), "-o", out])
            ratio = peaks[args.high] / peaks[args.low]
            line = (
                f"{name:<12} {flag} {args.low}: {peaks[args.low]:7.0f} MiB   {flag} {args.high}: {peaks[args.high]:7.0f} MiB   "
                f"ratio {ratio:.3f}x"
            )
            if args.unbatched:
                one = peak_mib([*argv, flag, str(args.high), "--batch-size", str(args.high), "-o", f"{tmp}/{name}-one/"])
                line += f"   (one batch of {args.high}: {one:.0f} MiB, {one / peaks[args.low]:.2f}x)"
            ok = ratio <= args.max_ratio
            failed |= not ok
            print(line, flush=True)
            print(
                f"{'PASS' if ok else 'FAIL'} {name}: peak RSS at {args.high} is {ratio:.3f}x that at {args.low} (target <= {args.max_ratio}x)"
            )
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
