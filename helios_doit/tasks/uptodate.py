"""doit's `uptodate` for our tasks: the durable record matches the task as it is now, in the job's
folder, or in its bucket for a job there."""
from __future__ import annotations

import inspect

from .publish import remote_done
from .work import TaskJob


def chunk_done(job: TaskJob) -> bool:
    """A chunk's record matches and its output is the file (or object) recorded; the merge of a
    job in a bucket is asked the same."""
    if job.remote is not None:
        return remote_done(job)
    return job.complete().check()


# doit inspects the signature of an uptodate function on every call (for its magic arguments);
# a function that carries its signature is answered at once.
chunk_done.__signature__ = inspect.signature(chunk_done)  # type: ignore[attr-defined]
