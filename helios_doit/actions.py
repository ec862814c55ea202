"""What a chunk or merge task does when doit runs it, and how doit asks whether it is done.

Both cross doit's process boundary (under `-n` with spawn the task is pickled), so they are
plain data plus module-level functions. The order of the steps is the guarantee:
drop the record, remove the stale output, run, verify, record; on any failure or interrupt
remove the partial output (make's .DELETE_ON_ERROR) so nothing half-written is ever kept.
"""
from __future__ import annotations

import inspect
import os
import random
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from doit.exceptions import TaskFailed

from . import checkpoints, events, places, reaper, supervise
from .errors import os_fault
from .locks import task_lock, try_lock
from .options import RunOptions
from .output import LogSink
from .places import Place, PlaceError
from .video import is_video_path
from .state import StateDir, content_changed, content_state, read_json, record_file, remove, stamp, write_json_atomic
from .worker import CommandRequest, CommandResult, get_adapter

@dataclass(frozen=True, slots=True)
class Expect:
    """A video output's expected contents: a chunk's frames and size, or the merge's frames and fps."""

    frames: int
    width: int | None = None
    height: int | None = None
    fps: float | None = None


@dataclass(frozen=True, slots=True)
class TaskJob:
    """Everything a worker needs to run one chunk, or the merge."""

    name: str  # state key: "chunk-3" or "merge"
    command: str
    cwd: str
    output: str | None  # None: a merge whose output we cannot know
    state_root: str
    fingerprint: str
    inputs: tuple[str, ...] = ()  # files whose content the record pins (the merge's chunk outputs)
    adapter: str = "local"  # a name in worker.ADAPTERS, so that tasks stay plain, picklable data
    expect: Expect | None = None  # what a video output must hold to count as done
    chunk_id: int | None = None  # None for the merge
    options: RunOptions = RunOptions()
    looked: float = 0.0  # when the runner loaded the job (unix time): records since are another's
    roots: tuple[str, ...] = ()  # folders outputs may be in, checked again whenever the output is touched
    sources: tuple[str, ...] = ()  # the merge: its chunks' task names, in frame order (their records' facts)

    @property
    def label(self) -> str:
        """Shown to people: "chunk 3" or "merge"."""
        return self.name.replace("-", " ")

    @property
    def place(self) -> Place | None:
        return Place(self.output, self.roots, os.path.join(self.state_root, "aside")) if self.output else None

    def complete(self) -> Complete:
        return Complete(record_file(self.state_root, self.name), self.fingerprint, self.output, self.inputs, self.cwd)


#: What `run_task` returns for a task another runner finished: doit keeps it as the task's result.
DONE_ELSEWHERE = "done elsewhere"


def run_task(job: TaskJob) -> TaskFailed | str:
    """Returns, as doit's task result, "<seconds> <attempt>" for a task it ran (so the runner's
    main process can report it without reading the event log), or DONE_ELSEWHERE."""
    supervise.ensure_handlers()
    if supervise.stopping():
        raise supervise.Interrupted(supervise.stopping() or 0)
    state = StateDir(Path(job.state_root))
    try:
        waiting = lambda: events.emit(state.root, "task-wait", task=job.name, chunkId=job.chunk_id)  # noqa: E731
        with task_lock(state.lock(job.name), supervise.stopping, on_wait=waiting):
            # Another runner may have finished it since we looked (or while we waited for its lock);
            # a record older than our look is one this run chose to redo (`-a`, a changed output).
            if job.complete().check(after=job.looked):
                events.emit(state.root, "task-skip", task=job.name, chunkId=job.chunk_id, reason="done by another runner")
                return DONE_ELSEWHERE
            dead = _take_over(job, state)
            return _attempts(job, state, dead)
    except PlaceError as exc:
        return _refused(job, state, f"{job.label}: {exc}; nothing was run or removed there")
    except OSError as exc:  # the environment's fault (disk full, permissions): one line, the run fails
        return _refused(job, state, f"{job.label}: {os_fault(exc)}")


def _refused(job: TaskJob, state: StateDir, message: str) -> TaskFailed:
    """A task that could not run, or could not finish its bookkeeping: said in one line."""
    try:
        write_json_atomic(state.failure(job.name), {"task": job.name, "attempts": 0, "exitCode": None, "signal": None,
                                                     "timedOut": False, "message": message, "stderrTail": [],
                                                     "log": None, "at": time.time(), "runId": events.run_id()})
    except OSError:
        pass  # the same fault, most likely; the line below still says it
    return TaskFailed(message)


def _take_over(job: TaskJob, state: StateDir) -> str | None:
    """A running marker under a lock we now hold was left by a runner that died mid-attempt.

    Whatever that attempt still runs on this machine is killed, and waited for, before the
    output is touched: one writer per output. (On another machine, its own guard did that.)
    """
    path = state.marker(job.name)
    if not os.path.lexists(path):
        return None
    marker = read_json(path) or {}
    if marker.get("machine") == reaper.machine() and not reaper.runner_alive(marker.get("tag")):
        pgid, start, tag = marker.get("pgid"), marker.get("leaderStart"), marker.get("tag")
        left = reaper.reap(pgid if isinstance(pgid, int) else None, start if isinstance(start, int) else None,
                           tag if isinstance(tag, str) else None)
        if left:
            raise PlaceError(f"processes {', '.join(map(str, left))} of an earlier attempt (runner pid "
                             f"{marker.get('pid')}) would not die; stop them, then run again")
    _remove_entry(state, path)
    events.emit(state.root, "task-takeover", task=job.name, chunkId=job.chunk_id, pid=marker.get("pid"),
                host=marker.get("host"), runId=marker.get("runId"))
    return f"left by the attempt of runner pid {marker.get('pid')} on {marker.get('host')}, which died"


def _remove_entry(state: StateDir, path: Path) -> None:
    """Remove one of our state files; a folder in its place (damage) is moved aside, not deleted."""
    try:
        remove(path)
    except IsADirectoryError:
        _say(f"{path} was a folder; moved it to {state.set_aside(path)}")


def _say(line: str) -> None:
    """One line for the user, on stderr, in one write (worker processes share the terminal)."""
    try:
        os.write(2, f"helios-doit: {line}\n".encode(errors="replace"))
    except OSError:
        pass


def _attempts(job: TaskJob, state: StateDir, dead: str | None = None) -> TaskFailed | str:
    """Run until success, a final failure, or the run is cancelled; count every attempt.

    `dead` says whose attempt died here, if one did: its partial output is not ours to delete."""
    vouched = (read_json(state.record(job.name)) or {}).get("output")
    if job.place is not None:  # the record vouches for its output once, now; then it is dropped
        _clear(job, job.place, vouched if isinstance(vouched, list) else None, dead, create=True)
    _remove_entry(state, state.record(job.name))
    _remove_entry(state, state.failure(job.name))
    allowed = job.options.attempts if job.chunk_id is not None else 1
    cancel = state.cancel_flag(events.run_id())
    for attempt in range(1, allowed + 1):
        if cancel.exists():
            return TaskFailed(f"{job.label} stopped: {cancel.read_text().strip()}")
        failure, result, output = _attempt(job, state, attempt, allowed)
        if failure is None:
            size = output[0] if output else None
            events.emit(state.root, "task-done", task=job.name, chunkId=job.chunk_id, attempt=attempt,
                        duration=round(result.duration, 3), frames=job.expect.frames if job.expect else None, size=size)
            return f"{result.duration:.3f} {attempt}"
        if cancel.exists() and result.signal is not None:
            return TaskFailed(f"{job.label} stopped: {cancel.read_text().strip()}")
        # A death by signal N counts as exit code 128+N too: what a shell would have reported.
        code = result.exit_code if result.signal is None else 128 + result.signal
        fatal = code is not None and code in job.options.fatal_exit_codes
        if attempt < allowed and not fatal:
            delay = job.options.retry_delay * 2 ** (attempt - 1) * random.uniform(0.5, 1.5)
            events.emit(state.root, "task-retry", task=job.name, chunkId=job.chunk_id, attempt=attempt,
                        message=failure, delay=round(delay, 2))
            _pause(delay)
            continue
        return _give_up(job, state, attempt, failure, result, cancel)
    raise AssertionError("unreachable")


def _clear(job: TaskJob, place: Place, vouched: list[int] | None, why: str | None = None,
           create: bool = False) -> None:
    note = places.clear(place, vouched, job.label, why, create)
    if note:
        _say(note)
        events.emit(job.state_root, "task-aside", task=job.name, chunkId=job.chunk_id, message=note)


def _give_up(job: TaskJob, state: StateDir, attempt: int, failure: str, result: CommandResult, cancel: Path) -> TaskFailed:
    log = str(state.log(job.name))
    write_json_atomic(state.failure(job.name), {
        "task": job.name, "attempts": attempt, "exitCode": result.exit_code, "signal": result.signal,
        "timedOut": result.timed_out, "message": failure, "stderrTail": list(result.stderr_tail[-10:]), "log": log,
        "at": time.time(), "runId": events.run_id(),
    })
    events.emit(state.root, "task-failed", task=job.name, chunkId=job.chunk_id, attempt=attempt, message=failure,
                exitCode=result.exit_code, signal=result.signal, stderrTail=list(result.stderr_tail[-5:]), log=log, final=True)
    if not job.options.keep_going and job.chunk_id is not None:
        _cancel_others(state, job, cancel, f"{job.label} failed")
    tries = f" after {attempt} attempts" if attempt > 1 else ""
    lines = [f"{job.label} failed{tries}: {failure}; log: {log}"]
    lines += [f"  | {line}" for line in result.stderr_tail[-5:]]
    return TaskFailed("\n".join(lines))


def _cancel_others(state: StateDir, job: TaskJob, cancel: Path, reason: str) -> None:
    """Without keep-going the first chunk that fails for good stops the others of this run,
    cleanly: every runner process of the run polls this flag while its commands run."""
    cancel.write_text(reason + "\n")


def _pause(seconds: float) -> None:
    """A retry's backoff, cut short by a stop of the run (signals reach only the main thread)."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if supervise.stopping():
            raise supervise.Interrupted(supervise.stopping() or 0)
        time.sleep(min(left, 0.1))


def _attempt(job: TaskJob, state: StateDir, attempt: int, allowed: int
             ) -> tuple[str | None, CommandResult, list[int] | None]:
    """One run of the command: never leaves a partial output behind, whatever ends it. On success
    its record is written (and the output's stamp returned) before a stop can interrupt: an output
    is either recorded or removed."""
    marker = state.marker(job.name)
    place = job.place
    if place is not None and attempt > 1:  # the first attempt's place was made ready just before
        _clear(job, place, None, create=True)  # empty unless something appeared since: moved aside
    host, pid = socket.gethostname(), os.getpid()
    sink = LogSink(state.log(job.name), f"{job.label} attempt {attempt}/{allowed} on {host} pid {pid}: {job.command}",
                   f"[{job.label}] ")
    # Written before the command starts: a runner that dies at any moment leaves the means to
    # find what it started (its tag in every process' environment; the group, once known).
    running = {"pid": pid, "host": host, "machine": reaper.machine(), "startedAt": time.time(),
               "runId": events.run_id(), "attempt": attempt, "tag": reaper.tag()}
    try:
        write_json_atomic(marker, running)
    except BaseException:
        sink.close("not started: the running marker could not be written")
        raise

    def on_start(pgid: int, leader_start: int | None = None) -> None:
        write_json_atomic(marker, {**running, "pgid": pgid, "leaderStart": leader_start})

    timeout = job.options.chunk_timeout if job.chunk_id is not None else None
    ok = False
    footer = "interrupted"
    try:
        with supervise.active():
            events.emit(state.root, "task-start", task=job.name, chunkId=job.chunk_id, attempt=attempt,
                        attempts=allowed, pid=pid, host=host)
            checkpoints.reached("before-command", job.name, state.root)
            request = CommandRequest(job.command, job.cwd, timeout=timeout,
                                     on_start=on_start, output=job.output,
                                     should_stop=state.cancel_flag(events.run_id()).exists)
            result = get_adapter(job.adapter, job.options.scheduler).execute(request, sink)
            with supervise.held():  # a stop now waits until this attempt's outcome is on disk
                failure, facts = _verify(job, result)
                footer = f"{result.describe()} after {result.duration:.2f}s" + (f": {failure}" if failure else "")
                output = stamp(job.output) if job.output and failure is None else None
                if failure is None:
                    checkpoints.reached("before-record", job.name, state.root)
                    write_json_atomic(state.record(job.name), _record(job, result, attempt, output, facts))
                    ok = True
                    checkpoints.reached("after-record", job.name, state.root)
    finally:
        sink.close(footer)
        try:
            if not ok and place is not None:
                note = places.discard(place, job.label)
                if note:
                    _say(note)
        except (PlaceError, OSError) as exc:  # said, never in the way of the marker's removal or a stop
            _say(f"{job.label}: its partial output was not removed: {exc}")
        finally:
            remove(marker)
    return failure, result, output


def _verify(job: TaskJob, result: CommandResult) -> tuple[str | None, dict[str, Any] | None]:
    """Why the attempt failed (None if it did not), and what a verified video chunk holds."""
    if not result.ok:
        return result.describe(), None
    if not job.output:
        return None, None
    if stamp(job.output) is None:
        return f"the command exited 0 but did not write {job.output}", None
    if job.expect is None or not is_video_path(job.output):
        return None, None
    problem, facts = _check_video(job)
    if problem:
        return f"the command exited 0 but its output is wrong: {os.path.basename(job.output)}: {problem}", None
    return None, facts


def _check_video(job: TaskJob) -> tuple[str | None, dict[str, Any] | None]:
    from .video.verify import ChunkFacts, inspect_chunk, verify_merged

    assert job.output is not None and job.expect is not None
    expect = job.expect
    if expect.fps is None:
        problem, facts = inspect_chunk(job.output, expect.frames, expect.width or 0, expect.height or 0)
        return problem, facts.as_record() if facts else None
    # The merge: checked against the job, and seam by seam against what its chunks' records hold.
    chunks = [ChunkFacts.from_record((read_json(record_file(job.state_root, name)) or {}).get("video"))
              for name in job.sources]
    known = [facts for facts in chunks if facts is not None]
    if len(known) != len(chunks):
        known = []  # some chunk is not a video we verified: the seams cannot be judged
    labels = [name.replace("-", " ") for name in job.sources]
    return verify_merged(job.output, expect.frames, expect.fps, known, labels), None


def _record(job: TaskJob, result: CommandResult, attempts: int, output: list[int] | None,
            video: dict[str, Any] | None) -> dict[str, object]:
    return {
        "task": job.name,
        "fingerprint": job.fingerprint,
        "output": output,  # the stamp the output must keep for the record to be believed
        "inputs": {_relative(p, job.cwd): content_state(p) for p in job.inputs},
        "finishedAt": time.time(),
        "duration": round(result.duration, 3),
        "host": socket.gethostname(),
        "attempts": attempts,
        **({"video": video} if video else {}),  # what the merge checks its seams against
    }


@dataclass(frozen=True, slots=True)
class Complete:
    """doit `uptodate` check: the durable record matches this task as it is now."""

    record: str
    fingerprint: str
    output: str | None
    inputs: tuple[str, ...] = ()
    cwd: str = ""

    def __call__(self) -> bool:
        return self.check()

    def check(self, after: float | None = None) -> bool:
        """Done, and (given `after`) recorded at or after that time. A record whose fields are not
        what a run writes (damage) reads as no record: the work is redone."""
        try:
            return self._check(after)
        except (TypeError, ValueError, AttributeError):
            return False

    def _check(self, after: float | None) -> bool:
        data = read_json(self.record)
        if data is None or data.get("fingerprint") != self.fingerprint:
            return False
        if after is not None and not float(data.get("finishedAt") or 0) >= after:
            return False
        if self.output is not None and stamp(self.output) != data.get("output"):
            return False
        states = data.get("inputs") or {}
        if len(states) != len(self.inputs):
            return False
        return not any(content_changed(p, states.get(_relative(p, self.cwd))) for p in self.inputs)


def _relative(path: str, folder: str) -> str:
    """os.path.relpath for the common case of a path inside `folder`, at a fraction of its cost."""
    prefix = folder.rstrip(os.sep) + os.sep
    return path[len(prefix):] if path.startswith(prefix) and os.sep + ".." not in path else os.path.relpath(path, folder)


def chunk_done(job: TaskJob) -> bool:
    """A chunk's doit `uptodate`: its record matches and its output is the file recorded."""
    return job.complete().check()


def clean_task(job: TaskJob) -> None:
    """`doit clean`: the output and the record go together, so the task is simply not done. Only
    the file the record vouches for is deleted; anything else in the output's place is moved aside.
    A task another runner is working on is left alone; a fault stops `clean` with one line, exit 1."""
    state = StateDir(Path(job.state_root))
    try:
        with try_lock(state.lock(job.name)) as held:
            if not held:
                raise PlaceError("another runner is working on it; not cleaned (stop that run first)")
            vouched = (read_json(state.record(job.name)) or {}).get("output")
            remove(state.record(job.name))
            if job.place is not None:
                note = places.clear(job.place, vouched if isinstance(vouched, list) else None, job.label)
                if note:
                    _say(note)  # past doit's capture of the action's output
    except FileNotFoundError:
        return  # no state folder: nothing was ever done, there is nothing to clean
    except (PlaceError, OSError) as exc:
        _say(f"{job.label}: {exc if isinstance(exc, PlaceError) else os_fault(exc)}")
        raise SystemExit(1) from None


# doit inspects the signature of an action or uptodate function on every call (for its magic
# `task`/`values` arguments); a function that carries its signature is answered at once.
run_task.__signature__ = inspect.signature(run_task)  # type: ignore[attr-defined]
chunk_done.__signature__ = inspect.signature(chunk_done)  # type: ignore[attr-defined]
