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

from .folder import StateDir


@contextlib.contextmanager
def task_lock(path: Path, stop: Callable[[], object], poll: float = 0.1,
              on_wait: Callable[[], None] = lambda: None) -> Iterator[bool]:
    """Hold the task's lock; yields True when another runner held it first (so: re-check).
    `on_wait` is called once if the lock is taken when asked for."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except IsADirectoryError:  # damage: a folder where the lock file belongs; moved aside, not deleted
        StateDir(path.parent.parent).set_aside(path)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        waited = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not waited:
                    on_wait()
                waited = True
                if stop():
                    raise KeyboardInterrupt
                time.sleep(poll)
        yield waited
    finally:
        os.close(fd)  # releases the lock


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
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


@contextlib.contextmanager
def try_lock(path: Path) -> Iterator[bool]:
    """Take the task's lock if nobody holds it (yields True), without waiting (yields False)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)
