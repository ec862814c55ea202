"""A task's name, in each of its spellings, defined once.

doit calls a chunk `chunk:3`, the state folder files it as `chunk-3` (a name safe in any file
system), people read `chunk 3`. The merge is `merge` everywhere.
"""
from __future__ import annotations

from dataclasses import dataclass

MERGE = "merge"
CHUNK = "chunk"  # doit's group task of every chunk


@dataclass(frozen=True, slots=True)
class TaskName:
    chunk_id: int | None  # None: the merge

    @classmethod
    def chunk(cls, chunk_id: int) -> TaskName:
        return cls(chunk_id)

    @classmethod
    def merge(cls) -> TaskName:
        return cls(None)

    @classmethod
    def parse(cls, text: str) -> TaskName | None:
        """From any spelling ("chunk:3", "chunk-3", "chunk 3", "merge"); None for other tasks
        (doit's group task `chunk`, or a task of someone's own dodo file)."""
        if text == MERGE:
            return cls(None)
        head, sep, tail = text[:5], text[5:6], text[6:]
        if head == CHUNK and sep in (":", "-", " ") and tail.isascii() and tail.isdigit():
            return cls(int(tail))
        return None

    @property
    def is_merge(self) -> bool:
        return self.chunk_id is None

    @property
    def doit(self) -> str:
        """doit's task name: `chunk:3`, `merge`."""
        return MERGE if self.chunk_id is None else f"{CHUNK}:{self.chunk_id}"

    @property
    def key(self) -> str:
        """The state folder's file stem and the events' `task`: `chunk-3`, `merge`."""
        return MERGE if self.chunk_id is None else f"{CHUNK}-{self.chunk_id}"

    @property
    def label(self) -> str:
        """For people: `chunk 3`, `merge`."""
        return MERGE if self.chunk_id is None else f"{CHUNK} {self.chunk_id}"

    def __str__(self) -> str:
        return self.key
