"""One attempt of a task: run its command, verify what it wrote, record it, or remove the partial output.

The order is the guarantee. A running marker is written before the command starts, so a runner
that dies at any moment leaves the means to find what it started; the record is written only
after verification, and a stop waits until the attempt's outcome (record, or removal) is on disk.
"""
from __future__ import annotations

import os
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..executors import reaper, supervise
from ..executors.base import CommandRequest, CommandResult, Elsewhere
from ..executors.output import LogSink
from ..executors.registry import get_adapter
from ..progress.frames import FrameMeter
from ..state import checkpoints, events, places
from ..state.content import content_state
from ..state.files import read_json, remove, stamp, write_json_atomic
from ..state.folder import StateDir, record_file
from ..state.places import Place, PlaceError
from ..video import is_video_path
from .complete import relative
from .publish import stage_of
from .say import say
from .work import TaskJob


@dataclass(frozen=True)
class Outcome:
    """How one attempt ended."""

    failure: str | None  # None: it succeeded, and its record is written
    result: CommandResult
    output: list[int] | None  # the output's stamp, when it succeeded
    wrong: bool = False  # the command exited 0 but its output is not what the job asked for


def run_once(job: TaskJob, state: StateDir, attempt: int, allowed: int) -> Outcome:
    """One run of the command: never leaves a partial output behind, whatever ends it. On success
    its record is written (and the output's stamp returned) before a stop can interrupt: an output
    is either recorded or removed. A whole output that is wrong (exit 0, failed verification) is
    moved aside as the failure's evidence, never merged."""
    marker = state.marker(job.name)
    place = job.place
    if place is not None and attempt > 1:  # the first attempt's place was made ready just before
        clear_place(job, place, None, create=True)  # empty unless something appeared since: moved aside
    host, pid = socket.gethostname(), os.getpid()
    # Written before the command starts: a runner that dies at any moment leaves the means to
    # find what it started (its tag in every process' environment; the group, once known).
    running: dict[str, Any] = {"pid": pid, "host": host, "machine": reaper.machine(), "startedAt": time.time(),
                               "runId": events.run_id(), "attempt": attempt, "tag": reaper.tag()}
    sink = LogSink(state.log(job.name), f"{job.label} attempt {attempt}/{allowed} on {host} pid {pid}: {job.command}",
                   f"[{job.label}] ", _Reports(job, state, attempt, marker, running).output if job.chunk_id is not None else None)
    try:
        write_json_atomic(marker, running)
    except BaseException:
        sink.close("not started: the running marker could not be written")
        raise

    def on_start(pgid: int, leader_start: int | None = None) -> None:
        running.update(pgid=pgid, leaderStart=leader_start)
        write_json_atomic(marker, running)

    timeout = job.options.chunk_timeout if job.chunk_id is not None else None
    ok = wrong = False
    footer = "interrupted"
    try:
        with supervise.active():
            events.emit(state.root, "task-start", task=job.name, chunkId=job.chunk_id, attempt=attempt,
                        attempts=allowed, pid=pid, host=host)
            checkpoints.reached("before-command", job.name, state.root, supervise.stop_if_held)
            request = CommandRequest(job.command, job.cwd, timeout=timeout, on_start=on_start,
                                     should_stop=state.cancel_flag(events.run_id()).exists, own=job.own,
                                     elsewhere=Elsewhere(job.output, stage_of(job)))
            result = get_adapter(job.adapter, job.options.scheduler).execute(request, sink)
            with supervise.held():  # a stop now waits until this attempt's outcome is on disk
                failure, facts, wrong = _verify(job, result)
                footer = f"{result.describe()} after {result.duration:.2f}s" + (f": {failure}" if failure else "")
                output = stamp(job.output) if job.output and failure is None else None
                if failure is None:
                    checkpoints.reached("before-record", job.name, state.root, supervise.stop_if_held)
                    write_json_atomic(state.record(job.name), _record(job, result, attempt, output, facts))
                    ok = True
                    checkpoints.reached("after-record", job.name, state.root, supervise.stop_if_held)
    finally:
        sink.close(footer)
        try:
            if not ok and place is not None:
                note = (places.set_aside(place, job.label, "kept: the evidence of why it failed") if wrong
                        else places.discard(place, job.label))
                if note:
                    say(note)
        except (PlaceError, OSError) as exc:  # said, never in the way of the marker's removal or a stop
            say(f"{job.label}: its partial output was not removed: {exc}")
        finally:
            remove(marker)
    return Outcome(failure, result, output, wrong)


class _Reports:
    """How far the chunk's command is, from its own output: an event for the runner's progress
    display, and the running marker for `status`; at most every half second, and at the end."""

    EVERY = 0.5

    def __init__(self, job: TaskJob, state: StateDir, attempt: int, marker: Path, running: dict[str, Any]):
        self.job, self.state, self.attempt, self.marker, self.running = job, state, attempt, marker, running
        self.meter = FrameMeter(job.first_frame, job.expect.frames if job.expect else 0)
        self.last = 0.0

    def output(self, data: bytes) -> None:
        frames = self.meter.feed(data)
        if frames is None or (time.monotonic() - self.last < self.EVERY and frames < self.meter.count):
            return
        self.last = time.monotonic()
        try:
            events.emit(self.state.root, "task-progress", task=self.job.name, chunkId=self.job.chunk_id,
                        attempt=self.attempt, frames=frames)
            self.running["frames"] = frames
            write_json_atomic(self.marker, self.running)
        except OSError:
            pass  # progress is worth no failure: the chunk's own outcome is what counts


def changed_source(job: TaskJob) -> str | None:
    """The merge takes only bytes a record vouches for: the first chunk whose output is no longer
    the file its record describes (another chunk's command, or something it left running, wrote
    to it since), said as one line; None when every chunk output is as recorded. Asked right
    before the merge runs and again right before its record is written."""
    for task, path in zip(job.sources, job.inputs):
        record = read_json(record_file(job.state_root, task.key)) or {}
        if record.get("output") is None or stamp(path) != record.get("output"):
            return (f"{task.label}'s output {os.path.basename(path)} is no longer the file {task.label} recorded "
                    f"(something wrote to it since); nothing was merged from it: run again to render {task.label} again")
    return None


def _verify(job: TaskJob, result: CommandResult) -> tuple[str | None, dict[str, Any] | None, bool]:
    """Why the attempt failed (None if it did not), what a verified video chunk holds, and whether
    its output is whole but wrong."""
    if not result.ok:
        return result.describe(), None, False
    if job.sources and (changed := changed_source(job)):
        return changed, None, False
    if not job.output:
        return None, None, False
    if stamp(job.output) is None:
        return f"the command exited 0 but did not write {job.output}", None, False
    if job.expect is None or not is_video_path(job.output):
        return None, None, False
    problem, facts = _check_video(job)
    if problem:
        return f"the command exited 0 but its output is wrong: {os.path.basename(job.output)}: {problem}", None, True
    return None, facts, False


def _check_video(job: TaskJob) -> tuple[str | None, dict[str, Any] | None]:
    from ..video.verify import ChunkFacts, inspect_chunk, verify_merged

    assert job.output is not None and job.expect is not None
    expect = job.expect
    if job.chunk_id is not None:
        problem, facts = inspect_chunk(job.output, expect.frames, expect.width or 0, expect.height or 0, expect.fps)
        return problem, facts.as_record() if facts else None
    # The merge: checked against the job, and seam by seam against what its chunks' records hold.
    chunks = [ChunkFacts.from_record((read_json(record_file(job.state_root, task.key)) or {}).get("video"))
              for task in job.sources]
    known = [facts for facts in chunks if facts is not None]
    if len(known) != len(chunks):
        known = []  # some chunk is not a video we verified: the seams cannot be judged
    labels = [task.label for task in job.sources]
    return verify_merged(job.output, expect.frames, expect.fps, known, labels), None


def _record(job: TaskJob, result: CommandResult, attempts: int, output: list[int] | None,
            video: dict[str, Any] | None) -> dict[str, object]:
    return {
        "task": job.name,
        "fingerprint": job.fingerprint,
        "output": output,  # the stamp the output must keep for the record to be believed
        "inputs": {relative(p, job.cwd): content_state(p) for p in job.inputs},
        "writeId": uuid.uuid4().hex,  # which record this is: what "done since I looked" compares
        "finishedAt": time.time(),  # for people; no runner compares it with its own clock
        "duration": round(result.duration, 3),
        "host": socket.gethostname(),
        "attempts": attempts,
        **({"video": video} if video else {}),  # what the merge checks its seams against
    }


def clear_place(job: TaskJob, place: Place, vouched: list[int] | None, why: str | None = None,
                create: bool = False) -> None:
    note = places.clear(place, vouched, job.label, why, create)
    if note:
        say(note)
        events.emit(job.state_root, "task-aside", task=job.name, chunkId=job.chunk_id, message=note)
