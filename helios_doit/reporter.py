"""doit reporter: progress while a run goes, then a summary a person can act on.

It is also the hook that runs in the main process when a run starts, which is where the
worker watchdog belongs; `doit -n 4 job=...` and the CLI both get it through DOIT_CONFIG.

Attempts and retries happen in doit's worker processes; they reach this process through the
run's event log (`runs/<runId>.jsonl`), which a small thread tails, because under `-n` the
main thread sits blocked in doit's result queue between callbacks. doit's own callbacks are
fed to the same `Progress` model (it ignores what it already knows), so progress stays right
even for a task whose worker wrote no event.

Output: in a terminal, a rich live display (see `live.LiveView` for how chunk commands'
own output stays readable); otherwise plain lines: doit's `.  chunk:3` and `-- chunk:3`,
plus `ok`, `R` (retry) and `F` (failure) lines. With `HELIOS_DOIT_PROGRESS_JSON` set, a JSON
progress file is kept current (at most every 0.2 s, and always at the end).
"""
from __future__ import annotations

import gc
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, TextIO

from doit.exceptions import BaseFail, TaskFailed
from doit.reporter import ConsoleReporter

from . import events, supervise
from .errors import os_fault
from .progress import PROGRESS_ENV, Progress, first_line, retry_line
from .state import StateDir, read_json, write_json_atomic

#: Set to 0 to get plain lines even in a terminal.
LIVE_ENV = "HELIOS_DOIT_LIVE"
_TICK = 0.1  # how often the event log is read
_MIN_WRITE = 0.2  # progress file: at most this often when something changed ...
_MAX_QUIET = 1.0  # ... and at least this often (elapsed and ETA move on)


_announced: tuple[Path, dict[int, int], Callable[[], None]] | None = None


def announce(state_root: Path, chunk_frames: dict[int, int], on_start: Callable[[], None] = lambda: None) -> None:
    """What the job of this process' run holds (its state folder, frames per chunk id): told by
    `tasks.namespace`, so that the reporter never has to look inside 10,000 doit tasks."""
    global _announced
    _announced = (state_root, chunk_frames, on_start)


class Reporter(ConsoleReporter):
    desc = "helios-doit: progress, console lines and a failure summary"

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
        # What loading made lives as long as the run: collections need not walk it again, and
        # doit's worker processes, forked after this, keep sharing its memory pages.
        gc.freeze()
        gc.enable()
        state_root, chunk_frames, on_start = _announced if _announced is not None else (None, {}, lambda: None)
        if state_root is not None:
            _prepare_state(StateDir(state_root))
            on_start()
        supervise.ensure_handlers()
        supervise.start_watchdog()
        in_run = _closure(tasks, selected_tasks)
        frames = {chunk_id: count for chunk_id, count in chunk_frames.items() if f"chunk:{chunk_id}" in in_run}
        run = events.run_id()
        self.progress = Progress(frames, "merge" in in_run and "merge" in tasks, run)
        self.state_root = state_root
        if self.state_root is not None:
            self.offset = _size(events.log_path(self.state_root, run))
            self._emit("run-start", runId=run, totalChunks=len(frames), totalFrames=sum(frames.values()),
                       pid=os.getpid(), host=socket.gethostname(), merge="merge" in in_run,
                       chunkFrames={str(k): v for k, v in frames.items()})
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
            took = _took(task.result)
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
        self._summary()
        self.write("")  # what is still held back

    # -- the event log and the progress file --------------------------------------------
    def _tick(self) -> None:
        while not self.stop.wait(_TICK):
            with self.lock:
                self._drain()
                self._write_json()
                if self.live is not None:
                    self.live.update()

    def _drain(self) -> None:
        """Read what workers (and we) appended to the run's event log since the last look."""
        self._flush_skipped()
        if self.state_root is None:
            return
        found, self.offset = events.read(events.log_path(self.state_root, self.progress.run_id), self.offset)
        for event in found:
            self.json_dirty |= self.progress.apply(event)
            line = retry_line(event)
            if line and self.live is None:
                self.write(line + "\n")

    def _flush_skipped(self) -> None:
        if self.skipped:
            skipped, self.skipped = self.skipped, []
            self._emit("tasks-skip", tasks=skipped, reason="up to date")

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

    # -- the summary --------------------------------------------------------------------
    def _summary(self) -> None:
        ours = [f for f in self.failures if isinstance(f["exception"], TaskFailed)]
        stopped = [f for f in ours if " stopped: " in f["exception"].message.split("\n", 1)[0]]
        failed = [f for f in ours if f not in stopped]
        other = [f for f in self.failures if not isinstance(f["exception"], TaskFailed)]
        if failed:
            chunks = [f for f in failed if f["task"].name.startswith("chunk:")]
            what = f"{len(chunks)} chunk(s)" if chunks else ""
            if len(chunks) != len(failed):
                what = f"{what} and the merge" if what else "the merge"
            self.write(f"helios-doit: {what} failed; rerun to retry what is not done:\n")
            for result in failed:
                self.write(self._describe(result["task"], result["exception"]))
        if stopped:
            names = ", ".join(sorted((f["task"].name for f in stopped), key=lambda n: (len(n), n)))
            self.write(f"helios-doit: stopped because of that (their partial outputs removed): {names}\n")
        for result in other:
            exc = result["exception"]
            self.write(f"helios-doit: {result['task'].name}: {exc.get_name()}: {exc.get_msg().strip()}\n")
        if self.runtime_errors:
            self.write("helios-doit: run aborted: " + "\n".join(self.runtime_errors) + "\n")

    def _describe(self, task: Any, fail: TaskFailed) -> str:
        """A failed task from its failure record (this run's), else from doit's message."""
        record = read_json(self.state_root / "failures" / f"{_key(task)}.json") if self.state_root else None
        if not record or record.get("runId") not in (None, self.progress.run_id):
            return "".join(f"  {line}\n" for line in fail.message.splitlines())
        name = task.name.replace(":", " ")
        attempts = int(record.get("attempts") or 1)
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        message = first_line(record.get("message") or _how(record))
        log = f"; log: {record['log']}" if record.get("log") else ""
        lines = [f"  {name} failed{tries}: {message}{log}"]
        lines += [f"    | {line}" for line in [str(line) for line in record.get("stderrTail") or []][-5:]]
        return "".join(line + "\n" for line in lines)


def _how(record: dict[str, Any]) -> str:
    if record.get("timedOut"):
        return "timed out"
    sig = record.get("signal")
    if sig:
        try:
            return f"killed by {signal.Signals(int(sig)).name}"
        except (ValueError, TypeError):
            return f"killed by signal {sig}"
    return f"exit code {record.get('exitCode')}"


def _took(result: Any) -> float | None:
    """The seconds of a task that succeeded at its first attempt, from run_task's "<seconds> 1"."""
    if not isinstance(result, str):
        return None
    seconds, _, attempt = result.partition(" ")
    try:
        return float(seconds) if attempt == "1" else None
    except ValueError:
        return None


def _prepare_state(state: StateDir) -> None:
    """The run's side effect on the job's folder starts here: its state folder. A folder that
    cannot be written ends the run before anything ran: one line, exit code 1."""
    try:
        notes = state.create()
        probe = state.root / "runs" / f".writable-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        sys.stderr.write(f"helios-doit: cannot keep the job's state in {state.root}: {os_fault(exc)}; nothing was run\n")
        raise SystemExit(1) from None
    for note in notes:
        sys.stderr.write(f"helios-doit: {note}\n")


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


def _is_work(task: Any) -> bool:
    return task.name == "merge" or task.name.startswith("chunk:")


def _key(task: Any) -> str:
    return task.name.replace(":", "-")


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
