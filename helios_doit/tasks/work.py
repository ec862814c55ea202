"""`Work`: what one chunk or the merge is, as doit's task action receives it: plain, picklable data.

Under `-n` doit's worker processes get it by fork (or pickle), so it holds names and paths, never
open files or adapters.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from ..state.folder import record_file
from ..state.names import TaskName
from ..state.places import Place
from ..storage.url import Remote
from .complete import Complete
from .options import RunOptions


#: A command longer than this is cut in `Work`'s repr (a merge of 10,000 chunks names every one).
_SHOWN = 160


@dataclass(frozen=True, slots=True)
class Expect:
    """A video output's expected contents: a chunk's frames and size, or the merge's frames and fps."""

    frames: int
    width: int | None = None
    height: int | None = None
    fps: float | None = None


@dataclass(frozen=True, slots=True, repr=False)
class Work:
    """Everything a worker needs to run one chunk, or the merge: what doit's task action gets."""

    task: TaskName
    command: str
    cwd: str
    output: str | None  # None: a merge whose output we cannot know
    state_root: str
    fingerprint: str
    inputs: tuple[str, ...] = ()  # files whose content the record pins (the merge's chunk outputs)
    adapter: str = "local"  # a name in executors.registry.ADAPTERS, so that tasks stay plain, picklable data
    expect: Expect | None = None  # what a video output must hold to count as done
    options: RunOptions = RunOptions()
    roots: tuple[str, ...] = ()  # folders outputs may be in, checked again whenever the output is touched
    sources: tuple[TaskName, ...] = ()  # the merge: its chunks, in frame order (their records' facts)
    first_frame: int = 0  # a chunk's first frame: renderers such as Blender report the frame they are on
    remote: Remote | None = None  # the job is in a bucket: done means done there
    scan: str = ""  # the key prefix listed once to decide every task of a bucket job
    source_fingerprints: tuple[str, ...] = ()  # a bucket job's merge: its chunks' fingerprints, in `sources` order
    own: tuple[str, ...] | None = None  # the built-in merge: our own `merge` subcommand's arguments (`command` says it)

    @property
    def key(self) -> str:
        """Its state key (files, events): `chunk-3`, `merge`; doit's name is `task.doit`."""
        return self.task.key

    @property
    def label(self) -> str:
        """Shown to people: `chunk 3`, `merge`."""
        return self.task.label

    @property
    def chunk_id(self) -> int | None:
        return self.task.chunk_id

    @property
    def shown_output(self) -> str:
        """The output as a user names it: from the job's folder when it is inside it."""
        return "(an output helios-doit cannot know)" if self.output is None else shown(self.output, self.cwd)

    def __repr__(self) -> str:
        """What `doit info` shows of a task (its uptodate check's argument): the task, its command
        and its output, in one line a person reads; never the whole plain data."""
        command = self.command if len(self.command) <= _SHOWN else self.command[:_SHOWN - 3] + "..."
        return f"{self.label}: {command} -> {self.shown_output}"

    @property
    def place(self) -> Place | None:
        return Place(self.output, self.roots, os.path.join(self.state_root, "aside")) if self.output else None

    def complete(self) -> Complete:
        return Complete(record_file(self.state_root, self.key), self.fingerprint, self.output, self.inputs, self.cwd)


def shown(path: str | os.PathLike[str], cwd: str) -> str:
    """A path as a user would type it from `cwd`: relative when it is under it."""
    relative = os.path.relpath(path, cwd)
    return str(path) if relative.startswith("..") else relative
