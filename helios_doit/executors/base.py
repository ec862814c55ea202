"""The worker seam: what running one chunk command anywhere means.

An adapter (`WorkerAdapter`) runs one command in one folder to its end, streams its output to a
sink, and stops it and everything it started when asked; `local` runs it on this machine,
`dask_adapter` on a Dask cluster. Adapters are named in `registry`, so that tasks carry a name,
not an object; a stop reaches every adapter's commands through `stops`.
"""
from __future__ import annotations

import signal
from dataclasses import dataclass, field
from typing import Callable

from ..storage.staging import Stage

OutputSink = Callable[[str, bytes], None]
"""Receives ("stdout" | "stderr", bytes) as the command writes them."""


@dataclass(frozen=True)
class Elsewhere:
    """What a command run on another machine needs besides itself: the file it writes (a rerun
    there removes a lost attempt's partial output first) and, for a job in a bucket, how its
    inputs come and its output goes back (`Stage`). A local adapter has no use for it."""

    output: str | None = None
    stage: Stage | None = None


@dataclass(frozen=True)
class CommandRequest:
    """One command to run to its end."""

    command: str  # shell syntax, run as `/bin/sh -c` would run it
    cwd: str
    env: dict[str, str] | None = None  # variables added to the runner's environment
    timeout: float | None = None  # seconds; then the command and all it started are stopped
    on_start: Callable[[int, int | None], None] | None = None  # told its process group and leader's start time
    should_stop: Callable[[], bool] | None = None  # polled while it runs: the run was cancelled
    own: tuple[str, ...] | None = None  # one of our own subcommands, by its arguments: nothing to parse
    elsewhere: Elsewhere = field(default_factory=Elsewhere)


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


class WorkerAdapter:
    """Where chunk commands run: the one seam between the task graph and an execution engine.

    An adapter is made by name (`registry.get_adapter(name, scheduler)`) in the process that runs
    a task, once per attempt, so making one must be cheap. `execute` runs one command to its end
    and returns how it ended; it streams what the command writes to `sink` as it comes; on
    KeyboardInterrupt (a stop of the run) it stops the command and everything it started, then
    re-raises; and it registers a stopper (`stops.register_stopper`) so that a signal reaches
    its commands wherever they run. Verification, records, retries and locks stay with the
    caller: an adapter only runs a command.

    A minimal adapter that runs each command on one other host over ssh (no stop, no timeout):

        class SshAdapter(WorkerAdapter):
            def __init__(self, scheduler: str | None = None):
                self.host = scheduler or "render-1"

            def execute(self, request: CommandRequest, sink: OutputSink) -> CommandResult:
                started = time.monotonic()
                proc = subprocess.run(["ssh", self.host, f"cd {shlex.quote(request.cwd)} && {request.command}"],
                                      capture_output=True)
                sink("stdout", proc.stdout)
                sink("stderr", proc.stderr)
                return CommandResult(proc.returncode, None, time.monotonic() - started)

    and its name in `registry.ADAPTERS`: `"ssh": "mypackage.ssh:SshAdapter"`.
    """

    def __init__(self, scheduler: str | None = None) -> None:
        self.scheduler = scheduler

    def execute(self, request: CommandRequest, sink: OutputSink) -> CommandResult:
        """Run to the end; on KeyboardInterrupt stop the command and everything it started, then re-raise."""
        raise NotImplementedError
