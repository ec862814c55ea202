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
import stat
import time
import uuid
from typing import Any

from doit.dependency import get_file_md5

from ..executors import reaper
from ..state import checkpoints, places
from ..state.content import fingerprint
from ..state.files import read_json, stamp, write_json_atomic
from ..state.folder import StateDir
from ..state.places import Place
from ..storage.lease import LEASE_TTL_ENV, Lease
from ..storage.records import done_key, done_prefix, found, lease_key, read_record, records_of, scan, vouched, write_record
from ..storage.staging import Stage, sweep
from ..storage.store import Exists, Identity, StorageError, Store, store_for
from ..storage.url import Remote
from .say import say
from .work import Work

#: A task's log in the bucket is at most this much of its end.
MAX_LOG_BYTES = 1024 * 1024


def store_of(work: Work) -> Store:
    assert work.remote is not None
    return store_for(work.remote.root)


def remote_state(work: Work) -> str:
    assert work.remote is not None
    return work.remote.state


def output_key(work: Work) -> str | None:
    return work.remote.key_of(work.output) if work.remote is not None and work.output else None


def stage_of(work: Work) -> Stage | None:
    """What a chunk command of a bucket job needs to run on a machine that shares no disk with
    this one (a Dask worker elsewhere). A local job's (`--storage`) inputs are not in the bucket,
    and the merge's chunks are pulled here: those run at this machine's paths."""
    if work.remote is None or work.remote.job_file or work.adapter == "local" or work.sources:
        return None
    return Stage(work.remote, reaper.machine(), work.remote.key_of(work.cwd) or "", output_key(work),
                 f"{remote_state(work)}/staging/{work.key}/")


def remote_fingerprint(work: Work, listing: dict[str, Identity]) -> str | None:
    """A chunk's fingerprint; the merge's is tied to the objects of its chunks as well (None while
    one is missing): a chunk published anew makes the merge run again."""
    if not work.sources:
        return work.fingerprint
    assert work.remote is not None
    idents = []
    for path in work.inputs:
        ident = listing.get(work.remote.key_of(path) or "")
        if ident is None:
            return None
        idents.append([ident.size, ident.version])
    return fingerprint(work.fingerprint, idents)


def remote_look(work: Work) -> tuple[bool, str | None]:
    """(done, the identity of the record that vouches for the output) in the bucket, decided from
    one listing of the job's prefix per runner. The merge, asked after this run's chunks, trusts
    that listing only while it and every one of its chunks were done in it (then none ran since);
    else it lists again: a chunk rendered again to the same bytes leaves the merge done."""
    try:
        store = store_of(work)
        listing = scan(store, work.scan)
        if work.sources:
            if (found_now := _vouching(work, listing)) is not None and _sources_found(work, listing):
                return True, found_now
            identity = _vouching(work, scan(store, work.scan, fresh=True))
            return identity is not None, identity
    except StorageError:
        return False, None  # said when the task runs, in one line
    identity = _vouching(work, listing)
    return identity is not None, identity


def published_record(work: Work, view: tuple[dict[str, Identity], Identity | None] | None = None) -> str | None:
    """The identity of the record that vouches for the task's output in the bucket now (its key and
    the record object's own version), or None if none does. Asked of the bucket now (a chunk:
    `_view`, its records and its output)."""
    if work.sources:
        return _vouching(work, scan(store_of(work), work.scan, fresh=True))
    return _vouching(work, dict((view or _view(work))[0]))


def _vouching(work: Work, listing: dict[str, Identity]) -> str | None:
    """The identity of the record in `listing` that vouches for the task's output as it is there."""
    fp = remote_fingerprint(work, listing)
    ident = found(listing, remote_state(work), work.key, fp, output_key(work)) if fp else None
    if ident is None or fp is None:
        return None
    key = done_key(remote_state(work), work.key, fp, ident)
    return f"{key}@{listing[key].version}"


def _view(work: Work) -> tuple[dict[str, Identity], Identity | None]:
    """The task's records and its output object as they are now, in two requests: its records'
    listing (with the output's identity added) and the output object."""
    store = store_of(work)
    listing = store.listing(done_prefix(remote_state(work), work.key))
    key = output_key(work)
    current = store.info(key) if key is not None else None
    if key is not None and current is not None:
        listing[key] = current
    return listing, current


def _sources_found(work: Work, listing: dict[str, Identity]) -> bool:
    assert work.remote is not None
    prefix = remote_state(work)
    return len(work.source_fingerprints) == len(work.sources) and all(
        found(listing, prefix, task.key, fp, work.remote.key_of(path)) is not None
        for task, fp, path in zip(work.sources, work.source_fingerprints, work.inputs))


def remote_size(work: Work) -> int | None:
    """The output object's size, from the runner's one listing."""
    try:
        ident = scan(store_of(work), work.scan).get(output_key(work) or "")
    except StorageError:
        return None
    return ident.size if ident else None


def pull_sources(work: Work, state: StateDir) -> None:
    """The merge's chunks, from the bucket into the mirror, each with a local record holding
    what its bucket record says (the seam checks read it). A local copy that is the object
    already is not downloaded again. Asked right after `published_record`, under the merge's lease:
    the listing it just took is the bucket as it is now."""
    assert work.remote is not None
    store = store_of(work)
    listing = scan(store, work.scan)
    prefix = remote_state(work)
    for task, path in zip(work.sources, work.inputs):
        key = work.remote.key_of(path) or ""
        ident = listing.get(key)
        if ident is None or not vouched(listing, prefix, task.key, ident):
            raise StorageError(f"{work.remote.url_of(key)}: {task.label} is not done in the bucket; render it first")
        record_key = next(k for k in records_of(listing, prefix, task.key) if k.endswith(f".{ident.size}.{ident.tag}.json"))
        local = read_json(state.record(task.key)) or {}
        if (local.get("object") or {}).get("version") != ident.version or stamp(path) != local.get("output"):
            # What is in the chunk's place here goes first: deleted if our record vouches for it, else
            # moved aside (with --storage the mirror is the user's own job folder).
            vouched_stamp = local.get("output") if isinstance(local.get("output"), list) else None
            note = places.clear(Place(path, work.roots, str(state.aside)), vouched_stamp, task.label, create=True)
            if note:
                say(note)
            store.download(key, path, within=work.remote.mirror)
            body = read_record(store, record_key) or {}
            body.update(output=stamp(path), object={"size": ident.size, "version": ident.version},
                        writeId=uuid.uuid4().hex)
            write_json_atomic(state.record(task.key), body)


def publish(work: Work, state: StateDir, lease: Lease, was: str | None) -> bool:
    """Upload the verified output, then its record: the task is done in the bucket. False if
    another runner published it since this one took the task (a record other than `was`, the one
    this run chose to redo, if any): then nothing is touched. Each write is made only while the
    task's lease is still this runner's, asked at that moment; a runner that lost it says so
    (StorageError) and leaves no record of its own."""
    assert work.remote is not None
    store = store_of(work)
    prefix = remote_state(work)
    key = output_key(work)
    fp = work.fingerprint
    if work.sources:  # tied to the chunks it pulled: the listing `pull_sources` took
        fp = remote_fingerprint(work, scan(store, work.scan)) or work.fingerprint
    _still_ours(work, lease, "nothing was uploaded")  # a runner paused past its lease learns it before it writes
    listing, current = view = _view(work)
    published = published_record(work, view)
    if published is not None and published != was:
        return False  # another runner published it meanwhile: its object is never written over
    for old in records_of(listing, prefix, work.key):  # dropped first: never a record of a replaced object
        store.delete(old)
    ident = Identity(0, "")
    if key is not None and work.output is not None and current is not None and _same_bytes(work.output, current):
        ident = current  # this very file, uploaded before a crash took its record: only the record is missing
    elif key is not None and work.output is not None:
        if current is not None:
            _clear(work, store, key, listing, current)
        try:
            ident = store.upload(work.output, key)
        except Exists:
            raise StorageError(f"{work.remote.url_of(key)}: another runner wrote it meanwhile; "
                               f"{work.label} is left to that runner (run again to check it)") from None
    checkpoints.reached("before-publish-record", work.key, state.root, lambda: None)
    _still_ours(work, lease, "its upload is left without a record, for the runner that holds the task")
    record = write_record(store, prefix, work.key, fp, ident, read_json(state.record(work.key)) or {})
    if not lease.confirm():  # lost while the record was written: it is taken back
        store.delete(record)
        raise StorageError(f"another runner took over its lease in the bucket while it wrote its record; the record "
                           f"was taken back (raise {LEASE_TTL_ENV} if renders outlast it)")
    _upload_log(work, state, store, prefix)
    if work.remote.job_file and work.remote.job_key not in _JOBS_PUBLISHED:  # --storage: the folder's one job
        _publish_job(store, work.remote)
    return True


def _still_ours(work: Work, lease: Lease, what: str) -> None:
    if not lease.confirm():
        raise StorageError(f"another runner took over its lease in the bucket; {what} (raise {LEASE_TTL_ENV} if "
                           "renders outlast it)")


_JOBS_PUBLISHED: set[str] = set()  # once per process, not once per task


def _same_bytes(local: str, there: Identity) -> bool:
    """The object holds exactly the local file: same size and an ETag that is its MD5 (one PUT)."""
    if os.path.getsize(local) != there.size or len(there.version) != 32:
        return False
    return get_file_md5(local) == there.version


def _publish_job(store: Store, remote: Remote) -> None:
    try:
        with open(remote.job_file, "rb") as f:
            store.create(remote.job_key, f.read(16 * 2**20))
    except (Exists, OSError):
        pass  # there already (checked equal when the job was loaded)
    _JOBS_PUBLISHED.add(remote.job_key)


def unpublish(work: Work) -> None:
    """`doit clean` of a bucket job's task: its records go, and its output object with them (only
    if a record named it; anything else is moved aside). A task whose lease is live is left alone."""
    store = store_of(work)
    prefix = remote_state(work)
    lease = Lease(store, lease_key(prefix, work.key), lease_owner(), dead=dead_here)
    held = lease.holder()  # taken, unless a live runner holds it: nobody publishes while it is cleaned
    if held is not None:  # said under the task's name by `clean_task`, as every line of clean is
        raise StorageError(f"a runner on {held.get('host')} holds it in the bucket; not cleaned "
                           f"(stop that run first; one that died on another machine gives it up {lease.ttl:g} s "
                           "after its last renewal)")
    try:
        _unpublish(work, store, prefix)
    finally:
        lease.release()


def lease_owner() -> dict[str, str]:
    """Who takes a task's lease: this machine, and this runner's tag (for `dead_here`)."""
    return {"machine": reaper.machine(), "tag": reaper.tag()}


def dead_here(holder: dict[str, Any]) -> bool:
    """A lease held by a runner of this machine that died is void: taken over at once."""
    return holder.get("machine") == reaper.machine() and not reaper.runner_alive(holder.get("tag"))


def _unpublish(work: Work, store: Store, prefix: str) -> None:
    listing = store.listing(done_prefix(prefix, work.key))
    for old in records_of(listing, prefix, work.key):
        store.delete(old)
    assert work.remote is not None
    sweep(work.remote, f"{prefix}/staging/{work.key}/")
    key = output_key(work)
    current = store.info(key) if key is not None else None
    if key is not None and current is not None:
        _clear(work, store, key, listing, current)


def _clear(work: Work, store: Store, key: str, listing: dict[str, Identity], current: Identity) -> None:
    """Remove the object in the output's place: deleted only if one of our records named it,
    else copied into the bucket's aside/ first (never destroy a byte we did not write)."""
    assert work.remote is not None
    if not vouched(listing, remote_state(work), work.key, current):
        folder, name = posixpath.split(key)
        if store.listing(posixpath.join(folder, ".helios-doit", name)):
            raise StorageError(f"{work.remote.url_of(key)} is another job (its state is next to it); "
                               "choose another output")
        aside = f"{remote_state(work)}/aside/{posixpath.basename(key)}.{time.strftime('%Y%m%dT%H%M%S')}.{os.urandom(3).hex()}"
        store.copy(key, aside)
        copied = store.info(aside)
        if copied is None or copied.size != current.size:  # the copy is what makes the delete safe
            raise StorageError(f"{work.remote.url_of(key)}: could not be copied aside whole; left in place")
        say(f"{work.label}: no record of ours vouches for {work.remote.url_of(key)} (another program's, or the upload of a "
            f"runner that stopped before its record); moved it to {work.remote.url_of(aside)}")
    store.delete_if(key, current.version)


def _upload_log(work: Work, state: StateDir, store: Store, prefix: str) -> None:
    """The task's log next to its record in the bucket, for whoever looks from another machine."""
    try:
        fd = os.open(state.log(work.key), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
                return  # a link put in its place after the attempt: never read, never uploaded
            f.seek(max(0, st.st_size - MAX_LOG_BYTES))
            data = f.read(MAX_LOG_BYTES)
        store.put(f"{prefix}/logs/{work.key}.log", data)
    except (OSError, StorageError):
        pass  # the log is worth no failure: the record is what counts
