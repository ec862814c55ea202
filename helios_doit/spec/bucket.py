"""Loading a job that lives in a bucket, or sends its outputs to one (`--storage`).

Everything a bucket adds to "bad input is refused before anything runs": the URL's form, the
bucket and credentials (asked once), where each output's key is, the lease's ttl, and the job's
inputs fetched into scratch only once the rest of the job is known to be good.
"""
from __future__ import annotations

import dataclasses
import math
import os
import posixpath
import urllib.parse
from pathlib import Path

from ..storage.lease import LEASE_TTL_ENV, MAX_TTL
from ..storage.mirror import fetch, fetch_assets
from ..storage.store import StorageError, store_for
from ..storage.url import SCRATCH_ENV, Remote, is_store_url, remote_for, split_url, storage_for
from .errors import JobError


def job_remote(source: str, cwd: Path) -> Remote:
    _check_url(source, "the job's URL")
    if source.endswith("/"):
        raise JobError([f"{source}: a folder; give the job's own URL, such as {source}job.json"])
    _check_env()
    return remote_for(source, _scratch(cwd))


def read_remote(source: str, remote: Remote, cap: int) -> str:
    """A job in a store: read whole, at most `cap` bytes; a missing bucket, no credentials or a
    dead endpoint is said here, before anything runs."""
    try:
        store = store_for(remote.root)
        data = store.read(remote.job_key, cap)
        if data is None:
            store.check()  # a missing bucket says so, rather than "no such job"
            raise JobError([f"{source}: no such job in the store; check the URL"])
    except StorageError as exc:
        raise JobError([str(exc)]) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JobError([f"{source}: not text ({exc.reason} at byte {exc.start}); give a JSON or YAML job"]) from None


def storage_remote(storage: str, remote: Remote | None, job_dir: Path, job_file: Path | None, text: str) -> Remote:
    """`--storage URL` for a local job: its folder there must be reachable, and hold no other job
    (two jobs in one folder would take each other's outputs for their own)."""
    if remote is not None or job_file is None:
        raise JobError([f"storage={storage}: the job is not a local file; its outputs go next to it"])
    _check_url(storage, f"storage={storage}")
    if urllib.parse.urlsplit(storage).scheme == "memory":
        raise JobError([f"storage={storage}: a memory:// store lives in one process only; give a bucket"])
    _check_env()
    found = storage_for(storage, job_dir, job_file)
    try:
        store = store_for(found.root)
        store.check()
        there = store.read(found.job_key)
        state_root = posixpath.join(found.folder, ".helios-doit")
        states = {key[len(state_root):].strip("/").split("/")[0] for key in store.listing(state_root)}
    except StorageError as exc:
        raise JobError([str(exc)]) from None
    if states - {job_file.name}:
        raise JobError([f"storage={storage}: that folder holds the state of another job ({sorted(states)[0]}); give "
                        "each job a folder of its own"])
    if there is not None and there != text.encode():
        raise JobError([f"storage={storage}: {found.url_of(found.job_key)} is another job (or another version of "
                        "this one); give each job a folder of its own, or delete that file"])
    return found


def bucket_output_root(remote: Remote, given: str) -> Path:
    """`output_root` of a job in a bucket: a folder of the same bucket (Helios' `../renders`
    layout: `--output-root s3://bucket/project`), as this machine's mirror of it."""
    where = f"output_root={given}"
    if not is_store_url(given):
        raise JobError([f"{where}: the job is in a bucket; give a folder of that bucket, such as "
                        f"{remote.url_of(posixpath.dirname(remote.folder) or remote.folder)}"])
    _check_url(given, where)
    scheme, rest = split_url(given.rstrip("/"))
    root_scheme, root_rest = split_url(remote.root)
    bucket, _, key = rest.partition("/")
    if scheme != root_scheme or (bucket != root_rest.strip("/") and scheme != "file"):
        raise JobError([f"{where}: not in the job's bucket {remote.root}; outputs stay in the job's bucket"])
    if scheme == "file":
        key = posixpath.relpath("/" + rest.strip("/"), "/" + root_rest.strip("/"))
        if key.startswith(".."):
            raise JobError([f"{where}: not under the job's store {remote.root}"])
        key = "" if key == "." else key
    return Path(remote.local_of(key))


def check_keys(remote: Remote, outputs: list[str | Path], source: str) -> None:
    """Every output has a key in the store, and none is the job itself or its state."""
    faults, outside = [], [path for path in outputs if remote.key_of(path) is None]
    if outside:
        more = f" (and {len(outside) - 1} more)" if len(outside) > 1 else ""
        faults.append(f"{outside[0]}{more} is outside {remote.url_of(remote.prefix)}; with a store, outputs must be "
                      "inside the job's folder there (or a symlink in the scratch folder leads out of it)")
    for path in outputs:
        key = remote.key_of(path)
        if key is None:
            continue
        if key == remote.job_key or ".helios-doit" in key.split("/"):
            faults.append(f"{remote.url_of(key)} is the job itself or its state; choose another output")
        elif "?" in key or "#" in key:
            faults.append(f"{remote.url_of(key)}: '?' and '#' have a meaning in store URLs; rename the output")
    if faults:
        raise JobError([f"{source}: {fault}" for fault in faults[:5]])


def fetch_inputs(remote: Remote, raws: list[str], source: str) -> tuple[str, ...]:
    """The inputs, fetched into this machine's mirror; returns their keys (what a Dask worker on
    another machine fetches in turn)."""
    keys = []
    for raw in raws:
        key = remote.key_of(remote.job_dir / raw)
        if key is None or os.path.isabs(raw):
            raise JobError([f"{source}: inputs: {raw!r} is outside the bucket; give a path relative to the job"])
        keys.append(key)
    try:
        missing = fetch(store_for(remote.root), remote, keys)
    except StorageError as exc:
        raise JobError([str(exc)]) from None
    if missing:
        raise JobError([f"{source}: inputs: {remote.url_of(key)} is not in the store; upload it or fix the path"
                        for key in missing])
    return tuple(keys)


def fetch_assets_of(remote: Remote, url: str, source: str) -> tuple[Remote, list[str]]:
    """Helios' `assetsUrl` (a folder in a bucket) into the job's folder here; its files become
    inputs of the job (a changed asset reruns the chunks), and Dask workers fetch them too."""
    if not is_store_url(url):
        raise JobError([f"{source}: assetsUrl: {url}: not a bucket folder; give one such as s3://bucket/assets/shot1"])
    _check_url(url, "assetsUrl")
    try:
        return dataclasses.replace(remote, assets=url), fetch_assets(remote, url)
    except StorageError as exc:
        raise JobError([f"{source}: assetsUrl: {exc}"]) from None


def _check_url(url: str, what: str) -> None:
    parts = urllib.parse.urlsplit(url)
    if parts.query or parts.fragment or "?" in url or "#" in url:
        raise JobError([f"{what}: {url}: '?' and '#' have a meaning in store URLs (a version, a fragment); "
                        "give the object's plain URL"])
    path = parts.path.strip("/") if parts.scheme != "file" else parts.path
    segments = [s for s in path.split("/")] if path else []
    if not parts.netloc and parts.scheme != "file" or any(s in (".", "..") for s in segments) or "//" in path.strip("/"):
        raise JobError([f"{what}: {url}: not a plain bucket URL; give one such as s3://bucket/folder/job.json"])
    if parts.scheme == "file" and posixpath.normpath(path) != path.rstrip("/"):
        raise JobError([f"{what}: {url}: not a plain path; give one such as file:///srv/jobs/shot1/job.json"])


def _check_env() -> None:
    text = os.environ.get(LEASE_TTL_ENV)
    if text is None:
        return
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 1 <= value <= MAX_TTL:
        raise JobError([f"{LEASE_TTL_ENV}={text}: give the seconds a lease lasts, from 1 to {MAX_TTL:g}"])


def _scratch(cwd: Path) -> Path | None:
    """The scratch folder, a relative one taken from where the user started (doit changes folder)."""
    given = os.environ.get(SCRATCH_ENV)
    return (cwd / given) if given and not os.path.isabs(given) else None

