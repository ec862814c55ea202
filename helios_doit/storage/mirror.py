"""Fetching a bucket job's files into this machine's scratch, once per machine and version.

Commands run in the local mirror of the bucket, so the files they read (the job's `inputs`) must
be there: each is downloaded only when the bucket holds another version than the one fetched last
(`.fetched.json` in the mirror remembers which).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from .store import StorageError, Store
from .url import Remote

_INDEX = ".fetched.json"


def fetch(store: Store, remote: Remote, keys: list[str]) -> list[str]:
    """Make each key's object present at its local path; returns the keys that are not in the
    bucket (the caller says so, as a fault of the job)."""
    index_path = Path(remote.mirror) / _INDEX
    try:
        os.makedirs(remote.mirror, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"{remote.mirror}: cannot make the scratch folder: {exc.strerror}; set "
                           "HELIOS_DOIT_SCRATCH to a writable folder") from None
    try:
        index = json.loads(index_path.read_text())
    except (OSError, ValueError):
        index = {}
    if not isinstance(index, dict):
        index = {}
    missing, changed = [], False
    for key in keys:
        ident = store.info(key)
        if ident is None:
            missing.append(key)
            continue
        local = remote.local_of(key)
        held = os.path.isfile(local) and not os.path.islink(local) and os.path.getsize(local) == ident.size
        if held and index.get(key) == ident.version:
            continue
        store.download(key, local, within=remote.mirror)
        index[key], changed = ident.version, True
    if changed:
        tmp = index_path.with_name(f"{_INDEX}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(index))
            os.replace(tmp, index_path)
        except OSError as exc:
            raise StorageError(f"{index_path}: cannot write the scratch folder: {exc.strerror}") from None
    return missing
