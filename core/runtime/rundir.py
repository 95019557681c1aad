"""``-o DIR/`` of ``sample`` and the editing commands: batches committed as they finish, shared
among ranks, resumable (imports torch).

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
import os
import shutil
from collections.abc import Callable, Iterator
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

    mine = torch.tensor([list(bytes.fromhex(digest(key)))], dtype=torch.int64, device=world.device)  # NCCL gathers device tensors
    every = distributed.all_gather_cat(mine)
    every = every.cpu()
    differ = [r for r in range(world.size) if not torch.equal(every[r], every[0])]
    if differ:
        raise LatentzooError(
            f"ranks disagree on the request: rank(s) {', '.join(map(str, differ))} differ from rank 0 "
            "(pipeline, options, seed, -n, --batch-size, -o or --resume); give every rank the same command"
        )


# A rank's renderer: given its batches (each a list of indices, in order), yields each batch's images
# in [-1, 1] and what its manifest line records beside the files (re-ranking scores, ...).
Render = Callable[[list[list[int]]], Iterator[tuple[Any, dict[str, Any]]]]


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
    """``sample -o DIR/``: ``run_dir`` over the pipeline's batches (re-ranking scores and drawn captions in the manifest)."""

    def render(mine: list[list[int]]) -> Iterator[tuple[Any, dict[str, Any]]]:
        scores: list[float] = []
        drawn: list[int] = []
        # Batch k is indices k*B .. k*B+B-1 whoever renders it: chunks of B of this rank's
        # indices are exactly its batches (only the run's last batch is shorter, and it comes last).
        made = pipe.iter_batches(
            n, seed=seed, batch_size=batch_size, plan=plan, progress=progress, candidates=candidates, scores=scores,
            precision=precision, captions=drawn, indices=[i for batch in mine for i in batch],
        )  # fmt: skip
        taken = 0
        for images in made:
            extra: dict[str, Any] = {}
            if candidates is not None:
                extra["scores"] = scores[taken:]
                if drawn:
                    extra["captions"] = drawn[taken:]
                taken = len(scores)
            yield images, extra

    def finish(done: dict[str, Any], lines: list[dict[str, Any]]) -> dict[str, Any]:
        if candidates is None:
            return done
        scores = [s for line in lines for s in line.get("scores", [])]
        drawn = [c for line in lines for c in line.get("captions", [])]
        return {**done, "reranking": pipe.reranking_record(candidates, plan, scores, drawn)}

    request = {**request_of(record), "candidates": candidates}
    return run_dir(output, n, record, request, batch_size=batch_size, render=render, resume=resume, world=world, finish=finish)


def run_dir(
    output: str,
    n: int,
    record: dict[str, Any],
    request: dict[str, Any],
    *,
    batch_size: int,
    render: Render,
    resume: bool,
    world: Any,
    finish: Callable[[dict[str, Any], list[dict[str, Any]]], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Render outputs 0..n-1 into ``DIR/`` (the module doc), batch by batch, each rank its share;
    ``request`` (what a manifest is bound to, and what ranks must agree on) is compared, never the
    record's versions. ``finish(record, committed lines in batch order)`` adds to the sidecar."""
    from .images import to_uint8
    from .record import DIR_SIDECAR, SampleOutput, _check_sidecar, png_bytes

    out = SampleOutput(output, n=n)  # the checks of -o DIR/ (writable, no foreign samples.json); writes nothing
    rank, size = (world.rank, world.size) if world is not None else (0, 1)
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
            made = render([plan_batches[k] for k in mine])
            for k, (images, extra) in zip(mine, made, strict=True):
                files = {}
                for i, image in zip(plan_batches[k], to_uint8(images), strict=True):
                    data = png_bytes(image)
                    write_png(partial, file_name(i), data)
                    files[file_name(i)] = hashlib.sha256(data).hexdigest()
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
    for k in range(len(plan_batches)):
        sha.update(lines[k]["files"])
    record = {**record, "files": names, "files_sha256": {name: sha[name] for name in names}}
    if finish is not None:
        record = finish(record, [lines[k] for k in range(len(plan_batches))])
    text = json.dumps(record, indent=2, sort_keys=True, allow_nan=False) + "\n"
    try:
        (partial / DIR_SIDECAR).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise LatentzooError(f"cannot write {out.sidecar}: {exc.strerror or exc}; finished batches are kept, rerun with --resume") from exc
    _check_sidecar(out.sidecar, output)  # it may have appeared while sampling
    try:
        _move_into(partial, out.path, [*names, DIR_SIDECAR], output)
    finally:
        shutil.rmtree(partial, ignore_errors=True)  # the manifest and any temporaries of killed writers
    return record


def _move_into(partial: Path, directory: Path, names: list[str], output: str) -> None:
    """Rename ``partial/NAME`` to ``directory/NAME`` for each name, in order, as one unit: an existing
    destination is kept aside and restored if a later rename fails (weights.place's rule, with
    memory held only for the files kept aside: flat in the number of samples)."""
    src_dir, dest_dir = str(partial), str(directory)
    backups: dict[str, str] = {}
    count = 0
    try:
        for name in names:
            dest = os.path.join(dest_dir, name)
            if os.path.exists(dest):
                backups[name] = os.path.join(dest_dir, f".{name}.{os.getpid()}.bak")
                os.replace(dest, backups[name])
            count += 1
            os.replace(os.path.join(src_dir, name), dest)
    except OSError as exc:
        for name in reversed(names[:count]):
            try:
                if name in backups:
                    os.replace(backups[name], os.path.join(dest_dir, name))
                else:
                    os.unlink(os.path.join(dest_dir, name))
            except OSError:
                pass
        raise LatentzooError(f"cannot write {output}: {exc.strerror or exc} ({exc.filename}); nothing was written") from exc
    for backup in backups.values():
        try:
            os.unlink(backup)
        except OSError:
            pass


def gather_batches(world: Any, mine: list[int], made: Iterator[Any]) -> list[tuple[int, Any]] | None:
    """Rank 0: every rank's (batch number, payload) pairs, in batch order; the other ranks: None."""
    import torch.distributed as dist

    pairs = list(zip(mine, made, strict=True))
    gathered: list[Any] | None = [None] * world.size if world.is_main else None
    dist.gather_object(pairs, gathered, dst=0)
    if not world.is_main:
        return None
    assert gathered is not None
    return sorted((p for part in gathered for p in part), key=lambda p: p[0])


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


def write_job(
    job: Any,
    pipe: Any,
    output: str,
    *,
    inputs: list[str],
    names: list[str],
    nrow: int | None,
    frames: bool,
    batch_size: int,
    precision: str,
    resume: bool,
    world: Any,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """Write an editing command's Job (core.runtime.editing) to ``output``: ``DIR/`` through ``run_dir`` (its
    manifest bound to the request and the inputs' sha256); a grid rendered ``batch_size`` at a time,
    under several ranks each rendering its share of the batches and rank 0 assembling it. Returns
    the sidecar record (on ranks other than 0, the record without files)."""
    from .editing import Edit, EditStream, write
    from .pipeline import compute_precision
    from .seeding import SEEDING

    record = {
        **job.record, "n": job.n, "batch_size": batch_size, "precision": precision, "seeding": SEEDING, **extra,
        **({"inputs": names} if names else {}),
    }  # fmt: skip
    pipe.hold_weights(precision)

    def render(mine: list[list[int]]) -> Iterator[tuple[Any, dict[str, Any]]]:
        for indices in mine:
            with compute_precision(precision, pipe.device):
                images = job.render(indices)
            yield images.float(), {}

    if output.endswith(("/", os.sep)):
        request = {**request_of(record), **{k: record.get(k) for k in EDIT_KEYS}, "inputs_sha256": [_file_sha256(p) for p in inputs]}
        return run_dir(output, job.n, record, request, batch_size=batch_size, render=render, resume=resume, world=world)
    plan = batches(job.n, batch_size)
    if world is None or not world.distributed:
        made = EditStream(job.n, (images for images, _ in render(plan)), record)  # written batch by batch: flat in n
        return write(made, output, nrow=nrow, inputs=None, frames=frames)
    from .record import SampleOutput

    SampleOutput(output, n=job.n, nrow=nrow)  # refused alike on every rank before anything renders
    check_agreement({"request": request_of(record), "edit": {k: record.get(k) for k in EDIT_KEYS}, "output": output}, world)
    mine = share(len(plan), world.rank, world.size, set())
    gathered = gather_batches(world, mine, (images for images, _ in render([plan[k] for k in mine])))
    if gathered is None:
        return record
    return write(Edit(_cat([images for _, images in gathered]), record), output, nrow=nrow, inputs=None, frames=frames)


# The keys of an editing sidecar that, beside the sampling request's, bind a -o DIR/ manifest.
EDIT_KEYS = ("edit", "strength", "frames", "method", "inputs")


def _cat(parts: list[Any]) -> Any:
    import torch

    return torch.cat(parts)


def _file_sha256(path: str) -> str | None:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def partial_folder(output: str) -> Path:
    return Path(output) / PARTIAL


__all__ = ["PARTIAL", "check_agreement", "gather_batches", "partial_folder", "run_dir", "sample_dir", "sample_grid", "write_job"]
