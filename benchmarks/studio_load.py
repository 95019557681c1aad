"""Load on ``latentzoo serve`` vs the same requests as separate CLI processes (issue 23's targets).

    python benchmarks/studio_load.py                       # 8 clients x 25 jobs, 200 CLI processes
    python benchmarks/studio_load.py --cli-runs 20         # CLI baseline on a subset (throughput per process)
    python benchmarks/studio_load.py --rss-jobs 1000       # and RSS sampled over 1,000 more jobs

Each job is ``sample digits -n 4 --steps 10 --seed S`` (S unique per job). Checks: every job done,
none lost or duplicated; each checked job's PNGs equal the CLI's for the same seed byte for byte;
a cancel under load stops that job alone. Reports throughput (jobs/s), p50 / p95 latency (submit
to done, as a client sees it), the server's RSS over jobs, and the CLI's jobs/s. Both sides run
with OMP_NUM_THREADS=1 (the server's one worker thread vs one process at a time).
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
import threading
import time
import urllib.request
from pathlib import Path

LATENTZOO = str(Path(sys.executable).parent / "latentzoo")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def call(base: str, method: str, path: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method, headers={"Content-Type": "application/json"} if data else {})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.loads(r.read())


def fetch(base: str, path: str) -> bytes:
    with urllib.request.urlopen(base + path, timeout=60) as r:
        return r.read()


def wait(base: str, job_id: str, poll: float = 0.01) -> dict:
    while True:
        job = call(base, "GET", f"/api/v1/jobs/{job_id}")
        if job["status"] in ("done", "failed", "cancelled", "interrupted"):
            return job
        time.sleep(poll)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def job_body(seed: int, steps: int = 10) -> dict:
    return {"command": "sample", "pipeline": "digits", "n": 4, "seed": seed, "steps": steps}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--jobs", type=int, default=25, help="Jobs per client.")
    ap.add_argument("--cli-runs", type=int, default=200, help="CLI processes for the baseline (their seeds are checked byte for byte).")
    ap.add_argument("--rss-jobs", type=int, default=0, help="More jobs after the load, sampling the server's RSS (1000 for the target).")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="studio-load-"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    (work / "out").mkdir()
    server = subprocess.Popen(
        [LATENTZOO, "serve", "--port", str(port), "--outputs", str(work / "out"), "--max-queue", "10000"],
        env=ENV,
        stderr=(work / "server.log").open("wb"),
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                call(base, "GET", "/api/v1/jobs?limit=1")
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, "the server did not start"
                time.sleep(0.2)
        wait(base, call(base, "POST", "/api/v1/jobs", job_body(10**9))["job_id"])  # warm: the pipeline is built once
        rss = [(1, rss_mb(server.pid))]
        total = args.clients * args.jobs
        latencies: list[float] = []
        results: dict[int, dict] = {}
        lock = threading.Lock()

        def client(c: int) -> None:
            for j in range(args.jobs):
                seed = c * args.jobs + j
                t0 = time.perf_counter()
                job = wait(base, call(base, "POST", "/api/v1/jobs", job_body(seed))["job_id"])
                with lock:
                    latencies.append(time.perf_counter() - t0)
                    results[seed] = job

        cancel_outcome: dict = {}

        def canceller() -> None:  # a long job submitted under load, cancelled once it runs
            job_id = call(base, "POST", "/api/v1/jobs", job_body(7 * 10**8, steps=1000))["job_id"]
            while call(base, "GET", f"/api/v1/jobs/{job_id}")["status"] != "running":
                time.sleep(0.01)
            t0 = time.perf_counter()
            call(base, "DELETE", f"/api/v1/jobs/{job_id}")
            job = wait(base, job_id, poll=0.002)
            cancel_outcome.update(status=job["status"], seconds=time.perf_counter() - t0, step=job["progress"]["step"])

        threads = [threading.Thread(target=client, args=(c,)) for c in range(args.clients)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        time.sleep(1.0)
        cancel_thread = threading.Thread(target=canceller)
        cancel_thread.start()
        for t in threads:
            t.join()
        cancel_thread.join()
        wall = time.perf_counter() - t0
        rss.append((1 + total, rss_mb(server.pid)))
        done = [s for s, j in results.items() if j["status"] == "done"]
        ids = {j["job_id"] for j in results.values()}
        listed = call(base, "GET", "/api/v1/jobs?limit=1000&status=done")["jobs"]
        print(f"server: {len(done)}/{total} done, {len(ids)} distinct job ids, {len(listed)} listed done (incl. warm-up)")
        latencies.sort()
        p50, p95 = statistics.median(latencies), latencies[int(0.95 * (len(latencies) - 1))]
        # the cancelled job ran alongside: its time is part of the wall; report throughput over the 200 jobs
        print(f"server: {total} jobs in {wall:.1f} s = {total / wall:.2f} jobs/s; latency p50 {p50:.2f} s, p95 {p95:.2f} s")
        print(f"cancel under load: {cancel_outcome} (others all done: {len(done) == total})")

        cli_rate = None
        if args.cli_runs:
            seeds = sorted(results)[: args.cli_runs]
            t0 = time.perf_counter()
            mismatched = 0
            for seed in seeds:
                out = work / "cli" / str(seed)
                cmd = [LATENTZOO, "sample", "digits", "-n", "4", "--steps", "10", "--seed", str(seed), "-o", f"{out}/", "--no-progress"]
                subprocess.run(cmd, env=ENV, check=True, capture_output=True)
                job = results[seed]
                for o in job["outputs"]:
                    if o["kind"] == "image" and fetch(base, o["url"]) != (out / f"{o['index']:04d}.png").read_bytes():
                        mismatched += 1
            cli_wall = time.perf_counter() - t0
            cli_rate = len(seeds) / cli_wall
            print(f"CLI: {len(seeds)} processes in {cli_wall:.1f} s = {cli_rate:.2f} jobs/s; image mismatches vs the server: {mismatched}")
            print(f"throughput ratio server / CLI: {total / wall / cli_rate:.1f}x")

        if args.rss_jobs:
            step = max(args.rss_jobs // 10, 1)
            for k in range(args.rss_jobs):
                wait(base, call(base, "POST", "/api/v1/jobs", job_body(2 * 10**9 + k))["job_id"], poll=0.005)
                if (k + 1) % step == 0:
                    rss.append((1 + total + k + 1, rss_mb(server.pid)))
        print("server RSS (MB) after N jobs: " + ", ".join(f"{n}: {m:.0f}" for n, m in rss))
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
