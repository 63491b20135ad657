"""Jobs on disk: one SQLite table (WAL), so the queue and the finished outputs survive a restart.

A restart re-queues the jobs that were queued and marks the one that was running as failed
(`interrupted`): it is not re-run by itself, since it may be what brought the server down; the
page and `infinistar jobs` show the reason and a re-run with the same seed gives the same video.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Optional

TERMINAL = ("completed", "failed", "cancelled")
JSON_COLUMNS = ("params", "metadata", "error")
INTERRUPTED = {
    "code": "interrupted",
    "message": "the server stopped while this job was running; nothing was written. "
               "Submit it again (the same seed gives the same video).",
}

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    started_at INTEGER,
    completed_at INTEGER,
    progress INTEGER NOT NULL DEFAULT 0,
    stage TEXT,
    params TEXT NOT NULL,
    upload TEXT,
    output TEXT,
    metadata TEXT,
    error TEXT
)
"""


class JobStore:
    """Thread-safe access to the jobs table; rows come back as plain dicts with JSON decoded."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _row(self, row: Optional[sqlite3.Row]) -> Optional[dict]:
        if row is None:
            return None
        job = dict(row)
        for column in JSON_COLUMNS:
            job[column] = json.loads(job[column]) if job[column] else None
        return job

    def add(self, job_id: str, kind: str, params: dict, upload: Optional[str] = None) -> dict:
        with self._lock:
            self._db.execute(
                "INSERT INTO jobs (id, kind, status, created_at, params, upload) VALUES (?, ?, 'queued', ?, ?, ?)",
                (job_id, kind, int(time.time()), json.dumps(params), upload))
        return self.get(job_id)

    def get(self, job_id: str) -> Optional[dict]:
        with self._lock:
            return self._row(self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone())

    def update(self, job_id: str, **fields: Any) -> None:
        for column in JSON_COLUMNS:
            if column in fields and fields[column] is not None:
                fields[column] = json.dumps(fields[column], default=str)
        assignments = ", ".join(f"{name} = ?" for name in fields)
        with self._lock:
            self._db.execute(f"UPDATE jobs SET {assignments} WHERE id = ?", (*fields.values(), job_id))

    def finish(self, job_id: str, status: str, **fields: Any) -> None:
        self.update(job_id, status=status, completed_at=int(time.time()), **fields)

    def delete(self, job_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    def page(self, after: Optional[str], limit: int, newest_first: bool) -> tuple[list[dict], bool]:
        """Up to `limit` jobs after the job `after` in the chosen order, and whether more follow."""
        order, compare = ("DESC", "<") if newest_first else ("ASC", ">")
        where, args = "", []
        if after:
            where, args = f"WHERE seq {compare} (SELECT seq FROM jobs WHERE id = ?)", [after]
        with self._lock:
            rows = self._db.execute(f"SELECT * FROM jobs {where} ORDER BY seq {order} LIMIT ?",
                                    (*args, limit + 1)).fetchall()
        return [self._row(r) for r in rows[:limit]], len(rows) > limit

    def with_status(self, status: str) -> list[dict]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM jobs WHERE status = ? ORDER BY seq", (status,)).fetchall()
        return [self._row(r) for r in rows]

    def recover(self) -> list[str]:
        """After a start: fail the jobs a stopped server was running; return the queued ids in order."""
        for job in self.with_status("in_progress"):
            self.finish(job["id"], "failed", error=INTERRUPTED, stage=None)
        return [job["id"] for job in self.with_status("queued")]
