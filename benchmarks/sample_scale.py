"""Sampling beyond one process (issue 26): ranks, memory, resume, threads, batch-shape flips.

    python benchmarks/sample_scale.py targets            # the issue's three targets side by side, PASS / FAIL each

``targets`` (about 5 minutes on a quiet 2-core machine; each part prints its own duration). A
calibration (a 1-sample and a 64-sample run) sizes the runs so that one thread works about
``--seconds`` (40) on the ranks part and 60 s on the resume part, whatever the machine's speed:
  * ranks:  2 ranks x 1 thread vs 1 rank x 1 thread, images/s of the whole command (``digits``,
    10 DDIM steps, batch 8): PASS at >= 1.7x. Also printed without process start-up.
  * rss:    peak RSS of ``-o DIR/`` at 1,000 and 100,000 samples: PASS at <= 1.2x. The run goes
    through the request path as the CLI's does (core.runtime.request), with ``digits-vae``'s decoder
    replaced by an 8x nearest upsampling of its latents, so 100,000 PNGs take about 2 minutes
    instead of 10: what grows with -n is the run's bookkeeping (manifest, sidecar, files), not
    the model, whose memory is one batch's.
  * resume: SIGKILL at 50 % of an uninterrupted run, then --resume: total time <= 1.1x, and the
    files byte-identical.
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


def _rss_child(a: argparse.Namespace) -> None:
    """One -o DIR/ run of ``a.n`` samples through core.runtime.request with a cheap decoder (see the module doc); prints peak RSS MB."""
    import resource

    import torch

    from latentzoo.core.runtime.request import SampleRequest, build, execute, validate

    plan = validate(SampleRequest("digits-vae", n=a.n, output=a.out, batch_size=a.batch, threads=1))
    pipe = build(plan)
    # (B, 2, 4, 4) latents -> (B, 1, 32, 32) images in [-1, 1]: every sample distinct, no model work
    pipe.decoder.decode = lambda z: torch.tanh(z[:, :1].repeat_interleave(8, -1).repeat_interleave(8, -2))
    execute(plan, pipe)
    print(json.dumps(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))


def _child_rss(n: int, out: str, batch: int) -> tuple[float, float]:
    t = time.perf_counter()
    args = [PY, __file__, "_rss_child", "-n", str(n), "--out", out, "--batch", str(batch)]
    peak = json.loads(subprocess.run(args, env=env(1), check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
    return time.perf_counter() - t, peak


def _verdict(name: str, value: float, target: str, ok: bool, extra: str = "") -> bool:
    print(f"{'PASS' if ok else 'FAIL'} {name}: {value:.3f} (target {target}){'; ' + extra if extra else ''}", flush=True)
    return ok


def targets(a: argparse.Namespace) -> None:
    root = Path(tempfile.mkdtemp(prefix="lz-targets-"))
    start, results = time.perf_counter(), []
    try:
        # 0. calibration: start-up (a 1-sample run) and the rate of one thread, so that each timed run lasts
        # about --seconds whatever the machine (start-up is then a small part of it, as in a real long run)
        t0 = time.perf_counter()
        base = ["digits", "--steps", "10", "--threads", "1", "--batch-size", "8"]
        startup = run(cli(*base, "-n", "1", "-o", f"{root}/s1/"), env(1))
        rate = 63 / max(0.1, run(cli(*base, "-n", "64", "-o", f"{root}/s64/"), env(1)) - startup)
        a.ranks_n = a.ranks_n or int(min(8192, max(128, a.seconds * rate)) // 16 * 16)
        a.resume_n = a.resume_n or int(min(8192, max(128, 1.5 * a.seconds * rate)) // 16 * 16)
        print(
            f"calibration: start-up {startup:.1f} s, {rate:.1f} img/s at 1 thread: ranks -n {a.ranks_n}, resume -n {a.resume_n}", flush=True
        )
        # 1. ranks: whole commands side by side (start-up included, as a user times them); also without it
        args = ["digits", "--steps", "10", "-n", str(a.ranks_n), "--batch-size", "8", "--threads", "1", "--seed", "1"]
        one = run(cli(*args, "-o", f"{root}/one/"), env(1))
        launch = [PY, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2", "--master-addr", "127.0.0.1"]
        launch += ["--master-port", str(free_port()), "-m", "latentzoo", "sample", *args, "-o", f"{root}/two/", "--no-progress"]
        two = run(launch, env(1))
        same = digests(root / "one") == digests(root / "two")
        sampling = f"{(one - startup) / (two - startup):.2f}x" if min(one, two) > startup else "n/a (start-up varied)"
        results.append(
            _verdict(
                "ranks (2 x 1 thread vs 1 x 1 thread, images/s)", one / two, ">= 1.7", one / two >= 1.7 and same,
                f"{a.ranks_n / one:.2f} vs {a.ranks_n / two:.2f} img/s, {one:.1f} s vs {two:.1f} s; without start-up "
                f"({startup:.1f} s) {sampling}; same files: {same}; {time.perf_counter() - t0:.0f} s",
            )
        )  # fmt: skip
        # 2. rss: 1,000 vs 100,000 samples
        t0 = time.perf_counter()
        small_t, small = _child_rss(1000, f"{root}/r1/", 256)
        shutil.rmtree(root / "r1")
        big_t, big = _child_rss(a.many, f"{root}/r2/", 256)
        files = len(list((root / "r2").glob("*.png")))
        shutil.rmtree(root / "r2")
        results.append(
            _verdict(
                f"rss (peak RSS at {a.many:,} / at 1,000 samples, -o DIR/)", big / small, "<= 1.2", big / small <= 1.2 and files == a.many,
                f"{small:.0f} MB ({small_t:.0f} s) vs {big:.0f} MB ({big_t:.0f} s), {files:,} files; {time.perf_counter() - t0:.0f} s",
            )
        )  # fmt: skip
        # 3. resume after SIGKILL at 50 %
        t0 = time.perf_counter()
        args = ["digits", "--steps", "10", "-n", str(a.resume_n), "--batch-size", "8", "--threads", "1", "--seed", "2"]
        whole = run(cli(*args, "-o", f"{root}/whole/"), env(1))
        proc = subprocess.Popen(cli(*args, "-o", f"{root}/cut/"), env=env(1), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t = time.perf_counter()
        time.sleep(whole * 0.5)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        first = time.perf_counter() - t
        manifest = root / "cut" / ".latentzoo-partial" / "samples.manifest.jsonl"
        lines = manifest.read_text().count("\n") - 1 if manifest.exists() else 0
        second = run(cli(*args, "-o", f"{root}/cut/", "--resume"), env(1))
        same = digests(root / "whole") == digests(root / "cut")
        total = (first + second) / whole
        results.append(
            _verdict(
                "resume (killed at 50 % + --resume, / uninterrupted)", total, "<= 1.1", total <= 1.1 and same and lines > 0,
                f"uninterrupted {whole:.1f} s; killed at {first:.1f} s with {lines} of {-(-a.resume_n // 8)} batches committed; "
                f"--resume {second:.1f} s; byte-identical: {same}; {time.perf_counter() - t0:.0f} s",
            )
        )  # fmt: skip
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"targets: {sum(results)} of {len(results)} PASS in {time.perf_counter() - start:.0f} s (load average {os.getloadavg()[0]:.1f})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("part", choices=["targets", "flips", "ranks", "rss", "resume", "threads", "_rss_child"])
    p.add_argument("--out", help="_rss_child: the -o DIR/")
    p.add_argument("--ranks-n", type=int, help="targets: samples of the ranks part (default: --seconds of one thread's work)")
    p.add_argument("--resume-n", type=int, help="targets: samples of the resume part (default: 1.5 x --seconds of work)")
    p.add_argument("--seconds", type=float, default=40.0, help="targets: how long the 1-rank run should take")
    p.add_argument("-n", type=int, default=64)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--many", type=int, default=10000, help="rss: samples (targets: 100,000 unless given)")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--policies", default="unset,PASSIVE,ACTIVE", help="threads: OMP_WAIT_POLICY values (unset = torch's default)")
    p.add_argument("--at", type=float, default=0.5, help="resume: kill at this fraction of the uninterrupted time")
    a = p.parse_args()
    if a.part == "targets" and "--many" not in sys.argv:
        a.many = 100_000
    parts = {"targets": targets, "flips": flips, "ranks": ranks, "rss": rss, "resume": resume, "threads": threads, "_rss_child": _rss_child}
    parts[a.part](a)


if __name__ == "__main__":
    main()
