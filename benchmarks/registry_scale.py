"""Registry parsing scale: `latentzoo --registry FILE list` on N generated entries.

Parsing must stay linear in the number of entries (issue 12 item 13: it was quadratic,
16 s at 10k entries, 54 s at 20k). Prints, per N, the seconds of `parse_file` in-process
and the wall time of the whole `list` command (a subprocess, start-up included).

    python benchmarks/registry_scale.py            # 10k and 20k entries
    python benchmarks/registry_scale.py 5000 40000
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ENTRY = """\
  c{i:06d}:
    family: diffusion
    class: diffusion.ddim
    roles: [sampler]
    description: generated sampler entry {i} for the scale benchmark
    config: {{eta: 0.0, clip: true, extra: [1, 2, 3]}}
"""


def write_registry(path: Path, n: int) -> Path:
    path.write_text("version: 1\ncomponents:\n" + "".join(ENTRY.format(i=i) for i in range(n)), encoding="utf-8")
    return path


def main(sizes: list[int]) -> None:
    from latentzoo.core.registry import parse_file

    with tempfile.TemporaryDirectory() as tmp:
        print(f"{'entries':>8} {'bytes':>10} {'parse_file s':>13} {'list s':>8}")
        for n in sizes:
            path = write_registry(Path(tmp) / f"r{n}.yaml", n)
            t0 = time.perf_counter()
            entries = parse_file(path, "cli")
            parse_s = time.perf_counter() - t0
            assert len(entries) == n
            env = {**os.environ, "LATENTZOO_PLUGINS": ""}
            t0 = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, "-m", "latentzoo", "--registry", str(path), "list"], capture_output=True, text=True, env=env
            )
            list_s = time.perf_counter() - t0
            assert proc.returncode == 0, proc.stderr
            assert proc.stdout.count("\n") >= n
            print(f"{n:>8} {path.stat().st_size:>10} {parse_s:>13.3f} {list_s:>8.3f}")


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [10_000, 20_000])
