"""The job store: one SQLite file beside the outputs (``OUTPUTS/studio.db``), so jobs survive a restart.

A job row holds its request body, status, progress, output files, sidecar record and error.
On opening, jobs left ``running`` by a server that stopped are marked ``interrupted`` (their
partial outputs were never committed: a sidecar and its PNGs are written as one unit), and
``queued`` jobs stay queued, to be run again in their order.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

STATUSES = ("queued", "running", "done", "failed", "cancelled", "interrupted")
FINISHED = ("done", "failed", "cancelled", "interrupted")

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    status TEXT NOT NULL,
    body TEXT NOT NULL,
    step INTEGER NOT NULL DEFAULT 0,
    total INTEGER NOT NULL DEFAULT 0,
    files TEXT NOT NULL DEFAULT '[]',
    record TEXT,
    error TEXT
)
"""


class JobStore:
    """Thread-safe access to the jobs table (the worker thread writes, the event loop reads)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(SCHEMA)
            self._db.execute("UPDATE jobs SET status = 'interrupted', finished = ? WHERE status = 'running'", (time.time(),))

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def add(self, job_id: str, body: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO jobs (id, created, status, body) VALUES (?, ?, 'queued', ?)", (job_id, time.time(), json.dumps(body))
            )

    def update(self, job_id: str, **fields: Any) -> None:
        for key in ("files", "record", "error"):
            if key in fields and fields[key] is not None:
                fields[key] = json.dumps(fields[key])
        sets = ", ".join(f"{k} = ?" for k in fields)
        with self._lock:
            self._db.execute(f"UPDATE jobs SET {sets} WHERE id = ?", (*fields.values(), job_id))

    def get(self, job_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _job(row) if row else None

    def list(self, status: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        query, args = "SELECT * FROM jobs", ()
        if status:
            query, args = query + " WHERE status = ?", (status,)
        with self._lock:
            rows = self._db.execute(f"{query} ORDER BY seq DESC LIMIT ?", (*args, limit)).fetchall()
        return [_job(r) for r in rows]

    def queued_ids(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT id FROM jobs WHERE status = 'queued' ORDER BY seq")]

    def count(self, status: str) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM jobs WHERE status = ?", (status,)).fetchone()[0]


def _job(row: sqlite3.Row) -> dict[str, Any]:
    job = dict(row)
    job["body"] = json.loads(job["body"])
    job["files"] = json.loads(job["files"])
    job["record"] = json.loads(job["record"]) if job["record"] else None
    job["error"] = json.loads(job["error"]) if job["error"] else None
    return job
