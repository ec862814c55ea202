"""doit reporter: progress while a run goes, then a summary a person can act on.

It is also the hook that runs in the main process when a run starts: it starts the run's
session (`RunStart`: the state folder, the watchdog, ...), made for each job by `reporter_for`;
`doit -n 4 job=...` and the CLI both get it through DOIT_CONFIG.

Attempts and retries happen in doit's worker processes; they reach this process through the
run's event log (`runs/<runId>.jsonl`), which a small thread tails, because under `-n` the
main thread sits blocked in doit's result queue between callbacks. doit's own callbacks are
fed to the same `Progress` model (it ignores what it already knows), so progress stays right
even for a task whose worker wrote no event.

Output: in a terminal, a rich live display (see `live.LiveView` for how chunk commands'
own output stays readable), its view made again whenever events come in or a line is printed
above it, so that it never lags the lines; otherwise plain lines: doit's `.  chunk:3` and `--
chunk:3`, plus `ok`, `R` (retry) and `F` (failure) lines. Either way a run ends with what went
wrong, if anything, and one line saying what it did (`summary`). With
`HELIOS_DOIT_PROGRESS_JSON` set, a JSON progress file is kept current (at most every 0.2 s,
and always at the end).
"""
from __future__ import annotations

import copyreg
import gc
import os
import socket
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any, ClassVar, Protocol, TextIO, cast

from doit.exceptions import BaseFail, TaskFailed
from doit.reporter import ConsoleReporter
from doit.runner import MRunner, Runner

from ..executors import supervise
from ..core.errors import os_fault
from ..state import events
from ..state.files import write_json_atomic
from ..state.names import TaskName
from ..state.outcome import TaskResult
from .model import PROGRESS_ENV, Progress, retry_line
from .spans import compact_chunks, frame_runs
from .summary import end_line, failure_lines

#: Set to 0 to get plain lines even in a terminal.
LIVE_ENV = "HELIOS_DOIT_LIVE"
_TICK = 0.1  # how often the event log is read
_MIN_WRITE = 0.2  # progress file: at most this often when something changed ...
_MAX_QUIET = 1.0  # ... and at least this often (elapsed and ETA move on)
_PLAIN_EVERY = 10.0  # without the live display: a line on where the run stands, this often at most


class RunStart(Protocol):
    """A run of one job, as the reporter sees it: where its state is, the frames of each chunk
    (so that it never looks inside 10,000 doit tasks), the merged output as a user names it (None
    if it cannot be known), and what to do as the run starts (given the doit names of the tasks
    it may execute; it says how many workers it needs at most)."""

    state_root: Path
    chunk_frames: dict[int, int]
    merged: str | None

    def start(self, in_run: set[str], always: bool = False) -> int: ...


def reporter_for(run: RunStart) -> type[Reporter]:
    """doit takes a reporter class, and makes it itself: one made for this run."""
    return cast("type[Reporter]", _RunReporter("Reporter", (Reporter,), {"run": run}))


class _RunReporter(type):
    """The class of a reporter made for one run. doit hands the class to its worker processes;
    under the spawn start method it is pickled, as the plain `Reporter` (a worker reports
    nothing of the run: the main process does)."""


def _plain_reporter() -> type[Reporter]:
    return Reporter


def _reduce_run_reporter(cls: _RunReporter) -> Any:
    return _plain_reporter, ()


copyreg.pickle(_RunReporter, _reduce_run_reporter)


class Reporter(ConsoleReporter):
    desc = "helios-doit: progress, console lines and a failure summary"
    run: ClassVar[RunStart | None] = None

    def __init__(self, outstream: TextIO, options: dict[str, Any]):
        super().__init__(outstream, options)
        self.done: list[str] = []
        self.skipped: list[str] = []  # up to date, not logged yet
        self.skip_lines: list[str] = []  # their console lines, not written yet
        self.lock = threading.RLock()  # doit calls us from worker threads under `-P thread`
        self.progress = Progress()
        self.state_root: Path | None = None
        self.offset = 0
        self.json_path = _progress_path()
        self.json_written = 0.0
        self.json_dirty = True
        self.stop = threading.Event()
        self.ticker: threading.Thread | None = None
        self.live: Any = None  # live.LiveView in a terminal

    # -- output -------------------------------------------------------------------------
    def write(self, text: str) -> None:
        with self.lock:
            if self.skip_lines:  # doit's "-- chunk:3" lines, held back to go out in one write
                text, self.skip_lines = "".join(self.skip_lines) + text, []
            if self.live is not None:
                self.live.update()  # what is drawn under the line is as new as the line
                self.live.print(text)
                return
            # Chunk output reaches the terminal by write(2); flush so that lines stay in order.
            try:
                self.outstream.write(text)
                self.outstream.flush()
            except (BrokenPipeError, ValueError):  # `| head` closed the pipe: the run goes on, quietly
                _silence(self.outstream)

    # -- doit callbacks -----------------------------------------------------------------
    def initialize(self, tasks: dict[str, Any], selected_tasks: list[str]) -> None:
        """doit's only hook between loading the tasks and starting its workers (a plain `doit`
        command gives a dodo file no other): the run starts here, in the main process."""
        # What loading made lives as long as the run: collections need not walk it again, and
        # doit's worker processes, forked after this, keep sharing its memory pages.
        gc.freeze()
        gc.enable()
        in_run = _closure(tasks, selected_tasks)
        runner = _doit_runner()
        if self.run is not None:
            limit = self.run.start(in_run, always=bool(runner is not None and runner.always_execute))
            if isinstance(runner, MRunner):  # doit starts one worker per -n slot, whatever the run holds
                runner.num_process = max(1, min(runner.num_process, limit))
        state_root = self.run.state_root if self.run is not None else None
        chunk_frames = self.run.chunk_frames if self.run is not None else {}
        self.json_path = _progress_path()
        os.environ.pop(PROGRESS_ENV, None)  # the chunks' commands have no business knowing where it is
        frames = {chunk_id: count for chunk_id, count in chunk_frames.items() if TaskName(chunk_id).doit in in_run}
        run = events.run_id()
        self.progress = Progress(frames, "merge" in in_run and "merge" in tasks, run)
        self.state_root = state_root
        if self.state_root is not None:
            self.offset = _size(events.log_path(self.state_root, run))
            self._emit("run-start", runId=run, totalChunks=len(frames), totalFrames=sum(frames.values()),
                       pid=os.getpid(), host=socket.gethostname(), merge="merge" in in_run,
                       chunks=frame_runs(frames))
        if _live_wanted(self.outstream):
            from .live import LiveView

            self.live = LiveView(self.progress)
            self.live.start()
        self.ticker = threading.Thread(target=self._tick, name="helios-doit-progress", daemon=True)
        self.ticker.start()

    def execute_task(self, task: Any) -> None:
        with self.lock:
            if _is_work(task):
                self._feed({"event": "task-start", "task": task.name})
            super().execute_task(task)

    def skip_uptodate(self, task: Any) -> None:
        with self.lock:
            if _is_work(task):
                self.skipped.append(_key(task))  # logged together: a no-op of 10,000 chunks is one line
            if not task.name.startswith("_"):  # doit's line, written with the next line that is not one
                self.skip_lines.append(f"-- {task.title()}\n")

    def add_success(self, task: Any) -> None:
        with self.lock:
            self.done.append(task.name)
            if not _is_work(task):
                return
            result = TaskResult.from_values(task.values)
            took = result.seconds if result is not None and result.attempt == 1 else None
            if took is None:  # retried, or done by another runner: the log tells the story first
                self._drain()
                self._feed({"event": "task-done", "task": task.name})
            else:  # the common case, from the task's result: no read of the event log per chunk
                self._flush_skipped()
                self._feed({"event": "task-done", "task": task.name, "duration": took, "attempt": 1})
            self.write(self.progress.done_line(_key(task)) + "\n")

    def add_failure(self, task: Any, fail: BaseFail) -> None:
        with self.lock:
            self.failures.append({"task": task, "exception": fail})
            self._drain()
            if _is_work(task) and isinstance(fail, TaskFailed):
                self._feed({"event": "task-failed", "task": task.name, "message": fail.get_msg(), "final": True})
                self.write(self.progress.failed_line(_key(task)) + "\n")
            elif _is_work(task):
                self._feed({"event": "task-failed", "task": task.name, "notRun": True})

    def complete_run(self) -> None:
        # doit calls this as its runner ends, however it ends: an OSError on its way out is the
        # environment's (no process could be forked for a worker): one line, exit 1, no worker left.
        fault = sys.exc_info()[1]
        self.stop.set()
        if self.ticker is not None:
            self.ticker.join(2)
        try:
            with self.lock:
                self._drain()
                self._emit("run-end", code=self._code(), elapsed=round(time.time() - self.progress.started, 3),
                           failed=[_key(f["task"]) for f in self.failures if _is_work(f["task"])])
                self._write_json(force=True)
        finally:
            if self.live is not None:
                live, self.live = self.live, None
                live.close()  # the terminal is ours again before the summary
        for line in failure_lines(self.failures, self.runtime_errors, self.state_root, self.progress.run_id):
            self.write(line + "\n")
        if self.progress.chunks() or "merge" in self.progress.tasks:
            merged = self.run.merged if self.run is not None else None
            self.write(end_line(self.progress, self.failures, supervise.stopping() is not None,
                                time.time() - self.progress.started, merged) + "\n")
        self.write("")  # what is still held back
        if isinstance(fault, OSError):
            sys.stderr.write(f"helios-doit: the run could not go on: {os_fault(fault)}; finished chunks are kept\n")
            supervise.end_workers()
            raise SystemExit(1)

    # -- the event log and the progress file --------------------------------------------
    def _tick(self) -> None:
        said, said_at = None, time.monotonic()
        while not self.stop.wait(_TICK):
            with self.lock:
                self._drain(redraw=False)  # the live view is taken once a tick, below
                self._write_json()
                if self.live is not None:
                    self.live.update()
                elif time.monotonic() - said_at >= _PLAIN_EVERY and self.progress.running():
                    line = self.progress.progress_line()
                    if line.split(";")[0] != said:  # only when frames moved on
                        self.write(line + "\n")
                        said = line.split(";")[0]
                    said_at = time.monotonic()

    def _drain(self, redraw: bool = True) -> None:
        """Read what workers (and we) appended to the run's event log since the last look; `redraw`:
        the live view takes what changed now."""
        self._flush_skipped()
        if self.state_root is None:
            return
        found, self.offset = events.read(events.log_path(self.state_root, self.progress.run_id), self.offset)
        changed = False
        for event in found:
            changed |= self.progress.apply(event)
            line = retry_line(event)
            if line and self.live is None:
                self.write(line + "\n")
        self.json_dirty |= changed
        if changed and redraw and self.live is not None:
            self.live.update()

    def _flush_skipped(self) -> None:
        if self.skipped:
            skipped, self.skipped = self.skipped, []
            ids = [name.chunk_id for name in map(TaskName.parse, skipped) if name is not None and name.chunk_id is not None]
            self._emit("tasks-skip", chunks=compact_chunks(ids), merge="merge" in skipped, reason="up to date")

    def _emit(self, kind: str, **fields: Any) -> None:
        """Into the run's log for anyone reading it (status, tools), and into our model at once."""
        if self.state_root is not None:
            try:
                events.emit(self.state_root, kind, **fields)
            except OSError:
                pass  # a full disk must not fail the run over its log
        self._feed({"event": kind, **fields})

    def _feed(self, event: dict[str, Any]) -> None:
        self.json_dirty |= self.progress.apply(event)

    def _write_json(self, force: bool = False) -> None:
        if self.json_path is None:
            return
        now = time.monotonic()
        due = now - self.json_written >= (_MIN_WRITE if self.json_dirty else _MAX_QUIET)
        if not (force or due):
            return
        try:
            self.json_path.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.json_path, self.progress.snapshot())
        except OSError as err:
            sys.stderr.write(f"helios-doit: cannot write the progress file {self.json_path}: {err}; not trying again\n")
            self.json_path = None
            return
        self.json_written, self.json_dirty = now, False

    def _code(self) -> int:
        """The run's outcome as the CLI exits: 0 done, 1 a task failed, 2 doit refused, 128+N stopped."""
        if supervise.stopping():
            return supervise.stop_code()
        if self.runtime_errors:
            return 2
        return 1 if self.failures else 0


def _doit_runner() -> Runner | None:
    """doit's runner, which tells its reporter nothing of itself (its -a, its worker count: `-n 64`
    of a 4-chunk job made 56 processes, a worker for each task waiting on another) and is the one
    calling `initialize`: the nearest caller that is a Runner."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        if isinstance(candidate := frame.f_locals.get("self"), Runner):
            return candidate
        frame = frame.f_back
    return None


def _silence(stream: TextIO) -> None:
    """Point a closed stdout at /dev/null, so that later writes (and the exit's flush) are quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def _closure(tasks: dict[str, Any], selected: list[str]) -> set[str]:
    """Every task this run may execute: the selected ones and what they depend on."""
    seen: set[str] = set()
    todo = list(selected or [])
    while todo:
        name = todo.pop()
        if name in seen or name not in tasks:
            continue
        seen.add(name)
        todo.extend(getattr(tasks[name], "task_dep", []) or [])
        todo.extend(getattr(tasks[name], "setup_tasks", []) or [])
    return seen


def _name(task: Any) -> TaskName:
    """Ours (a chunk or the merge), or TaskName(None) for doit's group task and others' tasks."""
    return TaskName.parse(task.name) or _NOT_OURS


_NOT_OURS = TaskName(-1)


def _is_work(task: Any) -> bool:
    return _name(task) is not _NOT_OURS


def _key(task: Any) -> str:
    return _name(task).key


def _size(path: Path) -> int:
    """The log's length now: this run reads only what is appended from here on."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _progress_path() -> Path | None:
    value = os.environ.get(PROGRESS_ENV)
    if not value:
        return None
    from doit import loader

    base = getattr(loader, "initial_workdir", None) or os.getcwd()
    return Path(base, value)


def _live_wanted(stream: TextIO) -> bool:
    """Live display only on a real terminal on fd 1: it has to own that terminal."""
    if os.environ.get(LIVE_ENV, "1") in ("0", "false", "no") or os.environ.get("TERM") == "dumb":
        return False
    try:
        return stream.isatty() and stream.fileno() == 1
    except (AttributeError, ValueError, OSError):
        return False
