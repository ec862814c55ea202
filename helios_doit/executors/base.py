"""The worker seam: what running one chunk command anywhere means, and how a stop reaches it.

An adapter (`WorkerAdapter`) runs one command in one folder to its end, streams its output to a
sink, and stops it and everything it started when asked; `local` runs it on this machine, `dask_adapter`
on a Dask cluster. Adapters are named in `registry`, so that tasks carry a name, not an object.
Adapters register a stopper here: a signal that stops the run reaches every command of every
adapter this process runs.
"""
from __future__ import annotations

import signal
import threading
from dataclasses import dataclass
from typing import Callable, Protocol

from ..storage.staging import Stage

#: Seconds a stopped command gets between SIGTERM and SIGKILL (renderers finalise files).
STOP_GRACE = 3.0

OutputSink = Callable[[str, bytes], None]
"""Receives ("stdout" | "stderr", bytes) as the command writes them."""


@dataclass(frozen=True)
class CommandRequest:
    command: str
    cwd: str
    env: dict[str, str] | None = None
    timeout: float | None = None
    on_start: Callable[[int, int | None], None] | None = None  # the group and its leader's start time, if told
    output: str | None = None  # the file the command writes: a remote rerun removes it first
    should_stop: Callable[[], bool] | None = None  # polled by remote engines: the run was cancelled
    stage: Stage | None = None  # a bucket job: a machine that shares no disk fetches and returns through the bucket


@dataclass(frozen=True)
class CommandResult:
    exit_code: int | None  # None when a signal ended it
    signal: int | None
    duration: float
    stderr_tail: tuple[str, ...] = ()
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def describe(self) -> str:
        if self.timed_out:
            return "timed out"
        if self.signal is not None:
            return f"killed by {signal.Signals(self.signal).name}"
        return f"exit code {self.exit_code}"


class WorkerAdapter(Protocol):
    def execute(self, request: CommandRequest, sink: OutputSink) -> CommandResult:
        """Run to the end; on KeyboardInterrupt stop the command and everything it started, then re-raise."""
        ...


_stoppers: list[Callable[[int], int]] = []


def register_stopper(stop: Callable[[int], int]) -> None:
    """Let an adapter take part in `signal_running`: `stop(sig)` signals its commands, returns how many."""
    _stoppers.append(stop)


def signal_running(sig: int) -> int:
    """Send `sig` to every command this process runs, on every adapter; returns how many."""
    _sent.append(sig)  # first: a command registered from now on sees it (`stop_sent`)
    return sum(stop(sig) for stop in list(_stoppers))


_sent: list[int] = []  # the signals `signal_running` sent in this process
_holding = threading.local()  # .depth: how many `hold_stops` this thread is inside
_deferred: list[int] = []  # stops the main thread's handler held back


def stop_sent() -> int | None:
    """The signal a stop last sent to this process' commands, if one did: a command registered
    after it (from another thread) was missed, and must get it from its adapter."""
    return _sent[-1] if _sent else None


def hold_stops() -> None:
    """Until `release_stops`: a stop's handler (which runs on the main thread) notes it and returns.

    Not pthread_sigmask: that holds back only what the kernel would deliver to this thread; it
    then picks another thread (multiprocessing's queue feeder, in every doit worker process), and
    CPython runs the Python handler on the main thread anyway, in the middle of the held block.
    And every command started meanwhile would inherit the mask: deaf to SIGTERM and SIGINT.
    """
    _holding.depth = getattr(_holding, "depth", 0) + 1


def release_stops() -> None:
    """End a `hold_stops`; a stop held back meanwhile is handled now, on the main thread."""
    _holding.depth -= 1
    if not _holding.depth and (signum := take_held()) is not None:
        signal.raise_signal(signum)


def take_held() -> int | None:
    """The stop held back on this thread, if any, now taken out of the hold (to be handled at once)."""
    if not _deferred or threading.current_thread() is not threading.main_thread():
        return None
    signum = _deferred[0]
    _deferred.clear()
    return signum


def held_back(signum: int) -> bool:
    """For a stop's handler: True if the thread it interrupted holds stops (it is noted, to be
    raised again by `release_stops`)."""
    if getattr(_holding, "depth", 0):
        _deferred.append(signum)
        return True
    return False
