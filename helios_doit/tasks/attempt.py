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
from typing import TYPE_CHECKING, Any

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
from .work import Expect, Work

if TYPE_CHECKING:
    from ..video.verify import Verdict


@dataclass(frozen=True)
class Outcome:
    """How one attempt ended."""

    failure: str | None  # None: it succeeded, and its record is written
    result: CommandResult
    output: list[int] | None  # the output's stamp, when it succeeded
    wrong: bool = False  # the command exited 0 but its output is not what the job asked for


def one_attempt(work: Work, state: StateDir, attempt: int, allowed: int, copy: Path | None = None) -> Outcome:
    """One run of the command: never leaves a partial output behind, whatever ends it. On success
    its record is written (and the output's stamp returned) before a stop can interrupt: an output
    is either recorded or removed. A whole output that is wrong (exit 0, failed verification) is
    moved aside as the failure's evidence, never merged. The running marker has a `copy` beside
    the output, for a runner of another job that writes it next."""
    marker = state.marker(work.key)
    markers = [marker, *([copy] if copy is not None else [])]
    place = work.place
    if place is not None and attempt > 1:  # the first attempt's place was made ready just before
        clear_place(work, place, None, create=True)  # empty unless something appeared since: moved aside
    host, pid = socket.gethostname(), os.getpid()
    # Written before the command starts: a runner that dies at any moment leaves the means to
    # find what it started (its tag in every process' environment; the group, once known).
    running: dict[str, Any] = {"pid": pid, "host": host, "machine": reaper.machine(), "startedAt": time.time(),
                               "runId": events.run_id(), "attempt": attempt, "tag": reaper.tag()}
    sink = LogSink(state.log(work.key), f"{work.label} attempt {attempt}/{allowed} on {host} pid {pid}: {work.command}",
                   f"[{work.label}] ", _Reports(work, state, attempt, marker, running).output if work.chunk_id is not None else None)
    try:
        for path in markers:
            write_json_atomic(path, running)
    except BaseException:
        sink.close("not started: the running marker could not be written")
        for path in markers:
            remove(path)
        raise

    def on_start(pgid: int, leader_start: int | None = None) -> None:
        running.update(pgid=pgid, leaderStart=leader_start)
        for path in markers:
            write_json_atomic(path, running)

    timeout = work.options.chunk_timeout if work.chunk_id is not None else None
    ok = wrong = False
    footer = "interrupted"
    try:
        with supervise.active():
            events.emit(state.root, "task-start", task=work.key, chunkId=work.chunk_id, attempt=attempt,
                        attempts=allowed, pid=pid, host=host)
            checkpoints.reached("before-command", work.key, state.root, supervise.stop_if_held)
            request = CommandRequest(work.command, work.cwd, timeout=timeout, on_start=on_start,
                                     should_stop=state.cancel_flag(events.run_id()).exists, own=work.own,
                                     elsewhere=Elsewhere(work.output, stage_of(work)))
            result = get_adapter(work.adapter, work.options.scheduler).execute(request, sink)
            with supervise.held():  # a stop now waits until this attempt's outcome is on disk
                failure, facts, wrong, retimed = _verify(work, result)
                footer = f"{result.describe()} after {result.duration:.2f}s" + (f": {failure}" if failure else "")
                footer += f"; {retimed}" if retimed else ""
                output = stamp(work.output) if work.output and failure is None else None
                if failure is None:
                    checkpoints.reached("before-record", work.key, state.root, supervise.stop_if_held)
                    write_json_atomic(state.record(work.key), _record(work, result, attempt, output, facts, retimed))
                    ok = True
                    if retimed:
                        say(f"{work.label}: {retimed}")
                    checkpoints.reached("after-record", work.key, state.root, supervise.stop_if_held)
    finally:
        sink.close(footer)
        try:
            if not ok and place is not None:
                note = (places.set_aside(place, work.label, "kept: the evidence of why it failed") if wrong
                        else places.discard(place, work.label))
                if note:
                    say(note)
        except (PlaceError, OSError) as exc:  # said, never in the way of the marker's removal or a stop
            say(f"{work.label}: its partial output was not removed: {exc}")
        finally:
            for path in markers:
                remove(path)
    return Outcome(failure, result, output, wrong)


class _Reports:
    """How far the chunk's command is, from its own output: an event for the runner's progress
    display, and the running marker for `status`; at most every half second, and at the end."""

    EVERY = 0.5

    def __init__(self, work: Work, state: StateDir, attempt: int, marker: Path, running: dict[str, Any]):
        self.work, self.state, self.attempt, self.marker, self.running = work, state, attempt, marker, running
        self.meter = FrameMeter(work.first_frame, work.expect.frames if work.expect else 0)
        self.last = 0.0

    def output(self, data: bytes) -> None:
        frames = self.meter.feed(data)
        if frames is None or (time.monotonic() - self.last < self.EVERY and frames < self.meter.count):
            return
        self.last = time.monotonic()
        try:
            events.emit(self.state.root, "task-progress", task=self.work.key, chunkId=self.work.chunk_id,
                        attempt=self.attempt, frames=frames)
            self.running["frames"] = frames
            write_json_atomic(self.marker, self.running)
        except OSError:
            pass  # progress is worth no failure: the chunk's own outcome is what counts


def changed_source(work: Work) -> str | None:
    """The merge takes only bytes a record vouches for: the first chunk whose output is no longer
    the file its record describes (another chunk's command, or something it left running, wrote
    to it since), said as one line; None when every chunk output is as recorded. Asked right
    before the merge runs and again right before its record is written."""
    for task, path in zip(work.sources, work.inputs):
        record = read_json(record_file(work.state_root, task.key)) or {}
        if record.get("output") is None or stamp(path) != record.get("output"):
            return (f"{task.label}'s output {os.path.basename(path)} is no longer the file {task.label} recorded "
                    f"(something wrote to it since); nothing was merged from it: run again to render {task.label} again")
    return None


def _verify(work: Work, result: CommandResult) -> tuple[str | None, dict[str, Any] | None, bool, str | None]:
    """Why the attempt failed (None if it did not), what a verified video chunk holds, whether
    its output is whole but wrong, and how it was retimed (`--retime`), if it was."""
    if not result.ok:
        return result.describe(), None, False, None
    if work.sources and (changed := changed_source(work)):
        return changed, None, False, None
    if not work.output:
        return None, None, False, None
    if stamp(work.output) is None:
        return f"the command exited 0 but did not write {work.output}", None, False, None
    if work.expect is None or not is_video_path(work.output):
        return None, None, False, None
    problem, facts, retimed = _check_video(work)
    if problem:
        return f"the command exited 0 but its output is wrong: {os.path.basename(work.output)}: {problem}", None, True, None
    return None, facts, False, retimed


def _check_video(work: Work) -> tuple[str | None, dict[str, Any] | None, str | None]:
    from ..video.verify import ChunkFacts, verify_merged

    assert work.output is not None and work.expect is not None
    expect = work.expect
    if work.chunk_id is not None:
        return _check_chunk(work.output, expect, work.options.retime)
    # The merge: checked against the job, and seam by seam against what its chunks' records hold.
    chunks = [ChunkFacts.from_record((read_json(record_file(work.state_root, task.key)) or {}).get("video"))
              for task in work.sources]
    known = [facts for facts in chunks if facts is not None]
    if len(known) != len(chunks):
        known = []  # some chunk is not a video we verified: the seams cannot be judged
    labels = [task.label for task in work.sources]
    assert expect.fps is not None  # a merge always knows the job's frame rate
    return verify_merged(work.output, expect.frames, expect.fps, known, labels), None, None


def _check_chunk(output: str, expect: Expect, retime: bool) -> tuple[str | None, dict[str, Any] | None, str | None]:
    """A chunk's video against the job; with `retime`, a chunk whose frame rate is all that is
    wrong is remuxed to the job's rate in place (no re-encoding) and verified again."""
    from ..video.retime import RetimeError, retime_chunk
    from ..video.verify import judge_chunk

    def judge() -> Verdict:
        return judge_chunk(output, expect.frames, expect.width or 0, expect.height or 0, expect.fps)

    verdict = judge()
    if verdict.rate is not None and expect.fps is not None:
        if not retime:
            return (f"{verdict.problem}; --retime (retime=1) remuxes such chunks to {expect.fps:g} fps without "
                    "re-encoding"), None, None
        try:
            note = retime_chunk(output, expect.fps)
        except RetimeError as exc:
            return f"{verdict.problem}; --retime could not fix it: {exc}", None, None
        verdict = judge()
        if verdict.problem is not None:
            return f"retimed, but still wrong: {verdict.problem}", None, None
        return None, verdict.facts.as_record() if verdict.facts else None, note
    if verdict.not_retimable is not None and retime:
        return f"{verdict.problem}; --retime cannot fix it: {verdict.not_retimable}", None, None
    return verdict.problem, verdict.facts.as_record() if verdict.facts else None, None


def _record(work: Work, result: CommandResult, attempts: int, output: list[int] | None,
            video: dict[str, Any] | None, retimed: str | None = None) -> dict[str, object]:
    return {
        "task": work.key,
        "fingerprint": work.fingerprint,
        "output": output,  # the stamp the output must keep for the record to be believed
        "inputs": {relative(p, work.cwd): content_state(p) for p in work.inputs},
        "writeId": uuid.uuid4().hex,  # which record this is: what "done since I looked" compares
        "finishedAt": time.time(),  # for people; no runner compares it with its own clock
        "duration": round(result.duration, 3),
        "host": socket.gethostname(),
        "attempts": attempts,
        **({"video": video} if video else {}),  # what the merge checks its seams against
        **({"retimed": retimed} if retimed else {}),  # `--retime` gave it the job's frame rate: said by `status`
    }


def clear_place(work: Work, place: Place, vouched: list[int] | None, why: str | None = None,
                create: bool = False) -> None:
    note = places.clear(place, vouched, work.label, why, create)
    if note:
        say(note)
        events.emit(work.state_root, "task-aside", task=work.key, chunkId=work.chunk_id, message=note)
