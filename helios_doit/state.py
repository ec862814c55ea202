"""Completion records: the durable truth about which chunks (and the merge) are done.

doit keeps its state in memory and writes it when a run ends, so a SIGKILLed run forgets
everything it finished. Our records do not depend on that: each is one small file written
atomically (temp file + rename) the moment its task succeeds, and dropped before the task
runs again. A record is only believed while the output it describes still has the size and
modification time it had at that success, so a half-written or replaced output never passes.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from doit.dependency import get_file_md5

from .atomic import write_atomic
from .places import aside_name


@dataclass(frozen=True)
class StateDir:
    """One folder per job, next to the job file: records, logs, run markers, locks, event logs."""

    root: Path

    def record(self, task: str) -> Path:
        return Path(record_file(str(self.root), task))

    def log(self, task: str) -> Path:
        return self.root / "logs" / f"{task}.log"

    def failure(self, task: str) -> Path:
        """The last final failure of `task`: what `status` and the summary report."""
        return self.root / "failures" / f"{task}.json"

    def lock(self, task: str) -> Path:
        return self.root / "locks" / f"{task}.lock"

    def cancel_flag(self, run: str) -> Path:
        """Present once a chunk of run `run` failed for good without keep-going: stop the rest."""
        return self.root / "runs" / f"{run}.cancel"

    def marker(self, task: str) -> Path:
        """Present while a runner executes `task`: who runs it, for status and crash cleanup."""
        return self.root / "running" / f"{task}.json"

    @property
    def aside(self) -> Path:
        """Where files found in an output's place, not written by us, are moved (never deleted)."""
        return self.root / "aside"

    def set_aside(self, path: Path) -> Path:
        """Move a damaged entry of the state folder (a file where a folder belongs, or the other
        way round) into aside/: it may hold someone's files, so it is never deleted."""
        self.aside.mkdir(exist_ok=True)
        moved = self.aside / aside_name(path.name)
        os.replace(path, moved)
        return moved

    def create(self) -> list[str]:
        """Make the folders; a file where a folder belongs (damage) is moved aside, not deleted.
        Returns a note for each such repair."""
        notes = []
        self.root.mkdir(parents=True, exist_ok=True)
        for sub in ("records", "logs", "running", "failures", "locks", "runs"):
            path = self.root / sub
            if os.path.lexists(path) and not path.is_dir():
                notes.append(f"{path} was not a folder; moved it to {self.set_aside(path)}")
            path.mkdir(exist_ok=True)
        return notes


def record_file(root: str, task: str) -> str:
    """A task's record under the state folder `root`, as a string: cheap enough for every chunk."""
    return os.path.join(root, "records", f"{task}.json")


def chunk_task_name(chunk_id: int) -> str:
    return f"chunk-{chunk_id}"


def write_json_atomic(path: Path | str, data: dict[str, Any]) -> None:
    """Readers see the old record or the new one, never a torn one, whatever kills the writer."""
    write_atomic(path, json.dumps(data, separators=(",", ":")).encode())


#: No state file of ours is bigger; a bigger one is damage (or a device), never read whole.
MAX_STATE_BYTES = 16 * 1024 * 1024


def read_json(path: Path | str) -> dict[str, Any] | None:
    """A missing, unreadable or garbage file reads as no record: the work is redone. So does
    anything that is not a regular file (a FIFO, a device, a symlink): it is never waited on."""
    try:
        # No file object: a no-op run reads one record per chunk.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_STATE_BYTES:
                return None
            chunks = []
            while block := os.read(fd, 65536):
                chunks.append(block)
        finally:
            os.close(fd)
        data = json.loads(b"".join(chunks))
    except (OSError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def stamp(path: Path | str) -> list[int] | None:
    """(size, mtime in ns) of a regular file, or None: what a record pins an output to. A symlink
    is never followed: a record vouches only for a file in the output's place itself."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return [st.st_size, st.st_mtime_ns]


def fingerprint(*parts: Any) -> str:
    """What a task's completion is tied to; any change to it makes the task run again."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


# -- content states, with doit's MD5Checker rule: same mtime -> same; other size -> changed;
#    else compare the md5. Kept in our own files so that they survive a killed run.

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
    return get_file_md5(str(path)) != state[2]


def inputs_states(state: StateDir, inputs: tuple[Path, ...], job_dir: Path) -> dict[str, list[Any]]:
    """The content state of every input, re-hashing only files whose stat changed since the cache."""
    cache = read_json(state.root / "inputs.json") or {} if inputs else {}
    return {(key := os.path.relpath(path, job_dir)): content_state(path, cache.get(key)) for path in inputs}


def inputs_digest(states: dict[str, list[Any]]) -> str:
    """One digest of the content of every input: what each chunk's record is tied to."""
    return fingerprint([(key, value[2]) for key, value in sorted(states.items())]) if states else ""


def save_inputs_cache(state: StateDir, states: dict[str, list[Any]]) -> None:
    """Keep the states for the next run; a cache, so never worth failing a run for. Only a run
    writes it (`status` and `doit list` leave the state folder untouched)."""
    if states and states != read_json(state.root / "inputs.json"):
        with contextlib.suppress(OSError):
            write_json_atomic(state.root / "inputs.json", states)
