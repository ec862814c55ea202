"""The state folder: one per job, next to the job file, where every durable fact of a run lives.

Every path of it is made here and nowhere else: records, logs, failures, locks, running markers,
cancel flags and the aside/ folder for files that were in an output's place but not ours.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .files import open_plain
from .places import aside_name


@dataclass(frozen=True)
class StateDir:
    """One folder per job, next to the job file: records, logs, run markers, locks, event logs."""

    root: Path

    def record(self, task: str) -> Path:
        return Path(record_file(str(self.root), task))

    @property
    def inputs_cache(self) -> Path:
        """The content states of the job's inputs at the last run: only a cache."""
        return self.root / "inputs.json"

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

    def markers(self) -> list[tuple[str, Path]]:
        """(task key, marker) of every task a runner was executing when it last looked."""
        folder = self.root / "running"
        return [(path.stem, path) for path in folder.glob("*.json")] if folder.is_dir() else []

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


def open_own(path: Path | str, flags: int, say: Callable[[str], None] | None = None, linked: bool = False) -> int:
    """Open one of the state folder's own files (a log, the event log, a lock: `<root>/<sub>/<name>`)
    without ever writing through what someone else put there. A symlink, a hard link (a file with
    another name elsewhere), a FIFO or a folder in its place is moved into aside/ (never followed,
    never deleted) and a new file made; `say` hears where it went. `linked`: see `open_plain`."""
    def aside(planted: Path) -> None:
        moved = StateDir(planted.parent.parent).set_aside(planted)
        if say is not None:
            say(f"{planted} was not a file of ours (a link, or not a plain file); moved it to {moved}")

    return open_plain(path, flags, aside, linked=linked)


def record_file(root: str, task: str) -> str:
    """A task's record under the state folder `root`, as a string: cheap enough for every chunk."""
    return os.path.join(root, "records", f"{task}.json")
