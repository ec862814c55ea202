"""The render service's durable queue: one SQLite file in the data folder, as Flamenco's manager
keeps its jobs (an embedded default, nothing to install).

Every change of a job is committed before anyone is told of it, so a server killed at any
moment comes back with each job as it last said it was; what its chunks had done is in each
job's own state folder, as for any run. One server per data folder: it holds a lock
(`flock`) on the folder itself for as long as it runs.
"""
from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import stat
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator

#: The queue's file in the data folder: a folder that holds it is one a server made.
QUEUE_FILE = "queue.db"
_SQLITE_HEADER = b"SQLite format 3\x00"

#: A job's states, as Helios' JobManager names them.
STATES = ("pending", "running", "paused", "completed", "failed", "cancelled")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    source TEXT NOT NULL,
    name TEXT NOT NULL,
    options TEXT NOT NULL,
    priority INTEGER NOT NULL,
    state TEXT NOT NULL,
    error TEXT,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    started REAL,
    finished REAL
)
"""


@dataclass(frozen=True)
class QueuedJob:
    """A job as the queue knows it; where its chunks stand is read from its own state folder."""

    id: str
    seq: int  # submission order: first come, first served within a priority
    source: str  # the job file's absolute path, or its URL
    name: str
    options: dict[str, Any] = field(default_factory=dict)  # run options: concurrency, retries, ...
    priority: int = 0
    state: str = "pending"
    error: str | None = None
    created: float = 0.0
    updated: float = 0.0
    started: float | None = None
    finished: float | None = None


class DataFolderInUse(Exception):
    """Another server holds the data folder."""


class Queue:
    """Jobs in SQLite; safe to use from the server's threads (one connection, one lock)."""

    def __init__(self, data: Path):
        self.data = data
        data.mkdir(parents=True, exist_ok=True)
        # The folder itself is what is locked: a lock file could be deleted under a running server.
        self._lock_fd = os.open(data, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise DataFolderInUse(str(data)) from None
        self._db = sqlite3.connect(data / QUEUE_FILE, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(_SCHEMA)
        self._mutex = threading.RLock()

    def close(self) -> None:
        with self._mutex:
            self._db.close()
        os.close(self._lock_fd)

    def add(self, source: str, name: str, options: dict[str, Any], priority: int) -> QueuedJob:
        now = time.time()
        with self._mutex:
            seq = (self._db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs").fetchone() or [1])[0]
            job = QueuedJob(f"j{uuid.uuid4().hex[:10]}", int(seq), source, name, options, priority, "pending",
                            None, now, now)
            self._db.execute("INSERT INTO jobs VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", _row(job))
        return job

    def get(self, job_id: str) -> QueuedJob | None:
        with self._mutex:
            row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _job(row) if row else None

    def all(self) -> list[QueuedJob]:
        with self._mutex:
            rows = self._db.execute("SELECT * FROM jobs ORDER BY seq").fetchall()
        return [_job(row) for row in rows]

    def update(self, job: QueuedJob, **changes: Any) -> QueuedJob:
        """The job with `changes`, committed; `updated` moves on."""
        new = replace(job, **changes, updated=time.time())
        with self._mutex:
            self._db.execute("UPDATE jobs SET state=?, error=?, priority=?, updated=?, started=?, finished=? WHERE id=?",
                             (new.state, new.error, new.priority, new.updated, new.started, new.finished, new.id))
        return new

    def delete(self, job_id: str) -> None:
        with self._mutex:
            self._db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    def next_pending(self, exclude: set[str] = set()) -> QueuedJob | None:  # noqa: B006 (never changed)
        """Highest priority first, first come first served within a priority (`exclude`: ids not to give)."""
        with self._mutex:
            rows = self._db.execute("SELECT * FROM jobs WHERE state = 'pending' ORDER BY priority DESC, seq"
                                    ).fetchmany(len(exclude) + 1)
        return next((_job(row) for row in rows if row[0] not in exclude), None)

    def in_state(self, state: str) -> Iterator[QueuedJob]:
        with self._mutex:
            rows = self._db.execute("SELECT * FROM jobs WHERE state = ? ORDER BY seq", (state,)).fetchall()
        return (_job(row) for row in rows)


def not_ours(data: Path) -> str | None:
    """Why `data` cannot be a data folder, or None. The server writes, replaces and removes what it
    likes in its data folder, so it takes only a new path, an empty folder, or a folder a server
    made (one that holds the queue); never a folder of someone's files, whose names it might reuse."""
    if not os.path.lexists(data):
        return None
    if not data.is_dir():
        return "not a folder; give a new or empty folder"
    try:
        with os.scandir(data) as entries:
            if next(entries, None) is None:
                return None
    except OSError:
        return None  # unreadable: said when the queue is opened there
    if _is_queue(data / QUEUE_FILE):
        return None
    return (f"holds files helios-doit serve did not make (no {QUEUE_FILE}), which it could overwrite; "
            "give a new or empty folder")


def _is_queue(path: Path) -> bool:
    """A plain file that is an SQLite database (or still empty: a server stopped as it made it)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    with os.fdopen(fd, "rb") as file:
        head = file.read(len(_SQLITE_HEADER)) if stat.S_ISREG(os.fstat(fd).st_mode) else b"?"
    return head in (b"", _SQLITE_HEADER)


def _row(job: QueuedJob) -> tuple[Any, ...]:
    return (job.id, job.seq, job.source, job.name, json.dumps(job.options), job.priority, job.state, job.error,
            job.created, job.updated, job.started, job.finished)


def _job(row: tuple[Any, ...]) -> QueuedJob:
    (id_, seq, source, name, options, priority, state, error, created, updated, started, finished) = row
    return QueuedJob(id_, seq, source, name, json.loads(options), priority, state, error, created, updated, started,
                     finished)
