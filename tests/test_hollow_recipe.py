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


def test_data_folder_is_balanced_and_captioned(hollow, tmp_path):
    """``data`` writes n PNGs with captions, n / 10 of each digit, every image hollow by the measure."""
    hollow.make(tmp_path, 40)
    captions = sorted(p.read_text().strip() for p in tmp_path.glob("*.txt"))
    assert len(captions) == 40 and len(list(tmp_path.glob("*.png"))) == 40
    assert {c: captions.count(c) for c in captions} == {f"a hollow {w}": 4 for w in hollow.NAMES}
    images = hollow.load_pngs(sorted(tmp_path.glob("*.png")))
    assert (hollow.hollowness(images) > hollow.HOLLOW).float().mean() >= 0.95
