"""When a task counts as done: its durable record matches the task as it is now.

doit asks this (`uptodate`) for every task of every run; a 10,000-chunk no-op run asks it
10,000 times, so it reads one small file and stats one output, and nothing else.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from ..state.content import content_changed
from ..state.files import read_json, stamp


@dataclass(frozen=True, slots=True)
class Complete:
    """doit `uptodate` check: the durable record matches this task as it is now."""

    record: str
    fingerprint: str
    output: str | None
    inputs: tuple[str, ...] = ()
    cwd: str = ""

    def __call__(self) -> bool:
        return self.check()

    def check(self, after: float | None = None) -> bool:
        """Done, and (given `after`) recorded at or after that time. A record whose fields are not
        what a run writes (damage) reads as no record: the work is redone."""
        try:
            return self._check(after)
        except (TypeError, ValueError, AttributeError):
            return False

    def _check(self, after: float | None) -> bool:
        data = read_json(self.record)
        if data is None or data.get("fingerprint") != self.fingerprint:
            return False
        if after is not None and not float(data.get("finishedAt") or 0) >= after:
            return False
        if self.output is not None and stamp(self.output) != data.get("output"):
            return False
        states = data.get("inputs") or {}
        if len(states) != len(self.inputs):
            return False
        return not any(content_changed(p, states.get(relative(p, self.cwd))) for p in self.inputs)


def relative(path: str, folder: str) -> str:
    """os.path.relpath for the common case of a path inside `folder`, at a fraction of its cost."""
    prefix = folder.rstrip(os.sep) + os.sep
    return path[len(prefix):] if path.startswith(prefix) and os.sep + ".." not in path else os.path.relpath(path, folder)

