"""Sampling beyond one process: -o DIR/ runs committed batch by batch (resumable), shared among
torchrun ranks, and the --threads / --device plumbing (core.runtime.manifest, core.runtime.rundir, core.runtime.devices).
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from latentzoo.core.contract.errors import LatentzooError  # noqa: E402

PIPE = "digits-vae"  # the analytic sampler: one decoder pass per batch, fast


@pytest.fixture
def lz(capsys, monkeypatch, tmp_path, helpers):
    config = tmp_path / "lz-config"
    config.mkdir()
    for key in [k for k in __import__("os").environ if k.startswith("LATENTZOO_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config))
    return helpers.in_process_cli(capsys)


def contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.suffix == ".png"}


def sample(lz, out: Path, *args: str):
    return lz("sample", PIPE, "--seed", "3", "-n", "7", "--batch-size", "2", "-o", f"{out}/", "--no-progress", *args)


@pytest.fixture
def interrupted(lz, tmp_path, monkeypatch):
    """A run of 7 samples in batches of 2 stopped after its 2nd committed batch (as a kill would), and an uninterrupted one."""
    from latentzoo.core.runtime.manifest import Manifest

    whole = tmp_path / "whole"
    sample(lz, whole).assert_ok()
    real, calls = Manifest.commit, []

    def dying(self, *args, **kwargs):
        if len(calls) == 2:
            raise KeyboardInterrupt  # after two batches were committed
        calls.append(args[0])
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Manifest, "commit", dying)
    run = tmp_path / "run"
    assert sample(lz, run).returncode != 0
    monkeypatch.setattr(Manifest, "commit", real)
    return whole, run


# -- resumable runs ----------------------------------------------------------------------------


def test_resume_renders_only_the_missing_batches_and_equals_an_uninterrupted_run(lz, interrupted, monkeypatch):
    from latentzoo.core.runtime.pipeline import Pipeline

    whole, run = interrupted
    partial = run / ".latentzoo-partial"
    # batches 0 and 1 committed; batch 2's files were written but its manifest line never was
    assert sorted(p.name for p in partial.iterdir()) == [f"{i:04d}.png" for i in range(6)] + ["samples.manifest.jsonl"]
    assert len((partial / "samples.manifest.jsonl").read_text().splitlines()) == 3
    assert not (run / "samples.json").exists()
    sample(lz, run).assert_one_line_error("unfinished run", "--resume")  # another run's manifest, no --resume
    rendered: list[int] = []
    real = Pipeline.iter_batches

    def spy(self, n, **kwargs):
        rendered.extend(kwargs["indices"])
        return real(self, n, **kwargs)

    monkeypatch.setattr(Pipeline, "iter_batches", spy)
    sample(lz, run, "--resume").assert_ok()
    assert rendered == [4, 5, 6]  # only the missing batches, each index once
    assert contents(run) == contents(whole)  # byte-identical to the uninterrupted run
    assert sorted(p.name for p in run.iterdir()) == sorted(p.name for p in whole.iterdir())  # no manifest, no partial folder
    record = json.loads((run / "samples.json").read_text())
    assert record["seeding"] == "per-index/1" and len(record["files_sha256"]) == 7


def test_resume_refuses_another_request(lz, interrupted):
    _, run = interrupted
    lz("sample", PIPE, "--seed", "4", "-n", "7", "--batch-size", "2", "-o", f"{run}/", "--resume", "--no-progress").assert_one_line_error(
        "another request", "seed"
    )
    lz("sample", PIPE, "--seed", "3", "-n", "8", "--batch-size", "2", "-o", f"{run}/", "--resume", "--no-progress").assert_one_line_error(
        "another request", "n"
    )
    assert len(list((run / ".latentzoo-partial").iterdir())) == 7  # nothing finished is lost


def test_an_edited_or_corrupt_manifest_is_refused_naming_the_index(lz, interrupted):
    _, run = interrupted
    manifest = run / ".latentzoo-partial" / "samples.manifest.jsonl"
    original = manifest.read_bytes()
    lines = original.decode().splitlines(keepends=True)
    entry = json.loads(lines[2])
    entry["files"]["0002.png"] = "0" * 64  # an edited sha256
    manifest.write_text(lines[0] + lines[1] + json.dumps(entry) + "\n")
    sample(lz, run, "--resume").assert_one_line_error("line 3 (indices 2-3)", "corrupt or was edited")
    manifest.write_text(lines[0] + "{not json\n" + lines[2])
    sample(lz, run, "--resume").assert_one_line_error("line 2", "corrupt or was edited")
    manifest.write_text(lines[0][:40] + "\n" + lines[1])
    sample(lz, run, "--resume").assert_one_line_error("header (line 1)")
    # a last line cut short by a kill commits nothing: that batch is rendered again
    manifest.write_bytes(original + b'{"batch": 2, "indi')
    sample(lz, run, "--resume").assert_ok()


def test_an_unverifiable_file_is_rendered_again(lz, interrupted, monkeypatch):
    whole, run = interrupted
    (run / ".latentzoo-partial" / "0001.png").write_bytes(b"not the committed bytes")
    (run / ".latentzoo-partial" / "0002.png").unlink()
    sample(lz, run, "--resume").assert_ok()
    assert contents(run) == contents(whole)


def test_resume_needs_a_folder(lz, tmp_path):
    lz("sample", PIPE, "-n", "2", "-o", str(tmp_path / "g.png"), "--resume", "--no-progress").assert_one_line_error(
        "--resume", "written at once"
    )


# -- ranks --------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(cli, *args: str, procs: int = 2):
    launch = ["-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", str(procs)]
    launch += ["--master-addr", "127.0.0.1", "--master-port", str(free_port()), "-m", "latentzoo"]
    return cli.python(*launch, *args, env={"OMP_NUM_THREADS": "1"}, timeout=300)


@pytest.mark.slow
def test_two_ranks_write_exactly_what_one_process_writes(cli, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    common = ["sample", PIPE, "--seed", "5", "-n", "5", "--batch-size", "2", "--no-progress", "--threads", "1"]
    cli(*common, "-o", f"{one}/", env={"OMP_NUM_THREADS": "1"}).assert_ok()
    torchrun(cli, *common, "-o", f"{two}/").assert_ok()
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())
    assert contents(two) == contents(one)
    a, b = (json.loads((d / "samples.json").read_text()) for d in (one, two))
    assert a["files_sha256"] == b["files_sha256"]
    # -n smaller than the ranks' batches: rank 1 has nothing to render and exits cleanly
    small = tmp_path / "small"
    torchrun(cli, *common[:4], "-n", "1", "--no-progress", "-o", f"{small}/").assert_ok()
    assert sorted(p.name for p in small.iterdir()) == ["0000.png", "samples.json"]
    # a grid: each rank renders its share, rank 0 assembles it; the same bytes as one process
    cli(*common, "-o", str(tmp_path / "g1.png"), env={"OMP_NUM_THREADS": "1"}).assert_ok()
    torchrun(cli, *common, "-o", str(tmp_path / "g2.png")).assert_ok()
    assert (tmp_path / "g2.png").read_bytes() == (tmp_path / "g1.png").read_bytes()
    assert json.loads((tmp_path / "g2.json").read_text())["files"] == ["g2.png"]


def _disagreeing_rank(rank: int, port: int, out: str, result: str) -> None:
    import os

    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from latentzoo.core.runtime.api import load_pipeline
    from latentzoo.core.runtime.devices import join_world

    world = join_world()
    try:
        load_pipeline(PIPE).sample_to(out, 2, seed=rank, world=world)  # rank 1 asks for another seed
        message = "ok"
    except LatentzooError as exc:
        message = str(exc)
    finally:
        world.close()
    Path(f"{result}.{rank}").write_text(message)


@pytest.mark.slow
def test_ranks_that_disagree_on_the_request_are_refused(tmp_path):
    import torch.multiprocessing as mp

    out, result = f"{tmp_path / 'out'}/", str(tmp_path / "result")
    mp.spawn(_disagreeing_rank, args=(free_port(), out, result), nprocs=2, join=True)
    for rank in (0, 1):
        assert "ranks disagree on the request" in Path(f"{result}.{rank}").read_text()
    assert not (tmp_path / "out").exists()


def test_shares_partition_the_batches():
    """The fast twin of the torchrun test: rank r takes batches r, r + K, ...; together every batch once."""
    from latentzoo.core.runtime.manifest import batches, share

    plan = batches(11, 3)
    assert plan[-1] == [9, 10]
    for size in (1, 2, 3, 5):
        owned = [k for rank in range(size) for k in share(len(plan), rank, size, done=set())]
        assert sorted(owned) == list(range(len(plan)))
    assert share(len(plan), 1, 2, done={1}) == [3]
    assert share(1, 1, 2, done=set()) == []  # a rank with nothing to render


def test_disagreeing_ranks_are_refused_fast(monkeypatch):
    """The fast twin of the gloo test: digests gathered from two ranks that differ are refused on every rank."""
    from latentzoo.core.runtime import distributed, rundir
    from latentzoo.core.runtime.distributed import World

    monkeypatch.setattr(distributed, "all_gather_cat", lambda t: torch.cat([t, t + 1]))
    with pytest.raises(LatentzooError, match=r"ranks disagree on the request: rank\(s\) 1 differ from rank 0"):
        rundir.check_agreement({"seed": 1}, World(rank=0, size=2))
    monkeypatch.setattr(distributed, "all_gather_cat", lambda t: torch.cat([t, t]))
    rundir.check_agreement({"seed": 1}, World(rank=0, size=2))


# -- threads and devices --------------------------------------------------------------------------


def test_threads_are_set_and_recorded(lz, tmp_path):
    before = torch.get_num_threads()
    try:
        lz("sample", PIPE, "-n", "2", "--threads", "1", "-o", f"{tmp_path / 'a'}/", "--no-progress").assert_ok()
        record = json.loads((tmp_path / "a" / "samples.json").read_text())
        assert record["threads"] == 1 and record["device"] == "cpu"
    finally:
        torch.set_num_threads(before)
    for bad in ("0", "-2", "x"):
        result = lz("sample", PIPE, "-n", "2", "--threads", bad, "-o", f"{tmp_path / 'b'}/", "--no-progress")
        assert result.returncode != 0 and "Traceback" not in result.stderr and "--threads" in result.stderr


@pytest.mark.parametrize("device", ["cuda", "cuda:7", "mps", "gpu", "cuda:x", ""])
def test_a_device_that_is_not_there_is_refused_in_one_line(lz, tmp_path, device):
    if torch.cuda.is_available() and device in ("cuda", "cuda:7"):
        pytest.skip("this machine has CUDA")
    lz("sample", PIPE, "-n", "2", "--device", device, "-o", f"{tmp_path / 'a'}/", "--no-progress").assert_one_line_error("--device")
    assert not (tmp_path / "a").exists()


def test_the_api_takes_threads_device_and_resume(tmp_path, monkeypatch):
    import latentzoo

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    before = torch.get_num_threads()
    try:
        record = latentzoo.sample(PIPE, 3, output=f"{tmp_path / 'a'}/", threads=1, device="cpu", resume=True)
    finally:
        torch.set_num_threads(before)
    assert record["threads"] == 1 and record["files"] == ["0000.png", "0001.png", "0002.png"]
    with pytest.raises(LatentzooError, match="--device"):
        latentzoo.sample(PIPE, 3, output=f"{tmp_path / 'b'}/", device="tpu")


def test_a_failure_after_finished_batches_keeps_them_and_says_resume(tmp_path, monkeypatch):
    import latentzoo
    from latentzoo.core.runtime.pipeline import Pipeline

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    real, seen = Pipeline.decode, []

    def failing(self, latents, **kwargs):
        seen.append(1)
        if len(seen) == 2:
            raise LatentzooError("decoder x produced non-finite images; check its weights")
        return real(self, latents, **kwargs)

    monkeypatch.setattr(Pipeline, "decode", failing)
    with pytest.raises(
        LatentzooError, match=r"non-finite images; check its weights \(finished batches are kept in .*rerun with --resume\)"
    ):
        latentzoo.sample(PIPE, 4, output=f"{tmp_path / 'out'}/", batch_size=2)
    assert sorted(p.name for p in (tmp_path / "out" / ".latentzoo-partial").iterdir()) == ["0000.png", "0001.png", "samples.manifest.jsonl"]
    monkeypatch.setattr(Pipeline, "decode", real)
    latentzoo.sample(PIPE, 4, output=f"{tmp_path / 'out'}/", batch_size=2, resume=True)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["0000.png", "0001.png", "0002.png", "0003.png", "samples.json"]


@pytest.mark.slow
def test_a_run_killed_by_sigkill_resumes_to_the_same_bytes(cli, tmp_path):
    """A real process, killed with SIGKILL once it has committed two batches, then --resume'd."""
    import os
    import signal
    import subprocess
    import sys
    import time

    args = ["sample", "digits", "--steps", "5", "-n", "24", "--batch-size", "2", "--seed", "9", "--no-progress", "--threads", "1"]
    cli(*args, "-o", f"{tmp_path / 'whole'}/", env={"OMP_NUM_THREADS": "1"}).assert_ok()
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "latentzoo", *args, "-o", f"{run}/"], env=cli.env(OMP_NUM_THREADS="1"), cwd=cli.cwd)
    manifest = run / ".latentzoo-partial" / "samples.manifest.jsonl"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if manifest.exists() and manifest.read_text().count("\n") >= 3:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert manifest.exists() and not (run / "samples.json").exists()
    cli(*args, "-o", f"{run}/", env={"OMP_NUM_THREADS": "1"}).assert_one_line_error("unfinished run", "--resume")
    cli(*args, "-o", f"{run}/", "--resume", env={"OMP_NUM_THREADS": "1"}).assert_ok()
    assert contents(run) == contents(tmp_path / "whole")
    assert sorted(p.name for p in run.iterdir()) == sorted(p.name for p in (tmp_path / "whole").iterdir())
