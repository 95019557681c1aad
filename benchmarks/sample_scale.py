"""Sampling beyond one process (issue 26): ranks, memory, resume, threads, batch-shape flips.

    python benchmarks/sample_scale.py flips              # per-index seeds: grey levels that flip between batch shapes
    python benchmarks/sample_scale.py ranks              # 2 ranks x 1 thread vs 1 rank x 1 thread, images/s
    python benchmarks/sample_scale.py rss --many 10000   # peak RSS of -o DIR/ at 1,000 vs --many samples
    python benchmarks/sample_scale.py resume             # SIGKILL at ~50 %, --resume: total time / uninterrupted
    python benchmarks/sample_scale.py threads            # wall time at 1 and 2 threads, quiet vs loaded

Every part runs the installed CLI in subprocesses (as a user would), except ``flips``.
Times are wall-clock on whatever else the machine is running: say so with the numbers.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing as mp
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PY = sys.executable


def env(threads: int = 1, **extra: str) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), **extra}


def run(args: list[str], e: dict[str, str]) -> float:
    t = time.perf_counter()
    subprocess.run(args, env=e, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - t


def cli(*args: str) -> list[str]:
    return [PY, "-m", "latentzoo", "sample", *args, "--no-progress"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.png"))}


def flips(a: argparse.Namespace) -> None:
    import torch

    import latentzoo

    torch.set_num_threads(1)
    for name, opts in (("digits", {"steps": 10}), ("digits-vqgan-ar", {}), ("digits", {"steps": 10, "eta": 1.0})):
        pipe = latentzoo.load_pipeline(name)
        ref = pipe.sample(a.n, seed=1, batch_size=a.n, options=opts)
        for bs in (1, 5):
            other = pipe.sample(a.n, seed=1, batch_size=bs, options=opts)
            x = ((ref + 1) * 127.5).round().clamp(0, 255).to(torch.int16)
            y = ((other + 1) * 127.5).round().clamp(0, 255).to(torch.int16)
            d = (x - y).abs()
            images = int((d.flatten(1).amax(1) > 0).sum())
            print(
                f"flips {name} {opts}: n={a.n}, batch {a.n} vs {bs}: {int((d > 0).sum())} of {d.numel()} pixel values differ "
                f"({100 * float((d > 0).float().mean()):.4f} %), max {int(d.max())} grey level(s), {images}/{a.n} images touched"
            )


def ranks(a: argparse.Namespace) -> None:
    root = Path(tempfile.mkdtemp(prefix="lz-ranks-"))
    args = ["digits", "--steps", str(a.steps), "-n", str(a.n), "--batch-size", str(a.batch), "--threads", "1", "--seed", "1"]
    for rep in range(a.repeats):
        one = run(cli(*args, "-o", f"{root}/one{rep}/"), env(1))
        launch = [PY, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2", "--master-addr", "127.0.0.1"]
        launch += ["--master-port", str(free_port()), "-m", "latentzoo", "sample", *args, "-o", f"{root}/two{rep}/", "--no-progress"]
        two = run(launch, env(1))
        same = digests(root / f"one{rep}") == digests(root / f"two{rep}")
        print(
            f"ranks: {a.n} images ({a.steps} DDIM steps): 1 rank x 1 thread {one:.1f} s ({a.n / one:.2f} img/s), "
            f"2 ranks x 1 thread {two:.1f} s ({a.n / two:.2f} img/s): {one / two:.2f}x; same files: {same}"
        )
    shutil.rmtree(root)


def _peak(args: list[str]) -> tuple[float, float]:
    """(wall s, peak RSS MB) of one subprocess: ru_maxrss of the children waited for, measured in a fresh helper."""
    code = (
        "import resource, subprocess, sys, time, json; t = time.perf_counter(); "
        "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); "
        "print(json.dumps([time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024]))"
    )
    out = subprocess.run([PY, "-c", code, *args], env=env(1), check=True, capture_output=True, text=True).stdout
    wall, rss = json.loads(out)
    return wall, rss


def rss(a: argparse.Namespace) -> None:
    root = Path(tempfile.mkdtemp(prefix="lz-rss-"))
    rows = []
    for count in (1000, a.many):
        wall, peak = _peak(cli("digits-vae", "-n", str(count), "--threads", "1", "-o", f"{root}/n{count}/"))
        rows.append(peak)
        print(f"rss: {count} samples -o DIR/ (digits-vae, batch 64): {wall:.1f} s, peak RSS {peak:.0f} MB")
        shutil.rmtree(root / f"n{count}")
    print(f"rss: {a.many} / 1000 peak RSS ratio {rows[1] / rows[0]:.3f}")
    shutil.rmtree(root)


def resume(a: argparse.Namespace) -> None:
    root = Path(tempfile.mkdtemp(prefix="lz-resume-"))
    args = ["digits", "--steps", str(a.steps), "-n", str(a.n), "--batch-size", str(a.batch), "--threads", "1", "--seed", "2"]
    whole = run(cli(*args, "-o", f"{root}/whole/"), env(1))
    proc = subprocess.Popen(cli(*args, "-o", f"{root}/cut/"), env=env(1), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t = time.perf_counter()
    time.sleep(whole * a.at)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = time.perf_counter() - t
    lines = (root / "cut" / ".latentzoo-partial" / "samples.manifest.jsonl").read_text().count("\n") - 1
    second = run(cli(*args, "-o", f"{root}/cut/", "--resume"), env(1))
    same = digests(root / "whole") == digests(root / "cut")
    print(
        f"resume: uninterrupted {whole:.1f} s; killed (SIGKILL) at {first:.1f} s with {lines} of {-(-a.n // a.batch)} batches committed, "
        f"--resume {second:.1f} s; total {(first + second) / whole:.2f}x; byte-identical: {same}; "
        f"DIR/ holds {sorted(p.name for p in (root / 'cut').iterdir())[-1]} and {len(list((root / 'cut').iterdir()))} entries"
    )
    shutil.rmtree(root)


def _busy() -> None:
    while True:
        pass


def threads(a: argparse.Namespace) -> None:
    root = Path(tempfile.mkdtemp(prefix="lz-threads-"))
    args = ["digits", "--steps", str(a.steps), "-n", str(a.n), "--seed", "1"]
    for load in (False, True):
        hogs = [mp.Process(target=_busy, daemon=True) for _ in range(2 if load else 0)]
        for h in hogs:
            h.start()
        try:
            for policy in a.policies.split(","):
                for t in (1, 2):
                    e = env(t, OMP_WAIT_POLICY=policy)
                    e.pop("OMP_NUM_THREADS")  # --threads decides
                    command = cli(*args, "--threads", str(t), "-o", f"{root}/x.png")
                    if policy == "unset":  # torch's own default: libgomp loaded before the CLI could set PASSIVE
                        e.pop("OMP_WAIT_POLICY")
                        command = [PY, "-c", "import sys, torch; from latentzoo.cli import main; main(sys.argv[1:])", *command[3:]]
                    wall = run(command, e)
                    print(f"threads: {'loaded (2 busy loops)' if load else 'quiet'}, OMP_WAIT_POLICY={policy}, --threads {t}: {wall:.1f} s")
        finally:
            for h in hogs:
                h.kill()
    shutil.rmtree(root)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("part", choices=["flips", "ranks", "rss", "resume", "threads"])
    p.add_argument("-n", type=int, default=64)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--many", type=int, default=10000)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--policies", default="unset,PASSIVE,ACTIVE", help="threads: OMP_WAIT_POLICY values (unset = torch's default)")
    p.add_argument("--at", type=float, default=0.5, help="resume: kill at this fraction of the uninterrupted time")
    a = p.parse_args()
    {"flips": flips, "ranks": ranks, "rss": rss, "resume": resume, "threads": threads}[a.part](a)


if __name__ == "__main__":
    main()
