"""What a task's completion is tied to: fingerprints of its JobSpec entry and the content of files.

Content states follow doit's MD5Checker rule (same mtime: same; other size: changed; else compare
the MD5), kept in our own files so that they survive a killed run.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from doit.dependency import get_file_md5

from .files import read_json, write_json_atomic
from .folder import StateDir


def fingerprint(*parts: Any) -> str:
    """What a task's completion is tied to; any change to it makes the task run again."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def content_state(path: Path | str, previous: list[Any] | None = None) -> list[Any]:
    st = os.stat(path)
    if previous and previous[0] == st.st_mtime_ns and previous[1] == st.st_size:
        return previous
    return [st.st_mtime_ns, st.st_size, get_file_md5(str(path))]


def content_changed(path: Path | str, state: list[Any] | None) -> bool:
    if not state:
        return True
    try:
        st = os.stat(path)
    except OSError:
        return True
    if st.st_mtime_ns == state[0]:
        return False
    if st.st_size != state[1]:
        return True
    return bool(get_file_md5(str(path)) != state[2])


def inputs_states(state: StateDir, inputs: tuple[Path, ...], job_dir: Path) -> dict[str, list[Any]]:
    """The content state of every input, re-hashing only files whose stat changed since the cache."""
    cache = read_json(state.inputs_cache) or {} if inputs else {}
    return {(key := os.path.relpath(path, job_dir)): content_state(path, cache.get(key)) for path in inputs}


def inputs_digest(states: dict[str, list[Any]]) -> str:
    """One digest of the content of every input: what each chunk's record is tied to."""
    return fingerprint([(key, value[2]) for key, value in sorted(states.items())]) if states else ""


def save_inputs_cache(state: StateDir, states: dict[str, list[Any]]) -> None:
    """Keep the states for the next run; a cache, so never worth failing a run for. Only a run
    writes it (`status` and `doit list` leave the state folder untouched)."""
    if states and states != read_json(state.inputs_cache):
        with contextlib.suppress(OSError):
            write_json_atomic(state.inputs_cache, states)
