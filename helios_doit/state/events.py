"""The run's event log: one JSON object per line in `<state>/runs/<run id>.jsonl`.

Chunk attempts and retries happen inside doit's worker processes, which the main process
(where progress is drawn) cannot see; the log is how they reach it, and what is left to read
after the run. Each event is one `write(2)` on an O_APPEND file, so lines of parallel
workers never mix.

Events (every one has "event", "at" (unix time), "task" where it applies):
- run-start:   runId, totalChunks, totalFrames, chunks ([[first id, last id, frames], ...]: runs of
               consecutive chunks of one frame count), merge (bool), pid, host
- task-start:  task ("chunk-3" | "merge"), chunkId, attempt, attempts (allowed), pid, host
- task-retry:  task, chunkId, attempt, message, delay (seconds before the next attempt)
- task-done:   task, chunkId, attempt, duration, frames, size
- task-failed: task, chunkId, attempt, message, exitCode, signal, stderrTail, log, final (bool)
- task-skip:   task, chunkId, reason ("done by another runner")
- task-wait:   task, chunkId: another runner holds the task's lock; this one waits, then checks again
- task-takeover: task, chunkId, pid, host, runId: the runner that worked on it died; what it left is killed
- task-aside:  task, chunkId, message: something in the output's place was moved aside
- tasks-skip:  chunks ([[first, last], ...]: ranges of chunk ids), merge (bool), reason ("up to date"): one
               event per run, not per task, a few bytes however many chunks
- run-end:     code (0 done, 1 a task failed, 2 doit refused, 128+N stopped by signal N), failed (tasks), elapsed
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import time
import uuid
from pathlib import Path
from typing import Any

from .folder import open_own
from .locks import would_wait

#: Set by the runner's main process; workers (forked or spawned) inherit it.
RUN_ID_ENV = "HELIOS_DOIT_RUN_ID"


def run_id() -> str:
    """This run's id, made once in the main process and shared with its workers."""
    value = os.environ.get(RUN_ID_ENV)
    if not value:
        value = os.environ[RUN_ID_ENV] = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
    return value


def log_path(state_root: Path | str, run: str | None = None) -> Path:
    return Path(state_root) / "runs" / f"{run or run_id()}.jsonl"


_open: dict[tuple[str, str], int] = {}  # one O_APPEND descriptor per log and process: no open() per event


def emit(state_root: Path | str, event: str, **fields: Any) -> None:
    line = json.dumps({"event": event, "at": round(time.time(), 3), **fields}, separators=(",", ":")) + "\n"
    key = (str(state_root), os.environ.get(RUN_ID_ENV) or run_id())
    fd = _open.get(key)
    if fd is None:
        path = log_path(*key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = open_own(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)  # a link there is moved aside
        fcntl.flock(fd, fcntl.LOCK_SH)  # held while this process lives: its log is never pruned under it
        _open[key] = fd
    os.write(fd, line.encode())


#: Event logs kept in `runs/`: the newest this many, and any written to in the last KEEP_RECENT seconds.
KEEP_RUNS = 20
KEEP_RECENT = 3600.0
_RUN_FILE = re.compile(r"[0-9]{8}-[0-9]{6}-[0-9a-f]{6}\.(jsonl|cancel)")


def prune(state_root: Path | str, keep: int = KEEP_RUNS, recent: float = KEEP_RECENT) -> int:
    """Drop the event logs (and cancel flags) of old runs: the newest `keep` runs stay, and any run
    whose log changed in the last `recent` seconds or that a live process still writes (however
    quiet: a run waiting on a lock for hours). Only files of ours by name and kind (regular files
    named as a run id) are touched. Returns how many went."""
    folder = Path(state_root) / "runs"
    try:
        entries = [e for e in os.scandir(folder) if _RUN_FILE.fullmatch(e.name) and e.is_file(follow_symlinks=False)]
    except OSError:
        return 0
    runs = sorted({e.name.rsplit(".", 1)[0] for e in entries}, reverse=True)
    old = set(runs[keep:]) - {os.environ.get(RUN_ID_ENV)}
    now, gone = time.time(), 0
    for entry in entries:
        if entry.name.rsplit(".", 1)[0] not in old:
            continue
        try:
            if now - entry.stat(follow_symlinks=False).st_mtime < recent or _written_to(entry.path):
                continue
            os.unlink(entry.path)
            gone += 1
        except OSError:
            continue
    return gone


def _written_to(path: str) -> bool:
    """Does a live process hold this log open to write (its shared lock)? Asking never waits."""
    return would_wait(path, fcntl.LOCK_EX)


def read(path: Path, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Events from byte `offset` on, and the offset after the last whole line (to tail a live log)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            data = handle.read()
    except OSError:
        return [], offset
    end = data.rfind(b"\n") + 1
    events = []
    for line in data[:end].splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue  # a torn or garbage line is skipped, never fatal
    return events, offset + end

