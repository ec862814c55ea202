"""Named points in a task's life where crash tests stop the runner, so each kill lands where meant.

`HELIOS_DOIT_PAUSE_AT=<point>:<task>` (e.g. `after-record:chunk-2`) makes the runner process
that reaches that point write `<state>/paused-<point>-<task>` (holding its pid) and wait there
until the file is removed, or until it is killed, which is what a test does. Unset, a point
costs one lookup in the environment.

Points: `before-command` (marker written, command not started), `before-record` (output
verified, record not written), `after-record` (record written, task not yet reported).
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

PAUSE_ENV = "HELIOS_DOIT_PAUSE_AT"


_wanted: list[str | None] = []  # read once per process: it does not change during a run


def reached(point: str, task: str, state_root: str | os.PathLike[str], poll: Callable[[], None] = lambda: None) -> None:
    """`poll` is called while paused: a stop the runner holds back there is handled by it, as if it
    came at this very point."""
    if not _wanted:
        _wanted.append(os.environ.get(PAUSE_ENV))
    if _wanted[0] is None or _wanted[0] != f"{point}:{task}":
        return
    flag = Path(state_root, f"paused-{point}-{task}")
    flag.write_text(str(os.getpid()))
    while flag.exists():
        poll()
        time.sleep(0.02)
