"""`doit clean`: a task's output and its record go together, so the task is simply not done."""
from __future__ import annotations

import os
from pathlib import Path

from ..core.errors import os_fault
from ..state import places
from ..state.files import read_json, remove
from ..state.folder import StateDir
from ..state.locks import try_lock
from ..state.places import PlaceError
from ..storage.store import StorageError
from .publish import unpublish
from .say import say
from .work import Work


def clean_task(work: Work) -> None:
    """`doit clean`: the output and the record go together, so the task is simply not done. Only
    the file the record vouches for is deleted; anything else in the output's place is moved aside.
    A task another runner is working on is left alone; a fault stops `clean` with one line, exit 1.
    One line per task says what went (doit's own line names only the action it ran)."""
    state = StateDir(Path(work.state_root))
    try:
        said = f"nothing to clean here (no {work.shown_output}, no record)"
        try:
            with try_lock(state.lock(work.key)) as held:
                if not held:
                    raise PlaceError("another runner is working on it; not cleaned (stop that run first)")
                said = _clean_here(work, state)
        except FileNotFoundError:
            pass  # no state folder here: nothing was ever done on this machine
        if work.remote is not None:  # and in the bucket, whichever machine did it
            unpublish(work)
            said += "; cleaned in the bucket too (its records, and its output if a record named it)"
        say(f"{work.label}: {said}")
    except (PlaceError, StorageError, OSError) as exc:
        say(f"{work.label}: {exc if isinstance(exc, (PlaceError, StorageError)) else os_fault(exc)}")
        raise SystemExit(1) from None


def _clean_here(work: Work, state: StateDir) -> str:
    """Clean the task on this machine's disk, under its lock; what was done, for its line."""
    record = state.record(work.key)
    had_record = os.path.lexists(record)
    vouched = (read_json(record) or {}).get("output")
    remove(record)
    there = work.output is not None and os.path.lexists(work.output)
    note = None
    if work.place is not None:
        note = places.clear(work.place, vouched if isinstance(vouched, list) else None, work.label)
    if note:  # moved aside: its own words say where to
        return note.split(": ", 1)[1] + ("; removed its record" if had_record else "")
    if there:
        return f"removed {work.shown_output} and its record"
    if had_record:
        return f"removed its record ({work.shown_output} was not there)"
    return f"nothing to clean (no {work.shown_output}, no record)"
