"""The warm render process' side: run each command sent, as a new process would, until told to stop.

See `host` for why it exists. Here is what makes a chunk in a reused process indistinguishable
from one in a new process, and what makes a process not worth reusing (`_Baseline`).
"""
from __future__ import annotations

import builtins
import ctypes
import faulthandler
import gc
import json
import locale
import os
import resource
import signal
import socket
import struct
import sys
import sysconfig
import threading
import traceback
import warnings
from typing import Any, Callable

from .spawn import become_child, die_by_sigint, flush, fresh_streams, run_entry

#: The report a render process sends after a command: its exit code, and whether it may be used again.
REPORT = struct.Struct("ii")
#: A command's arguments, folder and environment, at most, in one message (a socket's send buffer is
#: ~200 KB); a command with more (a huge environment) gets a fresh fork instead.
MESSAGE = 64 << 10


def serve(sock_fd: int, ready_w: int, mask: set[signal.Signals]) -> None:  # pragma: no cover
    """Lead a session of its own, then run each command sent until the owner closes its end."""
    code = 1
    try:
        try:
            os.setsid()
            os.close(ready_w)
            # Its own two descriptors sit at the top of the table: a command's first file is fd 3, as
            # in a new process.
            top = min(256, os.sysconf("SC_OPEN_MAX"), resource.getrlimit(resource.RLIMIT_NOFILE)[0]) - 1
            quiet, control = top - 1, top
            os.dup2(sock_fd, control, inheritable=False)  # not for what a command execs
            devnull = os.open(os.devnull, os.O_RDWR)
            os.dup2(devnull, quiet, inheritable=False)
            for fd in (0, 1, 2):
                os.dup2(quiet, fd)
            fresh_streams()
            os.closerange(3, quiet)  # the runner's locks, logs, guard and doit's queues
            os.closerange(control + 1, os.sysconf("SC_OPEN_MAX"))
            sock = socket.socket(fileno=control)
            become_child(mask)
            reaper_of_orphans = _subreaper()
            baseline = _Baseline()
            while True:
                message, fds, _, _ = socket.recv_fds(sock, MESSAGE, 2)
                if not message:
                    code = 0
                    return  # the owner is done, or gone
                os.dup2(quiet, 0)
                os.dup2(fds[0], 1)
                os.dup2(fds[1], 2)
                for fd in fds:
                    os.close(fd)
                request = json.loads(message)
                try:
                    code = run_entry(request["args"], request["cwd"], request["env"])
                except KeyboardInterrupt:
                    die_by_sigint()
                except BaseException:
                    traceback.print_exc()
                    code = 1
                flush()
                for fd in (0, 1, 2):  # the command's pipes close: its output ends here
                    os.dup2(quiet, fd)
                clean = code == 0 and reaper_of_orphans and baseline.restored()
                sock.send(REPORT.pack(code, clean))
                if not clean:
                    return
        except BaseException:
            traceback.print_exc()
    finally:
        os._exit(code)


def _subreaper() -> bool:
    """Become the reaper of every orphan the commands leave (Linux' child subreaper): then a
    process without children has no descendants left, however they were started."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


class _Baseline:
    """The render process as it was before its first command, so that the next one finds it so.

    What is cheap to put back is put back: `sys.path`, import hooks, warnings filters and hooks,
    the interpreter's hooks and limits, names added to or changed in `builtins`, numpy's error
    handling and print options, the default socket timeout, the decimal context, and modules
    imported from outside the installation (a composition, the helper modules next to it: the
    next chunk imports them again, as a fresh process would, edited or not). Anything else a
    command changed for the whole process means it is not used again: a process left running (it
    reaps every orphan), a Python thread, more native threads than after its first command (a
    library's pool, such as OpenBLAS', may start once), an open file, a signal handler or mask,
    the umask, a timer, a resource limit, the priority, the locale, a trace or profile hook, the
    garbage collector's settings, faulthandler. What a composition patches inside an installed
    module is beyond this: HELIOS_DOIT_FORK=fresh gives each chunk a new process.
    """

    def __init__(self) -> None:
        self.modules = set(sys.modules)
        self.installed = tuple({path for key, path in sysconfig.get_paths().items() if key != "data"})
        self.saved = {name: get() for name, (get, _) in _PUT_BACK.items()}
        self.builtins = dict(vars(builtins))
        self.state = _process_state()
        self.threads: int | None = None  # native threads after the first command

    def restored(self) -> bool:
        """Put back what can be; True if the rest is as it was (and nothing of the command runs on)."""
        for name, (_, put) in _PUT_BACK.items():
            put(self.saved[name])
        names = vars(builtins)
        for name in set(names) - set(self.builtins):
            del names[name]
        names.update((name, value) for name, value in self.builtins.items() if names.get(name) is not value)
        for name in set(sys.modules) - self.modules:
            origin = getattr(getattr(sys.modules[name], "__spec__", None), "origin", None) or ""
            if not (name.startswith("helios_doit") or origin in ("built-in", "frozen") or origin.startswith(self.installed)):
                del sys.modules[name]
        gc.collect()  # the composition's module, its caches and frames: gone before the next chunk
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass  # a child that ended: reaped
            return False  # a child still runs
        except ChildProcessError:
            pass
        threads = len(os.listdir("/proc/self/task"))
        if self.threads is None:
            self.threads = threads
        return threading.active_count() == 1 and threads <= self.threads and _process_state() == self.state


def _numpy() -> Any:
    return sys.modules.get("numpy")


def _put_list(target: list[Any]) -> Callable[[list[Any]], None]:
    def put(saved: list[Any]) -> None:
        target[:] = saved
    return put


#: name: (read it, set it back).
_PUT_BACK: dict[str, tuple[Callable[[], Any], Callable[[Any], None]]] = {
    "path": (lambda: list(sys.path), _put_list(sys.path)),
    "meta_path": (lambda: list(sys.meta_path), _put_list(sys.meta_path)),
    "path_hooks": (lambda: list(sys.path_hooks), _put_list(sys.path_hooks)),
    "path_importer_cache": (lambda: None, lambda _: sys.path_importer_cache.clear()),
    "filters": (lambda: list(warnings.filters),
                lambda saved: (_put_list(warnings.filters)(saved), warnings._filters_mutated())),  # type: ignore[attr-defined]
    "showwarning": (lambda: warnings.showwarning, lambda saved: setattr(warnings, "showwarning", saved)),
    "formatwarning": (lambda: warnings.formatwarning, lambda saved: setattr(warnings, "formatwarning", saved)),
    **{hook: ((lambda hook=hook: getattr(sys, hook)), (lambda saved, hook=hook: setattr(sys, hook, saved)))
       for hook in ("excepthook", "unraisablehook", "displayhook", "breakpointhook")},
    "threading.excepthook": (lambda: threading.excepthook, lambda saved: setattr(threading, "excepthook", saved)),
    "recursionlimit": (sys.getrecursionlimit, sys.setrecursionlimit),
    "switchinterval": (sys.getswitchinterval, sys.setswitchinterval),
    "int_max_str_digits": (sys.get_int_max_str_digits, sys.set_int_max_str_digits),
    "socket timeout": (socket.getdefaulttimeout, socket.setdefaulttimeout),
    "numpy errors": (lambda: _numpy() and _numpy().geterr(), lambda saved: saved and _numpy().seterr(**saved)),
    "numpy print": (lambda: _numpy() and _numpy().get_printoptions(),
                    lambda saved: saved and _numpy().set_printoptions(**saved)),
    "decimal": (lambda: None, lambda _: "decimal" in sys.modules and sys.modules["decimal"].setcontext(
        sys.modules["decimal"].Context())),  # a new thread's context
}


def _process_state() -> tuple[object, ...]:
    umask = os.umask(0o22)
    os.umask(umask)
    handlers = {signum: signal.getsignal(signum) for signum in signal.valid_signals()}
    limits = {name: resource.getrlimit(getattr(resource, name)) for name in dir(resource) if name.startswith("RLIMIT_")}
    return (handlers, signal.pthread_sigmask(signal.SIG_BLOCK, []), umask, signal.getitimer(signal.ITIMER_REAL),
            signal.getitimer(signal.ITIMER_VIRTUAL), signal.getitimer(signal.ITIMER_PROF), limits,
            os.getpriority(os.PRIO_PROCESS, 0), locale.setlocale(locale.LC_ALL), sys.gettrace(), sys.getprofile(),
            gc.isenabled(), gc.get_threshold(), faulthandler.is_enabled(), sorted(os.listdir("/proc/self/fd")))
