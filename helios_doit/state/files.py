"""Completion records: the durable truth about which chunks (and the merge) are done.

doit keeps its state in memory and writes it when a run ends, so a SIGKILLed run forgets
everything it finished. Our records do not depend on that: each is one small file written
atomically (temp file + rename) the moment its task succeeds, and dropped before the task
runs again. A record is only believed while the output it describes still has the size and
modification time it had at that success, so a half-written or replaced output never passes.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
from pathlib import Path
from typing import Any, Callable

from .atomic import write_atomic


def write_json_atomic(path: Path | str, data: dict[str, Any]) -> None:
    """Readers see the old record or the new one, never a torn one, whatever kills the writer."""
    write_atomic(path, json.dumps(data, separators=(",", ":")).encode())


#: No state file of ours is bigger; a bigger one is damage (or a device), never read whole.
MAX_STATE_BYTES = 16 * 1024 * 1024


def read_json(path: Path | str) -> dict[str, Any] | None:
    """A missing, unreadable or garbage file reads as no record: the work is redone. So does
    anything that is not a regular file (a FIFO, a device, a symlink): it is never waited on."""
    try:
        # No file object: a no-op run reads one record per chunk.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_STATE_BYTES:
                return None
            chunks = []
            while block := os.read(fd, 65536):
                chunks.append(block)
        finally:
            os.close(fd)
        data = json.loads(b"".join(chunks))
    except (OSError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def open_plain(path: Path | str, flags: int, clear: Callable[[Path], None], mode: int = 0o644,
               linked: bool = False) -> int:
    """Open a file of ours without ever going through what someone else put in its place: a symlink,
    a hard link (a file with another name elsewhere), a FIFO or a folder there is handed to `clear`
    (which moves or removes it) and a new file made. `linked`: a hard link is used as it is (a lock
    file, never read or written: moving a held one aside would let a second holder in)."""
    path = Path(path)
    for _ in range(5):
        try:
            fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode)
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENXIO, errno.EISDIR, errno.EWOULDBLOCK):
                raise
        else:
            st = os.fstat(fd)
            if stat.S_ISREG(st.st_mode) and (linked or st.st_nlink <= 1):
                os.set_blocking(fd, True)
                return fd
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            clear(path)
    raise OSError(errno.ELOOP, "something keeps putting a link in its place", str(path))


def remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def stamp(path: Path | str) -> list[int] | None:
    """(size, mtime in ns) of a regular file, or None: what a record pins an output to. A symlink
    is never followed: a record vouches only for a file in the output's place itself."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return [st.st_size, st.st_mtime_ns]
