"""The render service's state: the queue, the scheduler, the jobs it has loaded, and who is told
of every change. The HTTP layer (`api`, `dashboard`) only translates.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import urllib.parse
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..core.errors import BadInput, HeliosDoitError
from ..spec.errors import JobError
from ..spec.model import Job
from ..tasks.graph import build
from ..tasks.options import MAX_WORKERS, OPTIONS, parse
from .queue import Queue, QueuedJob
from .scheduler import Scheduler, as_text
from .status import job_status_json, load


#: Loaded jobs kept in memory (10,000 chunks take ~80 MB): the most recently asked for.
KEEP_LOADED = 64


class Forbidden(BadInput):
    """A job or a folder outside the served roots (HTTP 403)."""


class NotFound(BadInput):
    """No such job (HTTP 404)."""


class Unavailable(BadInput):
    """What the server cannot do now, through no fault of the request (HTTP 503)."""


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
    _jobs: OrderedDict[str, Job] = field(default_factory=OrderedDict)
    _unreadable: dict[str, float] = field(default_factory=dict)  # job id -> when to try its file again
    _statuses: OrderedDict[str, tuple[str, float, dict[str, Any]]] = field(default_factory=OrderedDict)
    _said: dict[str, str] = field(default_factory=dict)  # job id -> a digest of the last status sent
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
        if source.startswith(("http://", "https://")):  # a web job's folder is where its runs start: one of its own
            cwd = str(self.queue.data / "web" / hashlib.sha256(source.encode()).hexdigest()[:16])
            try:
                os.makedirs(cwd, exist_ok=True)
            except OSError as exc:  # the data folder's fault (full, read-only): nothing is queued
                raise Unavailable(f"job {source}: the data folder cannot hold its folder now ({exc.strerror})") from None
        if options.get("outputRoot"):
            options["outputRoot"] = self._inside(str(options["outputRoot"]), "outputRoot")[0]
        if options.get("storage"):  # outputs sent to a bucket: one the server was told it may write
            self._inside(str(options["storage"]).rstrip("/") + "/", "storage")
        given = {RUN_OPTIONS[key]: as_text(value) for key, value in options.items() if key in RUN_OPTIONS and value is not None}
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
            segments = urllib.parse.unquote(_split(given, what).path).split("/")
            if any(part in (".", "..") for part in segments) or "\\" in given:
                raise Forbidden(f"{what} {given}: '.' and '..' are not allowed in a served address; give it plainly")
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
        """The job's spec, loaded once and kept while it is among the most recent (a job file that
        cannot be read now reads as none, and is tried again a minute later: its status says so).
        Read outside the lock: a job on a slow server delays no other job."""
        with self._lock:
            if queued.id in self._jobs:
                self._jobs.move_to_end(queued.id)
                return self._jobs[queued.id]
            if time.monotonic() < self._unreadable.get(queued.id, 0.0):
                return None
        if self.scheduler.moved_out(queued) is not None:  # its file now leads out of its root: never read
            return None
        try:
            job = load(queued)
        except (HeliosDoitError, OSError, ValueError):
            with self._lock:
                self._unreadable[queued.id] = time.monotonic() + 60
            return None
        with self._lock:
            self._jobs[queued.id] = job
            while len(self._jobs) > KEEP_LOADED:
                self._jobs.popitem(last=False)
        return job

    def status(self, job_id: str) -> dict[str, Any]:
        return self._status(self.get(job_id))

    def statuses(self) -> list[dict[str, Any]]:
        return [self._status(queued) for queued in self.queue.all()]

    def _status(self, queued: QueuedJob, fresh: bool = False) -> dict[str, Any]:
        """A job's status; a job that is not running is read from its folder at most every few
        seconds, however many ask (a list of a thousand jobs is not a thousand folders read)."""
        key = f"{queued.state}:{queued.updated}"
        with self._lock:
            cached = self._statuses.get(queued.id)
        if cached and not fresh and queued.state != "running" and cached[0] == key and time.monotonic() < cached[1]:
            return cached[2]
        try:
            status = job_status_json(queued, self.loaded(queued), self.scheduler.progress_file(queued.id))
        except Exception as exc:  # noqa: BLE001 (one job's damaged state never takes the others' down)
            status = job_status_json(queued, None, self.scheduler.progress_file(queued.id))
            status["error"] = status["error"] or f"its state cannot be read now: {exc}"
        with self._lock:
            self._statuses[queued.id] = (key, time.monotonic() + 5, status)
            self._statuses.move_to_end(queued.id)
            while len(self._statuses) > KEEP_LOADED:
                self._statuses.popitem(last=False)
        return status

    # -- telling -----------------------------------------------------------------------------
    def changed(self, job_id: str) -> None:
        """Tell every listener the job's status, if it changed since they were last told."""
        queued = self.queue.get(job_id)
        if queued is None:
            with self._lock:
                self._jobs.pop(job_id, None)
                self._said.pop(job_id, None)
                self._statuses.pop(job_id, None)
            for listener in list(self.listeners):
                listener(job_id, None)
            return
        status = self._status(queued, fresh=True)
        said = hashlib.sha256(json.dumps(status, sort_keys=True).encode()).hexdigest()
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


def _split(address: str, what: str) -> urllib.parse.SplitResult:
    """An address's parts; one that is no address (`http://[::1/job.json`, its host half an IPv6
    address) is a BadInput naming the field, not a ValueError from deep in urllib."""
    try:
        return urllib.parse.urlsplit(address)
    except ValueError as exc:
        raise BadInput(f"{what} {address}: not a valid address ({exc}); give it as scheme://host/path") from None


def url_root(text: str) -> str:
    """A served root as given: a folder (resolved) or a URL prefix (a bucket named explicitly)."""
    if "://" in text:
        parts = _split(text, "--root")
        return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
    return os.path.realpath(text)
