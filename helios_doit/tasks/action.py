"""What a chunk or merge task does when doit runs it: lock, take over a dead runner's attempt, run.

The order of the steps is the guarantee: drop the record, remove the stale output, run, verify,
record; on any failure or interrupt remove the partial output (make's .DELETE_ON_ERROR), so
nothing half-written is ever kept. It returns to doit, as the task's values, a `TaskResult`.
"""
from __future__ import annotations

import contextlib
import inspect
import os
import random
import time
from pathlib import Path
from typing import Any, Iterator

from doit.exceptions import TaskFailed

from ..executors import reaper, supervise
from ..executors.base import CommandResult
from ..core.errors import os_fault
from ..state import events
from ..state.files import read_json, remove, write_json_atomic
from ..state.folder import StateDir
from ..state.locks import task_lock
from ..state.outcome import Failure, TaskResult, TaskStopped
from ..state.places import PlaceError, output_claim
from ..storage.lease import acquire
from ..storage.records import lease_key
from ..storage.store import StorageError
from .attempt import changed_source, clear_place, one_attempt
from ..storage.staging import sweep
from .publish import (dead_here, lease_owner, publish, published_record, pull_sources, remote_state, stage_of,
                      store_of)
from .say import say
from .uptodate import seen
from .work import Work


def do_task(work: Work, task: Any) -> TaskFailed | dict[str, Any]:
    """doit's task action: a `TaskResult` as the task's values (so the runner's main process can
    report it without reading the event log), or the failure. `task` is doit's own, which
    carries what the runner saw of the task's record when it decided to run it."""
    supervise.ensure_handlers()
    if supervise.stopping():
        raise supervise.Interrupted(supervise.stopping() or 0)
    state = StateDir(Path(work.state_root))
    was = seen(task)
    try:
        waiting = lambda: events.emit(state.root, "task-wait", task=work.key, chunkId=work.chunk_id)  # noqa: E731
        with task_lock(state.lock(work.key), supervise.stopping, on_wait=waiting):
            # Another runner may have finished it since we looked (or while we waited for its lock):
            # a good record other than the one we saw. The one we saw is one this run chose to redo (-a).
            if work.remote is not None:
                return _in_bucket(work, state, was)
            done, identity = work.complete().look()
            if done and identity != was:
                return _elsewhere(work, state)
            return _render(work, state)
    except StorageError as exc:  # the store's fault, mid-run: one line, the run fails
        return _refused(work, state, f"{work.label}: {exc}")
    except PlaceError as exc:
        return _refused(work, state, f"{work.label}: {exc}; nothing was run or removed there")
    except OSError as exc:  # the environment's fault (disk full, permissions): one line, the run fails
        return _refused(work, state, f"{work.label}: {os_fault(exc)}")


def _render(work: Work, state: StateDir) -> TaskFailed | dict[str, Any]:
    """Under the output's own claim (one writer per output, across jobs too): whatever a runner
    that died left running is reaped first, this job's (its running marker) or another job's (the
    copy beside the output), then the attempts run until done."""
    with _output_claimed(work, state) as copy:
        dead = _take_over(work, state, state.marker(work.key))
        if copy is not None:  # this job's dead attempt (said already), or another job's
            dead = _take_over(work, state, copy, beside=True, said=dead is not None) or dead
        return _until_done(work, state, dead, copy)


@contextlib.contextmanager
def _output_claimed(work: Work, state: StateDir) -> Iterator[Path | None]:
    """Hold the output's lock, from clearing its place to its record; yields where the attempt
    keeps a copy of its running marker beside the output (None for a task without an output)."""
    if work.place is None:
        yield None
        return

    def waiting() -> None:
        say(f"{work.label}: waiting: a runner of another job writes {work.shown_output} now")
        events.emit(state.root, "task-wait", task=work.key, chunkId=work.chunk_id, output=work.shown_output)

    claim = output_claim(work.place, work.label)
    for note in claim.notes:
        say(note)
    with task_lock(Path(claim.lock), supervise.stopping, on_wait=waiting):
        yield Path(claim.marker)


def _elsewhere(work: Work, state: StateDir) -> dict[str, Any]:
    events.emit(state.root, "task-skip", task=work.key, chunkId=work.chunk_id, reason="done by another runner")
    return TaskResult(elsewhere=True).values()


def _in_bucket(work: Work, state: StateDir, was: str | None) -> TaskFailed | dict[str, Any]:
    """A task of a job in a bucket: under the task's lease there (other machines), rendered in
    this machine's mirror as any task is, then published. A verified output this machine made
    earlier but did not get to publish (a crash mid-upload: no record in the bucket) is
    published, not rendered again."""
    def waiting(holder: dict[str, Any]) -> None:
        say(f"{work.label}: waiting for the runner on {holder.get('host')} (pid {holder.get('pid')}) that holds it in the bucket")
        events.emit(state.root, "task-wait", task=work.key, chunkId=work.chunk_id, host=holder.get("host"), pid=holder.get("pid"))

    try:
        lease = acquire(store_of(work), lease_key(remote_state(work), work.key), supervise.stopping, waiting,
                        lease_owner(), dead_here)
    except InterruptedError:
        raise supervise.Interrupted(supervise.stopping() or 0) from None
    try:
        published = published_record(work)
        if published is not None and published != was:
            return _elsewhere(work, state)
        if (stage := stage_of(work)) is not None:
            sweep(stage.remote, stage.area)  # outputs staged by attempts that died before taking them
        if work.sources:
            pull_sources(work, state)
        result: TaskFailed | dict[str, Any] = TaskResult(0.0, 0).values()
        # Done there as this run saw it: this run chose to redo it (-a), whatever is here.
        if published is not None or not work.complete().check():
            result = _render(work, state)
            if isinstance(result, TaskFailed):
                return result
        else:  # made and verified here by a run that died before publishing it: not rendered now
            events.emit(state.root, "task-skip", task=work.key, chunkId=work.chunk_id,
                        reason="made here earlier; published now")
        with supervise.held():  # a stop waits until the output and its record are both in the bucket, or neither
            if not publish(work, state, lease, published):
                return _elsewhere(work, state)
        return result
    finally:
        lease.release()


def _refused(work: Work, state: StateDir, message: str) -> TaskFailed:
    """A task that could not run, or could not finish its bookkeeping: said in one line."""
    try:
        Failure(work.key, message, at=time.time(), runId=events.run_id()).write(state.failure(work.key))
    except OSError:
        pass  # the same fault, most likely; the line below still says it
    return TaskFailed(message)


def _take_over(work: Work, state: StateDir, path: Path, beside: bool = False, said: bool = False) -> str | None:
    """A running marker (`path`) under a lock we now hold was left by a runner that died mid-attempt.

    Whatever that attempt still runs on this machine is killed, and waited for, before the
    output is touched: one writer per output. (On another machine, its own guard did that.)
    The copy `beside` the output is in a folder others may write: only processes that carry its
    attempt's tag are killed, never a process group it names.
    """
    if not os.path.lexists(path):
        return None
    marker = read_json(path) or {}
    if marker.get("machine") == reaper.machine() and not reaper.runner_alive(marker.get("tag")):
        pgid, start, tag = marker.get("pgid"), marker.get("leaderStart"), marker.get("tag")
        left = reaper.reap(pgid if isinstance(pgid, int) and not beside else None,
                           start if isinstance(start, int) else None, tag if isinstance(tag, str) else None)
        if left:
            raise PlaceError(f"processes {', '.join(map(str, left))} of an earlier attempt (runner pid "
                             f"{marker.get('pid')}) would not die; stop them, then run again")
    _remove_entry(state, path)
    if not said:
        events.emit(state.root, "task-takeover", task=work.key, chunkId=work.chunk_id, pid=marker.get("pid"),
                    host=marker.get("host"), runId=marker.get("runId"))
    return f"left by the attempt of runner pid {marker.get('pid')} on {marker.get('host')}, which died"


def _remove_entry(state: StateDir, path: Path) -> None:
    """Remove one of our state files; a folder in its place (damage) is moved aside, not deleted."""
    try:
        remove(path)
    except IsADirectoryError:
        say(f"{path} was a folder; moved it to {state.set_aside(path)}")


def _until_done(work: Work, state: StateDir, dead: str | None, copy: Path | None) -> TaskFailed | dict[str, Any]:
    """Run until success, a final failure, or the run is cancelled; count every attempt.

    `dead` says whose attempt died here, if one did: its partial output is not ours to delete.
    `copy`: where each attempt keeps a copy of its running marker beside the output."""
    if work.sources and (changed := changed_source(work)):
        return _refused(work, state, f"{work.label}: {changed}")
    vouched = (read_json(state.record(work.key)) or {}).get("output")
    if work.place is not None:  # the record vouches for its output once, now; then it is dropped
        clear_place(work, work.place, vouched if isinstance(vouched, list) else None, dead, create=True)
    _remove_entry(state, state.record(work.key))
    _remove_entry(state, state.failure(work.key))
    allowed = work.options.attempts if work.chunk_id is not None else 1
    cancel = state.cancel_flag(events.run_id())
    for attempt in range(1, allowed + 1):
        if cancel.exists():
            return TaskStopped(f"{work.label} stopped: {_why_cancelled(cancel)}")
        outcome = one_attempt(work, state, attempt, allowed, copy)
        failure, result, output = outcome.failure, outcome.result, outcome.output
        if failure is None:
            size = output[0] if output else None
            events.emit(state.root, "task-done", task=work.key, chunkId=work.chunk_id, attempt=attempt,
                        duration=round(result.duration, 3), frames=work.expect.frames if work.expect else None, size=size)
            return TaskResult(round(result.duration, 3), attempt).values()
        if cancel.exists() and result.signal is not None:
            return TaskStopped(f"{work.label} stopped: {_why_cancelled(cancel)}")
        # A death by signal N counts as exit code 128+N too: what a shell would have reported.
        code = result.exit_code if result.signal is None else 128 + result.signal
        # A wrong output is what the renderer makes of this command: another attempt makes it again.
        fatal = outcome.wrong or (code is not None and code in work.options.fatal_exit_codes)
        if attempt < allowed and not fatal:
            delay = work.options.retry_delay * 2 ** (attempt - 1) * random.uniform(0.5, 1.5)
            events.emit(state.root, "task-retry", task=work.key, chunkId=work.chunk_id, attempt=attempt,
                        message=failure, delay=round(delay, 2))
            _pause(delay)
            continue
        return _give_up(work, state, attempt, failure, result, cancel, outcome.wrong)
    raise AssertionError("unreachable")


def _give_up(work: Work, state: StateDir, attempt: int, failure: str, result: CommandResult, cancel: Path,
             wrong: bool = False) -> TaskFailed:
    log = str(state.log(work.key))
    Failure(work.key, failure, attempt, result.exit_code, result.signal, result.timed_out,
            list(result.stderr_tail[-10:]), log, time.time(), events.run_id(), wrong).write(state.failure(work.key))
    events.emit(state.root, "task-failed", task=work.key, chunkId=work.chunk_id, attempt=attempt, message=failure,
                exitCode=result.exit_code, signal=result.signal, stderrTail=list(result.stderr_tail[-5:]), log=log,
                final=True, wrong=wrong)
    if not work.options.keep_going and work.chunk_id is not None:
        # Without keep-going the first chunk that fails for good stops the others of this run,
        # cleanly: every runner process of the run polls this flag while its commands run.
        write_json_atomic(cancel, {"reason": f"{work.label} failed"})
    tries = f" after {attempt} attempts" if attempt > 1 else ""
    lines = [f"{work.label} failed{tries}: {failure}; log: {log}"]
    lines += [f"  | {line}" for line in result.stderr_tail[-5:]]
    return TaskFailed("\n".join(lines))


def _why_cancelled(cancel: Path) -> str:
    """The cancel flag's reason; read as a state file is (a FIFO or a link there is not waited on)."""
    return str((read_json(cancel) or {}).get("reason") or "the run was cancelled")


def _pause(seconds: float) -> None:
    """A retry's backoff, cut short by a stop of the run (signals reach only the main thread)."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if supervise.stopping():
            raise supervise.Interrupted(supervise.stopping() or 0)
        time.sleep(min(left, 0.1))


# doit inspects the signature of an action function on every call (for its magic
# `task`/`values` arguments); a function that carries its signature is answered at once.
do_task.__signature__ = inspect.signature(do_task)  # type: ignore[attr-defined]
