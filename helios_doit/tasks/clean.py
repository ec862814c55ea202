"""`doit clean`: a task's output and its record go together, so the task is simply not done."""
from __future__ import annotations

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
    A task another runner is working on is left alone; a fault stops `clean` with one line, exit 1."""
    state = StateDir(Path(work.state_root))
    try:
        try:
            with try_lock(state.lock(work.key)) as held:
                if not held:
                    raise PlaceError("another runner is working on it; not cleaned (stop that run first)")
                vouched = (read_json(state.record(work.key)) or {}).get("output")
                remove(state.record(work.key))
                if work.place is not None:
                    note = places.clear(work.place, vouched if isinstance(vouched, list) else None, work.label)
                    if note:
                        say(note)  # past doit's capture of the action's output
        except FileNotFoundError:
            pass  # no state folder here: nothing was ever done on this machine
        if work.remote is not None:  # and in the bucket, whichever machine did it
            unpublish(work)
    except (PlaceError, StorageError, OSError) as exc:
        say(f"{work.label}: {exc if isinstance(exc, (PlaceError, StorageError)) else os_fault(exc)}")
        raise SystemExit(1) from None
