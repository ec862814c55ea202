"""The Dask worker's side of the `dask` adapter: run one chunk command, stream its output back.

`_run_remote` runs the command in a process group led by `WATCHER`, which SIGKILLs the group if
the worker dies (no orphan keeps writing while Dask reruns the chunk). Output is batched into a
`distributed.Queue` per task; a cancelled task stops its group. A bucket job's command runs in
this machine's own mirror of the bucket and its output goes back through the bucket
(`storage.staging`). Nothing here imports the runner's side.
"""
from __future__ import annotations

import contextlib
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from typing import Any, Callable

from ..storage.staging import Stage, on_worker, send
from ..storage.store import StorageError
from .stops import STOP_GRACE
from .reaper import machine

#: Exit code of a command Dask could not run or finish (ssh's code for a lost connection).
LOST = 255
POLL, _FLUSH_EVERY, _FLUSH_BYTES = 0.2, 0.2, 64 * 1024

#: Leads the process group the command joins, and SIGKILLs it when its stdin, a pipe from the
#: Dask worker, reaches EOF: the worker died. A stop of the group (SIGTERM) is not for it.
WATCHER = 'trap "" TERM INT HUP; while read -r _; do :; done; kill -KILL 0'


def _kill_group(pgid: int, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


class _Outbox:
    """Batches messages into the task's Queue; a lost batch never fails the command."""

    def __init__(self, name: str):
        from distributed import Queue

        self.items: list[tuple[str, Any]] = []
        self.queue, self.size, self.last = Queue(name), 0, time.monotonic()

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
                output: str | None, runner_path: str, key: str, stage: Stage | None = None) -> dict[str, Any]:
    import dask
    from distributed import get_worker

    me, started = get_worker(), time.monotonic()
    box, tail = _Outbox(key), deque[str](maxlen=20)
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
    staged = False
    if stage is not None:
        try:  # a bucket job: this machine's own mirror of the bucket, inputs fetched
            cwd, output, staged = on_worker(stage, machine())
        except (OSError, StorageError) as err:
            return _cannot(box, result, f"helios-doit: cannot prepare Dask worker {me.address} for the chunk: {err}")
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
        return _cannot(box, result, f"helios-doit: cannot start the command on Dask worker {me.address} in {cwd}: {err}")
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
        if staged and stage is not None and code == 0 and output and os.path.isfile(output):
            try:
                result["staged"] = send(stage, output)
            except (OSError, StorageError) as err:
                return _cannot(box, result, f"helios-doit: Dask worker {me.address} could not send the output: {err}")
    box.add("end", result, now=True)
    return result


def _cannot(box: _Outbox, result: dict[str, Any], line: str) -> dict[str, Any]:
    """A command that could not run, or whose output could not be sent: a failed attempt (LOST)."""
    box.add("out", ("stderr", (line + "\n").encode()))
    result.update(exit_code=LOST, signal=None, tail=[line])
    box.add("end", result, now=True)
    return result


def _release(watcher: subprocess.Popen[bytes], pgid: int) -> None:
    _kill_group(pgid, signal.SIGKILL)
    if watcher.stdin is not None:
        watcher.stdin.close()
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
                    proc.wait(POLL)
            for sel_key, _ in selector.select(POLL) if selector.get_map() else ():
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
