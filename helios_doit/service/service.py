"""The render service's state: the queue, the scheduler, the jobs it has loaded, and who is told
of every change. The HTTP layer (`api`, `dashboard`) only translates.
"""
from __future__ import annotations

import json
import os
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..core.errors import BadInput, HeliosDoitError
from ..spec.errors import JobError
from ..spec.model import Job
from ..tasks.graph import build
from ..tasks.options import MAX_WORKERS, OPTIONS, parse
from .queue import Queue, QueuedJob
from .scheduler import Scheduler
from .status import job_status_json, load


class Forbidden(BadInput):
    """A job or a folder outside the served roots (HTTP 403)."""


class NotFound(BadInput):
    """No such job (HTTP 404)."""


#: Submission fields that are run options, and their doit variable names (tasks.options.OPTIONS).
RUN_OPTIONS = {"retries": "retries", "retryDelay": "retry_delay", "chunkTimeout": "chunk_timeout",
               "fatalExitCodes": "fatal_exit_codes", "keepGoing": "keep_going", "retime": "retime"}


@dataclass
class Service:
    queue: Queue
    roots: list[str]  # folders (resolved) and URL prefixes jobs may come from
    workers: int = 1
    executor: str = "local"
    scheduler_address: str | None = None
    listeners: list[Callable[[str, dict[str, Any] | None], None]] = field(default_factory=list)
    _jobs: dict[str, Job] = field(default_factory=dict)
    _said: dict[str, str] = field(default_factory=dict)  # job id -> the last status sent, as JSON
    _lock: threading.RLock = field(default_factory=threading.RLock)

    def __post_init__(self) -> None:
        self.scheduler = Scheduler(self.queue, self.workers, self.executor, self.scheduler_address, self.changed)
        self._watch: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self) -> None:
        self.scheduler.start()
        self._watch = threading.Thread(target=self._follow, name="helios-doit-follow", daemon=True)
        self._watch.start()

    def stop(self) -> None:
        self._stop.set()
        self.scheduler.stop()
        self.queue.close()

    # -- submitting --------------------------------------------------------------------------
    def submit(self, job: str, priority: int = 0, concurrency: int = 1, **options: Any) -> QueuedJob:
        """Load and check the job now: a bad one is a JobError (every fault), one outside the
        roots Forbidden; nothing is queued for either."""
        if not 1 <= concurrency <= MAX_WORKERS:
            raise JobError([f"concurrency {concurrency}: give a whole number from 1 to {MAX_WORKERS}"])
        source, cwd = self._source(job)
        if options.get("outputRoot"):
            options["outputRoot"] = self._inside(str(options["outputRoot"]), "outputRoot")[0]
        if options.get("storage"):  # outputs sent to a bucket: one the server was told it may write
            self._inside(str(options["storage"]).rstrip("/") + "/", "storage")
        given = {RUN_OPTIONS[key]: _text(value) for key, value in options.items() if key in RUN_OPTIONS and value is not None}
        known = {option.variable for option in OPTIONS}
        run_options = parse({k: v for k, v in given.items() if k in known}, ["-n", str(concurrency)], as_flags=True)
        clean = {k: v for k, v in options.items() if v is not None}
        queued = QueuedJob("", 0, source, "", {**clean, "concurrency": concurrency, "cwd": cwd})
        loaded = load(queued)
        build(loaded, run_options, clean.get("merge"))  # the merge mode, and every option, checked as a run would
        name = loaded.spec.id or (Path(loaded.job_dir).name if loaded.job_file else source.rsplit("/", 1)[-1])
        added = self.queue.add(source, name, queued.options, priority)
        with self._lock:
            self._jobs[added.id] = loaded
        self.changed(added.id)
        self.scheduler.wake()
        return added

    def _source(self, given: str) -> tuple[str, str]:
        """(the job's path or URL as runs will name it, the folder its runs start in: the root it is under)."""
        if "://" in given:
            return given, self._inside(given, "job")[1]
        return self._inside(given, "job")

    def _inside(self, given: str, what: str) -> tuple[str, str]:
        """`given` if it is inside a served root (a folder, resolved; or a URL prefix), and that root."""
        if "://" in given:
            for root in self.roots:
                if "://" in root and given.startswith(root.rstrip("/") + "/"):
                    return given, "/"
            raise Forbidden(f"{what} {given}: not under a served root ({', '.join(self.roots)}); start the server with "
                            "--root for it")
        path = os.path.realpath(given)
        for root in self.roots:
            if "://" not in root and (path == root or path.startswith(root.rstrip(os.sep) + os.sep)):
                return path, root
        raise Forbidden(f"{what} {given}: outside the served roots ({', '.join(self.roots)}); start the server with "
                        "--root for it")

    # -- asking ------------------------------------------------------------------------------
    def get(self, job_id: str) -> QueuedJob:
        job = self.queue.get(job_id)
        if job is None:
            raise NotFound(f"no job {job_id}")
        return job

    def loaded(self, queued: QueuedJob) -> Job | None:
        """The job's spec, loaded once (a job file that went away reads as none: its status says so)."""
        with self._lock:
            if queued.id not in self._jobs:
                try:
                    self._jobs[queued.id] = load(queued)
                except (HeliosDoitError, OSError):
                    return None
            return self._jobs[queued.id]

    def status(self, job_id: str) -> dict[str, Any]:
        queued = self.get(job_id)
        return job_status_json(queued, self.loaded(queued), self.scheduler.progress_file(job_id))

    def statuses(self) -> list[dict[str, Any]]:
        return [job_status_json(queued, self.loaded(queued), self.scheduler.progress_file(queued.id))
                for queued in self.queue.all()]

    # -- telling -----------------------------------------------------------------------------
    def changed(self, job_id: str) -> None:
        """Tell every listener the job's status, if it changed since they were last told."""
        queued = self.queue.get(job_id)
        if queued is None:
            with self._lock:
                self._jobs.pop(job_id, None)
                self._said.pop(job_id, None)
            for listener in list(self.listeners):
                listener(job_id, None)
            return
        status = job_status_json(queued, self.loaded(queued), self.scheduler.progress_file(job_id))
        said = json.dumps(status, sort_keys=True)
        with self._lock:
            if self._said.get(job_id) == said:
                return
            self._said[job_id] = said
        for listener in list(self.listeners):
            listener(job_id, status)

    def _follow(self) -> None:
        """Running jobs change without an action: their chunks finish. Each is looked at twice a
        second, or less often when reading its state folder takes long (10,000 chunks: never more
        than a tenth of a core on it)."""
        due: dict[str, float] = {}
        while not self._stop.wait(0.5):
            for job_id in list(self.scheduler.runs):
                if time.monotonic() < due.get(job_id, 0.0):
                    continue
                began = time.monotonic()
                try:
                    self.changed(job_id)
                except Exception:  # noqa: BLE001 (a status that cannot be read now is read next time)
                    pass
                due[job_id] = time.monotonic() + 10 * (time.monotonic() - began)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def url_root(text: str) -> str:
    """A served root as given: a folder (resolved) or a URL prefix (a bucket named explicitly)."""
    if "://" in text:
        parts = urllib.parse.urlsplit(text)
        return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
    return os.path.realpath(text)
