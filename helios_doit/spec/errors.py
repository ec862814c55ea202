"""The error every entry point turns into one line per fault and exit code 2.

Its own module so that the video tools and option parsing can raise it without importing the
JobSpec models (and pydantic) in every render and merge process.
"""
from __future__ import annotations

import errno
import re


class JobError(Exception):
    """A job that must not run. `lines` holds one self-contained line per fault."""

    def __init__(self, lines: list[str]):
        # A newline (or other control character) in a path from the job must not split a line.
        lines = [_CONTROL.sub(lambda m: repr(m.group())[1:-1], line) for line in lines]
        super().__init__("\n".join(lines))
        self.lines = lines


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


_HINTS = {
    errno.ENOSPC: "free some space, then run again",
    errno.EDQUOT: "free some space (quota), then run again",
    errno.EROFS: "the filesystem is read-only; run where the job's folder can be written",
    errno.EACCES: "check the owner and permissions",
    errno.EPERM: "check the owner and permissions",
    errno.ENAMETOOLONG: "use a shorter path",
    errno.EAGAIN: "the system is out of processes or memory; run fewer at once (a lower -n / --concurrency)",
    errno.ENOMEM: "the system is out of memory; run fewer at once (a lower -n / --concurrency)",
}


def os_fault(exc: OSError) -> str:
    """An environmental failure (disk full, permissions, read-only) as one line: what, where, what to do."""
    where = f" {exc.filename}" if exc.filename else ""
    reason = exc.strerror or str(exc) or type(exc).__name__
    hint = _HINTS.get(exc.errno or 0)
    said = f"cannot use{where}: {reason}" if where else reason
    return said + (f"; {hint}" if hint else "")
