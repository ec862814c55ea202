"""Warm render processes: one forked render process renders its worker's chunks one after another.

Each new render process pays for its encoder's memory again: x264's frame pool and lookahead
(~250 MB at 720p) are faulted in and zeroed page by page, and the drawing canvas is re-faulted
while that heap grows. A render forked afresh per chunk pays it per chunk; one process that
renders its worker's chunks in turn pays it once (measured in BENCHMARKS.md). Only that
changes: each chunk still runs in the render process' own session and process group, which the
guard and the running marker know before it starts, with its own pipes, folder, environment and
exit code; a stop or a timeout kills the group, render process and all, as for any command.

A render process is used again only after a chunk that exited 0 and left nothing behind that
it cannot put back (`_Baseline`): no process, thread or open file, no process-wide setting.
Anything else ends it, and the next chunk gets a new one. It ends, too, when the process that
forked it closes its end or dies.
"""
from __future__ import annotations

import atexit
import contextlib
import importlib
import json
import multiprocessing.util
import os
import select
import signal
import socket
import subprocess
import threading
import time
from typing import Callable

from .base import stop_sent
from .render_process import MESSAGE, REPORT, serve
from .spawn import FORKABLE, STOP_SIGNALS, fork_runner


class Host:
    """A warm render process of this one, idle or rendering; only its owner process talks to it."""

    def __init__(self, module: str) -> None:
        importlib.import_module(module)  # here, once: the render process starts with it loaded
        self.status: int | None = None  # its wait status, once reaped
        self.pid = 0
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ready_r, ready_w = os.pipe()
        held = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            self.pid = fork_runner()
            if self.pid == 0:  # pragma: no cover  (the render process; measured through its effects)
                serve(theirs.fileno(), ready_w, held)
            os.close(ready_w)
            ready_w = -1
            os.read(ready_r, 1)  # EOF once it leads its own session: a stop now reaches it
            # Readable when it ends, even while a process it forked still holds its socket.
            self.pidfd: int | None = os.pidfd_open(self.pid) if hasattr(os, "pidfd_open") else None
        except BaseException:
            ours.close()
            if self.pid:  # half made: gone with its group
                for kill in (os.kill, os.killpg):  # before or after it leads its own group
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            raise
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
            theirs.close()
            for fd in (ready_r, ready_w):
                if fd >= 0:
                    os.close(fd)
        self.sock = ours

    def alive(self) -> bool:
        if self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = status
        return self.status is None

    def end(self) -> int:
        """Stop it (whatever it does) and reap it; its wait status."""
        self.sock.close()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        if self.status is None:
            self.status = os.waitpid(self.pid, 0)[1]
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None
        return self.status


class HostRun:
    """One command run by a warm render process; what LocalAdapter needs of a Popen."""

    def __init__(self, host: Host, args: list[str], message: bytes, on_start: Callable[[int], None] | None) -> None:
        self.host = host
        self.pid = host.pid
        self.args = args
        self.returncode: int | None = None
        self.reusable = False
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            if on_start is not None:
                on_start(host.pid)  # the guard and the marker know its group before it starts
            socket.send_fds(host.sock, [message], [out_w, err_w])
        except BaseException:
            for fd in (out_r, err_r):
                os.close(fd)
            raise
        finally:
            os.close(out_w)
            os.close(err_w)
        self.stdout = open(out_r, "rb", buffering=0)
        self.stderr = open(err_r, "rb", buffering=0)

    def poll(self) -> int | None:
        if self.returncode is None:
            report = self._report()
            if report is None:
                if self.host.alive():
                    return None
                report = self._report() or b""  # a report sent just before it ended
            self._take(report)
        return self.returncode

    def _report(self) -> bytes | None:
        try:
            return self.host.sock.recv(REPORT.size, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return None
        except OSError:
            return b""

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise subprocess.TimeoutExpired(["helios-doit", *self.args], timeout or 0)
            if self.host.pidfd is None:
                left = 0.05 if left is None else min(left, 0.05)
            select.select([self.host.sock] + ([self.host.pidfd] if self.host.pidfd is not None else []), [], [], left)
        return self.returncode  # type: ignore[return-value]

    def _take(self, report: bytes) -> None:
        if len(report) == REPORT.size:
            code, reusable = REPORT.unpack(report)
            self.returncode, self.reusable = code, bool(reusable)
            if not self.reusable:
                self.host.end()  # it ends itself right after such a report
        else:  # it died mid-command: killed, or crashed
            self.returncode = os.waitstatus_to_exitcode(self.host.end())

    def strays(self) -> None:
        """The command exited: kill whatever of it runs on. A render process that reported itself
        alone (no thread, file or process of the command left: it is its orphans' reaper) stays."""
        if not self.reusable:
            self.host.end()

    def spoil(self) -> None:
        """It is being stopped: never used again."""
        self.reusable = False

    def finish(self) -> None:
        """The command is over: its render process waits for the next one, or is gone."""
        if self.reusable and stop_sent() is None and self.host.alive():
            _pool.put(self.host)
        else:
            self.host.end()


class _Pool:
    """This process' idle render processes. Forked children (doit's workers) start with none."""

    def __init__(self) -> None:
        self.idle: list[Host] = []
        self.lock = threading.Lock()
        self.hooked = 0

    def take(self) -> Host | None:
        with self.lock:
            while self.idle:
                host = self.idle.pop()
                if host.alive():
                    return host
                host.end()
        return None

    def put(self, host: Host) -> None:
        with self.lock:
            if self.hooked != os.getpid():  # at this process' exit: end them, doit's workers included
                self.hooked = os.getpid()
                atexit.register(self.close)
                multiprocessing.util.Finalize(None, self.close, exitpriority=0)
            self.idle.append(host)

    def close(self) -> None:
        with self.lock:
            idle, self.idle = self.idle, []
        for host in idle:
            host.end()

    def forget(self) -> None:
        """In a forked child: the parent's render processes are not its own to use or end."""
        for host in self.idle:
            with contextlib.suppress(OSError):
                host.sock.close()
                if host.pidfd is not None:
                    os.close(host.pidfd)
        self.idle = []
        self.lock = threading.Lock()


_pool = _Pool()
os.register_at_fork(after_in_child=_pool.forget)


def run(args: list[str], cwd: str, env: dict[str, str] | None,
        on_start: Callable[[int], None] | None) -> HostRun | None:
    """Run `helios-doit ARGS` on an idle render process of this one, or on a new one; None if the
    command is too big to send (the caller forks a fresh process for it)."""
    if not os.path.isdir(cwd):
        raise FileNotFoundError(2, "No such file or directory", cwd)  # as Popen says it
    message = json.dumps({"args": args, "cwd": cwd, "env": dict(os.environ) if env is None else env}).encode()
    if len(message) > MESSAGE:
        return None
    host = _pool.take()
    if host is not None:
        try:
            return HostRun(host, args, message, on_start)
        except (BrokenPipeError, ConnectionResetError):  # it ended while idle: a new one runs the command
            host.end()
        except BaseException:
            host.end()
            raise
    host = Host(FORKABLE[args[0]])
    try:
        return HostRun(host, args, message, on_start)
    except BaseException:
        host.end()
        raise
