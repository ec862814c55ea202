"""Running queued jobs: `workers` at once, highest priority first, each through the same doit graph
as `helios-doit job run`, because it is `helios-doit job run`, in a process of its own.

So every guarantee of a run carries over (records, locks, clean stops, crash safety), and a job
that crashes its runner cannot take the server with it. Pausing or cancelling a job stops its
runner as Ctrl-C would (SIGTERM: running chunks stopped and their partial outputs removed,
finished chunks kept); resuming runs it again, which renders only what is not done. A runner
dies with the server (Linux' parent-death signal), so a server killed with SIGKILL leaves no
runner behind, and a restarted server runs its jobs on from where their chunks stood.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable

from ..core.errors import BadInput
from ..state.files import open_plain
from .queue import Queue, QueuedJob

#: Seconds a stopped runner gets to stop its chunks cleanly before it is killed.
STOP_WAIT = 20.0


#: Not for the commands a job runs: the service's own secrets.
SECRET_ENV = ("HELIOS_DOIT_TOKEN",)


class Conflict(BadInput):
    """An action that the job's state does not allow now (HTTP 409)."""


@dataclass
class _Run:
    proc: subprocess.Popen[bytes]
    log: IO[bytes]
    then: str | None = None  # what the job becomes once its runner has stopped: paused, cancelled, deleted


def as_text(value: Any) -> str:
    """A run option's value as its flag takes it: 1/0, a list as `2,64`."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


#: The run options a submission may carry, as `job run` flags.
FLAGS = {"retries": "--retries", "retryDelay": "--retry-delay", "chunkTimeout": "--chunk-timeout",
         "fatalExitCodes": "--fatal-exit-codes", "merge": "--merge", "outputRoot": "--output-root",
         "storage": "--storage", "retime": "--retime", "keepGoing": "--keep-going"}
SWITCHES = {"keepGoing", "retime"}


def runner_argv(job: QueuedJob, progress: Path, executor: str, scheduler: str | None) -> list[str]:
    """`helios-doit job run` for a queued job, with its options as flags."""
    argv = [sys.executable, "-m", "helios_doit", "job", "run", job.source,
            "--concurrency", str(job.options.get("concurrency") or 1), "--progress-json", str(progress)]
    for key, flag in FLAGS.items():
        value = job.options.get(key)
        if value in (None, False, ""):
            continue
        argv += [flag] if key in SWITCHES else [flag, as_text(value)]
    if executor != "local":
        argv += ["--executor", executor, "-P", "thread"] + (["--scheduler", scheduler] if scheduler else [])
    return argv


class Scheduler:
    def __init__(self, queue: Queue, workers: int, executor: str = "local", scheduler: str | None = None,
                 on_change: Callable[[str], None] = lambda job_id: None):
        self.queue, self.workers, self.executor, self.scheduler = queue, workers, executor, scheduler
        self.on_change = on_change
        self.runs: dict[str, _Run] = {}
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def moved_out(self, job: QueuedJob) -> str | None:
        """Why a job may not run after all: its file (a path) no longer resolves inside its root (a
        symlink put in its place after it was queued). None when it may."""
        root = job.options.get("cwd")
        if "://" in job.source or not root:
            return None
        path = os.path.realpath(job.source)
        if path == job.source and (path == root or path.startswith(root.rstrip(os.sep) + os.sep)):
            return None
        return f"{job.source} now leads to {path}, outside the served root {root}; submit it again where it is"

    def folder(self, job_id: str) -> Path:
        return self.queue.data / "jobs" / job_id

    def progress_file(self, job_id: str) -> Path:
        return self.folder(job_id) / "progress.json"

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Jobs the last server was running when it stopped (or was killed) are pending again:
        their runners died with it, and a new run renders only what was not done."""
        for job in self.queue.in_state("running"):
            self.queue.update(job, state="pending")
        self._thread = threading.Thread(target=self._loop, name="helios-doit-scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop every runner as Ctrl-C would; their jobs stay `running` in the queue, to be run on
        by the next server."""
        self._stopping = True
        self._wake.set()
        with self._lock:
            runs = list(self.runs.values())
        for run in runs:
            _signal(run.proc, signal.SIGTERM)
        for run in runs:
            _wait(run.proc)
        if self._thread is not None:
            self._thread.join(5)

    def wake(self) -> None:
        self._wake.set()

    # -- actions -----------------------------------------------------------------------------
    def pause(self, job_id: str) -> QueuedJob:
        return self._stop(job_id, "paused", ("pending", "running"))

    def cancel(self, job_id: str) -> QueuedJob:
        return self._stop(job_id, "cancelled", ("pending", "running", "paused"))

    def resume(self, job_id: str) -> QueuedJob:
        return self._change(job_id, ("paused",), "resume", state="pending", error=None)

    def retry(self, job_id: str) -> QueuedJob:
        return self._change(job_id, ("failed", "cancelled"), "retry", state="pending", error=None, finished=None)

    def delete(self, job_id: str) -> None:
        """Forget the job (its runner stopped first); never a rendered file."""
        with self._lock:
            job = self._get(job_id)
            run = self.runs.get(job_id)
            if run is not None:
                run.then = "deleted"  # nothing undoes it: a pause or cancel meanwhile is refused
                _signal(run.proc, signal.SIGTERM)
            else:
                self.queue.delete(job.id)
        if run is not None:
            _wait(run.proc)
            self._reap()
        self.on_change(job_id)

    def _stop(self, job_id: str, then: str, allowed: tuple[str, ...]) -> QueuedJob:
        with self._lock:
            job = self._get(job_id)
            run = self.runs.get(job_id)
            if job.state not in allowed or (run is not None and run.then == "deleted"):
                raise Conflict(f"job {job_id} is {job.state if run is None or run.then is None else run.then}; only "
                               f"a job that is {' or '.join(allowed)} can be {then}")
            # Said in the queue first: a server that dies while the runner stops leaves it so.
            job = self.queue.update(job, state=then, finished=time.time() if then == "cancelled" else None)
            if run is not None:
                if run.then != "cancelled":  # a cancel is not undone by a pause that comes after it
                    run.then = then
                _signal(run.proc, signal.SIGTERM)  # as Ctrl-C: running chunks stopped, finished ones kept
        if run is not None:
            _wait(run.proc)
            self._reap()
            job = self._get(job_id)
        self.on_change(job_id)
        return job

    def _change(self, job_id: str, allowed: tuple[str, ...], what: str, **changes: Any) -> QueuedJob:
        with self._lock:
            job = self._get(job_id)
            if job.state not in allowed:
                raise Conflict(f"job {job_id} is {job.state}; only a job that is {' or '.join(allowed)} can {what}")
            job = self.queue.update(job, **changes)
        self.on_change(job_id)
        self.wake()
        return job

    def _get(self, job_id: str) -> QueuedJob:
        job = self.queue.get(job_id)
        if job is None:
            raise KeyError(job_id)
        return job

    # -- the loop ----------------------------------------------------------------------------
    def _loop(self) -> None:
        """Never ends but with the server: the runners die with this thread (their parent-death
        signal is tied to it), so a fault of the environment (a full disk under the queue, no file
        descriptor left) is said, and tried again, not the end of the queue."""
        said = ""
        while not self._stopping:
            try:
                self._reap()
                self._launch()
                said = ""
            except (OSError, sqlite3.Error) as exc:
                if str(exc) != said:
                    said = str(exc)
                    sys.stderr.write(f"helios-doit: the queue could not be updated ({exc}); trying again\n")
                self._wake.wait(2)
            self._wake.wait(0.25)
            self._wake.clear()

    def _launch(self) -> None:
        with self._lock:
            while not self._stopping and len(self.runs) < self.workers:
                job = self.queue.next_pending(exclude=set(self.runs))  # a runner still stopping is not run twice
                if job is None:
                    return
                self._run(job)

    def _run(self, job: QueuedJob) -> None:
        folder = self.folder(job.id)
        env = {key: value for key, value in os.environ.items() if key not in SECRET_ENV}  # no token for commands
        env["HELIOS_DOIT_LIVE"] = "0"
        try:
            if (moved := self.moved_out(job)) is not None:
                raise _Refused(moved)
            folder.mkdir(parents=True, exist_ok=True)
            progress = self.progress_file(job.id)
            progress.unlink(missing_ok=True)
            log = os.fdopen(own_file(folder / "runner.log"), "ab")
        except _Refused as refused:
            self.queue.update(job, state="failed", error=str(refused), finished=time.time())
            self.on_change(job.id)
            return
        try:
            proc = subprocess.Popen(runner_argv(job, progress, self.executor, self.scheduler),
                                    cwd=job.options.get("cwd") or "/", env=env, stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                    preexec_fn=_die_with_server)
        except OSError as exc:
            log.close()
            raise OSError(exc.errno, f"cannot start a runner: {exc.strerror}") from None
        self.runs[job.id] = _Run(proc, log)
        self.queue.update(job, state="running", started=job.started or time.time(), error=None)
        self.on_change(job.id)

    def _reap(self) -> None:
        with self._lock:
            ended = [(job_id, run) for job_id, run in self.runs.items() if run.proc.poll() is not None]
            for job_id, run in ended:
                self._ended(job_id, run)  # in the queue first: if it cannot be said now, it is said next time
                del self.runs[job_id]
                run.log.close()
        for job_id, _ in ended:
            self.on_change(job_id)

    def _ended(self, job_id: str, run: _Run) -> None:
        job = self.queue.get(job_id)
        if job is None:
            return
        code = run.proc.returncode
        if run.then == "deleted":
            self.queue.delete(job_id)
        elif run.then is not None:
            pass  # said in the queue when it was asked for
        elif self._stopping:
            pass  # the server stops: the job stays running in the queue, for the next server
        elif code == 0:
            self.queue.update(job, state="completed", finished=time.time(), error=None)
        else:
            self.queue.update(job, state="failed", finished=time.time(), error=_why(self.folder(job_id), code))


def _why(folder: Path, code: int) -> str:
    """The runner's own account of its failure: its last `helios-doit:` lines, or its exit code."""
    try:
        with os.fdopen(own_file(folder / "runner.log", os.O_RDONLY), "rb") as log:
            log.seek(max(0, os.fstat(log.fileno()).st_size - 16384))
            tail = log.read().decode(errors="replace").splitlines()
    except OSError:
        tail = []
    said = [line.removeprefix("helios-doit: ").strip() for line in tail if line.startswith("helios-doit: ")]
    detail = [line.strip() for line in tail if line.startswith("  ") and "failed" in line]
    return (detail[-1] if detail else said[-1] if said else f"its runner exited with code {code}")[:500]


class _Refused(Exception):
    """The job may not run now: its one line."""


def own_file(path: Path, flags: int = os.O_WRONLY | os.O_APPEND | os.O_CREAT) -> int:
    """A file of the service's own folder, never through a link someone put there: a link (or
    anything but a plain file) in its place is removed first (the folder is the service's)."""
    return open_plain(path, flags, os.unlink, 0o600)


def _die_with_server() -> None:
    """In the runner, just forked: SIGTERM when the server dies, however it dies (PR_SET_PDEATHSIG)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)


def _signal(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)


def _wait(proc: subprocess.Popen[bytes]) -> None:
    try:
        proc.wait(STOP_WAIT)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
