"""How a task ended, as typed data: what the task action hands doit, and what a failure record holds.

The task action runs in a doit worker process; the runner's main process reports it. doit carries
a dict an action returns back as the task's `values`, and a `TaskFailed` as its failure, so the
outcome crosses that boundary as `TaskResult.values()` and `TaskStopped`, never as text to parse.
"""
from __future__ import annotations

import signal as signals
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from doit.exceptions import TaskFailed

from .files import read_json, write_json_atomic

_KEY = "helios"


@dataclass(frozen=True, slots=True)
class TaskResult:
    """A task that succeeded: ran in `seconds` at attempt `attempt`, or was done by another runner."""

    seconds: float | None = None
    attempt: int | None = None
    elsewhere: bool = False

    def values(self) -> dict[str, Any]:
        """The common case (done at its first attempt) is the seconds alone: the runner's main
        process holds one of these per chunk for the whole run."""
        if self.attempt == 1 and not self.elsewhere:
            return {_KEY: self.seconds}
        return {_KEY: (self.seconds, self.attempt, self.elsewhere)}

    @classmethod
    def from_values(cls, values: object) -> TaskResult | None:
        raw = values.get(_KEY) if isinstance(values, dict) else None
        if isinstance(raw, float):
            return cls(raw, 1)
        if not isinstance(raw, (tuple, list)) or len(raw) != 3:
            return None
        return cls(*raw)


class TaskStopped(TaskFailed):
    """A task stopped because the run was cancelled (another chunk failed for good): not its fault."""


@dataclass(frozen=True, slots=True)
class Failure:
    """A task's last failure for good (`failures/<task>.json`): what `status` and the summary say."""

    task: str
    message: str
    attempts: int = 0  # 0: it never ran (refused, or the runner could not do its bookkeeping)
    exitCode: int | None = None
    signal: int | None = None
    timedOut: bool = False
    stderrTail: list[str] = field(default_factory=list)
    log: str | None = None
    at: float = 0.0
    runId: str | None = None
    wrong: bool = False  # exit 0, but its output is not what the job asked for: running it again makes it again

    def write(self, path: Path) -> None:
        write_json_atomic(path, asdict(self))

    @classmethod
    def read(cls, path: Path) -> Failure | None:
        """The failure at `path`; fields a run never writes (damage) are dropped."""
        data = read_json(path)
        if data is None or not isinstance(data.get("task"), str):
            return None
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        known["message"] = str(known.get("message") or "")
        known["stderrTail"] = [str(line) for line in known.get("stderrTail") or [] if line is not None]
        return cls(**known)

    @property
    def how(self) -> str:
        """How the last attempt ended: timed out, killed by a signal, or its exit code."""
        if self.timedOut:
            return "timed out"
        if self.signal:
            try:
                return f"killed by {signals.Signals(int(self.signal)).name}"
            except (ValueError, TypeError):
                return f"killed by signal {self.signal}"
        return f"exit code {self.exitCode}" if self.exitCode is not None else self.message or "failed"
