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
    # a part swap (and its dropped default), and one image to a file
    "digits+euler": ["digits", "--sampler", "euler", "--scheduler", "karras", "--steps", "3", *FAST],
    "digits-n1": ["digits", "--steps", "3", "-n", "1", "--seed", "7", "--no-progress"],
}

# request id -> sha256 of the PNG written (recorded on main before the typed request, issue 28)
GOLDEN: dict[str, str] = {
    "digits": "b619348df531bb35700b4f60476dbe2ce61e3fffb9f9e580db2f20866985ed35",
    "digits+euler": "0d1a0d0c630203002e82d01a1ec0d20108b2e06b0594eef4b4065193b995b49c",
    "digits-cond": "f708ca68c871c99959b2180f915bd146372b038d0c51416797fc45aaaf1f5721",
    "digits-dalle": "dc5a8539111f0cb51f09292bc34cc2e4775f77606c282d64e6890bcd4d6315df",
    "digits-flow": "211df0c110d23addb69bf77b473fd31e0af8490ece67b75a712b944679af9642",
    "digits-kl-ldm": "80217ed5d1d86a72628e553028d5e432774763721481675537133be894f60d46",
    # one image is that image at 32x32, not a padded 36x36 one-tile grid (issue 28, item 7): new bytes, same pixels inside
    "digits-n1": "24d862e9a42f6271a729d849a1077b95d046dec0a5506d23bdf56ecceb7d242c",
    "digits-t2i": "07d3c60a7c6fcff9d85be2b2f3310f1681e4f5e985afa33186317f1a257902ab",
    "digits-unclip": "93efd90fbeb4c57f3ea56b67ef93f4c8bba09c2ff8cae65cd4ac746d3b44ef26",
    "digits-vae": "8cad92a1a64e05d723c94dde7928effce3620e00136f059746895e693edee079",
    "digits-vqgan-ar": "baeb782a3d2a1bf218f51ab63e1a1674dd0467b7d05e96cebf6858098e4b6de4",
    "digits-vqgan-dalle": "4c3bc9f8c009ac467ef4a27ed766b999b28841b5f0271211bf2f09d98a30ff8c",
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
