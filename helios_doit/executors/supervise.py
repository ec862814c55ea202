"""Stopping cleanly: signals, doit worker processes that die, and runners that die under them.

doit leaves chunk commands running when its workers are terminated, waits forever for a
worker that died, and leaves its workers waiting forever when the main process dies. Here
SIGINT and SIGTERM stop every running command's process group (each runner process stops its
own), wait for their partial outputs to be removed, and end the run with a KeyboardInterrupt
that doit already knows how to unwind. A watchdog thread in the main process notices a worker
that died, makes sure the command it left behind is gone and stops the run. Each doit worker
process gets SIGTERM when the main process dies (Linux' parent-death signal), so it stops its
command cleanly and exits instead of waiting on a queue nobody reads.
"""
from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.util
import os
import select
import signal
import sys
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Callable, Iterator

from ..state import events, places
from ..state.files import read_json, remove
from ..state.folder import StateDir
from ..state.locks import try_lock
from ..state.names import TaskName
from ..state.places import Place, PlaceError
from . import reaper
from .stops import STOP_GRACE, held_back, hold_stops, release_stops, signal_running, take_held

_stopped_by: int | None = None
_active: dict[int, int] = {}  # thread id -> tasks it is running
_active_lock = threading.RLock()  # reentrant: the signal handler takes it on the thread it interrupted
_notes: list[str] = []  # why the run stopped, printed when it ends
_worker_died: list[int] = []  # the pid of a doit worker process that died: the run stopped for that
_watched: dict[str, tuple[Path, Callable[[str], Place | None]]] = {}  # state root -> (state, task key -> its place)
_watchdog: threading.Thread | None = None


class Interrupted(KeyboardInterrupt):
    """The run was stopped by a signal; doit unwinds KeyboardInterrupt and keeps finished work."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def stopping() -> int | None:
    return _stopped_by


def ensure_handlers() -> None:
    """Install our SIGINT/SIGTERM handlers; a no-op off the main thread or when done already."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is not _on_signal:
        signal.signal(signal.SIGTERM, _on_signal)
        signal.signal(signal.SIGINT, _on_signal)
    if sys.excepthook is not _excepthook:
        global _next_hook
        _next_hook = sys.excepthook
        sys.excepthook = _excepthook


def _on_signal(signum: int, frame: object) -> None:
    if held_back(signum):  # a command is being started, or an outcome written: handled right after
        return
    _stop(signum)


def stop_if_held() -> None:
    """Handle, now, a stop held back by the block this thread is in (a test paused there)."""
    signum = take_held()
    if signum is not None:
        _stop(signum)


def _stop(signum: int) -> None:
    global _stopped_by
    first = _stopped_by is None
    if first:
        _stopped_by = signum
    signal_running(signal.SIGTERM if first else signal.SIGKILL)
    if first:
        _wait_for_other_threads(STOP_GRACE + 5)
        raise Interrupted(signum)


@contextlib.contextmanager
def active() -> Iterator[None]:
    """Marks a task in progress on this thread, so a stop can wait for its cleanup."""
    me = threading.get_ident()
    with _active_lock:
        _active[me] = _active.get(me, 0) + 1
    try:
        yield
    finally:
        with _active_lock:
            _active[me] -= 1
            if not _active[me]:
                del _active[me]


@contextlib.contextmanager
def held() -> Iterator[None]:
    """Hold a stop back for the block (signals reach Python on the main thread, which is the one
    that runs tasks unless doit runs them on threads); one that came meanwhile is handled as the
    block ends. See `stops.hold_stops` for why this is not the signal mask."""
    hold_stops()
    try:
        yield
    finally:
        release_stops()


def _wait_for_other_threads(timeout: float) -> None:
    me = threading.get_ident()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with _active_lock:
            if not any(tid != me for tid in _active):
                return
        time.sleep(0.02)


_next_hook = sys.excepthook


def _excepthook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        report_stop()
        _die_by_signal()
    else:
        _next_hook(kind, exc, tb)


def report_stop() -> None:
    """One explanation instead of a traceback when a run is stopped."""
    for note in _notes:
        sys.stderr.write(f"helios-doit: {note}\n")
    if _worker_died:
        sys.stderr.write("helios-doit: the other running commands were stopped and their partial outputs removed; "
                         "finished chunks are kept. Run again to resume.\n")
        return
    name = signal.Signals(_stopped_by).name if _stopped_by else "SIGINT"
    sys.stderr.write(
        f"helios-doit: stopped by {name}: running commands were stopped and their partial outputs "
        "removed; finished chunks are kept. Run again to resume.\n"
    )


def stop_code() -> int:
    """The run's exit code once stopped: 128 + the signal's number (130, 143), as a shell reports a
    death by it; 1 when the stop was ours, because a worker process died."""
    return 1 if _worker_died else 128 + (_stopped_by or signal.SIGINT)


def _die_by_signal() -> None:
    """Exit as the signal would have killed us (or 1, for a dead worker), once every worker
    process has cleaned up."""
    end_workers()
    sys.stdout.flush()
    sys.stderr.flush()
    if _worker_died:
        os._exit(1)
    signum = _stopped_by or signal.SIGINT
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def end_workers() -> None:
    """Wait for this run's doit workers to end, with one deadline for all of them, not one each:
    a run stopped while it was starting many workers must not wait seconds per worker. doit
    terminates the workers it knows of; those it started but had not listed yet (a stop, or a
    failed fork, in the middle of starting them) wait on its queue for a task that never comes:
    told to stop once the others had their grace, killed if that does not do."""
    children = multiprocessing.active_children()
    for grace, end in ((STOP_GRACE + 1, multiprocessing.Process.terminate), (4.0, multiprocessing.Process.kill)):
        until = time.monotonic() + grace
        for proc in children:
            proc.join(max(0.0, until - time.monotonic()))
        for proc in children:
            if proc.is_alive():
                with contextlib.suppress(OSError, ValueError):
                    end(proc)
    for proc in children:
        proc.join(1.0)


def watch(state_root: Path, outputs: Callable[[str], Place | None]) -> None:
    """Tell the watchdog which outputs belong to which task of a job (looked up, never trusted from markers)."""
    _watched[str(state_root)] = (state_root, outputs)


def start_watchdog(interval: float = 0.1) -> None:
    """From the main process of a run: stop the run if a worker process dies under it."""
    global _watchdog
    if _watchdog is not None and _watchdog.is_alive():
        return
    _watchdog = threading.Thread(target=_watch_workers, args=(interval,), name="helios-doit-watchdog", daemon=True)
    _watchdog.start()


def _watch_workers(interval: float) -> None:
    seen: dict[int, multiprocessing.process.BaseProcess] = {}
    while _stopped_by is None:
        # Not active_children(): it reaps and forgets a worker that died between two looks.
        for proc in list(multiprocessing.process._children):  # type: ignore[attr-defined]
            seen.setdefault(proc.pid or 0, proc)
        for pid, proc in list(seen.items()):
            code = proc.exitcode
            if code is None:
                continue
            del seen[pid]
            if code != 0 and _stopped_by is None:
                _worker_died.append(pid)
                _bury(pid, code)
                # a real signal, so that the main thread's blocking read is interrupted
                signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGTERM)
                return
        time.sleep(interval)


def _bury(pid: int, code: int) -> None:
    """A worker died: make sure the command it was running is gone (its guard kills it; we wait
    for that), then remove that command's partial output: the attempt was this run's own."""
    how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
    victims = []
    for state_root, outputs in _watched.values():
        for task, marker in StateDir(state_root).markers():
            data = read_json(marker)
            # this run's worker on this machine (a shared state folder holds other runners' markers)
            if not data or data.get("pid") != pid or data.get("machine") != reaper.machine() \
                    or data.get("runId") != events.run_id():
                continue
            pgid, start, tag = data.get("pgid"), data.get("leaderStart"), data.get("tag")
            left = reaper.reap(pgid if isinstance(pgid, int) else None, start if isinstance(start, int) else None,
                               tag if isinstance(tag, str) else None)
            with contextlib.suppress(OSError), try_lock(StateDir(state_root).lock(task)) as ours:
                if not ours:
                    continue  # another runner took the task over meanwhile: its output and marker now
                place = outputs(task)
                if place is not None and not left:
                    with contextlib.suppress(PlaceError, OSError):
                        note = places.discard(place, _label(task))
                        if note:
                            _notes.append(note)
                remove(marker)
            victims.append(_label(task))
    what = f" while running {', '.join(victims)}" if victims else ""
    _notes.append(f"worker process {pid} died ({how}){what}; the run was stopped")


def _label(key: str) -> str:
    name = TaskName.parse(key)
    return name.label if name is not None else key


def _die_with_parent(_: object) -> None:
    """In a doit worker process, just forked: SIGTERM when the main process dies, however it dies."""
    parent = multiprocessing.parent_process()
    if parent is None or not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent.pid:  # it died before we asked
        os.kill(os.getpid(), signal.SIGTERM)
        return
    # The kernel gives that signal to any thread of the worker; one that lands on multiprocessing's
    # queue feeder only marks it for the main thread, which may sit in a read of doit's queue
    # for ever. A thread of ours waits for the parent's end and signals the main thread itself.
    threading.Thread(target=_signal_main_when_gone, args=(parent.sentinel,), name="helios-doit-parent-watch",
                     daemon=True).start()


def _signal_main_when_gone(sentinel: int) -> None:
    with contextlib.suppress(OSError, ValueError):
        select.select([sentinel], [], [])  # readable (EOF) once the parent is gone
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGTERM)


class _AfterFork:
    """multiprocessing keeps after-fork callbacks by a weak-less key on an object: this one."""


_AFTER_FORK = _AfterFork()
multiprocessing.util.register_after_fork(_AFTER_FORK, _die_with_parent)
