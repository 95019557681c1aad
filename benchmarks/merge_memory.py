"""Peak memory of ``merge``: about the output plus one tensor, not all inputs at once (issue 24).

    python benchmarks/merge_memory.py [--mb 256] [--tensors 32]

Writes three fp32 inputs of MB megabytes each (TENSORS tensors), then runs add-difference
(A + a (B - C)) in a fresh process and samples its anonymous resident memory (``RssAnon``,
every 2 ms) above the value before merging: the merge's own allocations. ``ru_maxrss`` (also
printed) counts the inputs' memory-mapped file pages too, which the kernel can drop. Loading every input at once would need 3 x MB (plus the output);
the streamed merge should need about the output (MB) plus one tensor of each input. Prints the
ratio peak / output and a PASS line when it is under 1.5.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile

CHILD = r"""
import json, resource, sys
from pathlib import Path
import torch  # imported before the baseline: only the merge's own memory is measured
from latentzoo.core.runtime.merge import merge_files
import threading, time
def anon_mb():  # anonymous resident memory: the merge's own allocations, not the inputs' mapped file pages
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
before, peak, done = anon_mb(), [0.0], threading.Event()
def poll():
    while not done.is_set():
        peak[0] = max(peak[0], anon_mb()); time.sleep(0.002)
threading.Thread(target=poll, daemon=True).start()
paths = [Path(p) for p in sys.argv[1:4]]
merge_files("add-difference", paths, 0.5, sys.argv[4], dtype=None, recipe={})
done.set(); time.sleep(0.01)
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"before_mb": before, "peak_mb": peak[0], "maxrss_mb": rss}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=256)
    parser.add_argument("--tensors", type=int, default=32)
    args = parser.parse_args()
    import torch
    from safetensors.torch import save_file

    n = args.mb * 1024 * 1024 // 4 // args.tensors
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, name in enumerate("ABC"):
            g = torch.Generator().manual_seed(i)
            save_file({f"t{j}.weight": torch.randn(n, generator=g) for j in range(args.tensors)}, f"{tmp}/{name}.safetensors")
            paths.append(f"{tmp}/{name}.safetensors")
        out = subprocess.run([sys.executable, "-c", CHILD, *paths, f"{tmp}/D.safetensors"], capture_output=True, text=True, check=True)
        got = json.loads(out.stdout.strip().splitlines()[-1])
    used = got["peak_mb"] - got["before_mb"]
    ratio = used / args.mb
    print(f"inputs 3 x {args.mb} MB, output {args.mb} MB, one tensor {args.mb / args.tensors:.0f} MB")
    print(f"merge peak anonymous memory above baseline: {used:.0f} MB = {ratio:.2f} x the output (all inputs at once: >= 3.0 x)")
    print(f"(peak RSS with the inputs' mapped pages: {got['maxrss_mb']:.0f} MB)")
    print(f"{'PASS' if ratio < 1.5 else 'FAIL'}: merge memory is the output plus a tensor (target < 1.5 x the output)")


if __name__ == "__main__":
    main()
