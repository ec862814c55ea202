"""Chunk commands die with the runner process that started them, however it dies.

Each command leads its own process group, so that a stop reaches everything it started; that
also means it outlives a runner killed with SIGKILL, whose `flock` dies with it, and a rerun
would render the same output while the orphan still writes it. Two defences, both local to
one machine:

- Every runner process that starts commands keeps one guard: this file run as a script
  (`python -I -S reaper.py`, standard library only), in a session of its own and deaf to
  SIGINT/SIGTERM/SIGHUP. The runner tells it, over a pipe, each process group it starts (one
  write that the guard reads in batches: no wake-up per command). When the runner dies,
  however it dies, the pipe reaches EOF and the guard SIGKILLs every group it was told about
  that is still the group it was told about (same leader start time): a group that ended long
  ago, or a reused process id, is never hit.
- Every command carries its runner process' tag in its environment (`HELIOS_DOIT_ATTEMPT`),
  and the running marker, written before the command starts, holds the tag, the group and
  the leader's start time. A runner that takes a task over from a dead one kills what is left
  of it (`reap`) before it touches the output: what escaped its group, or started in the
  instant before the guard knew of it. Every command of a dead runner is an orphan, so one
  tag per runner process is enough, and commands inherit it without a copy of the environment.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import threading
import time

#: Carried by every chunk command and what it starts, so the orphans of an attempt can be found.
TAG_ENV = "HELIOS_DOIT_ATTEMPT"

_lock = threading.Lock()
_guard: tuple[int, int, "subprocess.Popen[bytes]"] | None = None  # (owner pid, write fd, guard)


def leader_start(pid: int) -> int | None:
    """The start time of process `pid` in clock ticks since boot (field 22 of /proc/PID/stat)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return int(handle.read().rsplit(b")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def members(pgid: int) -> list[int]:
    """Live processes of process group `pgid`."""
    return [pid for pid, (pgrp, _) in _processes().items() if pgrp == pgid]


def is_same_group(pgid: int, start: int | None) -> bool:
    """Is group `pgid` still the one whose leader started at `start`? Its leader may have exited
    while members remain: the kernel never reuses a pid that still names a group, so a group
    without its leader is the original one, and a leader with another start time is a new one."""
    now = leader_start(pgid)
    if now is not None:
        return start is None or now == start
    return bool(members(pgid))


def kill_group(pgid: int, start: int | None) -> bool:
    """SIGKILL group `pgid` if it is still the one registered; True if it was signalled."""
    if pgid <= 1 or not is_same_group(pgid, start):
        return False
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    return True


def tagged(tag: str) -> list[int]:
    """Processes whose environment carries this attempt's tag (exec'd commands and all they started)."""
    needle = f"{TAG_ENV}={tag}\0".encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as handle:
                if needle in handle.read():
                    found.append(int(name))
        except OSError:
            continue
    return [pid for pid in found if _alive(pid)]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


def _processes() -> dict[int, tuple[int, int]]:
    """pid -> (process group, start time) of every live process, from one pass over /proc."""
    found = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
            if fields[0] != b"Z":
                found[int(name)] = (int(fields[2]), int(fields[19]))
        except (OSError, IndexError, ValueError):
            continue
    return found


def kill_groups(groups: dict[int, int | None]) -> None:
    """SIGKILL each group (pgid -> its leader's start time) that is still the group it was."""
    procs = _processes()
    alive_groups = {pgrp for pgrp, _ in procs.values()}
    for pgid, start in groups.items():
        leader = procs.get(pgid)
        same = (leader[1] == start or start is None) if leader is not None else pgid in alive_groups
        if same and pgid > 1:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def reap(pgid: int | None, start: int | None, tag: str | None, timeout: float = 10.0) -> list[int]:
    """Kill what is left of a dead runner's attempt on this machine and wait until it is gone.

    Returns the pids that would not die (another user's, or stuck in the kernel): the caller
    must not render while they may write.
    """
    deadline = time.monotonic() + timeout
    while True:
        left = tagged(tag) if tag else []
        if pgid and is_same_group(pgid, start):
            left += members(pgid)
        left = sorted(set(left))
        if not left:
            return []
        if time.monotonic() > deadline:
            return left
        if pgid:
            kill_group(pgid, start)
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.02)


_machine: list[str] = []


def machine() -> str:
    """Boot and pid namespace: processes with the same value can see and signal each other."""
    if not _machine:
        try:
            with open("/proc/sys/kernel/random/boot_id") as handle:
                _machine.append(f"{handle.read().strip()}:{os.stat('/proc/self/ns/pid').st_ino}")
        except OSError:
            _machine.append(f"unknown:{os.urandom(8).hex()}")  # never equal: never signal another machine's
    return _machine[0]


# -- the runner's side ------------------------------------------------------------------------

def guard(pgid: int) -> int | None:
    """Register a command's group with this process' guard; returns the leader's start time."""
    start = leader_start(pgid)
    _send(f"+ {pgid} {start if start is not None else -1}\n")
    return start


def runner_alive(tag: object) -> bool:
    """Is the runner process a tag names (machine:pid:start) alive, here? A marker whose runner
    lives was not left by a runner that died: nothing of it may be killed."""
    try:
        where, pid, start = str(tag).rsplit(":", 2)
        return where == machine() and leader_start(int(pid)) == int(start)
    except ValueError:
        return False


def tag() -> str:
    """This runner process' tag, which every command it starts carries (set by `ensure`)."""
    ensure()
    return os.environ[TAG_ENV]


def ensure() -> None:
    """Start this process' guard if it has none (a forked doit worker starts its own), and put
    this process' tag in its environment, for every command it starts to inherit."""
    global _guard
    if _guard is not None and _guard[0] == os.getpid() and _guard[2].poll() is None:
        return
    with _lock:
        if _guard is not None and _guard[0] == os.getpid() and _guard[2].poll() is None:
            return
        if _guard is not None and _guard[0] != os.getpid():
            _close_quietly(_guard[1])  # the parent's: its guard must see EOF when the parent dies
        os.environ[TAG_ENV] = f"{machine()}:{os.getpid()}:{leader_start(os.getpid())}"
        read, write = os.pipe()  # both close-on-exec: no command ever holds the write end
        try:
            with contextlib.suppress(OSError, AttributeError):  # room for every command of a big run
                fcntl.fcntl(write, fcntl.F_SETPIPE_SZ, 1 << 20)
            clean = {key: value for key, value in os.environ.items() if key != TAG_ENV}  # not one of ours to kill
            proc = subprocess.Popen([sys.executable, "-I", "-S", os.path.abspath(__file__)], stdin=read,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                                    close_fds=True, cwd="/", env=clean)
        except BaseException:
            os.close(write)
            raise
        finally:
            os.close(read)
        _guard = (os.getpid(), write, proc)


def _send(line: str) -> None:
    ensure()
    assert _guard is not None
    try:
        os.write(_guard[1], line.encode())
    except OSError:  # the guard died (someone killed it): start another and tell it again
        with _lock:
            _close_quietly(_guard[1])
            _guard[2].poll()
        ensure()
        os.write(_guard[1], line.encode())


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def _serve() -> None:
    """The guard: remember groups until stdin reaches EOF, then kill those that are still theirs.
    It reads in batches, a few times a second: a runner's write never wakes it up by itself."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGPIPE):
        signal.signal(signum, signal.SIG_IGN)
    groups: dict[int, int | None] = {}
    rest = b""
    while data := os.read(0, 1 << 20):
        lines = (rest + data).split(b"\n")
        rest = lines.pop()
        for line in lines:
            with contextlib.suppress(ValueError):
                _, pgid, start = line.split()
                groups[int(pgid)] = int(start) if int(start) >= 0 else None
        time.sleep(0.05)
    kill_groups(groups)


if __name__ == "__main__":
    _serve()
