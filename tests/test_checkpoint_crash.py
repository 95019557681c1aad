"""Crash consistency of training runs: a kill at EVERY write boundary of a real tiny run.

``LATENTZOO_CRASH_AT=N`` makes the process ``os._exit`` at the N-th write boundary
(``core.contract.weights.crash_point``: before each atomic rename, and between the steps of a
checkpoint). For each N, the interrupted run must afterwards either resume with
``--resume`` to exactly the bytes of an uninterrupted run, or refuse ``--resume`` in one
line (no complete checkpoint yet) and then start cleanly to the same bytes: never a run
that neither starts nor resumes, and never step-k weights with step-j state.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

TRAIN = [
    "train",
    "vae",
    "--steps",
    "3",
    "--checkpoint-every",
    "1",
    "--batch-size",
    "8",
    "--lr",
    "1e-3",
    "--seed",
    "3",
    "--name",
    "tiny-vae",
    "--set",
    "block_out_channels=[8, 8]",
    "--set",
    "norm_num_groups=4",
    "--no-progress",
]
PUBLISHED = ("model.safetensors", "config.json", "metrics.json", "registry.yaml")


def published(out: Path) -> dict[str, str]:
    return {name: hashlib.sha256((out / name).read_bytes()).hexdigest() for name in PUBLISHED}


def train(cli, out: Path, *extra: str, crash: str | None = None):
    env = {"OMP_NUM_THREADS": "1", "LATENTZOO_CRASH_AT": crash}
    return cli(*TRAIN, "-o", str(out), *extra, env=env, timeout=300)


def _sweep(cli, tmp_path, select: str) -> None:
    """Kill at the boundaries ``select`` names: ``every`` one, each ``kind`` of boundary, or a ``sample``."""
    listed = train(cli, tmp_path / "reference", crash="list").assert_ok()
    boundaries = re.findall(r"crash point (\d+): (.*)", listed.stderr)
    assert len(boundaries) >= 3 * 6 + len(PUBLISHED), listed.stderr  # three checkpoints and the published files
    assert [int(n) for n, _ in boundaries] == list(range(1, len(boundaries) + 1))
    last = max(int(m.group(1)) for _, label in boundaries if (m := re.match(r"checkpoint (\d+):", label)))
    if select == "kind":
        # Checkpoints 2 and 3 pass the same boundaries as checkpoint 1 (the same code, a later
        # step): kill at each boundary of the first checkpoint, the last one's rename and
        # pruning, and every publish step.
        keep = ("checkpoint 1:", f"checkpoint {last}: renamed", f"checkpoint {last}: older")
        boundaries = [(n, label) for n, label in boundaries if label.startswith(keep) or not label.startswith("checkpoint")]
    elif select == "sample":
        # One boundary of each outcome: torn first checkpoint (restart), complete first checkpoint
        # (resume), the last checkpoint's pruning, and the last publish step (resume).
        keep = {"checkpoint 1: manifest written", "checkpoint 1: renamed into place", f"checkpoint {last}: older checkpoints pruned"}
        boundaries = [(n, label) for n, label in boundaries if label in keep] + [boundaries[-1]]
    expected = published(tmp_path / "reference")

    def crash_and_recover(n: str, label: str) -> str:
        out = tmp_path / f"crash-{n}"
        killed = train(cli, out, crash=n)
        assert killed.returncode == 77, f"boundary {n} ({label}) was not reached\n{killed}"
        assert f"crash point {n}: {label}: exiting" in killed.stderr
        resumed = train(cli, out, "--resume")
        if resumed.returncode == 0:
            outcome = "resumed"
        else:
            resumed.assert_one_line_error("--resume: no complete checkpoint")
            train(cli, out).assert_ok()  # a run without a complete checkpoint starts cleanly
            outcome = "restarted"
        assert published(out) == expected, f"after a kill at boundary {n} ({label}) the result differs from an uninterrupted run"
        steps = sorted(p.name for p in (out / "checkpoints").iterdir())
        assert steps == ["step-00000002", "step-00000003"], (label, steps)  # torn leftovers and old steps are gone
        return outcome

    # Independent cases, so they may run side by side (each in its own run directory).
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        results = list(pool.map(lambda b: crash_and_recover(*b), boundaries))
    outcomes = {label: outcome for (_, label), outcome in zip(boundaries, results, strict=True)}
    # Both paths were exercised: kills before the first checkpoint restart, later ones resume.
    assert set(outcomes.values()) == {"resumed", "restarted"}, outcomes
    assert outcomes["checkpoint 1: renamed into place"] == "resumed"
    assert outcomes["checkpoint 1: manifest written"] == "restarted"


def test_kill_at_a_boundary_of_each_outcome_resumes_exactly_or_starts_cleanly(cli, tmp_path):
    """The fast twin of the two sweeps below: four kills, each outcome exercised."""
    _sweep(cli, tmp_path, "sample")


@pytest.mark.slow
def test_kill_at_each_kind_of_write_boundary_resumes_exactly_or_starts_cleanly(cli, tmp_path):
    _sweep(cli, tmp_path, "kind")


@pytest.mark.slow
def test_kill_at_every_write_boundary_resumes_exactly_or_starts_cleanly(cli, tmp_path):
    _sweep(cli, tmp_path, "every")


def test_a_tampered_checkpoint_falls_back_to_the_previous_one(cli, tmp_path):
    out = tmp_path / "run"
    train(cli, out).assert_ok()
    expected = published(out)
    state = out / "checkpoints" / "step-00000003" / "state.json"
    data = json.loads(state.read_text())
    data["step"] = 2  # step-3 weights with step-2 state: must never be resumed
    state.write_text(json.dumps(data))
    result = train(cli, out, "--resume").assert_ok()
    assert "skipping a bad checkpoint" in result.stderr and "does not match its manifest" in result.stderr
    assert published(out) == expected  # resumed from step 2, retrained step 3: the same bytes

    for step in ("step-00000002", "step-00000003"):
        (out / "checkpoints" / step / "state.json").write_text("{not json")
    line = train(cli, out, "--resume").assert_one_line_error("no checkpoint in", "verifies")
    assert "state.json does not match its manifest" in line


def test_a_failed_train_leaves_no_run_directory(cli, tmp_path):
    out = tmp_path / "never"
    cli("train", "vae", "-o", str(out), "--set", "widths=3").assert_one_line_error("unknown vae option(s) widths")
    assert not out.exists()
    cli("train", "vae", "-o", str(out), "--data", str(tmp_path / "missing")).assert_one_line_error("no dataset or folder")
    assert not out.exists()
    existing = tmp_path / "mine"
    existing.mkdir()
    (existing / "notes.txt").write_text("keep me")
    cli("train", "vae", "-o", str(existing), "--set", "widths=3").assert_one_line_error("unknown vae option(s) widths")
    assert (existing / "notes.txt").read_text() == "keep me"
