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


@contextlib.contextmanager
def task_lock(path: Path, stop: Callable[[], object], poll: float = 0.1) -> Iterator[bool]:
    """Hold the task's lock; yields True when another runner held it first (so: re-check)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        waited = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                waited = True
                if stop():
                    raise KeyboardInterrupt
                time.sleep(poll)
        yield waited
    finally:
        os.close(fd)  # releases the lock


def is_held(path: Path) -> bool:
    """Whether some runner holds the lock now (read-only callers such as `status`)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
