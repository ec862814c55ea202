"""How far a run has come: a pure model fed with run events, and what it shows.

The model knows nothing about doit, terminals or files: it is fed event dicts (the lines of
`runs/<runId>.jsonl`, see events.py, plus the same shapes made from doit's callbacks) and
answers with a JSON dict modelled on Remotion's `getRenderProgress`, or with text. The
reporter wires it to doit; tests feed it synthetic sequences. Applying an event twice, or
a doit callback after the worker's own event for the same thing, changes nothing, so the
reporter may feed both sources without double counting.

`overallProgress` counts frames of finished chunks (chunks that were already up to date
count as finished). When the run also merges, it stays at most 0.99 until the merge is
done, so that 1.0 always means the output exists.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from ..state.names import TaskName

#: Where the runner keeps the progress file current: set from `--progress-json PATH` / `progress=PATH`.
PROGRESS_ENV = "HELIOS_DOIT_PROGRESS_JSON"

Event = Mapping[str, Any]


@dataclass(slots=True)
class TaskState:
    """One chunk (or the merge) as far as this run knows."""

    chunk_id: int | None
    frames: int
    state: str = "pending"  # pending | running | retrying | done | skipped | failed | not run
    attempt: int = 0
    attempts: int | None = None  # allowed, when the worker said
    started: float | None = None
    duration: float | None = None
    progress: int = 0  # frames of the running attempt, as its renderer said

    @property
    def finished(self) -> bool:
        return self.state in ("done", "skipped")


def task_key(event: Event) -> str | None:
    """"chunk-3" / "merge" from an event (or a doit name "chunk:3")."""
    task = event.get("task")
    if isinstance(task, str) and task:
        name = TaskName.parse(task)
        return name.key if name is not None else task
    if isinstance(event.get("chunkId"), int):
        return TaskName(event["chunkId"]).key
    return None


def label(task: str) -> str:
    """doit's name for a state key: "chunk-3" -> "chunk:3"."""
    name = TaskName.parse(task)
    return name.doit if name is not None else task


class Progress:
    """The state of one run, built from its events."""

    def __init__(self, chunk_frames: Mapping[int, int] | None = None, merge: bool = False,
                 run_id: str | None = None, clock: Callable[[], float] = time.time):
        self.clock = clock
        self.run_id = run_id
        self.started = clock()
        self.first_start: float | None = None  # when the first command started: the ETA's clock
        self.tasks: dict[str, TaskState] = {}
        self.errors: list[dict[str, Any]] = []
        self.fatal = False
        self.ended = False
        self.code: int | None = None
        # Kept up to date event by event: a 10,000-chunk run must not recount every chunk per event.
        self._chunks: dict[str, TaskState] = {}
        # chunks finished, frames finished, frames rendered, frames in all, frames of running attempts
        self._sums = [0, 0, 0, 0, 0]
        self._set_chunks(chunk_frames or {}, merge)

    def _set_chunks(self, chunk_frames: Mapping[int, int], merge: bool) -> None:
        for cid, frames in chunk_frames.items():
            self._add(TaskName(int(cid)).key, TaskState(int(cid), int(frames)))
        if merge:
            self.tasks.setdefault("merge", TaskState(None, 0))

    def _add(self, key: str, task: TaskState) -> TaskState:
        if key not in self.tasks:
            self.tasks[key] = task
            if task.chunk_id is not None:
                self._chunks[key] = task
                self._count(task, 1)
        return self.tasks[key]

    def _count(self, task: TaskState, sign: int) -> None:
        if task.chunk_id is None:
            return
        finished = task.finished
        for i, value in enumerate((int(finished), task.frames if finished else 0,
                                   task.frames if task.state == "done" else 0, task.frames,
                                   task.progress if task.state == "running" else 0)):
            self._sums[i] += sign * value

    # -- feeding ------------------------------------------------------------------------
    def apply(self, event: Event) -> bool:
        """Take one event into account; True if anything changed."""
        kind = event.get("event")
        at = float(event.get("at") or self.clock())
        if kind == "run-start":
            if not self.tasks:  # a reader of a bare log: the run says what it covers
                self._set_chunks(chunk_frames_of(event), bool(event.get("merge")))
            self.run_id = self.run_id or event.get("runId")
            self.started = min(self.started, at)
            return True
        if kind == "run-end":
            changed = not self.ended
            self.ended, self.code = True, event.get("code")
            return changed
        if kind == "tasks-skip":  # one event for every task a run found up to date
            changed = False
            for skipped in skipped_tasks(event):
                changed |= self.apply({"event": "task-skip", "at": at, "task": skipped, "reason": event.get("reason")})
            return changed
        key = task_key(event)
        if key is None:
            return False
        task = self.tasks.get(key)
        if task is None:  # a task this run did not announce (e.g. a log from an older layout)
            cid = event.get("chunkId")
            task = self._add(key, TaskState(int(cid) if cid is not None else None, int(event.get("frames") or 0)))
        handler = _HANDLERS.get(str(kind))
        if handler is None:
            return False
        self._count(task, -1)
        try:
            return handler(self, task, key, event, at)
        finally:
            self._count(task, 1)

    def _start(self, task: TaskState, key: str, event: Event, at: float) -> bool:
        attempt = event.get("attempt")
        task.attempts = event.get("attempts") or task.attempts
        if attempt is None and task.state != "pending":
            return False  # doit's callback after the worker's own event, or a repeat
        if attempt is not None and task.attempt >= int(attempt) and task.state != "pending":
            return False
        task.state, task.attempt = "running", int(attempt or 1)
        task.started, task.progress = at, 0
        self.first_start = at if self.first_start is None else min(self.first_start, at)
        return True

    def _progress(self, task: TaskState, key: str, event: Event, at: float) -> bool:
        frames = event.get("frames")
        if task.state != "running" or not isinstance(frames, int) or event.get("attempt") not in (None, task.attempt):
            return False
        frames = max(0, min(frames, task.frames))
        changed, task.progress = frames != task.progress, frames
        return changed

    def _retry(self, task: TaskState, key: str, event: Event, at: float) -> bool:
        attempt = int(event.get("attempt") or task.attempt or 1)
        task.state = "retrying"
        self._error(task, key, attempt, True, event.get("message"))
        return True

    def _done(self, task: TaskState, key: str, event: Event, at: float) -> bool:
        if task.finished:
            return False
        task.state = "done"
        if event.get("attempt"):
            task.attempt = int(event["attempt"])
        if event.get("frames") is not None and key != "merge":
            task.frames = int(event["frames"])
        duration = event.get("duration")
        if duration is None and task.started is not None:
            duration = round(at - task.started, 3)
        task.duration = float(duration) if duration is not None else None
        return True

    def _failed(self, task: TaskState, key: str, event: Event, at: float) -> bool:
        if event.get("notRun"):  # doit did not run it: a task it depends on failed
            changed = task.state == "pending"
            task.state = "not run" if changed else task.state
            return changed
        final = event.get("final", True)
        attempt = event.get("attempt")
        if attempt is None:  # from doit: final, and already known if the worker said so
            if task.state == "failed":
                return False
            attempt = task.attempt or 1
        self._error(task, key, int(attempt), not final, event.get("message"))
        if final:
            task.state = "failed"
            self.fatal = True
        else:
            task.state = "retrying"
        return True

    def _skip(self, task: TaskState, key: str, event: Event, at: float) -> bool:
        if task.finished:
            return False
        task.state = "skipped"
        return True

    def _error(self, task: TaskState, key: str, attempt: int, will_retry: bool, message: Any) -> None:
        for error in self.errors:
            if error["task"] == key and error["attempt"] == attempt:
                error["willRetry"] = will_retry
                error["message"] = error["message"] or message
                return
        self.errors.append({"chunkId": task.chunk_id, "task": key, "attempt": attempt,
                            "willRetry": will_retry, "message": str(message or "failed")})

    # -- answering ----------------------------------------------------------------------
    def chunks(self) -> dict[str, TaskState]:
        return self._chunks

    def running(self) -> list[int]:
        return sorted(t.chunk_id for t in self.chunks().values()
                      if t.chunk_id is not None and t.state in ("running", "retrying"))

    def snapshot(self, now: float | None = None) -> dict[str, Any]:
        """The progress file's content."""
        now = self.clock() if now is None else now
        chunks = self._chunks.values()
        chunks_done, frames_done, rendered, total_frames, partial = self._sums
        frames_done, rendered = frames_done + partial, rendered + partial
        merge = self.tasks.get("merge")
        overall = frames_done / total_frames if total_frames else (1.0 if self.ended else 0.0)
        if merge is not None and not merge.finished:
            overall = min(overall, 0.99)
        eta = None
        if self.ended:
            eta = 0.0 if not self.fatal and all(t.finished for t in self.tasks.values()) else None
        elif rendered and self.first_start is not None and now > self.first_start:
            left = total_frames - frames_done
            eta = round(left / (rendered / (now - self.first_start)), 1) if left else None
        slowest = sorted((t for t in chunks if t.state == "done" and t.duration is not None),
                         key=lambda t: -(t.duration or 0))[:3]
        return {
            "runId": self.run_id,
            "overallProgress": round(overall, 4),
            "chunksDone": chunks_done,
            "totalChunks": len(self._chunks),
            "framesDone": frames_done,
            "totalFrames": total_frames,
            "framesRendered": rendered,
            "errors": [{k: e[k] for k in ("chunkId", "attempt", "willRetry", "message")} for e in self.errors],
            "fatalErrorEncountered": self.fatal,
            "timeToFinish": eta,
            "elapsed": round(now - self.started, 2),
            "running": self.running(),
            "runningChunks": [{"chunkId": t.chunk_id, "framesDone": t.progress, "frames": t.frames}
                              for t in chunks if t.state == "running"][:100],
            "slowestChunks": [{"chunkId": t.chunk_id, "duration": t.duration} for t in slowest],
            "merge": merge.state if merge else None,
            "stage": self._stage(),
            "done": self.ended,
            "updatedAt": round(now, 3),
        }

    def _stage(self) -> str:
        if self.ended:
            return "done"
        merge = self.tasks.get("merge")
        return "merging" if merge is not None and merge.state == "running" else "rendering"

    def display_lines(self, now: float | None = None) -> list[str]:
        """What the live display shows under its bar: counts, running chunks, time, trouble."""
        snap = self.snapshot(now)
        head = (f"chunks {snap['chunksDone']}/{snap['totalChunks']}  frames {snap['framesDone']}/{snap['totalFrames']}"
                f"  {snap['overallProgress'] * 100:.0f}%")
        if snap["merge"] is not None:
            head += f"  merge {snap['merge']}"
        running = ", ".join(map(str, snap["running"][:12])) + (" ..." if len(snap["running"]) > 12 else "")
        timing = f"elapsed {clock_text(snap['elapsed'])}"
        if snap["timeToFinish"] is not None and not snap["done"]:
            timing += f"  ETA {clock_text(snap['timeToFinish'])}"
        lines = [head, f"running: {running or '-'}  {timing}"]
        for error in self.errors[-3:]:
            then = ", retrying" if error["willRetry"] else ""
            lines.append(f"{label(error['task'])} attempt {error['attempt']} failed{then}: {first_line(error['message'])}")
        return lines

    def progress_line(self, now: float | None = None) -> str:
        """The plain line that says, now and then, where a run stands while chunks render."""
        snap = self.snapshot(now)
        running = ", ".join(map(str, snap["running"][:8])) + (" ..." if len(snap["running"]) > 8 else "")
        eta = f"; ETA {clock_text(snap['timeToFinish'])}" if snap["timeToFinish"] is not None else ""
        return (f".. {snap['framesDone']}/{snap['totalFrames']} frames, {snap['chunksDone']}/{snap['totalChunks']} "
                f"chunks; rendering {running or '-'}{eta}")

    def done_line(self, key: str) -> str:
        """The plain line for a task doit reports finished: how long, and where the run stands."""
        task = self.tasks.get(key)
        chunks_done, frames_done, _, total_frames, partial = self._sums
        frames_done += partial
        counts = f"{chunks_done}/{len(self._chunks)} chunks, {frames_done}/{total_frames} frames"
        if task is not None and task.state == "skipped":
            return f"-- {label(key)} (done by another runner) [{counts}]"
        took = f" in {task.duration:.2f}s" if task is not None and task.duration is not None else ""
        tries = f" after {task.attempt} attempts" if task is not None and task.attempt > 1 else ""
        return f"ok {label(key)}{took}{tries} [{counts}]"

    def failed_line(self, key: str) -> str:
        """The plain line for a task that failed for good."""
        task = self.tasks.get(key)
        errors = [e for e in self.errors if e["task"] == key]
        why = first_line(errors[-1]["message"]) if errors else "failed"
        tries = f" after {task.attempt} attempts" if task is not None and task.attempt > 1 else ""
        return f"F  {label(key)} failed{tries}: {why}"


_HANDLERS: dict[str, Callable[[Progress, TaskState, str, Event, float], bool]] = {
    "task-start": Progress._start,
    "task-retry": Progress._retry,
    "task-done": Progress._done,
    "task-failed": Progress._failed,
    "task-skip": Progress._skip,
    "task-progress": Progress._progress,
}


def skipped_tasks(event: Event) -> list[str]:
    """The task keys of a `tasks-skip` event: chunk ids as ranges (`[[0, 9999]]`: a no-op run of
    10,000 chunks is a few bytes in the log, not a megabyte), and the merge."""
    keys = [str(key) for key in event.get("tasks") or []]  # the older form: every key
    for span in event.get("chunks") or []:
        if isinstance(span, list) and len(span) == 2 and all(isinstance(n, int) for n in span):
            keys += [f"chunk-{n}" for n in range(span[0], min(span[1], span[0] + 10_000_000) + 1)]
    return keys + (["merge"] if event.get("merge") else [])


def chunk_frames_of(event: Event) -> dict[int, int]:
    """A `run-start` event's frames per chunk: `chunks` as [first id, last id, frames] runs of
    consecutive ids with the same frame count (10,000 equal chunks are one entry), or the older
    `chunkFrames` ({id: frames})."""
    found = {int(k): int(v) for k, v in (event.get("chunkFrames") or {}).items()}
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
    spans: list[list[int]] = []
    for n in sorted(set(ids)):
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    return spans


def retry_line(event: Event) -> str | None:
    """The plain line for a worker's retry: which attempt failed, why, and when the next one starts."""
    if event.get("event") != "task-retry" or task_key(event) is None:
        return None
    delay = event.get("delay")
    when = f" in {float(delay):.1f}s" if delay is not None else ""
    return f"R  {label(task_key(event) or '')} attempt {event.get('attempt', '?')} failed: {first_line(event.get('message'))}; retrying{when}"


def first_line(message: Any) -> str:
    text = str(message or "failed").strip()
    return text.splitlines()[0] if text else "failed"


def clock_text(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"
