"""The `dask` worker adapter: chunk commands run in Dask workers, doit stays the bookkeeper.

Only the shell command leaves this process: checks, records, verification, logs and locks stay
in `tasks.action.do_task`, so a Dask run means what a local run means. A local job's folder must be
on shared storage; a job in a bucket needs none (`storage.staging`). Workers need helios-doit
installed (they import `_run_remote` by name).

In the worker, `dask_worker._run_remote` runs the command (in a process group that dies with the
worker) and batches its output into a `distributed.Queue` per task, drained live here; a
cancelled task stops its group. Environment: the worker's, the runner's minus `WORKER_LOCAL`.

Use `doit -n N -P thread ... executor=dask`: threads share one `Client` per address. Without
an address the run session starts one `LocalCluster` in the main process (`local_cluster`,
`SCHEDULER_ENV`).
"""
from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import threading
import time
import uuid
from typing import Any

from ..storage.staging import receive
from ..storage.store import StorageError
from . import supervise
from .base import CommandRequest, CommandResult, OutputSink, WorkerAdapter
from .stops import STOP_GRACE, register_stopper
from .dask_worker import LOST, POLL, _kill_group, _run_remote
from .local import command_env
from .reaper import machine

#: The scheduler used when none is given; set by `local_cluster`, inherited by doit's workers.
SCHEDULER_ENV = "HELIOS_DOIT_DASK_SCHEDULER"
#: Threads of the LocalCluster: doit's -n is the real limit on chunks in flight.
LOCAL_THREADS = 64
CONNECT_TIMEOUT = 15.0

#: Runner variables about the runner's machine or session: never copied to a worker.
WORKER_LOCAL = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "PWD", "OLDPWD", "HOSTNAME", "SHLVL", "_", "TERM",
    "TMPDIR", "TMP", "TEMP", "DISPLAY", "XAUTHORITY", "DBUS_SESSION_BUS_ADDRESS", "LANG", "LANGUAGE",
    "LD_LIBRARY_PATH", "LD_PRELOAD", "PYTHONHOME", "PYTHONPATH", "VIRTUAL_ENV", "KRB5CCNAME",
    "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES",
})
WORKER_LOCAL_PREFIXES = ("SSH_", "XDG_", "LC_", "DASK_", "CONDA_", "MALLOC_")

_lock = threading.RLock()
_clients: dict[tuple[int, str], Any] = {}  # (pid, address) -> Client: a forked child makes its own
_clusters: dict[int, Any] = {}  # pid -> LocalCluster
_running: dict[str, _Remote] = {}  # task key -> command in flight, for `signal_running`
_exit_hook: list[bool] = []


def local_cluster() -> str:
    """This process' LocalCluster: worker threads here (no processes for supervise's watchdog to
    take for dead doit workers), on loopback TCP so that doit's forked workers reach it."""
    with _lock:
        if os.getpid() not in _clusters:
            from distributed import LocalCluster

            _at_exit()
            _clusters[os.getpid()] = LocalCluster(n_workers=1, threads_per_worker=LOCAL_THREADS, processes=False,
                                                  protocol="tcp://", host="127.0.0.1", dashboard_address=None,
                                                  scheduler_kwargs={"dashboard_address": "127.0.0.1:0"})  # not 8787
        os.environ[SCHEDULER_ENV] = address = str(_clusters[os.getpid()].scheduler_address)
        return address


def client(scheduler: str | None) -> Any:
    """The one Client of this process for `scheduler` (None: SCHEDULER_ENV, else a local cluster)."""
    address = scheduler or os.environ.get(SCHEDULER_ENV) or local_cluster()
    with _lock:
        found = _clients.get((os.getpid(), address))
        if found is None or found.status in ("closing", "closed"):
            from distributed import Client

            _at_exit()
            found = _clients[(os.getpid(), address)] = Client(address, timeout=CONNECT_TIMEOUT, set_as_default=False)
        return found


def _at_exit() -> None:
    """Registered after distributed registered its own hooks, so that ours runs first."""
    if not _exit_hook:
        _exit_hook.append(True)
        atexit.register(_close_all)


def _close_all() -> None:
    """Clients before the cluster they talk to, quietly: as the runner exits, distributed's own
    complaints about closing (older versions log tracebacks) tell the user nothing."""
    logging.getLogger("distributed").setLevel(logging.CRITICAL)
    for pid, each in [(pid, c) for (pid, _), c in _clients.items()] + list(_clusters.items()):
        if pid == os.getpid():
            with contextlib.suppress(Exception):
                each.close(timeout=2)


class DaskAdapter(WorkerAdapter):
    """Runs each command in a Dask worker; cheap to make (`get_adapter` makes one per attempt)."""

    def execute(self, request: CommandRequest, sink: OutputSink) -> CommandResult:
        started = time.monotonic()
        key = f"helios-doit-{uuid.uuid4().hex}"
        try:
            from distributed import Queue

            dask = client(self.scheduler)
            queue = Queue(key, client=dask)
            env = {k: v for k, v in os.environ.items() if k not in WORKER_LOCAL and not k.startswith(WORKER_LOCAL_PREFIXES)}
            future = dask.submit(_run_remote, request.command, request.cwd, env, dict(request.env or {}),
                                 request.timeout, request.elsewhere.output, command_env()["PATH"], key,
                                 request.elsewhere.stage,
                                 key=key, pure=False)
        except Exception as err:  # a failed attempt, which --retries may redo
            return _lost(sink, started, f"cannot reach the Dask scheduler {self.scheduler or '(local)'}: {err}")
        remote = _Remote(future, queue, request, sink, started)
        with _lock:
            _running[key] = remote
        try:
            return remote.follow()
        except BaseException:  # KeyboardInterrupt from supervise, or a failing sink: no orphans
            remote.stop()
            raise
        finally:
            with _lock:
                _running.pop(key, None)
            with contextlib.suppress(Exception):
                future.release()
                queue.close()


class _Remote:
    """One submitted command seen from the runner: its messages, its result, its stop."""

    def __init__(self, future: Any, queue: Any, request: CommandRequest, sink: OutputSink, started: float):
        self.future, self.queue, self.request, self.sink, self.started = future, queue, request, sink, started
        self.where: dict[str, Any] | None = None  # the "start" message of the current run
        self.final: dict[str, Any] | None = None  # the "end" message

    def follow(self) -> CommandResult:
        should_stop = self.request.should_stop  # the run's cancel flag
        poll = POLL
        while True:
            done = _wait(self.future, poll)  # wakes at once when the task ends
            poll = POLL if self._take() else min(poll * 2, 1.0)  # a quiet command costs the scheduler 1 call/s
            if self.final is not None:  # sent before the function returns, so complete once done
                return self._result()
            if done and self.where is not None and self.future.status == "cancelled":
                return self.stop()  # cancelled while it runs: gone for sure before its output is touched
            if done or self.future.client.status in ("closing", "closed"):
                return self._failed()
            if supervise.stopping() or (should_stop is not None and should_stop()):
                return self.stop()  # signals reach only the main thread; other threads look here

    def stop(self) -> CommandResult:
        """Cancel the task; the worker function SIGTERMs the group, SIGKILLs it after the grace."""
        self.signal(signal.SIGTERM)
        deadline = time.monotonic() + (STOP_GRACE + 3 if self.where else POLL)
        while self.final is None and time.monotonic() < deadline:
            time.sleep(POLL / 2)
            self._take()
        if self.final is None:
            self.signal(signal.SIGKILL)  # the worker did not answer: kill its process group directly
        return self._result() if self.final else CommandResult(None, signal.SIGTERM, time.monotonic() - self.started)

    def signal(self, sig: int) -> None:
        with contextlib.suppress(Exception):
            if sig != signal.SIGKILL or self.where is None:
                self.future.client.cancel(self.future)
            else:
                self.future.client.run(_kill_group, self.where["pgid"], workers=[self.where["worker"]])

    def _take(self) -> bool:
        """Deliver what the worker sent so far; True if anything came (never a blocking get: the
        scheduler logs an error for each Queue.get that times out)."""
        try:
            batches = self.queue.get(batch=True)
        except Exception:  # the client lost the scheduler; the future tells what became of the task
            return False
        for kind, data in (item for batch in batches for item in batch):
            if kind == "out":
                self.sink(data[0], data[1])
            elif kind == "start":
                if self.where is not None:
                    self.sink("stderr", f"helios-doit: Dask worker {self.where['worker']} was lost; "
                                        f"the command runs again on {data['worker']}\n".encode())
                self.where = data
                if data["machine"] == machine() and self.request.on_start:
                    self.request.on_start(data["pgid"], None)  # a pgid means something only on its own machine
            elif kind == "end":
                self.final = data
        return bool(batches)

    def _result(self) -> CommandResult:
        data = self.final or {}
        elsewhere = self.request.elsewhere
        if data.get("staged") and elsewhere.stage is not None and elsewhere.output:
            try:  # the output came back through the bucket: into the runner's own place for it
                receive(elsewhere.stage, data["staged"], elsewhere.output)
            except (OSError, StorageError) as err:
                return _lost(self.sink, self.started, f"the chunk's output did not come back from the bucket: {err}")
        return CommandResult(data["exit_code"], data["signal"], data["duration"], tuple(data["tail"]), data["timed_out"])

    def _failed(self) -> CommandResult:
        if self.future.status == "finished":  # its messages were lost, not its result
            self.final = self.future.result()
            return self._result()
        why = repr(self.future.exception()) if self.future.status == "error" else f"the task was {self.future.status}"
        return _lost(self.sink, self.started, f"the command did not finish on Dask: {why}")


def _wait(future: Any, timeout: float) -> bool:
    """True once the future is done (finished, failed or cancelled), waiting up to `timeout`."""
    from distributed import wait

    with contextlib.suppress(Exception), future.client.as_current():  # TimeoutError, FuturesCancelledError
        wait(future, timeout=timeout)
    return bool(future.done())


def _lost(sink: OutputSink, started: float, message: str) -> CommandResult:
    line = f"helios-doit: {message}"
    sink("stderr", (line + "\n").encode())
    return CommandResult(LOST, None, time.monotonic() - started, (line,))


def signal_running(sig: int) -> int:
    """`base.signal_running` for the commands this process runs on Dask: SIGKILL kills their
    groups at once, any other signal cancels them (SIGTERM, then SIGKILL after the grace)."""
    with _lock:
        remotes = list(_running.values())
    for remote in remotes:
        remote.signal(sig)
    return len(remotes)


register_stopper(signal_running)  # a stop of the run reaches the commands run on Dask
