"""Completion records in a bucket, decided from one listing.

A record's key says everything completion needs: the task, its fingerprint, and the size and
version of the output object it vouches for (`done/chunk-3/<fp>.<size>.<version>.json`; the body
holds the full record for people and for the merge's seam checks). So a no-op rerun of 10,000
chunks lists the job's prefix once (S3: one request per 1,000 keys) and reads no record: a chunk
is done when a record names exactly the object that is there now. A deleted or replaced object
no longer matches its record, and only that chunk runs again.
"""
from __future__ import annotations

import errno
import json
import re
import time
from typing import Any

from .store import Identity, StorageError, Store

NO_OUTPUT = Identity(0, "")  # a merge whose output we cannot know: its record stands alone


def done_prefix(state: str, task: str) -> str:
    """A folder per task: its records are listed in one request when it is published."""
    return f"{state}/done/{task}/"


def done_key(state: str, task: str, fingerprint: str, output: Identity) -> str:
    return f"{done_prefix(state, task)}{fingerprint[:32]}.{output.size}.{output.tag}.json"


def lease_key(state: str, task: str) -> str:
    return f"{state}/leases/{task}.json"


def found(listing: dict[str, Identity], state: str, task: str, fingerprint: str, output: str | None) -> Identity | None:
    """The identity of the task's output if a record in `listing` vouches for it as it is now."""
    ident = listing.get(output) if output is not None else NO_OUTPUT
    if ident is None:
        return None
    return ident if done_key(state, task, fingerprint, ident) in listing else None


_RECORD = re.compile(r"[0-9a-f]{32}\.[0-9]+\.[0-9a-f]{16}\.json")


def records_of(listing: dict[str, Identity], state: str, task: str) -> list[str]:
    """Every record key of `task`, whatever its fingerprint: dropped before the task runs again.
    Only keys of a record's form: anything else someone put in that folder is not ours."""
    prefix = done_prefix(state, task)
    return [key for key in listing if key.startswith(prefix) and _RECORD.fullmatch(key[len(prefix):])]


def vouched(listing: dict[str, Identity], state: str, task: str, output: Identity) -> bool:
    """Some record of ours (any fingerprint) names exactly this object: we wrote it."""
    ending = f".{output.size}.{output.tag}.json"
    return any(key.endswith(ending) for key in records_of(listing, state, task))


_SCANS: dict[tuple[str, str], dict[str, Identity]] = {}


def scan(store: Store, prefix: str, fresh: bool = False) -> dict[str, Identity]:
    """The listing of `prefix`, taken once per process unless `fresh`: doit asks every task's
    up-to-date check in the runner's main process, and one listing answers them all. A stale
    listing only ever misses what finished since: that work is checked again, fresh, under the
    task's lock before anything runs."""
    key = (store.root, prefix)
    if fresh or key not in _SCANS:
        _SCANS[key] = store.listing(prefix)
    return _SCANS[key]


def write_record(store: Store, state: str, task: str, fingerprint: str, output: Identity, body: dict[str, Any]) -> str:
    """The record, written after its output is in the bucket: a record never names a missing object."""
    key = done_key(state, task, fingerprint, output)
    data = {**body, "task": task, "fingerprint": fingerprint, "object": {"size": output.size, "version": output.version},
            "publishedAt": time.time()}
    store.put(key, json.dumps(data, separators=(",", ":")).encode())
    return key


def read_record(store: Store, key: str) -> dict[str, Any] | None:
    """A record's body; a damaged one (garbage, or too big to be ours) reads as none."""
    try:
        data = store.read(key, 16 * 1024 * 1024)
        value = json.loads(data) if data is not None else None
    except StorageError as exc:
        if exc.errno != errno.EFBIG:
            raise
        return None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
