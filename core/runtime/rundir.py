"""``sample -o DIR/``: batches committed as they finish, shared among ranks, resumable (imports torch).

The run writes into ``DIR/.latentzoo-partial/``: the manifest (core.runtime.manifest) and the PNG of
every finished batch. When every batch of every rank is committed, rank 0 verifies them,
writes the sidecar and renames the files and the sidecar into ``DIR/`` as one unit (an earlier
result there is restored if a rename fails), then removes the partial folder. A run that
fails keeps the partial folder when it holds finished batches (``--resume`` continues it);
one that committed nothing leaves nothing. Under several ranks (and nodes) ``DIR/`` must be on a
filesystem every rank sees.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from ..contract.errors import LatentzooError
from .manifest import Manifest, batches, check_resume, digest, file_name, request_of, share, write_png

PARTIAL = ".latentzoo-partial"


def check_agreement(key: dict[str, Any], world: Any) -> None:
    """Refuse, on every rank, ranks that were given different requests (compared by sha256)."""
    if world is None or not world.distributed:
        return
    import torch

    from . import distributed

    mine = torch.tensor([list(bytes.fromhex(digest(key)))], dtype=torch.int64)
    every = distributed.all_gather_cat(mine)
    differ = [r for r in range(world.size) if not torch.equal(every[r], every[0])]
    if differ:
        raise LatentzooError(
            f"ranks disagree on the request: rank(s) {', '.join(map(str, differ))} differ from rank 0 "
            "(pipeline, options, seed, -n, --batch-size, -o or --resume); give every rank the same command"
        )


def sample_dir(
    pipe: Any,
    output: str,
    n: int,
    record: dict[str, Any],
    *,
    seed: int,
    batch_size: int,
    plan: Any,
    progress: Any,
    candidates: int | None,
    precision: str,
    resume: bool,
    world: Any,
) -> dict[str, Any]:
    from .images import to_uint8
    from .record import DIR_SIDECAR, SampleOutput, _check_sidecar, _replace_all, png_bytes

    out = SampleOutput(output, n=n)  # the checks of -o DIR/ (writable, no foreign samples.json); writes nothing
    rank, size = (world.rank, world.size) if world is not None else (0, 1)
    request = {**request_of(record), "candidates": candidates}
    check_agreement({"request": request, "output": output, "resume": resume}, world)
    partial = out.path / PARTIAL
    manifest = Manifest(partial, output)
    done = check_resume(manifest, request, resume)  # every rank reads the same state, so refuses alike
    barrier = world.barrier if world is not None else (lambda: None)
    barrier()
    started = False
    if rank == 0 and manifest.exists():
        manifest.drop_cut_line()
    elif rank == 0:
        out._mkdirs(partial)
        manifest.start(request)
        started = True
    barrier()
    plan_batches = batches(n, batch_size)
    mine = share(len(plan_batches), rank, size, done)
    committed = 0
    try:
        if mine:
            scores: list[float] = []
            drawn: list[int] = []
            indices = [i for k in mine for i in plan_batches[k]]
            # Batch k is indices k*B .. k*B+B-1 whoever renders it: chunks of B of this rank's
            # indices are exactly its batches (only the run's last batch is shorter, and it comes last).
            made = pipe.iter_batches(
                n,
                seed=seed,
                batch_size=batch_size,
                plan=plan,
                progress=progress,
                candidates=candidates,
                scores=scores,
                precision=precision,
                captions=drawn,
                indices=indices,
            )
            taken = 0
            for k, images in zip(mine, made, strict=True):
                files = {}
                for i, image in zip(plan_batches[k], to_uint8(images), strict=True):
                    data = png_bytes(image)
                    write_png(partial, file_name(i), data)
                    files[file_name(i)] = hashlib.sha256(data).hexdigest()
                extra: dict[str, Any] = {}
                if candidates is not None:
                    extra["scores"] = scores[taken:]
                    if drawn:
                        extra["captions"] = drawn[taken:]
                    taken = len(scores)
                manifest.commit(k, plan_batches[k], files, extra)
                committed += 1
    except BaseException as exc:
        if started and committed == 0 and size == 1:  # nothing finished: leave nothing
            shutil.rmtree(partial, ignore_errors=True)
            out.abort()
        elif isinstance(exc, LatentzooError) and "--resume" not in str(exc):
            raise LatentzooError(f"{exc} (finished batches are kept in {partial}; rerun with --resume)") from exc
        raise
    barrier()
    if rank != 0:
        return record
    _, lines = manifest.read()
    verified = manifest.verified(lines)
    missing = [k for k in range(len(plan_batches)) if k not in verified]
    if missing:
        raise LatentzooError(
            f"{len(missing)} batch(es) of {output} were not finished (first: indices {plan_batches[missing[0]][0]}-"
            f"{plan_batches[missing[0]][-1]}); rerun with --resume"
        )
    names = [file_name(i) for i in range(n)]
    sha: dict[str, str] = {}
    scores_all: list[float] = []
    drawn_all: list[int] = []
    for k in range(len(plan_batches)):
        sha.update(lines[k]["files"])
        scores_all += lines[k].get("scores", [])
        drawn_all += lines[k].get("captions", [])
    record = {**record, "files": names, "files_sha256": {name: sha[name] for name in names}}
    if candidates is not None:
        record["reranking"] = pipe.reranking_record(candidates, plan, scores_all, drawn_all)
    text = json.dumps(record, indent=2, sort_keys=True, allow_nan=False) + "\n"
    try:
        (partial / DIR_SIDECAR).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise LatentzooError(f"cannot write {out.sidecar}: {exc.strerror or exc}; finished batches are kept, rerun with --resume") from exc
    _check_sidecar(out.sidecar, output)  # it may have appeared while sampling
    moves = [(partial / name, out.path / name) for name in names] + [(partial / DIR_SIDECAR, out.sidecar)]
    try:
        _replace_all(moves, output)
    finally:
        shutil.rmtree(partial, ignore_errors=True)  # the manifest and any temporaries of killed writers
    return record


def sample_grid(
    pipe: Any,
    output: str,
    n: int,
    nrow: int | None,
    record: dict[str, Any],
    *,
    seed: int,
    batch_size: int,
    plan: Any,
    progress: Any,
    candidates: int | None,
    precision: str,
    world: Any,
) -> dict[str, Any]:
    """``-o x.png`` under several ranks: each renders its share of the batches (as for ``DIR/``), rank 0
    gathers the uint8 tiles (the grid is held in memory on one process anyway) and writes the grid and
    its sidecar as one unit; the other ranks write nothing."""
    import torch.distributed as dist

    from .images import to_uint8
    from .record import SampleOutput

    out = SampleOutput(output, n=n, nrow=nrow)
    check_agreement({"request": {**request_of(record), "candidates": candidates}, "output": output, "nrow": nrow}, world)
    plan_batches = batches(n, batch_size)
    mine = share(len(plan_batches), world.rank, world.size, set())
    made: list[tuple[int, Any, list[float], list[int]]] = []  # (batch, uint8 tiles, kept scores, drawn captions)
    if mine:
        scores: list[float] = []
        drawn: list[int] = []
        indices = [i for k in mine for i in plan_batches[k]]
        rendered = pipe.iter_batches(
            n, seed=seed, batch_size=batch_size, plan=plan, progress=progress, candidates=candidates,
            scores=scores, precision=precision, captions=drawn, indices=indices,
        )  # fmt: skip
        taken = 0
        for k, images in zip(mine, rendered, strict=True):
            made.append((k, to_uint8(images), scores[taken:], drawn[taken:]))
            taken = len(scores)
    gathered: list[Any] | None = [None] * world.size if world.is_main else None
    dist.gather_object(made, gathered, dst=0)
    if not world.is_main:
        return record
    assert gathered is not None
    try:
        kept: list[float] = []
        captions: list[int] = []
        for _, tiles, batch_scores, batch_captions in sorted((p for part in gathered for p in part), key=lambda p: p[0]):
            out.add(tiles)
            kept += batch_scores
            captions += batch_captions
        if candidates is not None:
            record["reranking"] = pipe.reranking_record(candidates, plan, kept, captions)
        return out.commit(record)
    except BaseException:
        out.abort()
        raise


def partial_folder(output: str) -> Path:
    return Path(output) / PARTIAL


__all__ = ["PARTIAL", "check_agreement", "partial_folder", "sample_dir", "sample_grid"]
