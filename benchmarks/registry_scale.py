"""Registry parsing scale: `latentzoo --registry FILE list` on N generated entries.

Parsing must stay linear in the number of entries (issue 12 item 13: it was quadratic,
16 s at 10k entries, 54 s at 20k). Prints, per N, the CPU seconds of `parse_file`
in-process without the parse cache (the YAML itself), and the wall time of the whole
`list` command (a subprocess, start-up included): cold (empty cache: parse, then write the
JSON cache) and warm (the cache of the file's sha256), plus `latentzoo list` alone (start-up).

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


def run_list(*args: str, env: dict[str, str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "latentzoo", *args, "list"], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    return time.perf_counter() - t0, proc.stdout


def main(sizes: list[int]) -> None:
    from latentzoo.core.contract.registry import parse_file

    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "LATENTZOO_PLUGINS": "", "XDG_CACHE_HOME": str(Path(tmp) / "cache"), "OMP_NUM_THREADS": "1"}
        os.environ["LATENTZOO_NO_CACHE"] = "1"
        empty_s, _ = run_list(env=env)
        print(f"latentzoo list with the built-in registry only: {empty_s:.3f} s")
        print(f"{'entries':>8} {'bytes':>10} {'parse_file cpu s':>17} {'list cold s':>12} {'list warm s':>12}")
        for n in sizes:
            path = write_registry(Path(tmp) / f"r{n}.yaml", n)
            t0 = time.process_time()
            entries = parse_file(path, "cli")
            parse_s = time.process_time() - t0
            assert len(entries) == n
            cold_s, _ = run_list("--registry", str(path), env=env)
            warm_s, out = run_list("--registry", str(path), env=env)
            assert out.count("\n") >= n
            print(f"{n:>8} {path.stat().st_size:>10} {parse_s:>17.3f} {cold_s:>12.3f} {warm_s:>12.3f}")


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [10_000, 20_000])
