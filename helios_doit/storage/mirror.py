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


_in_use: dict[str, int] = {}  # a job's folder in the mirror -> this process' shared lock on it


def use_mirror(job_dir: str) -> None:
    """Say, for as long as this process lives, that it uses the job's folder in this machine's
    mirror (a shared `flock` on the folder itself: the kernel lets go when the process dies,
    however it dies; doit's workers, forked, share it). `prune --scratch` removes a folder only
    when nobody uses it. A folder that cannot be made is said by the fetch that needs it."""
    if job_dir in _in_use:
        return
    while True:
        try:
            os.makedirs(job_dir, exist_ok=True)
            fd = os.open(job_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            return
        fcntl.flock(fd, fcntl.LOCK_SH)  # waits while a prune removes it
        try:
            same = os.path.samestat(os.fstat(fd), os.lstat(job_dir))
        except FileNotFoundError:
            same = False
        if same:
            _in_use[job_dir] = fd
            return
        os.close(fd)  # pruned as we waited: the folder to use is a new one


@contextlib.contextmanager
def mirror_unused(job_dir: str) -> Iterator[bool]:
    """Hold the job's folder in the mirror for removal, if no process uses it (yields False if one does)."""
    fd = os.open(job_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
        else:
            yield True
    finally:
        os.close(fd)
