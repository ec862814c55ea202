"""When a task counts as done: its durable record matches the task as it is now.

doit asks this (`uptodate`) for every task of every run; a 10,000-chunk no-op run asks it
10,000 times, so it reads one small file and stats one output, and nothing else.
"""
from __future__ import annotations

import hashlib
import json
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

    def check(self) -> bool:
        """Done: the record is there and vouches for the task as it is now. A record whose fields
        are not what a run writes (damage) reads as no record: the work is redone."""
        return self.look()[0]

    def look(self) -> tuple[bool, str | None]:
        """(done, the identity of the record read): two looks that see the same identity saw the
        same record. A runner tells "another runner finished it since I looked" from "this run
        chose to redo it" (doit's -a) by comparing identities, never by comparing the clocks
        of the machines that wrote and that read."""
        data = read_json(self.record)
        if data is None:
            return False, None
        try:
            return self._done(data), record_identity(data)
        except (TypeError, ValueError, AttributeError, LookupError):  # LookupError: an input state such as [1]
            return False, record_identity(data)

    def _done(self, data: dict[str, object]) -> bool:
        if data.get("fingerprint") != self.fingerprint:
            return False
        if self.output is not None and stamp(self.output) != data.get("output"):
            return False
        states = data.get("inputs") or {}
        if not isinstance(states, dict) or len(states) != len(self.inputs):
            return False
        return not any(content_changed(p, states.get(relative(p, self.cwd))) for p in self.inputs)


def record_identity(data: dict[str, object]) -> str:
    """Which record this is: its write's nonce, or (a record without one) a digest of what it holds."""
    nonce = data.get("writeId")
    if isinstance(nonce, str) and nonce:
        return nonce
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:32]


def relative(path: str, folder: str) -> str:
    """os.path.relpath for the common case of a path inside `folder`, at a fraction of its cost."""
    prefix = folder.rstrip(os.sep) + os.sep
    return path[len(prefix):] if path.startswith(prefix) and os.sep + ".." not in path else os.path.relpath(path, folder)

