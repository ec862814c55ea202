"""A task whose job is in a bucket: up to date against the bucket, its output published there.

Commands run in this machine's mirror of the bucket (scratch), exactly as for a local job: the
local record, verification and clean-up are unchanged. What the bucket adds: a chunk counts as
done when the bucket holds a record naming the object that is there now (`storage.records`);
after a verified success the output is uploaded (create-only: one writer) and then its record
written, in that order, so a record never names a missing or partial object. The merge first
pulls the chunks it stitches from the bucket.
"""
from __future__ import annotations

import os
import posixpath
import time

from ..state import checkpoints
from ..state.content import fingerprint
from ..state.files import read_json, stamp, write_json_atomic
from ..state.folder import StateDir
from ..storage.records import done_prefix, found, read_record, records_of, scan, vouched, write_record
from ..storage.store import Exists, Identity, Store, StorageError, store_for
from .say import say
from .work import TaskJob

#: A task's log in the bucket is at most this much of its end.
MAX_LOG_BYTES = 1024 * 1024


def store_of(job: TaskJob) -> Store:
    assert job.remote is not None
    return store_for(job.remote.root)


def remote_state(job: TaskJob) -> str:
    assert job.remote is not None
    return job.remote.state_prefix(os.path.basename(job.state_root))


def output_key(job: TaskJob) -> str | None:
    return job.remote.key_of(job.output) if job.remote is not None and job.output else None


def remote_fingerprint(job: TaskJob, listing: dict[str, Identity]) -> str | None:
    """A chunk's fingerprint; the merge's is tied to the objects of its chunks as well (None while
    one is missing): a chunk published anew makes the merge run again."""
    if not job.sources:
        return job.fingerprint
    assert job.remote is not None
    idents = []
    for path in job.inputs:
        ident = listing.get(job.remote.key_of(path) or "")
        if ident is None:
            return None
        idents.append([ident.size, ident.version])
    return fingerprint(job.fingerprint, idents)


def remote_done(job: TaskJob, fresh: bool = False) -> bool:
    """The bucket's record vouches for the task's output as it is now. Decided from one listing
    of the job's prefix per runner (fresh: listed again now)."""
    try:
        listing = scan(store_of(job), job.scan, fresh)
    except StorageError:
        return False  # said when the task runs, in one line
    fp = remote_fingerprint(job, listing)
    return fp is not None and found(listing, remote_state(job), job.name, fp, output_key(job)) is not None


def remote_size(job: TaskJob) -> int | None:
    """The output object's size, from the runner's one listing."""
    try:
        ident = scan(store_of(job), job.scan).get(output_key(job) or "")
    except StorageError:
        return None
    return ident.size if ident else None


def pull_sources(job: TaskJob, state: StateDir) -> None:
    """The merge's chunks, from the bucket into the mirror, each with a local record holding
    what its bucket record says (the seam checks read it). A local copy that is the object
    already is not downloaded again."""
    assert job.remote is not None
    store = store_of(job)
    listing = scan(store, job.scan, fresh=True)
    prefix = remote_state(job)
    for task, path in zip(job.sources, job.inputs):
        key = job.remote.key_of(path) or ""
        ident = listing.get(key)
        if ident is None or not vouched(listing, prefix, task.key, ident):
            raise StorageError(f"{job.remote.url_of(key)}: {task.label} is not done in the bucket; render it first")
        record_key = next(k for k in records_of(listing, prefix, task.key) if k.endswith(f".{ident.size}.{ident.tag}.json"))
        local = read_json(state.record(task.key)) or {}
        if (local.get("object") or {}).get("version") != ident.version or stamp(path) != local.get("output"):
            store.download(key, path)
            body = read_record(store, record_key) or {}
            body.update(output=stamp(path), object={"size": ident.size, "version": ident.version})
            write_json_atomic(state.record(task.key), body)


def publish(job: TaskJob, state: StateDir) -> None:
    """Upload the verified output, then its record: the task is done in the bucket."""
    assert job.remote is not None
    store = store_of(job)
    prefix = remote_state(job)
    key = output_key(job)
    listing = store.listing(done_prefix(prefix, job.name))
    fp = job.fingerprint
    if job.sources:
        fp = remote_fingerprint(job, scan(store, job.scan, fresh=True)) or job.fingerprint
    for old in records_of(listing, prefix, job.name):  # dropped first: never a record of a replaced object
        store.delete(old)
    ident = Identity(0, "")
    if key is not None and job.output is not None:
        _clear(job, store, key, listing)
        try:
            ident = store.upload(job.output, key)
        except Exists:
            raise StorageError(f"{job.remote.url_of(key)}: another runner wrote it meanwhile; "
                               f"{job.label} is left to that runner (run again to check it)") from None
    checkpoints.reached("before-publish-record", job.name, state.root, lambda: None)
    write_record(store, prefix, job.name, fp, ident, read_json(state.record(job.name)) or {})
    _upload_log(job, state, store, prefix)


def _clear(job: TaskJob, store: Store, key: str, listing: dict[str, Identity]) -> None:
    """Remove the object in the output's place: deleted only if one of our records named it,
    else copied into the bucket's aside/ first (never destroy a byte we did not write)."""
    assert job.remote is not None
    current = store.info(key)
    if current is None:
        return
    if not vouched(listing, remote_state(job), job.name, current):
        aside = f"{remote_state(job)}/aside/{posixpath.basename(key)}.{time.strftime('%Y%m%dT%H%M%S')}.{os.urandom(3).hex()}"
        store.copy(key, aside)
        say(f"{job.label}: {job.remote.url_of(key)} was not written by helios-doit; moved it to {job.remote.url_of(aside)}")
    store.delete_if(key, current.version)


def _upload_log(job: TaskJob, state: StateDir, store: Store, prefix: str) -> None:
    """The task's log next to its record in the bucket, for whoever looks from another machine."""
    try:
        with open(state.log(job.name), "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - MAX_LOG_BYTES))
            data = f.read()
        store.put(f"{prefix}/logs/{job.name}.log", data)
    except (OSError, StorageError):
        pass  # the log is worth no failure: the record is what counts
