"""doit's `uptodate` for our tasks: the durable record matches the task as it is now, in the job's
folder, or in its bucket for a job there.

It is also where a runner looks at a task it is about to run: the identity of the record it saw
(none, a stale one, or, under doit's -a, a good one it chose to redo) rides on doit's task object
to the worker that runs it, which compares it with the record it finds once it holds the task's
lock. Another identity means another runner finished the task since the look: skipped. Never a
comparison of clocks: the machine that wrote a record and the one reading it may disagree.
"""
from __future__ import annotations

import inspect
from typing import Any

from .publish import remote_look
from .work import Work

#: The attribute of doit's task object (carried to its workers with it) that holds what was seen.
SEEN = "helios_seen"


def task_done(task: Any, work: Work) -> bool:
    """A chunk's record matches and its output is the file (or object) recorded; the merge is
    asked the same. `task` is doit's (its first argument, by doit's rule for uptodate callables):
    a task that will run takes what was seen with it (`seen`)."""
    if work.task.key in _done_at_start:
        done, identity = True, _done_at_start.pop(work.task.key)
    else:
        done, identity = look(work)
    setattr(task, SEEN, identity)  # doit runs a done task too, under -a (however it was set: flag or config)
    return done


def seen(task: Any) -> str | None:
    """What the runner saw of the task's record when doit decided to run it (None: no record)."""
    return getattr(task, SEEN, None)


def look(work: Work) -> tuple[bool, str | None]:
    """(done, the identity of the record that decides it) now, in the job's folder or its bucket."""
    if work.remote is not None:
        return remote_look(work)
    return work.complete().look()


_done_at_start: dict[str, str | None] = {}  # task key -> the identity of the record found done as the run started


def remember(work: Work) -> bool:
    """Ask now, as the run starts (how many workers it needs), and keep a "done" for doit's own
    question about the task, which comes a moment later: each is answered once. A "not done" is
    asked again then (another runner may have finished it meanwhile: it is skipped)."""
    done, identity = look(work)
    if done:
        _done_at_start[work.task.key] = identity
    return done


# doit inspects the signature of an uptodate function on every call (for its magic arguments);
# a function that carries its signature is answered at once.
task_done.__signature__ = inspect.signature(task_done)  # type: ignore[attr-defined]
