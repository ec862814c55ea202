"""The `dask` worker adapter: chunk commands run in Dask workers, doit stays the bookkeeper.

Only the shell command leaves this process. Up-to-date checks, records, verification, logs
and locks stay in `actions.run_task`, so a Dask run means exactly what a local run means. The
job folder must be on storage the workers share (commands run in `request.cwd` there).

In the worker, `_run_remote` starts a small guard (`GUARD`) as the leader of a new process
group; the guard runs `/bin/sh -c COMMAND` in that group and kills the whole group when the
worker process dies (its stdin, a pipe from the worker, reaches EOF), so a worker lost to the
OOM killer leaves no renderer writing the output while Dask reruns the chunk elsewhere.
Output is batched (0.2 s / 64 KiB) into a `distributed.Queue` named by the task's key, which
the adapter drains while it waits: live lines, as with local commands. The worker function
watches its own key: once the task is cancelled (by this adapter on a stop, or by the
scheduler because this process' client went away) it stops the group like a local stop:
SIGTERM, SIGKILL after `STOP_GRACE`.

Use `doit -n N -P thread ... executor=dask`: one `Client` per process and address is shared
by doit's threads. Processes work too, each with its own client; without a scheduler address
each process would then start its own `LocalCluster`, unless `ensure_cluster` ran in the main
process first.
"""
from __future__ import annotations

import atexit
import contextlib
import dataclasses
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from typing import Any

from . import supervise, worker
from .worker import STOP_GRACE, CommandRequest, CommandResult, OutputSink

#: Exit code reported when Dask could not run or finish a command (ssh uses it for a lost link).
LOST = 255
#: Threads of the LocalCluster started without a scheduler: doit's -n is the real limit.
LOCAL_THREADS = 64
CONNECT_TIMEOUT = 15.0
_POLL, _FLUSH_EVERY, _FLUSH_BYTES = 0.2, 0.2, 64 * 1024

#: Runner variables that describe the runner's machine or session, never copied to a worker.
WORKER_LOCAL = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "PWD", "OLDPWD", "HOSTNAME", "SHLVL", "_", "TERM",
    "TMPDIR", "TMP", "TEMP", "DISPLAY", "XAUTHORITY", "DBUS_SESSION_BUS_ADDRESS", "LANG", "LANGUAGE",
    "LD_LIBRARY_PATH", "LD_PRELOAD", "PYTHONHOME", "PYTHONPATH", "VIRTUAL_ENV", "CUDA_VISIBLE_DEVICES",
    "NVIDIA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "KRB5CCNAME",
})
WORKER_LOCAL_PREFIXES = ("SSH_", "XDG_", "LC_", "DASK_", "CONDA_", "MALLOC_")

#: Runs in the worker as the process group's leader: sh in the same group, killed with the worker.
GUARD = r"""
import os, signal, sys, threading
for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(s, lambda *_: None)  # a stop of the group is for the command; stay to report it
pid = os.fork()
if pid == 0:
    try:
        for s in (signal.SIGPIPE, signal.SIGXFSZ):
            signal.signal(s, signal.SIG_DFL)  # as subprocess restores them: Python ignores both
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        os.execv("/bin/sh", ["/bin/sh", "-c", sys.argv[1]])
    finally:
        os._exit(127)
def orphaned():
    while os.read(0, 512):
        pass
    os.killpg(0, signal.SIGKILL)  # EOF: the Dask worker died
threading.Thread(target=orphaned, daemon=True).start()
code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
if code < 0:
    if -code not in (signal.SIGKILL, signal.SIGSTOP):
        signal.signal(-code, signal.SIG_DFL)
    os.kill(os.getpid(), -code)
sys.exit(code & 255)
"""

_cache_lock = threading.RLock()
_clients: dict[tuple[int, str], Any] = {}  # (pid, address) -> Client; a forked child makes its own
_clusters: dict[int, Any] = {}  # pid -> LocalCluster
_running: dict[str, _Remote] = {}
_registered = False


def ensure_cluster(options: Any) -> Any:
    """RunOptions with a scheduler address: a LocalCluster in this process when none was given.

    Meant for `tasks.namespace` (the runner's main process), so that doit's worker processes
    share one cluster instead of starting one each.
    """
    if options.scheduler or "dask" not in (options.executor, options.merge_executor):
        return options
    return dataclasses.replace(options, scheduler=local_cluster())


def local_cluster() -> str:
    """Address of this process' LocalCluster: threads in this process (no extra processes for
    the watchdog to mistake for dead doit workers), reachable over loopback TCP by forked ones."""
    with _cache_lock:
        cluster = _clusters.get(os.getpid())
        if cluster is None:
            from distributed import LocalCluster

            _at_exit()
            cluster = LocalCluster(n_workers=1, threads_per_worker=LOCAL_THREADS, processes=False,
                                   protocol="tcp://", host="127.0.0.1", dashboard_address=None)
            _clusters[os.getpid()] = cluster
        return str(cluster.scheduler_address)


def client(scheduler: str | None) -> Any:
    """The one Client of this process for `scheduler` (None: the local cluster)."""
    address = scheduler or local_cluster()
    with _cache_lock:
        found = _clients.get((os.getpid(), address))
        if found is None or found.status in ("closing", "closed"):
            from distributed import Client

            _at_exit()
            found = _clients[(os.getpid(), address)] = Client(address, timeout=CONNECT_TIMEOUT, set_as_default=False)
        return found


def _at_exit() -> None:
    """After distributed registered its own exit hooks: atexit runs ours first."""
    global _registered
    if not _registered:
        _registered = True
        atexit.register(_close_all)


def _close_all() -> None:
    """At exit, clients before the cluster they talk to: no warnings about lost tasks."""
    for (pid, _), each in list(_clients.items()) + [((p, ""), c) for p, c in _clusters.items()]:
        if pid == os.getpid():
            with contextlib.suppress(Exception):
                each.close(timeout=2)


class DaskAdapter:
    """Runs each command in a Dask worker; cheap to make (`get_adapter` makes one per attempt)."""

    def __init__(self, scheduler: str | None = None):
        self.scheduler = scheduler

    def execute(self, request: CommandRequest, sink: OutputSink) -> CommandResult:
        started = time.monotonic()
        try:
            dask = client(self.scheduler)
        except Exception as err:  # unreachable scheduler: a failed attempt that --retries may redo
            return _lost(sink, started, f"cannot reach the Dask scheduler {self.scheduler or '(local)'}: {err}")
        from distributed import Queue

        key = f"helios-doit-{uuid.uuid4().hex}"
        try:
            queue = Queue(key, client=dask)
        except Exception as err:
            return _lost(sink, started, f"the Dask scheduler {self.scheduler or '(local)'} does not answer: {err}")
        env = {k: v for k, v in os.environ.items() if k not in WORKER_LOCAL and not k.startswith(WORKER_LOCAL_PREFIXES)}
        future = dask.submit(_run_remote, request.command, request.cwd, env, dict(request.env or {}), request.timeout,
                             getattr(request, "output", None), worker.command_env()["PATH"], key, key=key, pure=False)
        remote = _Remote(dask, future, queue, request, sink, started)
        with _cache_lock:
            _running[key] = remote
        try:
            return remote.follow()
        except BaseException:
            remote.stop()
            raise
        finally:
            with _cache_lock:
                _running.pop(key, None)
            with contextlib.suppress(Exception):
                future.release()
                queue.close()


class _Remote:
    """One submitted command, seen from the runner: its messages, its result, its stop."""

    def __init__(self, dask: Any, future: Any, queue: Any, request: CommandRequest, sink: OutputSink, started: float):
        self.dask, self.future, self.queue, self.request, self.sink = dask, future, queue, request, sink
        self.started = started
        self.where: dict[str, Any] | None = None  # the "start" message of the current run
        self.final: dict[str, Any] | None = None

    def follow(self) -> CommandResult:
        stop = getattr(self.request, "should_stop", None)  # a hook actions may pass (cancel flag)
        while True:
            done = _wait(self.future, _POLL)
            self._take()
            if self.final is not None:  # sent before the function returns: complete when done
                return self._result()
            if done:
                return self._failed()
            if supervise.stopping() or (stop is not None and stop()):
                return self.stop()  # a stop seen by this thread (signals reach the main thread only)

    def stop(self) -> CommandResult:
        """Cancel the task: the worker function SIGTERMs the group, SIGKILLs it after the grace."""
        with contextlib.suppress(Exception):
            self.dask.cancel(self.future, reason="helios-doit stop")
        deadline = time.monotonic() + (STOP_GRACE + 3 if self.where else _POLL)
        while self.final is None and time.monotonic() < deadline:
            time.sleep(_POLL / 2)
            self._take()
        if self.final is None and self.where:  # the worker did not answer: kill by process group
            signal_one(self, signal.SIGKILL)
        return self._result() if self.final else CommandResult(None, signal.SIGTERM, time.monotonic() - self.started)

    def _take(self) -> None:
        """Deliver whatever the worker has sent so far (never a blocking get: the scheduler logs
        an error for every Queue.get that times out)."""
        try:
            batches = self.queue.get(batch=True)
        except Exception:  # the client lost the scheduler; the future says what became of the task
            return
        for batch in batches:
            for kind, data in batch:
                if kind == "out":
                    self.sink(data[0], data[1])
                elif kind == "start":
                    if self.where is not None:
                        self.sink("stderr", f"helios-doit: Dask worker {self.where['worker']} was lost; "
                                            f"the command runs again on {data['worker']}\n".encode())
                    self.where = data
                    if self.request.on_start and data["machine"] == machine():
                        self.request.on_start(data["pgid"])  # only a pgid of this machine means anything here
                elif kind == "end":
                    self.final = data

    def _result(self) -> CommandResult:
        data = self.final or self.future.result()
        return CommandResult(data["exit_code"], data["signal"], data["duration"], tuple(data["tail"]), data["timed_out"])

    def _failed(self) -> CommandResult:
        if self.future.status == "finished":
            self.final = self.future.result()  # its messages were lost, not its result
            return self._result()
        why = repr(self.future.exception()) if self.future.status == "error" else f"the task was {self.future.status}"
        return _lost(self.sink, self.started, f"the command did not finish on Dask: {why}")


def _wait(future: Any, timeout: float) -> bool:
    """True once the future is done (finished, failed or cancelled), waiting up to `timeout`."""
    from distributed import wait

    try:
        with future.client.as_current():
            wait(future, timeout=timeout)
    except TimeoutError:
        pass
    return bool(future.done())


def _lost(sink: OutputSink, started: float, message: str) -> CommandResult:
    line = f"helios-doit: {message}"
    sink("stderr", (line + "\n").encode())
    return CommandResult(LOST, None, time.monotonic() - started, (line,))


def signal_one(remote: _Remote, sig: int) -> None:
    """SIGKILL goes straight to the worker's process group; anything else cancels gracefully."""
    if sig != signal.SIGKILL or remote.where is None:
        with contextlib.suppress(Exception):
            remote.dask.cancel(remote.future, reason="helios-doit stop")
        return
    with contextlib.suppress(Exception):
        remote.dask.run(_kill_group, remote.where["pgid"], workers=[remote.where["worker"]], on_error="ignore")


def signal_running(sig: int) -> int:
    """Like `worker.signal_running`, for the commands this process runs on Dask; returns how many."""
    with _cache_lock:
        remotes = list(_running.values())
    for remote in remotes:
        signal_one(remote, sig)
    return len(remotes)


def machine() -> str:
    """Boot and pid namespace: two processes with the same value can signal each other's pgids."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as handle:
            return f"{handle.read().strip()}:{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return f"unknown:{uuid.uuid4()}"  # never equal: never signal a pgid of another machine


def _kill_group(pgid: int, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


# -- in the Dask worker ----------------------------------------------------------------------

class _Outbox:
    """Batches output into the task's Queue; losing a batch never fails the command."""

    def __init__(self, name: str):
        from distributed import Queue

        self.queue, self.items, self.size, self.last = Queue(name), [], 0, time.monotonic()

    def add(self, kind: str, data: Any, now: bool = False) -> None:
        self.items.append((kind, data))
        self.size += len(data[1]) if kind == "out" else 0
        if now or self.size >= _FLUSH_BYTES:
            self.flush()
        self.tick()

    def tick(self) -> None:
        if time.monotonic() - self.last >= _FLUSH_EVERY:
            self.flush()

    def flush(self) -> None:
        if self.items:
            with contextlib.suppress(Exception):
                self.queue.put(self.items)
        self.items, self.size, self.last = [], 0, time.monotonic()


def _wanted(dask_worker: Any, key: str) -> bool:
    """False once the scheduler cancelled or forgot this task (a stop, or its client died)."""
    try:
        task = dask_worker.state.tasks.get(key)
    except AttributeError:  # an older worker without WorkerState: rely on the guard and SIGKILL
        return True
    return task is not None and task.state in ("executing", "long-running", "resumed")


def _run_remote(command: str, cwd: str, shared: dict[str, str], explicit: dict[str, str], timeout: float | None,
                output: str | None, runner_path: str, key: str) -> dict[str, Any]:
    from distributed import get_worker

    me, started = get_worker(), time.monotonic()
    box, tail = _Outbox(key), deque(maxlen=20)
    result = {"exit_code": None, "signal": signal.SIGTERM, "duration": 0.0, "tail": [], "timed_out": False}
    if not _wanted(me, key):
        return result  # cancelled before it started: nothing ran
    env = dict(os.environ)
    for name in worker_spawn_defaults():
        env.pop(name, None)  # the nanny's 1-thread BLAS defaults are for Python tasks, not renderers
    env.update(shared)
    path = [os.path.dirname(sys.executable), *env.get("PATH", os.defpath).split(os.pathsep)]
    env["PATH"] = os.pathsep.join(dict.fromkeys(path + runner_path.split(os.pathsep)))
    env.update(explicit)
    env.update(HELIOS_DOIT_DASK_WORKER=me.address, HELIOS_DOIT_DASK_WORKER_NAME=str(me.name))
    if output:  # a rerun after a lost worker: the first run's partial output must not look done
        with contextlib.suppress(FileNotFoundError):
            os.unlink(output)
    try:
        proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", GUARD, command], cwd=cwd, env=env,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True)
    except OSError as err:
        line = f"helios-doit: cannot start the command on Dask worker {me.address} in {cwd}: {err}"
        box.add("out", ("stderr", (line + "\n").encode()))
        result.update(exit_code=LOST, signal=None, tail=[line])
        box.add("end", result, now=True)
        return result
    box.add("start", {"worker": me.address, "name": str(me.name), "pgid": proc.pid, "machine": machine()}, now=True)
    timed_out = _pump(proc, box, tail, timeout, lambda: _wanted(me, key))
    assert proc.stdin is not None
    proc.stdin.close()
    code = proc.wait()
    result.update(exit_code=code if code >= 0 else None, signal=-code if code < 0 else None,
                  duration=time.monotonic() - started, tail=list(tail), timed_out=timed_out)
    box.add("end", result, now=True)
    return result


def worker_spawn_defaults() -> list[str]:
    import dask

    return list(dask.config.get("distributed.nanny.pre-spawn-environ", {}) or {})


def _pump(proc: subprocess.Popen[bytes], box: _Outbox, tail: deque[str], timeout: float | None,
          wanted: Any) -> bool:
    """Forward output until both pipes close; stop on timeout or cancellation. True: timed out."""
    assert proc.stdout is not None and proc.stderr is not None
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ, "stdout")
    selector.register(proc.stderr, selectors.EVENT_READ, "stderr")
    started, partial, timed_out, stopped_at = time.monotonic(), b"", False, None
    try:
        while selector.get_map():
            for sel_key, _ in selector.select(_POLL):
                data = os.read(sel_key.fd, 65536)
                if not data:
                    selector.unregister(sel_key.fileobj)
                    continue
                box.add("out", (sel_key.data, data))
                if sel_key.data == "stderr":
                    lines = (partial + data).split(b"\n")
                    partial = lines.pop()[-4096:]
                    tail.extend(line.decode(errors="replace").rstrip("\r") for line in lines)
            box.tick()  # a quiet command's last lines go out too
            now = time.monotonic()
            if stopped_at is None and timeout is not None and now >= started + timeout:
                timed_out = True
            if stopped_at is None and (timed_out or not wanted()):
                stopped_at = now
                _kill_group(proc.pid, signal.SIGTERM)
            if (stopped_at is not None and now >= stopped_at + STOP_GRACE) or proc.poll() is not None:
                _kill_group(proc.pid, signal.SIGKILL)  # after the grace, or leftovers of an ended guard
    finally:
        selector.close()
        proc.stdout.close()
        proc.stderr.close()
    if partial:
        tail.append(partial.decode(errors="replace"))
    box.flush()
    return timed_out


if hasattr(worker, "register_stopper"):  # the hook supervise's signal handler may call
    worker.register_stopper(signal_running)
