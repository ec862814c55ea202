"""How far a run has come: a pure model fed with run events, and what it shows.

The model knows nothing about doit, terminals or files: it is fed event dicts (the lines of
`runs/<runId>.jsonl`, see events.py, plus the same shapes made from doit's callbacks) and
answers with a JSON dict modelled on Remotion's `getRenderProgress`, or with text. The
reporter wires it to doit; tests feed it synthetic sequences. Applying an event twice, or
a doit callback after the worker's own event for the same thing, changes nothing, so the
reporter may feed both sources without double counting.

`overallProgress` counts frames of finished chunks (chunks that were already up to date
count as finished) and the frames running chunks' renderers said they made. When the run
also merges, it stays at most 0.99 until the merge is done, so that 1.0 always means the
output exists. What a person reads keeps those apart: frames of a chunk still rendering are
not done (a renderer says "30 / 30" before it has finished its file).

The ETA comes from the chunks this run finished, once there are some: their time per frame,
start-up included, for what is left, spread over as many chunks as ran at once. A renderer
that starts slowly then makes every frame in a burst (Helios: a browser, then all frames)
would otherwise make a rate of frames that drops while the next chunks start up, and an ETA
that grows as time passes.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from ..state.names import TaskName
from .spans import chunk_frames_of, skipped_tasks
from .words import clock_text, first_line, label, retry_line, task_key

__all__ = ["PROGRESS_ENV", "Progress", "TaskState", "clock_text", "first_line", "label", "retry_line", "task_key"]

#: Where the runner keeps the progress file current: set from `--progress-json PATH` / `progress=PATH`.
PROGRESS_ENV = "HELIOS_DOIT_PROGRESS_JSON"

Event = Mapping[str, Any]


_ELSEWHERE = "done by another runner"


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
        self.skip_notes: dict[str, str] = {}  # why a task this run did not render was done, when not the usual
        self.fatal = False
        self.ended = False
        self.code: int | None = None
        # Kept up to date event by event: a 10,000-chunk run must not recount every chunk per event.
        self._chunks: dict[str, TaskState] = {}
        # chunks finished, frames finished, frames rendered, frames in all, frames of running
        # attempts, frames of chunks that failed or were not run
        self._sums = [0, 0, 0, 0, 0, 0]
        self._timed = [0.0, 0]  # seconds and frames of the chunks this run rendered, for the ETA
        self._active: dict[str, TaskState] = {}  # chunks running, or waiting for their next attempt
        self.peak = 0  # the most chunks that ran at once
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
                self._count(key, task, 1)
        return self.tasks[key]

    def _count(self, key: str, task: TaskState, sign: int) -> None:
        if task.chunk_id is None:
            return
        finished = task.finished
        for i, value in enumerate((int(finished), task.frames if finished else 0,
                                   task.frames if task.state == "done" else 0, task.frames,
                                   task.progress if task.state == "running" else 0,
                                   task.frames if task.state in ("failed", "not run") else 0)):
            self._sums[i] += sign * value
        if task.state == "done" and task.duration is not None:
            self._timed[0] += sign * task.duration
            self._timed[1] += sign * task.frames
        if sign < 0:
            self._active.pop(key, None)
        elif task.state in ("running", "retrying"):
            self._active[key] = task
            self.peak = max(self.peak, len(self._active))

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
                changed |= self.apply({"event": "task-skip", "at": at, "task": skipped})  # the usual reason: kept by none
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
        self._count(key, task, -1)
        try:
            return handler(self, task, key, event, at)
        finally:
            self._count(key, task, 1)

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
        reason = event.get("reason")
        if isinstance(reason, str) and reason != _ELSEWHERE:  # one task's own reason, said with its line
            self.skip_notes[key] = reason
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
        return sorted(t.chunk_id for t in self._active.values() if t.chunk_id is not None)

    def counts(self) -> str:
        """Where the chunks stand, frames still rendering apart from frames done:
        `1/4 chunks, 30/120 frames, 90 rendering`."""
        chunks_done, frames_done, _, total_frames, partial, _ = self._sums
        rendering = f", {partial} rendering" if partial else ""
        return f"{chunks_done}/{len(self._chunks)} chunks, {frames_done}/{total_frames} frames{rendering}"

    def eta(self, now: float) -> float | None:
        """Seconds until the last chunk is done; None when nothing tells yet (or the run is over)."""
        _, finished, _, total_frames, partial, lost = self._sums
        seconds, frames = self._timed
        if seconds > 0 and frames > 0:  # chunks this run finished: their time per frame, start-up included
            per_frame = seconds / frames
            running = [max(0.0, t.frames * per_frame - (now - (t.started or now))) for t in self._active.values()]
            waiting = total_frames - finished - lost - sum(t.frames for t in self._active.values())
            if not self._active and waiting <= 0:
                return None  # no chunk left to render (the merge, if any, is not foretold)
            work = sum(running) + max(0, waiting) * per_frame
            return round(max(max(running, default=0.0), work / max(1, self.peak)), 1)
        rendered = self._sums[2] + partial
        left = total_frames - finished - partial
        if rendered and left and self.first_start is not None and now > self.first_start:
            return round(left / (rendered / (now - self.first_start)), 1)  # only a rate of frames, so far
        return None

    def snapshot(self, now: float | None = None) -> dict[str, Any]:
        """The progress file's content."""
        now = self.clock() if now is None else now
        chunks = self._chunks.values()
        chunks_done, finished, rendered, total_frames, partial, _ = self._sums
        frames_done, overall = self._overall()
        rendered += partial
        merge = self.tasks.get("merge")
        if self.ended:
            eta = 0.0 if not self.fatal and all(t.finished for t in self.tasks.values()) else None
        else:
            eta = self.eta(now)
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
            "framesFinished": finished,  # of finished chunks only
            "framesRendering": partial,  # what running chunks' renderers said they made
            "errors": [{k: e[k] for k in ("chunkId", "attempt", "willRetry", "message")} for e in self.errors],
            "fatalErrorEncountered": self.fatal,
            "timeToFinish": eta,
            "elapsed": round(now - self.started, 2),
            "running": self.running(),
            "runningChunks": [{"chunkId": t.chunk_id, "framesDone": t.progress, "frames": t.frames}
                              for t in sorted(self._active.values(), key=_by_id) if t.state == "running"][:100],
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

    def _overall(self) -> tuple[int, float]:
        """Frames made (of finished chunks, and what running ones' renderers said) and the run's
        fraction done: at most 0.99 while a merge is still to come."""
        made, total_frames = self._sums[1] + self._sums[4], self._sums[3]
        overall = made / total_frames if total_frames else (1.0 if self.ended else 0.0)
        merge = self.tasks.get("merge")
        return made, min(overall, 0.99) if merge is not None and not merge.finished else overall

    def bar(self) -> tuple[int, int, bool]:
        """The live bar: frames in all, frames made (finished chunks and what running ones said),
        whether a task failed for good."""
        return self._sums[3], self._overall()[0], self.fatal

    def display_lines(self, now: float | None = None) -> list[str]:
        """What the live display shows under its bar: counts, running chunks, time, trouble.
        Made whenever the display is drawn or a line is printed above it, so it never walks
        every chunk: counts are kept event by event."""
        now = self.clock() if now is None else now
        shown = self._overall()[1]
        merge = self.tasks.get("merge")
        head = f"{self.counts()}  {shown * 100:.0f}%"
        if merge is not None:
            head += f"  {_MERGE_WORDS.get(merge.state, 'merge ' + merge.state)}"
        ids = self.running()
        running = ", ".join(map(str, ids[:12])) + (" ..." if len(ids) > 12 else "")
        timing = f"elapsed {clock_text(now - self.started)}"
        eta = None if self.ended else self.eta(now)
        if eta is not None:
            timing += f"  ETA {clock_text(eta)}"
        lines = [head, f"running: {running or '-'}  {timing}"]
        for error in self.errors[-3:]:
            then = ", retrying" if error["willRetry"] else ""
            lines.append(f"{label(error['task'])} attempt {error['attempt']} failed{then}: {first_line(error['message'])}")
        return lines

    def progress_line(self, now: float | None = None) -> str:
        """The plain line that says, now and then, where a run stands while chunks render."""
        now = self.clock() if now is None else now
        ids = self.running()
        running = ", ".join(map(str, ids[:8])) + (" ..." if len(ids) > 8 else "")
        eta = self.eta(now)
        return f".. {self.counts()}; running {running or '-'}" + (f"; ETA {clock_text(eta)}" if eta is not None else "")

    def done_line(self, key: str) -> str:
        """The plain line for a task doit reports finished: how long, and where the run stands."""
        task = self.tasks.get(key)
        if task is not None and task.state == "skipped":
            return f"-- {label(key)} ({self.skip_notes.get(key, _ELSEWHERE)}) [{self.counts()}]"
        took = f" in {task.duration:.2f}s" if task is not None and task.duration is not None else ""
        tries = f" after {task.attempt} attempts" if task is not None and task.attempt > 1 else ""
        return f"ok {label(key)}{took}{tries} [{self.counts()}]"

    def failed_line(self, key: str) -> str:
        """The plain line for a task that failed for good."""
        task = self.tasks.get(key)
        errors = [e for e in self.errors if e["task"] == key]
        why = first_line(errors[-1]["message"]) if errors else "failed"
        tries = f" after {task.attempt} attempts" if task is not None and task.attempt > 1 else ""
        return f"F  {label(key)} failed{tries}: {why}"


#: The merge as the live display says it, by its state.
_MERGE_WORDS = {"pending": "then the merge", "running": "merging", "retrying": "merging", "done": "merge done",
                "skipped": "merge done already", "failed": "merge failed", "not run": "merge not run"}


def _by_id(task: TaskState) -> int:
    return task.chunk_id if task.chunk_id is not None else -1


_HANDLERS: dict[str, Callable[[Progress, TaskState, str, Event, float], bool]] = {
    "task-start": Progress._start,
    "task-retry": Progress._retry,
    "task-done": Progress._done,
    "task-failed": Progress._failed,
    "task-skip": Progress._skip,
    "task-progress": Progress._progress,
}
