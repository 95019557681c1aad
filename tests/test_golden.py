"""Same request, same bytes: every shipped pipeline, one small fixed request, the sha256 of its PNG.

These hashes pin the pixels through refactors of the request path (issue 28). A change that
moves them must say why in its commit and update ``GOLDEN`` in that same commit. To record
them again: ``LATENTZOO_GOLDEN_PRINT=1 pytest -q -s tests/test_golden.py`` prints the table.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import yaml

pytest.importorskip("torch")

REPO = Path(__file__).resolve().parents[1]
FAST = ["-n", "2", "--seed", "7", "--no-progress"]

# request id -> argv after `latentzoo sample` (output added by the test)
REQUESTS: dict[str, list[str]] = {
    "digits": ["digits", "--steps", "3", *FAST],
    "digits-vae": ["digits-vae", *FAST],
    "digits-cond": ["digits-cond", "--steps", "3", "--class", "3", "--guidance", "2", *FAST],
    "digits-kl-ldm": ["digits-kl-ldm", "--steps", "3", *FAST],
    "digits-dalle": ["digits-dalle", "--prompt", "a seven", *FAST],
    "digits-vqgan-ar": ["digits-vqgan-ar", *FAST],
    "digits-vqgan-dalle": ["digits-vqgan-dalle", "--prompt", "a two", *FAST],
    "digits-flow": ["digits-flow", "--steps", "3", *FAST],
    "digits-unclip": ["digits-unclip", "--steps", "3", "--prompt", "a seven", *FAST],
    "digits-t2i": ["digits-t2i", "--steps", "3", "--prompt", "a thick seven", *FAST],
    # distilled students (issue 25), each at the sampling it was distilled for
    "digits-fast": ["digits-fast", *FAST],
    "digits-fast-2": ["digits-fast-2", *FAST],
    "digits-fast-1": ["digits-fast-1", *FAST],
    "digits-t2i-fast": ["digits-t2i-fast", "--prompt", "a thick seven", "--guidance", "2", *FAST],
    # a part swap (and its dropped default), and one image to a file
    "digits+euler": ["digits", "--sampler", "euler", "--scheduler", "karras", "--steps", "3", *FAST],
    "digits-n1": ["digits", "--steps", "3", "-n", "1", "--seed", "7", "--no-progress"],
}

# request id -> sha256 of the PNG written; recorded again for seeding per-index/1 (issue 26: sample i from (seed, i), which moved every pixel once)
GOLDEN: dict[str, str] = {
    "digits": "81c117c21d5861de18ba9f1fb254890d9a44cdf130d9b3980d7b8e18c2a8ed40",
    "digits+euler": "bd96631a4e20f2863abb7eb0662752fc782e471ffdbc0e7d6a74967dff46996e",
    "digits-cond": "2aaaceff09d56dab43b6c634402977019db55522b9d9e26720de8197f18454c9",
    "digits-dalle": "f5a3f5b820f45e03212f466c9401dca7e38703fec8ee4595f08d6b5b4140480b",
    "digits-fast": "dfdca110dcc87e05dfd632aacd7e5e3bfb654f5fa4748f1e75023e420313ca24",
    "digits-fast-1": "a5c2137d3db2598865b070a4bb135441a613bfb217166caf36e0229ec473b25f",
    "digits-fast-2": "7b64fdaaa3dafe8a981669f30712cc38af5231b45ccad2355549e1ab941a3418",
    "digits-t2i-fast": "920d17cf65763641d66082c0cad65094b3024f91caf101cdfc47088c7f2410a2",
    "digits-flow": "1d1a0be528fa914a5050050adc19406f63951ee6dd8f88a4b9825a9766b3f140",
    "digits-kl-ldm": "4cd4a579347592a2e041249602667ed86322770580ad5e0728efbcc6e09b7048",
    "digits-n1": "8af02e4db7f4c8d03b3dd6bfc6d47741b077fcc8cbe287caf589523e70fd68d1",
    "digits-t2i": "2d75318f787ff9ed5d577570ae3015444147c290acfe48eccb16c8f20cb9af2d",
    "digits-unclip": "5a29d50fa03fd78e5592f4614e62a83d235caffa192a6ab280fc962b87c7c971",
    "digits-vae": "477674cd8a850adc7e32b32b0d735e8a9c98a06d461177a0d3ba03df305c1a3a",
    "digits-vqgan-ar": "70fed746b9235ea992b8a183a4c82e5614d3c721aa2cff1eb51d4dd8eefc134b",
    "digits-vqgan-dalle": "15803afaec018c82d489695d74b5d02474bb927d203734b7739e5e75fe40448d",
}


def test_every_shipped_pipeline_has_a_golden_request():
    shipped = set(yaml.safe_load((REPO / "registry.yaml").read_text())["pipelines"])
    assert shipped <= set(REQUESTS), f"add a golden request for {sorted(shipped - set(REQUESTS))}"


@pytest.fixture(autouse=True)
def one_thread():
    """The hashes are for one torch thread: CPU kernels may round differently with another thread
    count (the same request at 1 and 2 threads can differ in a grey level), so pin it."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("key", sorted(REQUESTS))
def test_same_request_same_bytes(key, capsys, tmp_path, monkeypatch, helpers):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    out = tmp_path / "x.png"
    result = helpers.in_process_cli(capsys)("sample", *REQUESTS[key], "-o", str(out))
    assert result.returncode == 0, result.stderr
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    if os.environ.get("LATENTZOO_GOLDEN_PRINT"):
        with capsys.disabled():
            print(f'    "{key}": "{digest}",')
    assert digest == GOLDEN.get(key), f"{key}: the bytes changed (sha256 {digest}); if on purpose, say why and update GOLDEN"
