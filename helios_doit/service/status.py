"""A queued job as the API says it: Helios' `JobStatus` field names, plus where every chunk stands.

Where chunks stand is read, as `helios-doit status` reads it, from the job's own state folder
(records, running markers, failures): the queue only knows what the service did with the job.
The runner's progress file adds what only a running runner knows (its ETA).
"""
from __future__ import annotations

import datetime

import os
from pathlib import Path
from typing import Any

from ..core.errors import HeliosDoitError
from ..spec.load import load_job
from ..spec.model import Job
from ..state.files import read_json
from ..tasks.status import job_status
from ..video import is_video_path
from .queue import QueuedJob


def load(queued: QueuedJob) -> Job:
    """The job a queued job names, loaded as its runs load it: from the folder they start in (its
    root; a job from a web address, a folder of its own), with its output root and storage."""
    options = queued.options
    return load_job(queued.source, options.get("outputRoot"), Path(options.get("cwd") or "/"), options.get("storage"))


def iso(when: float | None) -> str | None:
    if when is None:
        return None
    return datetime.datetime.fromtimestamp(when, datetime.timezone.utc).isoformat().replace("+00:00", "Z")


def job_status_json(queued: QueuedJob, job: Job | None, progress_file: Path) -> dict[str, Any]:
    """JobStatus: `id, state, progress (0-100), totalChunks, completedChunks, error, createdAt,
    updatedAt` as Helios says them, and `priority, framesDone, totalFrames, output, chunks`."""
    chunks: list[dict[str, Any]] = []
    merge: dict[str, Any] = {"state": "pending"}
    totals: dict[str, Any] = {}
    error = queued.error
    if job is not None:
        try:
            report = job_status(job, queued.options.get("merge"))
        except (HeliosDoitError, OSError) as exc:  # its folder went away, say: said, never a 500
            error = error or str(exc).splitlines()[0]
        else:
            totals = report["totals"]
            merge = {"state": report["merge"]["state"], "message": report["merge"].get("message")}
            chunks = [_chunk(entry) for entry in report["chunks"]]
    total_frames = int(totals.get("totalFrames") or 0)
    done_frames = sum(c["framesDone"] for c in chunks)
    finished = merge["state"] == "done" or queued.state == "completed"
    progress = 100.0 if finished else (round(100.0 * done_frames / total_frames, 1) if total_frames else 0.0)
    live = _progress(progress_file) if queued.state == "running" else {}
    output = str(job.merge_output) if job is not None and job.merge_output else None
    return {
        "id": queued.id, "name": queued.name, "job": queued.source, "state": queued.state,
        "priority": queued.priority, "progress": progress,
        "totalChunks": len(chunks), "completedChunks": sum(1 for c in chunks if c["state"] == "done"),
        "framesDone": done_frames, "totalFrames": total_frames,
        "error": error, "createdAt": iso(queued.created), "updatedAt": iso(queued.updated),
        "startedAt": iso(queued.started), "finishedAt": iso(queued.finished),
        "eta": live.get("timeToFinish"), "output": output,
        "concurrency": int(queued.options.get("concurrency") or 1),
        "seams": bool(output and merge["state"] == "done" and is_video_path(output) and os.path.isfile(output)),
        "chunks": chunks, "merge": merge,
    }


def _chunk(entry: dict[str, Any]) -> dict[str, Any]:
    state = entry["state"]
    frames = int(entry.get("frames") or 0)
    done = frames if state == "done" else int(entry.get("framesDone") or 0) if state == "running" else 0
    message = entry.get("message") or entry.get("note")
    return {"id": entry["id"], "state": state, "attempts": entry.get("attempts"), "framesDone": done, "frames": frames,
            "duration": entry.get("duration"), "message": str(message).splitlines()[0] if message else None}


def _progress(path: Path) -> dict[str, Any]:
    """The runner's progress file; anything else in its place (a FIFO, a link) reads as none."""
    return read_json(path) or {}
