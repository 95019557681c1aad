"""Per-index seeds (core.runtime.seeding, scheme per-index/1): sample i's pixels come from (seed, i) alone.

``-n 6`` is the first 6 of ``-n 12``; ``--batch-size 5`` and ``--batch-size 12`` agree within one
grey level (bit-identical where the batch shapes match); every stochastic draw (DDIM eta > 0,
DDPM, ancestral and Brownian SDE noise, drawn classes and captions, re-ranking candidates, the
unCLIP decoder's noise) follows the index, not the batch.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")

from latentzoo.core.runtime import seeding  # noqa: E402


@pytest.fixture
def cli(capsys, monkeypatch, tmp_path, helpers):
    config = tmp_path / "lz-config"
    config.mkdir()
    for key in [k for k in __import__("os").environ if k.startswith("LATENTZOO_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config))
    return helpers.in_process_cli(capsys)


def pixels(folder: Path) -> list[np.ndarray]:
    files = json.loads((folder / "samples.json").read_text())["files"]
    return [np.asarray(Image.open(folder / f)).astype(np.int16) for f in files]


def run(cli, tmp_path: Path, name: str, pipeline: str, *args: str) -> list[np.ndarray]:
    out = tmp_path / name
    cli("sample", pipeline, "--seed", "7", "-o", f"{out}/", "--no-progress", *args).assert_ok()
    return pixels(out)


# -- the helpers -------------------------------------------------------------------------


def test_row_generators_draw_each_row_from_its_own_key():
    keys = [(i, 0) for i in range(5)]
    whole = seeding.RowGenerators.for_samples(3, keys)
    x = seeding.randn((5, 2, 3), whole)
    part = seeding.randn((2, 2, 3), seeding.RowGenerators.for_samples(3, keys[3:]))
    assert torch.equal(x[3:], part)  # row 3 is (seed 3, index 3) whatever batch it is in
    assert not torch.equal(x[0], x[1])
    # later draws too: a randint / multinomial row follows its generator's stream
    a = seeding.RowGenerators.for_samples(3, keys)
    b = seeding.RowGenerators.for_samples(3, keys[2:4])
    seeding.randn((5, 4), a), seeding.randn((2, 4), b)
    assert seeding.randint(10, 5, a)[2:4].tolist() == seeding.randint(10, 2, b).tolist()
    probs = torch.rand(5, 7)
    assert torch.equal(seeding.multinomial(probs, a)[2:4], seeding.multinomial(probs[2:4], b))
    # a candidate has its own key; candidate 0 is the plain sample
    assert seeding.index_seed(3, 1, 0) != seeding.index_seed(3, 1, 1) != seeding.index_seed(4, 1, 1)
    # a plain torch.Generator draws as torch does
    assert torch.equal(
        seeding.randn((2, 3), torch.Generator().manual_seed(1)), torch.randn((2, 3), generator=torch.Generator().manual_seed(1))
    )
    with pytest.raises(ValueError):
        seeding.randn((4, 2), whole)


def test_brownian_rows_follow_their_own_seed():
    from latentzoo.plugins.ksampling.brownian import BrownianTree

    both = BrownianTree(0.1, 10.0, torch.Size((2, 3)), [11, 12])
    one = BrownianTree(0.1, 10.0, torch.Size((1, 3)), [12])
    assert torch.equal(both(2.5)[1:], one(2.5))


# -- the CLI: -n, --batch-size, the stochastic draws ---------------------------------------


def test_first_six_of_twelve_and_any_batch_size(cli, tmp_path):
    """digits-vqgan-ar: a token sampler with a drawn class per sample (random_class) and a multinomial per code."""
    twelve = run(cli, tmp_path, "twelve", "digits-vqgan-ar", "-n", "12", "--batch-size", "12")
    six = run(cli, tmp_path, "six", "digits-vqgan-ar", "-n", "6", "--batch-size", "12")
    fives = run(cli, tmp_path, "fives", "digits-vqgan-ar", "-n", "12", "--batch-size", "5")
    assert all(np.array_equal(a, b) for a, b in zip(six, twelve[:6], strict=True))  # same batch shape here: bit-identical
    assert max(int(np.abs(a - b).max()) for a, b in zip(fives, twelve, strict=True)) <= 1
    assert len({a.tobytes() for a in twelve}) == 12  # fresh samples, not copies


@pytest.mark.parametrize(
    "pipeline,args",
    [
        ("digits", ["--steps", "3", "--eta", "1.0"]),  # DDIM ancestral noise
        ("digits", ["--steps", "3", "--sampler", "ddpm"]),
        ("digits", ["--steps", "3", "--sampler", "euler-ancestral", "--scheduler", "karras"]),
        ("digits", ["--steps", "3", "--sampler", "dpmpp-sde", "--scheduler", "karras"]),  # Brownian tree per row
        ("digits-dalle", ["--temperature", "0.9"]),  # drawn captions (random_prompt)
        ("digits-unclip", ["--steps", "2", "--prompt", "a seven"]),  # a stochastic decoder
    ],
)
def test_stochastic_draws_follow_the_index(cli, tmp_path, pipeline, args):
    whole = run(cli, tmp_path, "whole", pipeline, "-n", "4", "--batch-size", "4", *args)
    split = run(cli, tmp_path, "split", pipeline, "-n", "4", "--batch-size", "2", *args)
    head = run(cli, tmp_path, "head", pipeline, "-n", "2", "--batch-size", "2", *args)
    assert max(int(np.abs(a - b).max()) for a, b in zip(whole, split, strict=True)) <= 1
    assert all(np.array_equal(a, b) for a, b in zip(head, split[:2], strict=True))  # same batch shape: bit-identical
    assert len({a.tobytes() for a in whole}) == 4


def test_reranking_candidates_follow_the_index(cli, tmp_path):
    args = ["--candidates", "2", "--prompt", "a seven"]
    whole = run(cli, tmp_path, "whole", "digits-dalle", "-n", "3", "--batch-size", "3", *args)
    split = run(cli, tmp_path, "split", "digits-dalle", "-n", "3", "--batch-size", "1", *args)
    assert max(int(np.abs(a - b).max()) for a, b in zip(whole, split, strict=True)) <= 1


def test_sidecar_records_the_seeding_scheme(cli, tmp_path):
    out = tmp_path / "one"
    cli("sample", "digits-vae", "-n", "2", "-o", f"{out}/", "--no-progress").assert_ok()
    assert json.loads((out / "samples.json").read_text())["seeding"] == "per-index/1"
