"""DALL-E over the 16-code VQ-GAN (issue 15 item 1, the VQ-GAN half): digits-vqgan-dalle samples
prompted digits reproducibly, and its parts refuse to compose with the dVAE pipeline's parts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

PROMPT = "a seven"


def test_prompted_sampling_is_reproducible_and_recorded(cli, tmp_path: Path):
    outs = []
    for name, args in (("a", ["--prompt", PROMPT]), ("b", ["--prompt", PROMPT]), ("u", [])):
        out = tmp_path / f"{name}.png"
        cli("sample", "digits-vqgan-dalle", "-n", "4", "--seed", "3", "-o", str(out), "--no-progress", *args).assert_ok()
        outs.append(out)
    a, b, uncond = outs
    assert a.read_bytes() == b.read_bytes()  # same seed, same bytes
    assert a.read_bytes() != uncond.read_bytes()  # the prompt acts
    record = json.loads(a.with_suffix(".json").read_text())
    assert record["options"]["prompt"] == PROMPT
    assert record["components"]["prior"] == "digits-vqgan-dalle-prior" and record["components"]["decoder"] == "digits-vqgan-k16"
    assert record["components"]["conditioner"] == "digits-vqgan-dalle-text" and "digits-vqgan-dalle-text" in record["sha256"]
    assert "prompt" not in json.loads(uncond.with_suffix(".json").read_text())["options"]


@pytest.mark.parametrize(
    ("target", "args", "fragments"),
    [
        # 16-code prior vs the dVAE's 128-code decoder, and the other way round
        ("digits-vqgan-dalle", ["--decoder", "digits-dvae"], ["prior digits-vqgan-dalle-prior vs decoder digits-dvae"]),
        ("digits-dalle", ["--decoder", "digits-vqgan-k16"], ["prior digits-dalle-prior vs decoder digits-vqgan-k16"]),
        # a caption-token embedding is the prior's own half: another one (same kind, width, length) is refused
        ("digits-vqgan-dalle", ["--conditioner", "digits-dalle-text"], ["conditioner digits-dalle-text vs prior digits-vqgan-dalle-prior"]),
        ("digits-dalle", ["--conditioner", "digits-vqgan-dalle-text"], ["conditioner digits-vqgan-dalle-text vs prior digits-dalle-prior"]),
        ("digits-vqgan-dalle", ["--class", "3"], ["unknown option 'class_label'"]),
    ],
)
def test_mismatched_parts_are_refused_in_one_line(cli, tmp_path: Path, target: str, args: list[str], fragments: list[str]):
    out = tmp_path / "x.png"
    cli("sample", target, "-o", str(out), "--no-progress", "--prompt", PROMPT, *args).assert_one_line_error(*fragments)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config", "cwd"]


def test_prompted_digits_read_as_the_prompt():
    """Shipped quality, small: 10 draws per digit at the pipeline defaults, read by the digit classifier
    (benchmarks/dalle.py --pipeline digits-vqgan-dalle measures 92.5 % of 200; chance is 10 %)."""
    import torch

    import latentzoo
    from latentzoo.plugins.datasets.evaluate import predicted_labels

    torch.set_num_threads(1)
    pipe = latentzoo.load_pipeline("digits-vqgan-dalle")
    names = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
    hits = sum(int((predicted_labels(pipe.sample(10, seed=0, prompt=f"a {n}")) == d).sum()) for d, n in enumerate(names))
    assert hits >= 80, hits
