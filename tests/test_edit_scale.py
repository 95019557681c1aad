"""The editing commands beyond one process: outputs rendered by index (per-index seeds), ``-o DIR/``
committed batch by batch and resumed, shared among torchrun ranks (core.runtime.editing Job, core.runtime.rundir).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")


from .test_digits_pipeline import save_digits  # noqa: E402
from .test_editing import half_mask  # noqa: E402
from .test_sample_scale import contents, torchrun  # noqa: E402

FAST = ["--steps", "4"]


@pytest.fixture(scope="module")
def digits_in(tmp_path_factory):
    return [str(p) for p in save_digits(tmp_path_factory.mktemp("in"), 5)]


def grey_levels(a: torch.Tensor, b: torch.Tensor) -> tuple[int, float]:
    """(largest difference in grey levels, fraction of values that differ) of images in [-1, 1]."""
    from latentzoo.core.runtime.images import to_uint8

    diff = (to_uint8(a).int() - to_uint8(b).int()).abs()
    return int(diff.max()), float((diff > 0).float().mean())


# -- per-index outputs ---------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["img2img", "inpaint", "interpolate"])
def test_an_output_does_not_depend_on_the_batch_or_the_other_indices(digits_in, tmp_path, command):
    from latentzoo.core.runtime import editing
    from latentzoo.core.runtime.api import load_pipeline

    pipe = load_pipeline("digits")
    options = {"steps": 4, "eta": 1.0}  # eta 1: DDIM draws fresh noise every step, from each output's own generator
    if command == "img2img":
        job = editing.img2img_job(pipe, digits_in, 0.7, seed=3, options=options)
    elif command == "inpaint":
        job = editing.inpaint_job(pipe, digits_in, str(half_mask(tmp_path / "m.png", slice(0, 16))), seed=3, options=options)
    else:
        job = editing.interpolate_job(pipe, digits_in[:1], digits_in[1:2], 5, seed=3, options={"steps": 4})
    whole = job.images()  # one batch of 5
    alone = torch.cat([job.render([i]) for i in range(job.n)])  # five batches of 1
    top, flipped = grey_levels(whole, alone)
    assert top <= 1 and flipped < 0.01, (top, flipped)  # another batch shape may round a grey level differently
    assert torch.equal(job.render([3, 4]), job.render([3, 4]))  # the same batch shape: the same bytes
    assert grey_levels(job.render([4]), whole[4:])[0] <= 1  # output 4 rendered without 0-3
    if command == "img2img":  # another seed, other outputs
        other = editing.img2img_job(pipe, digits_in, 0.7, seed=4, options=options)
        assert float((other.images() - whole).abs().max()) > 0.1


def test_variations_do_not_depend_on_the_batch(tmp_path, digits_in):
    from latentzoo.core.runtime.api import load_pipeline
    from latentzoo.core.runtime.variations import variations_job

    job = variations_job(load_pipeline("digits-unclip"), digits_in[0], 4, seed=1)
    whole, alone = job.images(), torch.cat([job.render([i]) for i in range(4)])
    assert grey_levels(whole, alone)[0] <= 1
    assert float((whole[0] - whole[1]).abs().max()) > 0.1  # variations differ from each other


# -- -o DIR/: committed batch by batch, resumable -----------------------------------------------


def img2img_dir(lz, out: Path, inputs: list[str], *args: str):
    return lz("img2img", "digits", *inputs, "--strength", "0.7", *FAST, "--seed", "2", "--batch-size", "2", "-o", f"{out}/", *args)


@pytest.fixture
def lz(capsys, monkeypatch, tmp_path, helpers):
    config = tmp_path / "lz-config"
    config.mkdir()
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config))
    return helpers.in_process_cli(capsys)


def cut_after(monkeypatch, batches: int) -> None:
    """The next -o DIR/ run stops after committing ``batches`` batches, as a kill would."""
    from latentzoo.core.runtime.manifest import Manifest

    real, calls = Manifest.commit, []

    def dying(self, *args, **kwargs):
        if len(calls) == batches:
            monkeypatch.setattr(Manifest, "commit", real)
            raise KeyboardInterrupt
        calls.append(args[0])
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Manifest, "commit", dying)


def test_an_editing_dir_run_resumes_to_the_bytes_of_an_uninterrupted_one(lz, tmp_path, digits_in, monkeypatch):
    from latentzoo.core.runtime import editing

    whole = tmp_path / "whole"
    img2img_dir(lz, whole, digits_in).assert_ok()
    assert sorted(p.name for p in whole.iterdir()) == [f"{i:04d}.png" for i in range(5)] + ["samples.json"]
    record = json.loads((whole / "samples.json").read_text())
    assert record["edit"] == "img2img" and record["seeding"] == "per-index/1" and len(record["files_sha256"]) == 5
    run = tmp_path / "run"
    cut_after(monkeypatch, 1)
    assert img2img_dir(lz, run, digits_in).returncode != 0
    from latentzoo.core.runtime.manifest import Manifest

    _, committed = Manifest(run / ".latentzoo-partial", f"{run}/").read()
    assert sorted(committed) == [0]  # batch 1's files were written, but the kill came before its manifest line
    img2img_dir(lz, run, digits_in).assert_one_line_error("--resume")  # without --resume: refused, nothing lost
    other = ["img2img", "digits", *digits_in, "--strength", "0.5", *FAST, "--seed", "2", "--batch-size", "2", "-o", f"{run}/", "--resume"]
    assert "strength" in lz(*other).assert_one_line_error("another request")
    rendered: list[int] = []
    real_job = editing.img2img_job

    def counting(*args, **kwargs):
        job = real_job(*args, **kwargs)
        render = job.render
        job.render = lambda idx: rendered.extend(idx) or render(idx)
        return job

    monkeypatch.setattr(editing, "img2img_job", counting)
    img2img_dir(lz, run, digits_in, "--resume").assert_ok()
    assert sorted(rendered) == [2, 3, 4]  # only the missing batches
    assert contents(run) == contents(whole)
    assert not (run / ".latentzoo-partial").exists()


def test_a_resume_with_an_edited_input_is_refused(lz, tmp_path, digits_in, monkeypatch):
    mine = tmp_path / "mine"
    mine.mkdir()
    local = []
    for p in digits_in[:3]:
        dest = mine / Path(p).name
        dest.write_bytes(Path(p).read_bytes())
        local.append(str(dest))
    run = tmp_path / "run"
    cut_after(monkeypatch, 1)
    assert img2img_dir(lz, run, local).returncode != 0
    Path(local[2]).write_bytes(Path(digits_in[4]).read_bytes())  # the same path, another image
    assert "inputs_sha256" in img2img_dir(lz, run, local, "--resume").assert_one_line_error("another request")
    assert (run / ".latentzoo-partial" / "0000.png").exists()  # nothing finished is lost


def test_each_editing_command_writes_a_dir_and_refuses_resume_on_a_grid(lz, tmp_path, digits_in):
    mask = str(half_mask(tmp_path / "m.png", slice(0, 16)))
    runs = {
        "inpaint": ["inpaint", "digits", *digits_in[:3], "--mask", mask, *FAST],
        "interpolate": ["interpolate", "digits", *digits_in[:2], "--frames", "3", *FAST],
        "variations": ["variations", "digits-unclip", digits_in[0], "-n", "3"],
    }
    for name, args in runs.items():
        out = tmp_path / name
        lz(*args, "--batch-size", "2", "-o", f"{out}/").assert_ok()
        record = json.loads((out / "samples.json").read_text())
        assert record["files"] == ["0000.png", "0001.png", "0002.png"] and record["batch_size"] == 2, name
        grid = lz(*args, "-o", str(tmp_path / f"{name}.png"), "--resume")
        grid.assert_one_line_error("--resume", "drop --resume")


# -- ranks ---------------------------------------------------------------------------------------


class ThreadWorld:
    """Two ranks as two threads of this process (the fast twin of the torchrun test): a real barrier."""

    device = torch.device("cpu")

    def __init__(self, rank: int, barrier: threading.Barrier) -> None:
        self.rank, self.size, self._barrier = rank, 2, barrier

    is_main = property(lambda self: self.rank == 0)
    distributed = property(lambda self: True)

    def barrier(self) -> None:
        self._barrier.wait(timeout=120)


def test_two_ranks_write_what_one_process_writes_fast(tmp_path, digits_in, monkeypatch):
    from latentzoo.core.runtime import editing, rundir
    from latentzoo.core.runtime.api import load_pipeline

    monkeypatch.setattr(rundir, "check_agreement", lambda key, world: None)  # one process: nothing to gather
    pipe = load_pipeline("digits")

    def write(out: str, world) -> None:
        job = editing.img2img_job(pipe, digits_in, 0.7, seed=2, options={"steps": 4})
        rundir.write_job(
            job, pipe, out, inputs=digits_in, names=digits_in, nrow=None, frames=False, batch_size=2,
            precision="fp32", resume=False, world=world, extra={},
        )  # fmt: skip

    write(f"{tmp_path / 'one'}/", None)
    barrier, errors = threading.Barrier(2), []
    # One process holds the output lock for every rank; as threads, both take it: held here first,
    # so that neither thread's take races the other's (the lock's count is not meant for threads).
    from latentzoo.core.contract.weights import lock_output

    unlock = lock_output(tmp_path / "two", "-o two/")

    def rank(r: int) -> None:
        try:
            write(f"{tmp_path / 'two'}/", ThreadWorld(r, barrier))
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=rank, args=(r,)) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    unlock()
    assert not errors, errors
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())
    assert contents(tmp_path / "two") == contents(tmp_path / "one")


@pytest.mark.slow
def test_editing_commands_under_torchrun_write_exactly_what_one_process_writes(cli, tmp_path):
    inputs = [str(p) for p in save_digits(tmp_path / "in", 5)]
    mask = str(half_mask(tmp_path / "m.png", slice(0, 16)))
    runs = {
        "img2img": ["img2img", "digits", *inputs, "--strength", "0.7"],
        "inpaint": ["inpaint", "digits", *inputs, "--mask", mask],
        "interpolate": ["interpolate", "digits", *inputs[:2], "--frames", "5"],
        "variations": ["variations", "digits-unclip", inputs[0], "-n", "5"],
    }
    for name, args in runs.items():
        common = [*args, *(FAST if name != "variations" else []), "--seed", "4", "--batch-size", "2", "--threads", "1"]
        one, two = tmp_path / f"{name}-1", tmp_path / f"{name}-2"
        cli(*common, "-o", f"{one}/", env={"OMP_NUM_THREADS": "1"}).assert_ok()
        torchrun(cli, *common, "-o", f"{two}/").assert_ok()
        assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir()), name
        assert contents(two) == contents(one), name
        a, b = (json.loads((d / "samples.json").read_text()) for d in (one, two))
        assert a["files_sha256"] == b["files_sha256"], name
        if name != "interpolate":
            continue
        # a grid (and interpolate's frame files): each rank renders its share, rank 0 assembles it
        cli(*common, "-o", str(tmp_path / f"{name}-1.png"), env={"OMP_NUM_THREADS": "1"}).assert_ok()
        torchrun(cli, *common, "-o", str(tmp_path / f"{name}-2.png")).assert_ok()
        assert (tmp_path / f"{name}-2.png").read_bytes() == (tmp_path / f"{name}-1.png").read_bytes(), name
        for i in range(5):
            assert (tmp_path / f"{name}-2-{i:03d}.png").read_bytes() == (tmp_path / f"{name}-1-{i:03d}.png").read_bytes()


@pytest.mark.slow
def test_an_editing_run_cut_in_one_process_resumes_under_two_ranks(lz, cli, tmp_path, monkeypatch):
    inputs = [str(p) for p in save_digits(tmp_path / "in", 5)]
    common = ["img2img", "digits", *inputs, "--strength", "0.7", *FAST, "--seed", "4", "--batch-size", "1", "--threads", "1"]
    run, whole = tmp_path / "cut", tmp_path / "whole"
    cut_after(monkeypatch, 2)
    assert lz(*common, "-o", f"{run}/").returncode != 0
    torchrun(cli, *common, "-o", f"{run}/", "--resume").assert_ok()
    lz(*common, "-o", f"{whole}/").assert_ok()
    assert contents(run) == contents(whole)
