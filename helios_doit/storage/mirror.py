"""Fetching a bucket job's files into this machine's scratch, once per machine and version.

Commands run in the local mirror of the bucket, so the files they read (the job's `inputs`, and
Helios' asset bundle at `assetsUrl`) must be there: each is downloaded only when the bucket holds
another version than the one fetched last (`.fetched.json` in the mirror remembers which).
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path
from typing import Iterator

from .store import Identity, StorageError, Store, store_for
from .url import SCRATCH_ENV, Remote

_INDEX = ".fetched.json"


def fetch(store: Store, remote: Remote, keys: list[str]) -> list[str]:
    """Make each key's object present at its local path; returns the keys that are not in the
    bucket (the caller says so, as a fault of the job)."""
    found, missing = [], []
    for key in keys:
        ident = store.info(key)
        if ident is None:
            missing.append(key)
        else:
            found.append((key, remote.local_of(key), ident))
    _bring(store, remote.mirror, found)
    return missing


def fetch_assets(remote: Remote, url: str) -> list[str]:
    """Helios' `assetsUrl`: every object under that folder of a bucket, into the job's folder in
    this machine's mirror (as Helios' workers download the asset bundle into their workspace).
    Returns their paths relative to the job's folder: they count as the job's inputs."""
    root, _, prefix = url.partition("://")[2].partition("/")
    store = store_for(f"{url.partition('://')[0]}://{root}")
    wanted = []
    for key, ident in sorted(store.listing(prefix.strip("/")).items()):
        rel = key[len(prefix.strip("/")):].lstrip("/")
        parts = rel.split("/")
        if not rel or any(part in ("", ".", "..") for part in parts) or ".helios-doit" in parts:
            raise StorageError(f"{store.url(key)}: not a file name an asset can have; rename it")
        wanted.append((key, os.path.join(remote.job_dir, *parts), ident))
    if not wanted:
        raise StorageError(f"{url}: no assets there; upload them or fix assetsUrl")
    _bring(store, remote.mirror, wanted)
    return [os.path.relpath(local, remote.job_dir) for _, local, _ in wanted]


def _bring(store: Store, mirror: str, wanted: list[tuple[str, str, Identity]]) -> None:
    """Download what this machine does not hold at that version yet (`.fetched.json` remembers)."""
    index_path = Path(mirror) / _INDEX
    try:
        os.makedirs(mirror, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"{mirror}: cannot make the scratch folder: {exc.strerror}; set "
                           f"{SCRATCH_ENV} to a writable folder") from None
    try:
        index = json.loads(index_path.read_text())
    except (OSError, ValueError):
        index = {}
    if not isinstance(index, dict):
        index = {}
    changed = False
    for key, local, ident in wanted:
        name = store.url(key)
        held = os.path.isfile(local) and not os.path.islink(local) and os.path.getsize(local) == ident.size
        if held and index.get(name) == ident.version:
            continue
        store.download(key, local, within=mirror)
        index[name], changed = ident.version, True
    if changed:
        tmp = index_path.with_name(f"{_INDEX}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(index))
            os.replace(tmp, index_path)
        except OSError as exc:
            raise StorageError(f"{index_path}: cannot write the scratch folder: {exc.strerror}") from None


_in_use: dict[str, list[int]] = {}  # a job's folder in the mirror -> this process' shared locks for it

#: In a job's folder, what only a job there (not one in a folder below) holds: its state folder.
_OWN = ".helios-doit"


def use_mirror(job_dir: str, mirror: str) -> None:
    """Say, for as long as this process lives, that it uses the job's folder in this machine's
    mirror: a shared `flock` on that folder and on each folder above it up to the mirror (a job
    below a folder uses the folder too: pruning it would remove the job's files), and on the
    folder's `.helios-doit` (what a job exactly there holds: its outputs may lie in any folder
    below, so pruning one of those waits for it). The kernel lets go when the process dies,
    however it dies; doit's workers, forked, share them. `prune --scratch` removes a folder only
    when nobody uses it. A folder that cannot be made is said by the fetch that needs it."""
    if job_dir in _in_use:
        return
    held: list[int] = []
    for folder in [*_above(job_dir, mirror), job_dir, os.path.join(job_dir, _OWN)]:
        fd = _shared(folder)
        if fd is None:
            break
        held.append(fd)
    _in_use[job_dir] = held


def _shared(folder: str) -> int | None:
    """A shared lock on the folder (made if missing), waiting while a prune removes it."""
    while True:
        try:
            os.makedirs(folder, exist_ok=True)
            fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)  # waits while a prune removes it
            same = os.path.samestat(os.fstat(fd), os.lstat(folder))
        except FileNotFoundError:
            same = False
        except BaseException:
            os.close(fd)
            raise
        if same:
            return fd
        os.close(fd)  # pruned as we waited: the folder to use is a new one


@contextlib.contextmanager
def mirror_unused(job_dir: str, mirror: str) -> Iterator[bool]:
    """Hold the job's folder in the mirror for removal, if no process uses it (yields False if one
    does): no job there or below (its lock on the folder), and no job in a folder above (its lock
    on that folder's `.helios-doit`), whose outputs may be in this one."""
    held: list[int] = []
    try:
        for path in [job_dir, *(os.path.join(up, _OWN) for up in _above(job_dir, mirror))]:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NOFOLLOW)
            except FileNotFoundError:
                continue
            held.append(fd)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
        yield True
    finally:
        for fd in held:
            os.close(fd)


def _above(job_dir: str, mirror: str) -> list[str]:
    """The folders above the job's, up to the mirror's root (the bucket's), each possibly a job's."""
    rel = os.path.relpath(job_dir, mirror)
    if rel == "." or rel.startswith(".."):
        return []
    parts = Path(rel).parts
    return [os.path.join(mirror, *parts[:n]) for n in range(len(parts))]
