"""The one tree of errors helios-doit says to a user, and the exit codes that hang off it.

Every error the package raises for a person to read is a `HeliosDoitError`: one self-contained
line per fault (what, where, how to fix it), and the exit code it stands for. Its two branches
say whose fault it is, as the exit codes do:

    HeliosDoitError            exit 1 unless it says otherwise
    ├── BadInput               exit 2: the job, an option, a file given; nothing ran, nothing written
    │   ├── JobError           a job that must not run (every fault of it, one line each)
    │   ├── RenderError        `render`: arguments that cannot make a video
    │   ├── CompositionError   `render`: a composition file that cannot be loaded
    │   └── PlanError          `plan`: templates and numbers that make no job
    ├── EnvironmentFault       exit 1: the machine or a service failed (disk, permissions, a store)
    │   ├── StorageError       a store's fault, or its refusal; `Exists`: a create-only write lost
    │   └── PlaceError         an output's place that may not be touched now (it became a symlink)
    ├── ProbeError             a media file that cannot be read as one
    ├── StitchError            `merge`: chunks that cannot be joined (its own exit code)
    ├── SeamsError             `seams`: no picture can be made (its own exit code)
    └── Stopped                a run stopped by a signal: 128 + its number

Not in the tree, on purpose: `executors.supervise.Interrupted` is a KeyboardInterrupt (doit
unwinds those and keeps finished work) and `state.outcome.TaskStopped` is doit's TaskFailed.
"""
from __future__ import annotations

import errno as errnos
import re

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def flatten(text: str) -> str:
    """A newline (or other control character) in a path from a job must not split a line."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


class HeliosDoitError(Exception):
    """An error for a person: `lines` (one per fault) and the `exit_code` it stands for."""

    exit_code: int = 1

    def __init__(self, *lines: str, exit_code: int | None = None):
        self.lines = [flatten(line) for line in lines] or [type(self).__name__]
        if exit_code is not None:
            self.exit_code = exit_code
        super().__init__("\n".join(self.lines))

    def __str__(self) -> str:
        return "\n".join(self.lines)


class BadInput(HeliosDoitError):
    """Bad input: exit 2, and nothing was run, written or deleted."""

    exit_code = 2


class EnvironmentFault(HeliosDoitError):
    """The environment failed (a full disk, permissions, a store that does not answer): exit 1.
    `errno` says which, when a system call said it."""

    def __init__(self, *lines: str, errno: int | None = None, exit_code: int | None = None):
        super().__init__(*lines, exit_code=exit_code)
        self.errno = errno


_HINTS = {
    errnos.ENOSPC: "free some space, then run again",
    errnos.EDQUOT: "free some space (quota), then run again",
    errnos.EROFS: "the filesystem is read-only; run where the job's folder can be written",
    errnos.EACCES: "check the owner and permissions",
    errnos.EPERM: "check the owner and permissions",
    errnos.ENAMETOOLONG: "use a shorter path",
    errnos.EAGAIN: "the system is out of processes or memory; run fewer at once (a lower -n / --concurrency)",
    errnos.ENOMEM: "the system is out of memory; run fewer at once (a lower -n / --concurrency)",
}


def os_fault(exc: OSError) -> str:
    """An environmental failure (disk full, permissions, read-only) as one line: what, where, what to do."""
    where = f" {exc.filename}" if exc.filename else ""
    reason = exc.strerror or str(exc) or type(exc).__name__
    hint = _HINTS.get(exc.errno or 0)
    said = f"cannot use{where}: {reason}" if where else reason
    return said + (f"; {hint}" if hint else "")
