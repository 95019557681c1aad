"""digits-captions (attributes measured from the image, binned by training terciles) and
captioned folders (.txt beside images, metadata.jsonl)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from latentzoo.core.contract.errors import LatentzooError  # noqa: E402
from latentzoo.core.runtime.captions import CaptionedFolder, load_captioned  # noqa: E402
from latentzoo.plugins.datasets import captions as dc  # noqa: E402


def canvas() -> torch.Tensor:
    return torch.full((1, 1, 32, 32), -1.0)


def bar(width: int, shear: float = 0.0, x0: int = 14) -> torch.Tensor:
    """A vertical stroke of ``width`` pixels from row 4 to 27, sheared by ``shear`` pixels per row (top to the right)."""
    img = canvas()
    for y in range(4, 28):
        x = round(x0 + shear * (16 - y))
        img[0, 0, y, max(0, x) : x + width] = 1.0
    return img


def test_thickness_measures_stroke_width() -> None:
    for w in (2, 4, 6):
        t = float(dc.measure(bar(w))["thickness"][0])
        assert abs(t - w) < 0.25 * w + 0.5, (w, t)  # 2A/P = w * l / (l + w) for an l x w bar
    assert dc.measure(bar(2))["thickness"] < dc.measure(bar(6))["thickness"]


def test_slant_measures_shear_angle() -> None:
    upright, slanted = dc.measure(bar(3))["slant"][0], dc.measure(bar(3, shear=0.4))["slant"][0]
    assert float(upright) < 1.0
    assert abs(float(slanted) - math.degrees(math.atan(0.4))) < 3.0  # atan of the shear
    left = dc.measure(bar(3, shear=-0.4))["slant"][0]
    assert abs(float(left) - float(slanted)) < 1.0  # |angle|: leaning either way is slanted


def test_width_is_bounding_box_width() -> None:
    assert float(dc.measure(bar(3))["width"][0]) == 3
    assert float(dc.measure(bar(3, shear=0.4))["width"][0]) > 10


def test_words_follow_measurements_on_real_digits() -> None:
    """On held-out digits, every attribute's upper-word images measure higher than its lower-word
    images of the same class, nearly always (bins use the *training* terciles)."""
    held = dc.load("test")
    for attr, (lo, hi) in dc.WORDS.items():
        values = held.attributes[attr]
        wins = total = 0
        for c in range(10):
            low = [float(values[i]) for i in range(len(held)) if held.labels[i] == c and held.words[i].get(attr) == lo]
            high = [float(values[i]) for i in range(len(held)) if held.labels[i] == c and held.words[i].get(attr) == hi]
            if low and high:
                total += 1
                wins += min(high) > max(low)
        assert total >= 8 and wins == total, attr


def test_captions_name_the_digit_and_only_its_words() -> None:
    data = dc.load("train")
    all_words = {w for pair in dc.WORDS.values() for w in pair}
    for i in range(0, len(data), 7):
        text, label = data.captions[i], int(data.labels[i])
        tokens = set(text.replace(",", " ").split())
        assert dc.NAMES[label] in tokens or str(label) in tokens, text
        assert tokens & all_words <= set(data.words[i].values()), (text, data.words[i])
    phrasings = {c.split()[0] for c in data.captions}
    assert {"a", "the"} <= phrasings and any(c[0].isdigit() for c in data.captions)


def test_captions_are_deterministic_per_image_and_seed() -> None:
    a, b = dc.load("test"), dc.load("test")
    assert a.captions == b.captions
    assert dc.load("test", seed=1).captions != a.captions
    full = dc.load("all")  # an image's caption does not depend on the split it is loaded through
    where = {int(j): k for k, j in enumerate(full.index)}
    assert all(full.captions[where[int(j)]] == a.captions[k] for k, j in enumerate(a.index))
    assert torch.equal(a.images, load_captioned("digits-captions", split="test").images)
    variants = a.variants(4)
    assert len(variants) == len(a) and all(len(v) == 4 for v in variants) and variants[0][0] == a.captions[0]


def write_png(path: Path, value: int = 200) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (32, 32), value).save(path)


def test_folder_with_txt_and_metadata_jsonl(tmp_path: Path) -> None:
    write_png(tmp_path / "a.png")
    (tmp_path / "a.txt").write_text("a thick seven\n")
    write_png(tmp_path / "sub" / "b.png")
    write_png(tmp_path / "sub" / "c.png")
    (tmp_path / "sub" / "metadata.jsonl").write_text(
        json.dumps({"file_name": "b.png", "text": "a thin one"}) + "\n" + json.dumps({"file_name": "c.png", "text": "7, wide"}) + "\n"
    )
    data = load_captioned(str(tmp_path))
    assert [p.name for p in data.files] == ["a.png", "b.png", "c.png"]
    assert data.captions == ["a thick seven", "a thin one", "7, wide"]
    assert data.images.shape == (3, 1, 32, 32)


def test_uncaptioned_images_error_or_skip(tmp_path: Path) -> None:
    write_png(tmp_path / "a.png")
    (tmp_path / "a.txt").write_text("a seven")
    for name in ("b.png", "c.png", "d.png", "e.png"):
        write_png(tmp_path / name)
    with pytest.raises(LatentzooError, match=r"4 of 5 image\(s\) .* no caption \(b.png, c.png, d.png, ...\).*--skip-uncaptioned"):
        CaptionedFolder(tmp_path, size=32, channels=1)
    with pytest.warns(UserWarning, match="skipping 4 uncaptioned"):
        data = CaptionedFolder(tmp_path, size=32, channels=1, skip_uncaptioned=True)
    assert data.captions == ["a seven"] and len(data) == 1


@pytest.mark.parametrize(
    "line",
    ["not json", json.dumps({"file_name": "a.png"}), json.dumps(["a.png", "text"]), json.dumps({"file_name": 3, "text": "x"})],
)
def test_bad_metadata_jsonl_is_one_line_error(tmp_path: Path, line: str) -> None:
    write_png(tmp_path / "a.png")
    (tmp_path / "metadata.jsonl").write_text(line + "\n")
    with pytest.raises(LatentzooError, match=r"metadata.jsonl:1:"):
        load_captioned(str(tmp_path))


def test_dataset_without_captions_is_refused() -> None:
    with pytest.raises(LatentzooError, match="has no captions"):
        load_captioned("digits")
    with pytest.raises(LatentzooError, match="no dataset or folder"):
        load_captioned("no-such-dataset")


def test_cli_train_clip_refuses_uncaptioned_folder_and_writes_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    for name in ("a.png", "b.png"):
        write_png(folder / name)
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(
        [sys.executable, "-m", "latentzoo", "train", "clip", "--data", str(folder), "-o", str(out), "--steps", "1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "2 of 2 image(s)" in lines[0] and "Traceback" not in r.stderr
    assert not out.exists()
