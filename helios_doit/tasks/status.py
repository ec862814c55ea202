"""`helios-doit status JOB`: where every chunk and the merge stand, from another shell, read-only.

It decides "done" exactly as a run does (the same task dicts, the same `Complete` check),
so `status` saying `done` means the next run skips it. It never creates the state folder
and never writes (not even the inputs' stat cache a run keeps), so it is safe while a run
is going and on a job that never ran.

States:
- `done`: its record holds and the output is the file that record describes.
- `running`: a runner works on it now: its `running/<task>.json` names the runner, and
  the runner holds `locks/<task>.lock`.
- `interrupted`: a runner started it and died (a marker without a held lock); the next run
  renders it again (a task done or failed before is shown as such, with the note "interrupted").
- `failed`: its last attempt failed for good (`failures/<task>.json`), with exit code or signal.
- `stale`: it was done, but no longer counts: its command or the job's inputs changed, or its
  output is missing or no longer the file it wrote (a deleted output is `stale`, not
  `pending`: the chunk did render once, and the note says why it will render again).
- `pending`: never done (or cleaned); the next run renders it.

A chunk that `--retime` remuxed to the job's frame rate says so in its note (and `retimed`).
The state folder's `aside/` (files found in outputs' places, kept as evidence) is summed up,
with the command that prunes it: nothing else tells a user it grows.

Exit code: 0 whatever the states (it is a report, not a check); 2 for a bad job.
"""
from __future__ import annotations

import math
import os
import shlex
import socket
import stat
import time
from pathlib import Path
from typing import Any

from ..spec.model import Job
from ..state.files import read_json, stamp
from ..state.folder import StateDir
from ..state.locks import is_held
from ..state.outcome import Failure
from .complete import Complete
from .graph import build
from .publish import remote_look, remote_size, remote_state
from .work import Work


def job_status(job: Job, merge: str | None = None) -> dict[str, Any]:
    """Every chunk's and the merge's state, and totals, as `--json` prints them."""
    graph = build(job, merge=merge)
    frames = {chunk.id: chunk.frame_count for chunk in job.spec.chunks}
    chunks = [{"id": work.chunk_id, "frames": frames[work.chunk_id], **task_status(graph.state, work)}
              for work in graph.chunks if work.chunk_id is not None]
    merged = {"frames": job.spec.metadata.total_frames, **task_status(graph.state, graph.merge)}
    counts = {name: sum(1 for c in chunks if c["state"] == name) for name in ("done", "running", "failed", "stale", "interrupted", "pending")}
    totals = {
        "chunks": len(chunks), **counts,
        "framesDone": sum(c["frames"] for c in chunks if c["state"] == "done"),
        "totalFrames": sum(c["frames"] for c in chunks),
        "complete": counts["done"] == len(chunks) and merged["state"] == "done",
    }
    state_url = job.remote.url_of(remote_state(graph.merge)) if job.remote else None
    return {"job": job.source, "stateDir": str(graph.state.root), **({"stateUrl": state_url} if state_url else {}),
            "chunks": chunks, "merge": merged, "totals": totals, "aside": aside_summary(graph.state.aside)}


def aside_summary(aside: Path) -> dict[str, Any]:
    """What aside/ holds: its entries (each a file, link or folder moved there) and their bytes."""
    entries, size = 0, 0
    try:
        found = list(os.scandir(aside))
    except OSError:  # none yet (or not a folder we can read): nothing to show
        found = []
    for entry in found:
        entries += 1
        size += bytes_under(entry.path)
    return {"path": str(aside), "entries": entries, "bytes": size}


def bytes_under(path: str | os.PathLike[str]) -> int:
    """Bytes under `path`, links not followed (a link counts as itself); what cannot be read counts 0."""
    try:
        st = os.lstat(path)
    except OSError:
        return 0
    if not stat.S_ISDIR(st.st_mode):
        return st.st_size
    total = 0
    for folder, dirs, files in os.walk(path):
        for name in dirs + files:
            try:
                entry = os.lstat(os.path.join(folder, name))
            except OSError:
                continue
            total += 0 if stat.S_ISDIR(entry.st_mode) else entry.st_size
    return total


def task_status(state: StateDir, work: Work) -> dict[str, Any]:
    """One task's state from its record, failure record, running marker and lock; reads only."""
    name, output = work.key, work.output
    complete = work.complete()  # its record as of now
    record = read_json(state.record(name))
    failure = Failure.read(state.failure(name))
    marker = read_json(state.marker(name))
    runner = _runner(state, name, marker)
    log = state.log(name)
    found = stamp(output) if output else None
    size = found[0] if found else None
    entry: dict[str, Any] = {"state": "pending", "attempts": None, "duration": None, "size": size,
                             "log": str(log) if log.exists() else None, "runner": runner, "note": None, "retimed": None}
    if runner is not None:
        frames = marker.get("frames") if marker else None
        done = f"{frames}/{work.expect.frames} frames, " if isinstance(frames, int) and work.expect else ""
        entry.update(state="running", attempts=runner.get("attempt"), size=None, framesDone=frames,
                     note=f"{done}for {time.time() - float(runner.get('startedAt') or time.time()):.0f}s")
    elif remote_look(work)[0] if work.remote is not None else record is not None and complete():
        record = record or {}
        retimed = record.get("retimed") if isinstance(record.get("retimed"), str) else None
        entry.update(state="done", attempts=_count(record.get("attempts")), duration=_seconds(record.get("duration")),
                     size=size if work.remote is None else remote_size(work), retimed=retimed, note=retimed)
    elif failure is not None:
        entry.update(state="failed", attempts=failure.attempts, note=failure.how, exitCode=failure.exitCode,
                     signal=failure.signal, message=failure.message, stderrTail=failure.stderrTail)
    elif record is not None and work.remote is None:
        entry.update(state="stale", attempts=_count(record.get("attempts", 1)), duration=_seconds(record.get("duration")),
                     note=_why_stale(record, complete, output, work.chunk_id is not None))
    if marker is not None and runner is None:
        entry["note"] = "; ".join(filter(None, [entry["note"], f"interrupted (runner pid {marker.get('pid')} is gone)"]))
        if entry["state"] == "pending":
            entry["state"] = "interrupted"
    return entry


def _why_stale(record: dict[str, Any], complete: Complete, output: str | None, chunk: bool) -> str:
    if record.get("fingerprint") != complete.fingerprint:
        return "command or inputs changed" if chunk else "command changed"
    if output is not None and stamp(output) is None:
        return "output missing"
    if output is not None and stamp(output) != record.get("output"):
        return "output changed"
    return "a chunk output changed"


def _runner(state: StateDir, name: str, marker: dict[str, Any] | None) -> dict[str, Any] | None:
    """Who runs the task now, or None. The lock decides: a runner holds it for as long as it works."""
    if marker is None:
        return None
    lock = state.lock(name)
    here = marker.get("host") == socket.gethostname()
    if lock.exists():
        held = is_held(lock, this_machine=here)
    elif here:  # a runner without locks: is its process alive?
        held = _alive(marker.get("pid"))
    else:
        held = True  # another machine, no lock to ask: believe the marker
    if not held:
        return None
    keys = ("host", "pid", "pgid", "startedAt", "attempt", "runId")
    return {**{k: marker.get(k) for k in keys}, "confirmed": lock.exists() or here}


def _count(value: Any) -> int | None:
    """A record's attempts, if it holds a sensible one (a damaged record says nothing)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _seconds(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0:
        return float(value)
    return None


def _alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, TypeError, ValueError):
        return False
    except PermissionError:
        return True
    return True


def render_table(report: dict[str, Any]) -> str:
    """The table for people: one row per chunk, then the merge, then where the logs are."""
    totals = report["totals"]
    busy = ", ".join(f"{totals[k]} {k}" for k in ("running", "interrupted", "failed", "stale") if totals[k])
    lines = [f"{report['job']}: {totals['done']}/{totals['chunks']} chunks done, "
             f"{totals['framesDone']}/{totals['totalFrames']} frames" + (f"; {busy}" if busy else "")
             + f"; merge {report['merge']['state']}"]
    rows = [("CHUNK", "STATE", "ATTEMPTS", "DURATION", "SIZE", "RUNNER", "NOTE")]
    for entry in [*report["chunks"], {**report["merge"], "id": "merge"}]:
        runner = entry["runner"]
        rows.append((str(entry["id"]), entry["state"], _text(entry["attempts"]),
                     f"{entry['duration']:.2f}s" if entry["duration"] is not None else "-",
                     human_size(entry["size"]), f"{runner['host']} pid {runner['pid']}" if runner else "-", entry["note"] or ""))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    lines.append(f"logs: {report['stateUrl']}/logs" if report.get("stateUrl") else f"logs: {Path(report['stateDir']) / 'logs'}")
    for entry in report["chunks"] + [report["merge"]]:
        if entry["state"] == "failed" and entry["log"]:
            lines.append(f"  {entry.get('id', 'merge')}: {entry['log']}")
    aside = report.get("aside") or {}
    if aside.get("entries"):
        count = aside["entries"]
        lines.append(f"aside: {count} entr{'y' if count == 1 else 'ies'}, {human_size(aside['bytes'])} in {aside['path']} "
                     f"(found in outputs' places, kept as evidence); when you have looked: "
                     f"helios-doit prune {shlex.quote(report['job'])} --aside")
    return "\n".join(lines)


def _text(value: Any) -> str:
    return "-" if value is None else str(value)


def human_size(size: int | None) -> str:
    if size is None:
        return "-"
    if size < 1024:
        return f"{size} B"
    amount = float(size)
    for unit in ("KB", "MB", "GB"):
        amount /= 1024
        if amount < 1024 or unit == "GB":
            break
    return f"{amount:.1f} {unit}"
