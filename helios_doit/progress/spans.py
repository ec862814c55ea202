"""Runs of chunk ids as the event log writes them: a 10,000-chunk run says what it covers, and
what it found done, in a few bytes (`[[0, 9999]]`), not a megabyte."""
from __future__ import annotations

from typing import Any, Mapping

Event = Mapping[str, Any]


def skipped_tasks(event: Event) -> list[str]:
    """The task keys of a `tasks-skip` event: chunk ids as ranges (`[[0, 9999]]`: a no-op run of
    10,000 chunks is a few bytes in the log, not a megabyte), and the merge."""
    keys: list[str] = []
    for span in event.get("chunks") or []:
        if isinstance(span, list) and len(span) == 2 and all(isinstance(n, int) for n in span):
            keys += [f"chunk-{n}" for n in range(span[0], min(span[1], span[0] + 10_000_000) + 1)]
    return keys + (["merge"] if event.get("merge") else [])


def chunk_frames_of(event: Event) -> dict[int, int]:
    """A `run-start` event's frames per chunk: `chunks` as [first id, last id, frames] runs of
    consecutive ids with the same frame count (10,000 equal chunks are one entry)."""
    found: dict[int, int] = {}
    for span in event.get("chunks") or []:
        if isinstance(span, list) and len(span) == 3 and all(isinstance(n, int) for n in span):
            found.update((n, span[2]) for n in range(span[0], min(span[1], span[0] + 10_000_000) + 1))
    return found


def frame_runs(frames: dict[int, int]) -> list[list[int]]:
    """{id: frames} as [first id, last id, frames] runs (see `chunk_frames_of`)."""
    spans: list[list[int]] = []
    for n in sorted(frames):
        if spans and n == spans[-1][1] + 1 and frames[n] == spans[-1][2]:
            spans[-1][1] = n
        else:
            spans.append([n, n, frames[n]])
    return spans


def compact_chunks(ids: list[int]) -> list[list[int]]:
    """Chunk ids as [first, last] ranges of consecutive ids."""
    return [span[:2] for span in frame_runs(dict.fromkeys(ids, 0))]
