"""One worker thread: runs queued jobs in order on warm pipelines, publishes their events, cancels within one step.

Built pipelines are kept in an LRU cache bounded by ``--cache-mb`` (parameter and buffer
bytes); the pipeline in use is never evicted. A job is cancelled by its own id only: a queued
one is dropped before it starts; the running one sees the flag at its next sampler step,
where the progress callback raises ``JobCancelled`` (the sampler stops, nothing is written:
the PNGs and sidecar are committed as one unit).
"""

from __future__ import annotations

import collections
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from latentzoo.core.contract.errors import LatentzooError

from . import adapter
from .store import JobStore


class PipelineCache:
    """Built pipelines by (pipeline, parts, precision class), least recently used evicted past ``limit_bytes``."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit = limit_bytes
        self.entries: collections.OrderedDict[tuple, tuple[Any, int]] = collections.OrderedDict()

    def get(self, key: tuple, build: Callable[[], Any]) -> Any:
        if key in self.entries:
            self.entries.move_to_end(key)
            return self.entries[key][0]
        pipe = build()
        self.entries[key] = (pipe, _nbytes(pipe))
        while len(self.entries) > 1 and sum(size for _, size in self.entries.values()) > self.limit:
            self.entries.popitem(last=False)
        return pipe

    @property
    def nbytes(self) -> int:
        return sum(size for _, size in self.entries.values())


def _nbytes(pipe: Any) -> int:
    total = 0
    for module in pipe.modules():
        total += sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])
    return total


class Worker:
    """The job queue and its one thread; ``publish(event)`` is called from the thread for every event."""

    def __init__(
        self, store: JobStore, registry: Any, outputs: Path, publish: Callable[[dict[str, Any]], None], cache_mb: float, device: str = "cpu"
    ) -> None:
        self.store, self.registry, self.outputs, self.publish, self.device = store, registry, outputs, publish, device
        self.cache = PipelineCache(int(cache_mb * 2**20))
        self.queue: collections.deque[str] = collections.deque(store.queued_ids())  # queued before a restart run again
        self.cond = threading.Condition()
        self.current: str | None = None
        self.cancel_requested: set[str] = set()
        self.stopping = False
        self.thread = threading.Thread(target=self._loop, name="latentzoo-studio-worker", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        with self.cond:
            self.stopping = True
            if self.current:
                self.cancel_requested.add(self.current)
            self.cond.notify_all()
        if self.thread.is_alive():
            self.thread.join(timeout=30)

    def submit(self, job_id: str, body: dict[str, Any]) -> int:
        """Queue a checked job; returns its position (0 = next to run)."""
        with self.cond:
            self.store.add(job_id, body)
            self.queue.append(job_id)
            position = len(self.queue) - 1
            self.cond.notify_all()
        self.publish({"type": "queued", "job_id": job_id, "position": position})
        return position

    def position(self, job_id: str) -> int | None:
        with self.cond:
            return self.queue.index(job_id) if job_id in self.queue else None

    def cancel(self, job_id: str) -> str:
        """Cancel this job alone: 'cancelled' (it was queued), 'cancelling' (running; stops within one step) or its final status."""
        with self.cond:
            if job_id in self.queue:
                self.queue.remove(job_id)
                self.store.update(job_id, status="cancelled", finished=time.time())
                outcome = "cancelled"
            elif job_id == self.current:
                self.cancel_requested.add(job_id)
                return "cancelling"
            else:
                job = self.store.get(job_id)
                return job["status"] if job else "missing"
        self.publish({"type": "cancelled", "job_id": job_id})
        return outcome

    def _loop(self) -> None:
        while True:
            with self.cond:
                while not self.queue and not self.stopping:
                    self.cond.wait()
                if self.stopping:
                    return
                job_id = self.current = self.queue.popleft()
            try:
                self._run(job_id)
            finally:
                with self.cond:
                    self.current = None
                    self.cancel_requested.discard(job_id)

    def _run(self, job_id: str) -> None:
        job = self.store.get(job_id)
        if job is None:
            return
        out_dir = self.outputs / "jobs" / job_id
        self.store.update(job_id, status="running", started=time.time())
        self.publish({"type": "started", "job_id": job_id})
        try:
            prepared = adapter.prepare(job["body"], self.registry, str(out_dir) + "/", self.outputs / "uploads", self.device)
            progress = self._progress(job_id, prepared)
            pipe = self.cache.get(prepared.cache_key, lambda: adapter.build(prepared, self.registry))
            self._check_cancel(job_id)
            record = adapter.run(prepared, pipe, progress)
        except adapter.JobCancelled:
            shutil.rmtree(out_dir, ignore_errors=True)
            if self.stopping:  # the server is shutting down, nobody cancelled it: say so after the restart
                self.store.update(job_id, status="interrupted", finished=time.time())
                return
            self.store.update(job_id, status="cancelled", finished=time.time())
            self.publish({"type": "cancelled", "job_id": job_id})
            return
        except Exception as exc:  # a job's failure is its own: the worker goes on
            shutil.rmtree(out_dir, ignore_errors=True)
            error = {k: self._no_paths(v) for k, v in error_body(exc).items()}
            self.store.update(job_id, status="failed", finished=time.time(), error=error)
            self.publish({"type": "failed", "job_id": job_id, **error})
            return
        files = list(record.get("files") or [])
        self.store.update(job_id, status="done", finished=time.time(), files=files, record=record)
        self.publish({"type": "completed", "job_id": job_id, "files": files})

    def _no_paths(self, text: str) -> str:
        """A message names uploads by their ids and outputs by job: the server's own paths stay out of replies."""
        for folder in (self.outputs / "uploads", self.outputs / "jobs"):
            text = text.replace(f"{folder}{os.sep}", "")
        return text.replace(str(self.outputs), "OUTPUTS")

    def _check_cancel(self, job_id: str) -> None:
        with self.cond:
            if job_id in self.cancel_requested:
                raise adapter.JobCancelled(job_id)

    def _progress(self, job_id: str, prepared: adapter.Prepared) -> Callable[[int, int], None]:
        """A sampler progress callback: job-wide (step, total) over all its walks, and the cancellation point."""
        state = {"done": 0}

        def progress(i: int, total: int) -> None:
            self._check_cancel(job_id)
            step, whole = state["done"] + i, total * max(prepared.calls, 1)
            if i >= total:
                state["done"] += total
            self.store.update(job_id, step=step, total=whole)
            self.publish({"type": "progress", "job_id": job_id, "step": step, "total": whole})

        return progress


def error_body(exc: BaseException) -> dict[str, str]:
    """``{"error", "fix"}`` from an exception: a LatentzooError's "problem; fix" line split at its first '; '."""
    if isinstance(exc, LatentzooError):
        text = str(exc)
        problem, _, fix = text.partition("; ")
        return {"error": problem, "fix": fix or "check the request against GET /api/v1/pipelines and /api/v1/components"}
    first = str(exc).splitlines()[0] if str(exc) else ""
    return {"error": f"{type(exc).__name__}: {first}", "fix": "see the server's log; report it if it persists"}
