"""One runner per task at a time, across processes, shells and (on shared storage) machines.

`flock` locks belong to the open file: the kernel drops them when their holder dies, however
it dies, so a lock whose holder was SIGKILLed is simply taken by the next runner; nothing
stale is left to clean up. A runner that had to wait re-checks whether the task is now done.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path
from typing import Callable, Iterator

from .folder import open_own


@contextlib.contextmanager
def task_lock(path: Path, stop: Callable[[], object], poll: float = 0.1,
              on_wait: Callable[[], None] = lambda: None) -> Iterator[bool]:
    """Hold the task's lock; yields True when another runner held it first (so: re-check).
    `on_wait` is called once if the lock is taken when asked for."""
    waited = False
    while True:
        fd = _take(path)
        if fd is not None:
            break
        if not waited:
            on_wait()
        waited = True
        if stop():
            raise KeyboardInterrupt
        time.sleep(poll)
    try:
        yield waited
    finally:
        _let_go(path, fd)


@contextlib.contextmanager
def try_lock(path: Path) -> Iterator[bool]:
    """Take the task's lock if nobody holds it (yields True), without waiting (yields False)."""
    fd = _take(path)
    try:
        yield fd is not None
    finally:
        if fd is not None:
            _let_go(path, fd)


def _take(path: Path) -> int | None:
    """The lock file's descriptor, locked; None if another runner holds it. The file exists only
    while the task is worked on (a state folder keeps no file per chunk for its locks): the holder
    removes it as it lets go, so a lock taken on a file that is no longer the one at `path` is let
    go and taken again on the new one."""
    while True:
        fd = open_own(path, os.O_RDONLY | os.O_CREAT, linked=True)  # a hard link to a held lock is that lock
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        try:
            now = os.lstat(path)
        except FileNotFoundError:
            now = None
        st = os.fstat(fd)
        if now is not None and (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino):
            return fd
        os.close(fd)  # its holder removed it as we waited for it: the lock is the new file's


def _let_go(path: Path, fd: int) -> None:
    """Remove the lock file (if it is still ours), then let go of it: whoever waits on it takes the next one."""
    try:
        st, now = os.fstat(fd), os.lstat(path)
        if (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino):
            os.unlink(path)
    except FileNotFoundError:
        pass
    finally:
        os.close(fd)


def is_held(lock: Path, this_machine: bool = True) -> bool:
    """Is the lock held? For this machine from /proc/locks: asking never takes it.

    Taking the lock to test it (LOCK_NB) would, for that instant, make a runner starting
    the task believe another runner has it; only a holder on another machine needs that.
    """
    if not this_machine:
        return _held_anywhere(lock)
    try:
        st = os.stat(lock)
        with open("/proc/locks") as handle:
            table = handle.read()
    except OSError:
        return _held_anywhere(lock)
    exact = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    inodes = [fields[5] for fields in (line.split() for line in table.splitlines())
              if len(fields) > 5 and fields[1] == "FLOCK"]  # waiters ("->") are not holders
    return exact in inodes or any(i.rsplit(":", 1)[-1] == str(st.st_ino) for i in inodes)


def _held_anywhere(lock: Path) -> bool:
    """Try the lock without waiting (works across NFS clients); let go at once."""
    return would_wait(str(lock), fcntl.LOCK_SH)


def would_wait(path: str, mode: int) -> bool:
    """Would a lock of `mode` on the file wait (another process holds one that excludes it)? Asking
    never waits, takes the lock only for that instant, and follows no link; a file that is not
    there is held by nobody."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


