"""Maintainer tool: ship a trained run as a built-in component.

    python tools/ship.py runs/vq digits-vqgan

Copies RUN/model.safetensors to weights/NAME.safetensors, and writes the run's registry
entry (renamed NAME, weights path rewritten, sha256 re-checked) into registry.yaml.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import yaml

from latentzoo.core.contract.weights import sha256_file, write_bytes

ROOT = Path(__file__).resolve().parent.parent


def ship(run: Path, name: str) -> None:
    fragment = yaml.safe_load((run / "registry.yaml").read_text())["components"]
    (entry,) = fragment.values()
    target = ROOT / "weights" / f"{name}.safetensors"
    shutil.copyfile(run / "model.safetensors", target)
    sha = sha256_file(target)
    if sha != entry["weights"]["sha256"]:
        raise SystemExit(f"{target}: sha256 differs from the run's registry entry")
    entry["weights"] = {"path": f"weights/{name}.safetensors", "sha256": sha}
    text = (ROOT / "registry.yaml").read_text()
    header, _, body = text.partition("version: 1\n")
    registry = yaml.safe_load("version: 1\n" + body)
    registry["components"][name] = entry
    dumped = yaml.safe_dump(registry, sort_keys=False, width=140, default_flow_style=None)
    write_bytes(ROOT / "registry.yaml", (header + dumped).encode())
    print(f"shipped {name}: {target.relative_to(ROOT)} ({target.stat().st_size / 1e6:.2f} MB, sha256 {sha[:12]}...)")


if __name__ == "__main__":
    ship(Path(sys.argv[1]), sys.argv[2])
