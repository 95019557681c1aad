"""Copy students of a ``latentzoo distill`` run into the built-in registry (weights/ + registry.yaml).

    python tools/ship_distilled.py runs/digits-fast/registry.yaml digits-fast-4=digits-fast digits-fast-2 digits-fast-1
    python tools/ship_distilled.py runs/t2i-fast/registry.yaml digits-t2i-fast-4=digits-t2i-fast

Each argument names a pipeline of the run (``RUN_NAME=SHIPPED_NAME`` renames it); its prior is
copied to ``weights/SHIPPED_NAME-prior.safetensors`` (sha256 checked) and registered as
``SHIPPED_NAME-prior``, the pipeline as ``SHIPPED_NAME``. The entries are written as YAML text
(the rest of registry.yaml is left as it is): an entry already there of the same name (an earlier
shipping of the student) is replaced in place, a new one is appended to its section.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def block(name: str, body: dict) -> str:
    text = yaml.safe_dump({name: body}, sort_keys=False, width=140)
    return "".join(f"  {line}\n" for line in text.splitlines())


def put(section: str, name: str, text: str) -> str:
    """``section`` of the registry text (all of it between its header and the next) with ``name``'s block replaced or appended."""
    lines = section.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.startswith(f"  {name}:")), None)
    if start is None:
        return section.rstrip("\n") + "\n" + text
    end = start + 1
    while end < len(lines) and (lines[end].startswith("   ") or not lines[end].strip()):
        end += 1  # the entry's body: deeper-indented lines (and blank ones)
    return "".join(lines[:start]) + text + "".join(lines[end:])


def main(argv: list[str]) -> int:
    from latentzoo.core.contract.weights import sha256_file

    run_registry = Path(argv[0])
    doc = yaml.safe_load(run_registry.read_text(encoding="utf-8"))
    registry = ROOT / "registry.yaml"
    head, sep, pipelines = registry.read_text(encoding="utf-8").partition("\npipelines:\n")
    for arg in argv[1:]:
        source, _, shipped = arg.partition("=")
        shipped = shipped or source
        pipe = dict(doc["pipelines"][source])
        entry = dict(doc["components"][pipe["prior"]])
        weights = run_registry.parent / entry["weights"]["path"]
        if sha256_file(weights) != entry["weights"]["sha256"]:
            raise SystemExit(f"{weights} does not match its sha256")
        target = ROOT / "weights" / f"{shipped}-prior.safetensors"
        shutil.copyfile(weights, target)
        entry["weights"] = {"path": f"weights/{target.name}", "sha256": entry["weights"]["sha256"]}
        entry["training"] = {**entry.get("training", {}), "command": "docs/distillation.md"}
        pipe["prior"] = f"{shipped}-prior"
        head = put(head, f"{shipped}-prior", block(f"{shipped}-prior", entry))
        pipelines = put(pipelines, shipped, block(shipped, pipe))
    registry.write_text(head.rstrip("\n") + "\n" + sep.lstrip("\n") + pipelines.rstrip("\n") + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
