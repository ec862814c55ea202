"""What a chunk or merge task does when doit runs it, and how doit asks whether it is done.

Both cross doit's process boundary (under `-n` with spawn the task is pickled), so they are
plain data plus module-level functions. The order of the steps is the guarantee:
drop the record, remove the stale output, run, verify, record; on any failure or interrupt
remove the partial output (make's .DELETE_ON_ERROR) so nothing half-written is ever kept.
"""
from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from doit.exceptions import TaskFailed

from . import supervise
from .output import LogSink, open_log
from .video import is_video_path
from .state import StateDir, content_changed, content_state, read_json, remove, stamp, write_json_atomic
from .worker import CommandRequest, CommandResult, LocalAdapter, WorkerAdapter

#: Adapters by name, so that a task names its adapter as plain, picklable data.
ADAPTERS: dict[str, type[WorkerAdapter]] = {"local": LocalAdapter}


@dataclass(frozen=True)
class Expect:
    """A video output's expected contents: a chunk's frames and size, or the merge's frames and fps."""

    frames: int
    width: int | None = None
    height: int | None = None
    fps: float | None = None


@dataclass(frozen=True)
class TaskJob:
    """Everything a worker needs to run one chunk, or the merge."""

    name: str  # state key: "chunk-3" or "merge"
    label: str  # shown to people: "chunk 3"
    command: str
    cwd: str
    output: str | None  # None: a merge whose output we cannot know
    state_root: str
    fingerprint: str
    inputs: tuple[str, ...] = ()  # files whose content the record pins (the merge's chunk outputs)
    adapter: str = "local"
    expect: Expect | None = None  # what a video output must hold to count as done


def run_task(job: TaskJob) -> TaskFailed | None:
    supervise.ensure_handlers()
    if supervise.stopping():
        raise supervise.Interrupted(supervise.stopping() or 0)
    state = StateDir(Path(job.state_root))
    record = state.record(job.name)
    marker = state.marker(job.name)
    remove(record)
    if job.output:
        remove(Path(job.output))
        Path(job.output).parent.mkdir(parents=True, exist_ok=True)
    log = open_log(state.log(job.name), f"{job.label} on {socket.gethostname()} pid {os.getpid()}: {job.command}")
    sink = LogSink(log, f"[{job.label}] ")

    def on_start(pgid: int) -> None:
        write_json_atomic(marker, {"pid": os.getpid(), "pgid": pgid, "host": socket.gethostname(), "startedAt": time.time()})

    done = False
    footer = "interrupted"
    try:
        with supervise.active():
            result = ADAPTERS[job.adapter]().execute(CommandRequest(job.command, job.cwd, on_start=on_start), sink)
            failure = _verify(job, result)
            footer = f"{result.describe()} after {result.duration:.2f}s" + (f": {failure}" if failure else "")
            if failure is None:
                write_json_atomic(record, _record(job, result))
                done = True
    finally:
        sink.close()
        log.write(f"=== {footer}\n".encode())
        log.close()
        if not done and job.output:
            remove(Path(job.output))
        remove(marker)
    if done:
        return None
    lines = [f"{job.label} failed: {failure}; log: {state.log(job.name)}"]
    lines += [f"  | {line}" for line in result.stderr_tail[-5:]]
    return TaskFailed("\n".join(lines))


def _verify(job: TaskJob, result: CommandResult) -> str | None:
    if not result.ok:
        return result.describe()
    if not job.output:
        return None
    if stamp(job.output) is None:
        return f"the command exited 0 but did not write {job.output}"
    if job.expect is None:
        return None
    if not is_video_path(job.output):
        return None
    problem = _check_video(job.output, job.expect)
    return f"the command exited 0 but its output is wrong: {os.path.basename(job.output)}: {problem}" if problem else None


def _check_video(path: str, expect: Expect) -> str | None:
    if expect.fps is not None:
        from .video.stitch import verify_merged

        return verify_merged(Path(path), expect.frames, expect.fps)
    from .video.probe import check_chunk

    return check_chunk(Path(path), expect.frames, expect.width, expect.height)


def _record(job: TaskJob, result: CommandResult) -> dict[str, object]:
    cwd = Path(job.cwd)
    return {
        "task": job.name,
        "fingerprint": job.fingerprint,
        "output": stamp(job.output) if job.output else None,
        "inputs": {os.path.relpath(p, cwd): content_state(Path(p)) for p in job.inputs},
        "finishedAt": time.time(),
        "duration": round(result.duration, 3),
        "host": socket.gethostname(),
    }


@dataclass(frozen=True)
class Complete:
    """doit `uptodate` check: the durable record matches this task as it is now."""

    record: str
    fingerprint: str
    output: str | None
    inputs: tuple[str, ...] = ()
    cwd: str = ""

    def __call__(self) -> bool:
        data = read_json(Path(self.record))
        if data is None or data.get("fingerprint") != self.fingerprint:
            return False
        if self.output is not None and stamp(self.output) != data.get("output"):
            return False
        states = data.get("inputs") or {}
        if len(states) != len(self.inputs):
            return False
        return not any(content_changed(Path(p), states.get(os.path.relpath(p, self.cwd))) for p in self.inputs)


def clean_task(job: TaskJob) -> None:
    """`doit clean`: the output and the record go together, so the task is simply not done."""
    state = StateDir(Path(job.state_root))
    remove(state.record(job.name))
    if job.output:
        remove(Path(job.output))
