"""The worker seam: what running one chunk command anywhere means, and how a stop reaches it.

An adapter (`WorkerAdapter`) runs one command in one folder to its end, streams its output to a
sink, and stops it and everything it started when asked; `local` runs it on this machine, `dask_adapter`
on a Dask cluster. Adapters are named in `registry`, so that tasks carry a name, not an object.
Adapters register a stopper here: a signal that stops the run reaches every command of every
adapter this process runs.
"""
from __future__ import annotations

import signal
from dataclasses import dataclass
from typing import Callable, Protocol

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


#: The signals that stop a run.
STOPS = {signal.SIGINT, signal.SIGTERM}

_stoppers: list[Callable[[int], int]] = []


def register_stopper(stop: Callable[[int], int]) -> None:
    """Let an adapter take part in `signal_running`: `stop(sig)` signals its commands, returns how many."""
    _stoppers.append(stop)


def signal_running(sig: int) -> int:
    """Send `sig` to every command this process runs, on every adapter; returns how many."""
    return sum(stop(sig) for stop in list(_stoppers))
