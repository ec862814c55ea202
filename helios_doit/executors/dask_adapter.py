"""The `dask` worker adapter: chunk commands run in Dask workers, doit stays the bookkeeper.

Only the shell command leaves this process: checks, records, verification, logs and locks stay
in `actions.run_task`, so a Dask run means what a local run means. The job folder must be on
shared storage, and workers need helios-doit installed (they import `_run_remote` by name).

In the worker, `_run_remote` runs the command in a process group led by `WATCHER`, which
SIGKILLs the group if the worker dies (no orphan keeps writing while Dask reruns the chunk).
Output is batched into a `distributed.Queue` per task and drained live by the adapter; a
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
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from typing import Any, Callable

from . import supervise
from .base import (
    STOP_GRACE,
    CommandRequest,
    CommandResult,
    OutputSink,
    register_stopper,
)
from .local import command_env
from .reaper import machine

#: Exit code of a command Dask could not run or finish (ssh's code for a lost connection).
LOST = 255
#: The scheduler used when none is given; set by `local_cluster`, inherited by doit's workers.
SCHEDULER_ENV = "HELIOS_DOIT_DASK_SCHEDULER"
#: Threads of the LocalCluster: doit's -n is the real limit on chunks in flight.
LOCAL_THREADS = 64
CONNECT_TIMEOUT = 15.0
_POLL, _FLUSH_EVERY, _FLUSH_BYTES = 0.2, 0.2, 64 * 1024

#: Runner variables about the runner's machine or session: never copied to a worker.
WORKER_LOCAL = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "PWD", "OLDPWD", "HOSTNAME", "SHLVL", "_", "TERM",
    "TMPDIR", "TMP", "TEMP", "DISPLAY", "XAUTHORITY", "DBUS_SESSION_BUS_ADDRESS", "LANG", "LANGUAGE",
    "LD_LIBRARY_PATH", "LD_PRELOAD", "PYTHONHOME", "PYTHONPATH", "VIRTUAL_ENV", "KRB5CCNAME",
    "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES",
})
WORKER_LOCAL_PREFIXES = ("SSH_", "XDG_", "LC_", "DASK_", "CONDA_", "MALLOC_")

#: Leads the process group the command joins, and SIGKILLs it when its stdin, a pipe from the
#: Dask worker, reaches EOF: the worker died. A stop of the group (SIGTERM) is not for it.
WATCHER = 'trap "" TERM INT HUP; while read -r _; do :; done; kill -KILL 0'

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


class DaskAdapter:
    """Runs each command in a Dask worker; cheap to make (`get_adapter` makes one per attempt)."""

    def __init__(self, scheduler: str | None = None):
        self.scheduler = scheduler

    def execute(self, request: CommandRequest, sink: OutputSink) -> CommandResult:
        started = time.monotonic()
        key = f"helios-doit-{uuid.uuid4().hex}"
        try:
            from distributed import Queue

            dask = client(self.scheduler)
            queue = Queue(key, client=dask)
            env = {k: v for k, v in os.environ.items() if k not in WORKER_LOCAL and not k.startswith(WORKER_LOCAL_PREFIXES)}
            future = dask.submit(_run_remote, request.command, request.cwd, env, dict(request.env or {}),
                                 request.timeout, getattr(request, "output", None), command_env()["PATH"], key,
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
        should_stop = getattr(self.request, "should_stop", None)  # optional hook: the run's cancel flag
        poll = _POLL
        while True:
            done = _wait(self.future, poll)  # wakes at once when the task ends
            poll = _POLL if self._take() else min(poll * 2, 1.0)  # a quiet command costs the scheduler 1 call/s
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
        deadline = time.monotonic() + (STOP_GRACE + 3 if self.where else _POLL)
        while self.final is None and time.monotonic() < deadline:
            time.sleep(_POLL / 2)
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
                if data["machine"] == machine():
                    if self.request.on_start:
                        self.request.on_start(data["pgid"])  # a pgid means something only on its own machine
                elif (on_remote_start := getattr(self.request, "on_remote_start", None)) is not None:
                    on_remote_start(data)  # optional hook: where it runs, for the marker and status
            elif kind == "end":
                self.final = data
        return bool(batches)

    def _result(self) -> CommandResult:
        data = self.final or {}
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


def _kill_group(pgid: int, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


# -- in the Dask worker ----------------------------------------------------------------------

class _Outbox:
    """Batches messages into the task's Queue; a lost batch never fails the command."""

    def __init__(self, name: str):
        from distributed import Queue

        self.queue, self.items, self.size, self.last = Queue(name), [], 0, time.monotonic()

    def add(self, kind: str, data: Any, now: bool = False) -> None:
        self.items.append((kind, data))
        self.size += len(data[1]) if kind == "out" else 0
        self.tick(now or self.size >= _FLUSH_BYTES)

    def tick(self, now: bool = False) -> None:
        if self.items and (now or time.monotonic() - self.last >= _FLUSH_EVERY):
            with contextlib.suppress(Exception):
                self.queue.put(self.items)
            self.items, self.size, self.last = [], 0, time.monotonic()


def _wanted(me: Any, key: str) -> bool:
    """False once the scheduler cancelled or forgot this task (a stop, or its client is gone), or
    the worker is closing (it lost the scheduler: nobody can take the result any more)."""
    try:
        task = me.state.tasks.get(key)
        closing = getattr(me.status, "name", "") in ("closing", "closed", "failed")
    except AttributeError:  # a worker without WorkerState: stops come by SIGKILL only
        return True
    return not closing and task is not None and task.state in ("executing", "long-running", "resumed")


def _run_remote(command: str, cwd: str, shared: dict[str, str], explicit: dict[str, str], timeout: float | None,
                output: str | None, runner_path: str, key: str) -> dict[str, Any]:
    import dask
    from distributed import get_worker

    me, started = get_worker(), time.monotonic()
    box, tail = _Outbox(key), deque(maxlen=20)
    result: dict[str, Any] = {"exit_code": None, "signal": signal.SIGTERM, "duration": 0.0, "tail": [], "timed_out": False}
    if not _wanted(me, key):
        return result  # cancelled before it started: nothing ran
    env = dict(os.environ)
    for name in dask.config.get("distributed.nanny.pre-spawn-environ", None) or {}:
        env.pop(name, None)  # the nanny's 1-thread BLAS settings are for Python tasks, not renderers
    env.update(shared)
    path = [os.path.dirname(sys.executable), *env.get("PATH", os.defpath).split(os.pathsep)]
    env["PATH"] = os.pathsep.join(dict.fromkeys(path + runner_path.split(os.pathsep)))  # the worker's own first
    env.update(explicit)
    env.update(HELIOS_DOIT_DASK_WORKER=me.address, HELIOS_DOIT_DASK_WORKER_NAME=str(me.name))
    if output:  # a rerun after a lost worker: the first run's partial output must go
        with contextlib.suppress(FileNotFoundError):
            os.unlink(output)
    # The watcher first, leading the group the command then joins: from its first instant the
    # command is in a group that dies with this worker.
    watcher = subprocess.Popen(["/bin/sh", "-c", WATCHER], cwd="/", stdin=subprocess.PIPE,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, process_group=0)
    pgid = watcher.pid
    try:
        proc = subprocess.Popen(["/bin/sh", "-c", command], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, process_group=pgid)
    except OSError as err:
        _release(watcher, pgid)
        line = f"helios-doit: cannot start the command on Dask worker {me.address} in {cwd}: {err}"
        box.add("out", ("stderr", (line + "\n").encode()))
        result.update(exit_code=LOST, signal=None, tail=[line])
    else:
        box.add("start", {"worker": me.address, "name": str(me.name), "host": socket.gethostname(), "pgid": pgid,
                          "machine": machine()}, now=True)
        try:
            timed_out = _pump(proc, pgid, box, tail, timeout, lambda: _wanted(me, key))
        finally:
            _release(watcher, pgid)  # leftovers of the command, and the watcher
        code = proc.returncode
        result.update(exit_code=code if code >= 0 else None, signal=-code if code < 0 else None,
                      duration=time.monotonic() - started, tail=list(tail), timed_out=timed_out)
    box.add("end", result, now=True)
    return result


def _release(watcher: subprocess.Popen[bytes], pgid: int) -> None:
    _kill_group(pgid, signal.SIGKILL)
    watcher.stdin.close()  # type: ignore[union-attr]
    watcher.wait()


def _pump(proc: subprocess.Popen[bytes], pgid: int, box: _Outbox, tail: deque[str], timeout: float | None,
          wanted: Callable[[], bool]) -> bool:
    """Forward output until the command has exited and both pipes are closed; stop the group on
    timeout or cancellation (SIGTERM, SIGKILL after the grace). True if the timeout stopped it."""
    assert proc.stdout is not None and proc.stderr is not None
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ, "stdout")
    selector.register(proc.stderr, selectors.EVENT_READ, "stderr")
    started, partial, timed_out, stopped_at = time.monotonic(), b"", False, None
    try:
        while selector.get_map() or proc.poll() is None:
            if not selector.get_map():  # the command closed its output but still runs
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(_POLL)
            for sel_key, _ in selector.select(_POLL) if selector.get_map() else ():
                data = os.read(sel_key.fd, 65536)
                if not data:
                    selector.unregister(sel_key.fileobj)
                    continue
                box.add("out", (sel_key.data, data))
                if sel_key.data == "stderr":
                    lines = (partial + data).split(b"\n")
                    partial = lines.pop()[-4096:]
                    tail.extend(line.decode(errors="replace").rstrip("\r") for line in lines)
            box.tick()
            now = time.monotonic()
            timed_out = timed_out or (stopped_at is None and timeout is not None and now >= started + timeout)
            if stopped_at is None and (timed_out or not wanted()):
                stopped_at = now
                _kill_group(pgid, signal.SIGTERM)
            if (stopped_at is not None and now >= stopped_at + STOP_GRACE) or proc.poll() is not None:
                _kill_group(pgid, signal.SIGKILL)  # after the grace, or leftovers of a finished command
    finally:
        selector.close()
        proc.stdout.close()
        proc.stderr.close()
        if proc.poll() is None:  # only after an error here
            _kill_group(pgid, signal.SIGKILL)
        proc.wait()
    if partial:
        tail.append(partial.decode(errors="replace"))
    return timed_out


register_stopper(signal_running)  # a stop of the run reaches the commands run on Dask
