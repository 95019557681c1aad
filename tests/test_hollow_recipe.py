"""The ``digits-hollow`` data recipe (tools/digits_hollow.py): the loop count it curates by, and the
folder it writes, on synthetic shapes and on the real digits."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

TOOL = Path(__file__).resolve().parents[1] / "tools" / "digits_hollow.py"


@pytest.fixture(scope="module")
def hollow():
    spec = importlib.util.spec_from_file_location("digits_hollow", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def shapes() -> dict[str, tuple[torch.Tensor, int, int]]:
    """name -> (mask 1x1x16x16, loops, components)."""
    out = {}
    bar = torch.zeros(16, 16, dtype=torch.bool)
    bar[2:14, 7:9] = True
    ring = torch.zeros(16, 16, dtype=torch.bool)
    ring[2:10, 3:11] = True
    ring[4:8, 5:9] = False
    eight = ring.clone()
    eight[9:15, 3:11] = True
    eight[11:13, 5:9] = False
    corner = torch.zeros(16, 16, dtype=torch.bool)  # a ring cut by the frame: no loop
    corner[0:6, 0:6] = True
    corner[0:4, 0:4] = False
    two = bar.clone()
    two[2:4, 1:4] = True  # a second blob, not touching the bar (8-connected)
    diag = torch.zeros(16, 16, dtype=torch.bool)  # touching only at corners: one 8-connected stroke
    for i in range(10):
        diag[3 + i, 3 + i] = True
    for name, mask, n_loops, n_parts in (("bar", bar, 0, 1), ("ring", ring, 1, 1), ("eight", eight, 2, 1),
                                          ("corner", corner, 0, 1), ("two", two, 0, 2), ("diag", diag, 0, 1)):  # fmt: skip
        out[name] = (mask[None, None], n_loops, n_parts)
    return out


@pytest.mark.parametrize("name", list(shapes()))
def test_loops_and_components_count_synthetic_shapes(hollow, name):
    mask, n_loops, n_parts = shapes()[name]
    assert int(hollow.loops(mask)[0]) == n_loops
    assert int(hollow.components(mask)[0]) == n_parts


def test_curated_digits_keep_their_loops(hollow):
    """On digits[train] the eights kept have two loops at the data's level, the ones none, and the
    curation drops most of the eights whose loops fill in (the reason for it)."""
    from latentzoo.plugins.datasets.digits import load

    data = load("train", 32, 1)
    keep = hollow.curated(data.images, data.labels)
    region = data.images > hollow.DATA_LEVEL
    loops = hollow.loops(region)
    assert (loops[keep & (data.labels == 8)] == 2).all()
    assert (loops[keep & (data.labels == 1)] == 0).all()
    eights = data.labels == 8
    assert 0.2 < float(keep[eights].float().mean()) < 0.6  # most eights' loops fill in at 32x32
    assert float(keep[data.labels == 2].float().mean()) > 0.9


def test_typical_keeps_the_commonest_shape(hollow):
    """Five bars and two odd shapes (a hook, a cross): the five closest to the mean are the bars."""
    x = -torch.ones(7, 1, 16, 16)
    x[:, :, 2:14, 7:9] = 1.0  # every image: a bar
    x[5, :, 2:5, 3:7] = 1.0  # a hook
    x[6, :, 7:9, 2:14] = 1.0  # a crossbar
    order = torch.randperm(7, generator=torch.Generator().manual_seed(0))
    picked = order[hollow.typical(x[order], 5)]
    assert sorted(picked.tolist()) == [0, 1, 2, 3, 4]


def test_data_folder_is_balanced_and_captioned(hollow, tmp_path):
    """``data`` writes n PNGs with captions, n / 10 of each digit, every image hollow by the measure."""
    hollow.make(tmp_path, 40)
    captions = sorted(p.read_text().strip() for p in tmp_path.glob("*.txt"))
    assert len(captions) == 40 and len(list(tmp_path.glob("*.png"))) == 40
    assert {c: captions.count(c) for c in captions} == {f"a hollow {w}": 4 for w in hollow.NAMES}
    images = hollow.load_pngs(sorted(tmp_path.glob("*.png")))
    assert (hollow.hollowness(images) > hollow.HOLLOW).float().mean() >= 0.95


def test_blind_grids_keep_the_key_and_score_counts_the_reading(hollow, tmp_path):
    """``blind`` shuffles two files of digit-major samples together into grids of 50, with each
    cell's digit and file in the key (checked by marking each sample with both); ``score`` counts
    read, unsure and misread per file, and refuses answers of the wrong length."""
    import json

    import numpy as np
    from PIL import Image

    n = 12  # samples per digit; the first 10 of each are shown
    for source in (0, 1):
        x = -torch.ones(10 * n, 1, 32, 32)
        for d in range(10):
            x[d * n : (d + 1) * n, :, 0, : d + 1] = 1.0  # digit d: d + 1 bright pixels in the first row
        x[:, :, 31, : source + 1] = 1.0  # file i: i + 1 bright pixels in the last row
        torch.save(x, tmp_path / f"{source}.pt")
    hollow.blind([tmp_path / "0.pt", tmp_path / "1.pt"], tmp_path / "grids", tmp_path / "key.json")
    key = json.loads((tmp_path / "key.json").read_text())
    assert sorted(key["digit"]) == sorted(list(range(10)) * 20) and key["source"].count(1) == 100
    assert sorted(p.name for p in (tmp_path / "grids").iterdir()) == [f"grid-{k}.png" for k in range(1, 5)]
    digits, sources = [], []
    for k in range(1, 5):  # 5 x 10 tiles of 96 pixels (3x), 2 pixels apart
        grid = np.asarray(Image.open(tmp_path / "grids" / f"grid-{k}.png").convert("L"))
        for r in range(5):
            for c in range(10):
                y0, x0 = 2 + r * 98, 2 + c * 98
                digits.append(int((grid[y0, x0 : x0 + 96] > 127).sum()) // 3 - 1)
                sources.append(int((grid[y0 + 95, x0 : x0 + 96] > 127).sum()) // 3 - 1)
    assert digits == key["digit"] and sources == key["source"]  # each cell shows what its key names
    assert key["source"] != sorted(key["source"])  # the files are interleaved
    answers = [str(d) for d in key["digit"]]
    first = [i for i, s in enumerate(key["source"]) if s == 0]
    answers[first[0]], answers[first[1]] = "?", str((key["digit"][first[1]] + 1) % 10)
    (tmp_path / "a.txt").write_text(" ".join(answers))
    rows = hollow.score(tmp_path / "key.json", tmp_path / "a.txt")
    assert [(r["read"], r["unsure"], r["misread"]) for r in rows] == [(0.98, 0.01, 0.01), (1.0, 0.0, 0.0)]
    (tmp_path / "short.txt").write_text("1 2 3")
    with pytest.raises(SystemExit, match="3 answers for 200 cells"):
        hollow.score(tmp_path / "key.json", tmp_path / "short.txt")
