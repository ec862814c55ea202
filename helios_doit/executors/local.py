"""The local executor: run one command on this machine, stream its output, stop it on request.

Each command is a shell command run verbatim (no %-formatting, unlike doit's CmdAction;
plain words are exec'd without the shell, see `spawn`) as the leader of a new process group,
so that stopping it stops everything it started.
"""
from __future__ import annotations

import errno
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from . import reaper
from .base import CommandRequest, CommandResult, OutputSink, WorkerAdapter
from .stops import STOP_GRACE, hold_stops, register_stopper, release_stops, stop_sent
from .spawn import OWN_THREAD, SHELL, Forked, argv_for, exec_failure, forks, own_command


@dataclass
class _Running:
    proc: subprocess.Popen[bytes] | Forked
    thread: int = field(default_factory=threading.get_ident)


_running: dict[int, _Running] = {}
_lock = threading.RLock()  # reentrant: the signal handler takes it on the thread it interrupted


def command_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The runner's environment, with its own bin folder first on PATH.

    Job commands call `helios-doit render` / `helios-doit merge`; they must find the same
    installation as the runner even when its virtualenv is not activated.
    """
    env = dict(os.environ)
    env["PATH"] = _bin_first(env.get("PATH", os.defpath))
    env.update(extra or {})
    return env


_BIN = os.path.dirname(sys.executable)


def _bin_first(path: str) -> str:
    return os.pathsep.join([_BIN, path])


def _popen(argv: list[str], cwd: str, env: dict[str, str] | None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)


def _may_fork() -> bool:
    """Forking is safe only without other Python threads that could hold a lock the child needs:
    doit's worker processes have multiprocessing's queue feeder, a serial run our progress ticker
    and watchdog (threads named `helios-doit-...`), and the child uses none of their objects: it
    makes its own standard streams before anything else. Any other thread means exec."""
    me = threading.current_thread()
    return all(t is me or t.name == "QueueFeederThread" or t.name.startswith(OWN_THREAD)
               for t in threading.enumerate())


def _child_env(extra: dict[str, str] | None) -> dict[str, str] | None:
    """None (inherit this process' environment) when no variables are added: this process' own
    PATH is made what `command_env` would make, once, instead of copying the environment for
    each of thousands of commands."""
    if extra:
        return command_env(extra)
    if not os.environ.get("PATH", "").startswith(_BIN + os.pathsep):
        os.environ["PATH"] = _bin_first(os.environ.get("PATH", os.defpath))
    return None


class LocalAdapter(WorkerAdapter):
    """Runs commands as child processes of this one (nothing to connect to: `scheduler` is unused)."""

    def execute(self, request: CommandRequest, sink: OutputSink) -> CommandResult:
        started = time.monotonic()
        env = _child_env(request.env)
        argv = argv_for(request.command, env)
        own = (list(request.own) if request.own and forks(env) else own_command(argv, env)) if _may_fork() else None
        reaper.ensure()  # before anything starts: the guard must exist to be told about it
        # A stop (SIGINT/SIGTERM) waits until the command is known to this process and its guard:
        # one that came between its start and that would leave it running, unknown, unstopped.
        hold_stops()
        try:
            proc = _start(argv, own, request, env)
        except BaseException:
            release_stops()
            raise
        if isinstance(proc, tuple):  # it could not start: a failure of the command, as sh reports it
            release_stops()
            code, message = proc
            sink("stderr", f"{message}\n".encode())
            return CommandResult(exit_code=code, signal=None, duration=time.monotonic() - started, stderr_tail=(message,))
        tail: deque[str] = deque(maxlen=20)
        timed_out = False
        held = True
        try:
            with _lock:
                _running[proc.pid] = _Running(proc)
            sent = stop_sent()
            if sent is not None:  # a stop (handled on another thread) went out before it was known
                _kill_group(proc.pid, sent)
            held = False
            release_stops()  # a stop held back is handled here, and stops it
            timed_out = _pump(proc, request.timeout, started, sink, tail, request.should_stop)
            proc.wait()
            _end_strays(proc)  # leftovers of a command that exited: no orphans
        except BaseException:
            stop_process(proc)
            if held:
                release_stops()
            raise
        finally:
            with _lock:
                _running.pop(proc.pid, None)
        code = proc.wait()  # reaped above: its exit status, at once
        return CommandResult(
            exit_code=code if code >= 0 else None,
            signal=-code if code < 0 else None,
            duration=time.monotonic() - started,
            stderr_tail=tuple(tail),
            timed_out=timed_out,
        )


def _start(argv: list[str], own: list[str] | None, request: CommandRequest, env: dict[str, str] | None
           ) -> subprocess.Popen[bytes] | Forked | tuple[int, str]:
    """The command started and registered with the guard, or (exit code, sh's message)."""
    try:
        if own:
            # The child waits until its group is registered: no instant in which it runs unguarded.
            return Forked(own, request.cwd, env, on_fork=lambda pid: _registered(pid, request))
        proc = _popen(argv, request.cwd, env)
    except OSError as error:
        failed = _start_failure(argv, error, own is not None)
        if failed is None:
            raise  # the runner's own trouble (no folder, no processes left), not the command's
        if failed:
            return failed
        proc = _popen([SHELL, "-c", request.command], request.cwd, env)  # a script without #!: sh runs it
    reaper.guard(proc.pid)  # exec'd commands carry the runner's tag from their first instant
    return proc


def _registered(pid: int, request: CommandRequest) -> None:
    start = reaper.guard(pid)
    if request.on_start:
        request.on_start(pid, start)


def _start_failure(argv: list[str], error: OSError, forked: bool) -> tuple[int, str] | tuple[()] | None:
    """What a command that could not start amounts to: (exit code, sh's message) as the shell would
    report it; () for a script without #! (sh runs it); None for the runner's own trouble."""
    if forked:
        return None
    if error.errno == errno.E2BIG:  # a command longer than the OS takes: a failure of that chunk
        return 126, f"{argv[0]}: cannot execute: {error.strerror} (the command is {sum(map(len, argv))} bytes)"
    if argv[0] == SHELL or error.filename != argv[0]:
        return None
    if error.errno == errno.ENOEXEC:
        return ()
    return exec_failure(argv, error)


def _pump(proc: subprocess.Popen[bytes] | Forked, timeout: float | None, started: float, sink: OutputSink,
          tail: deque[str], should_stop: Callable[[], bool] | None = None) -> bool:
    """Forward output until both pipes close; True if the timeout stopped the command. A run that
    is cancelled (`should_stop`, polled as often as the timeout) stops the command too."""
    selector = selectors.DefaultSelector()
    assert proc.stdout is not None and proc.stderr is not None
    selector.register(proc.stdout, selectors.EVENT_READ, "stdout")
    selector.register(proc.stderr, selectors.EVENT_READ, "stderr")
    partial = b""
    timed_out = False
    next_look = time.monotonic() + 0.25
    try:
        while selector.get_map():
            wait = 0.25 if timeout is None else min(0.25, max(0.0, started + timeout - time.monotonic()))
            events = selector.select(wait)
            if not timed_out and timeout is not None and time.monotonic() >= started + timeout:
                timed_out = True
                stop_process(proc)
                continue
            if should_stop is not None and time.monotonic() >= next_look:
                next_look = time.monotonic() + 0.25
                if should_stop():
                    stop_process(proc)
                    should_stop = None
                    continue
            for key, _ in events:
                data = os.read(key.fd, 65536)
                if not data:
                    selector.unregister(key.fileobj)
                    continue
                sink(key.data, data)
                if key.data == "stderr":
                    lines = (partial + data).split(b"\n")
                    partial = lines.pop()[-4096:]
                    tail.extend(line.decode(errors="replace").rstrip("\r") for line in lines)
            if proc.poll() is not None and selector.get_map():
                # The command is over; whatever still holds the pipes belongs to its group.
                _end_strays(proc)
    finally:
        selector.close()
        proc.stdout.close()
        proc.stderr.close()
    if partial:
        tail.append(partial.decode(errors="replace"))
    return timed_out


def _end_strays(proc: subprocess.Popen[bytes] | Forked) -> None:
    """Kill what a command that exited left running in its group."""
    _kill_group(proc.pid, signal.SIGKILL)


def _kill_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop_process(proc: subprocess.Popen[bytes] | Forked, grace: float = STOP_GRACE) -> None:
    """SIGTERM the command's process group, SIGKILL it after `grace` seconds."""
    _kill_group(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        pass
    _kill_group(proc.pid, signal.SIGKILL)
    proc.wait()


def _stop_running(sig: int) -> int:
    """Send `sig` to the process group of every command this process runs; returns how many."""
    with _lock:
        pids = list(_running)
    for pid in pids:
        _kill_group(pid, sig)
    return len(pids)


register_stopper(_stop_running)
