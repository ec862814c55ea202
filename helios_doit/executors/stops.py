"""Stops: how a signal that stops the run reaches every command of every adapter in this process,
and how a stop waits while a command is being started or an attempt's outcome written.

Adapters register a stopper (`register_stopper`); `signal_running` sends a signal to all of
them. A stop that comes while this thread holds stops (`hold_stops` ... `release_stops`) is
noted and handled as the hold ends: no command starts unknown to the stop, and no attempt is
half recorded.
"""
from __future__ import annotations

import signal
import threading
from typing import Callable

#: Seconds a stopped command gets between SIGTERM and SIGKILL (renderers finalise files).
STOP_GRACE = 3.0

_stoppers: list[Callable[[int], int]] = []


def register_stopper(stop: Callable[[int], int]) -> None:
    """Let an adapter take part in `signal_running`: `stop(sig)` signals its commands, returns how many."""
    _stoppers.append(stop)


def signal_running(sig: int) -> int:
    """Send `sig` to every command this process runs, on every adapter; returns how many."""
    _sent.append(sig)  # first: a command registered from now on sees it (`stop_sent`)
    return sum(stop(sig) for stop in list(_stoppers))


_sent: list[int] = []  # the signals `signal_running` sent in this process
_holding = threading.local()  # .depth: how many `hold_stops` this thread is inside
_deferred: list[int] = []  # stops the main thread's handler held back


def stop_sent() -> int | None:
    """The signal a stop last sent to this process' commands, if one did: a command registered
    after it (from another thread) was missed, and must get it from its adapter."""
    return _sent[-1] if _sent else None


def hold_stops() -> None:
    """Until `release_stops`: a stop's handler (which runs on the main thread) notes it and returns.

    Not pthread_sigmask: that holds back only what the kernel would deliver to this thread; it
    then picks another thread (multiprocessing's queue feeder, in every doit worker process), and
    CPython runs the Python handler on the main thread anyway, in the middle of the held block.
    And every command started meanwhile would inherit the mask: deaf to SIGTERM and SIGINT.
    """
    _holding.depth = getattr(_holding, "depth", 0) + 1


def release_stops() -> None:
    """End a `hold_stops`; a stop held back meanwhile is handled now, on the main thread."""
    _holding.depth -= 1
    if not _holding.depth and (signum := take_held()) is not None:
        signal.raise_signal(signum)


def take_held() -> int | None:
    """The stop held back on this thread, if any, now taken out of the hold (to be handled at once)."""
    if not _deferred or threading.current_thread() is not threading.main_thread():
        return None
    signum = _deferred[0]
    _deferred.clear()
    return signum


def held_back(signum: int) -> bool:
    """For a stop's handler: True if the thread it interrupted holds stops (it is noted, to be
    raised again by `release_stops`)."""
    if getattr(_holding, "depth", 0):
        _deferred.append(signum)
        return True
    return False
