"""doit's `uptodate` for our tasks: the durable record matches the task as it is now, in the job's
folder, or in its bucket for a job there."""
from __future__ import annotations

import inspect

from .publish import remote_done
from .work import TaskJob


def chunk_done(job: TaskJob) -> bool:
    """A chunk's record matches and its output is the file (or object) recorded; the merge of a
    job in a bucket is asked the same."""
    if _done_at_start and _done_at_start.pop(job.task.key, False):
        return True
    return _ask(job)


def _ask(job: TaskJob) -> bool:
    if job.remote is not None:
        return remote_done(job)
    return job.complete().check()


_done_at_start: dict[str, bool] = {}  # task key -> done, as the run's start found it, until doit asks


def remember(job: TaskJob) -> bool:
    """Ask now, as the run starts (how many workers it needs), and keep a "done" for doit's own
    question about the task, which comes a moment later: each is answered once. A "not done" is
    asked again then (another runner may have finished it meanwhile: it is skipped)."""
    done = _ask(job)
    if done:
        _done_at_start[job.task.key] = True
    return done


# doit inspects the signature of an uptodate function on every call (for its magic arguments);
# a function that carries its signature is answered at once.
chunk_done.__signature__ = inspect.signature(chunk_done)  # type: ignore[attr-defined]
