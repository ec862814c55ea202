"""How a command string becomes a process, as cheaply as its meaning allows.

A job's command is shell syntax and must behave exactly as `/bin/sh -c` would run it. Most
render commands are plain words, though, and for those the shell is only an extra process:
dash forks the last command of `-c` instead of exec'ing it, so every chunk would cost two
process starts. Like make, a command made only of plain words (no quoting, expansion,
redirection, operators, assignments, comments, keywords or builtins) is split on blanks and
exec'd directly; anything else goes to the shell, untouched.

Our own `helios-doit render` / `helios-doit merge` go one step further: a new Python would
spend ~0.2 s importing PyAV and numpy before its first frame, so the runner forks itself
instead (a zygote, as build servers do) and runs the same entry point in the child. The
runner never runs a chunk itself, so every child starts as the runner is, never as another
chunk left a process: a chunk may do anything to its own process (threads, environment,
affinity, patched modules) and nothing of it reaches the next chunk. The child is a process
of its own, in its own session, with the command's folder, environment and pipes, so
stopping, timeouts and exit codes work exactly as for any command.
"""
from __future__ import annotations

import contextlib
import gc
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import traceback
import warnings
from typing import Callable, Mapping

from .own import lookup

SHELL = "/bin/sh"

#: Any of these means the shell has something to do: quoting, expansion, globbing, history,
#: redirection, pipes, lists, subshells, groups, comments, escapes, line breaks.
_SPECIAL = re.compile(r"""[#;"'*?\[\]&|<>(){}$`^~!\\\n\r\v\f]""")

#: Words the shell gives a meaning of its own when they come first (POSIX special builtins,
#: regular builtins that act on the shell itself, reserved words, and common extensions).
_SHELL_WORDS = frozenset("""
    . : alias bg break case cd command continue do done elif else esac eval exec exit export fc
    fg fi for function getopts hash if in jobs kill local logout read readonly return select set
    shift source test then time times trap type typeset ulimit umask unalias unset until wait
    while echo printf pwd true false chdir
    builtin caller declare dirs disown enable history let mapfile popd pushd readarray
    shopt suspend bind compgen complete compopt coproc
""".split())


def argv_for(command: str, env: Mapping[str, str] | None = None) -> list[str]:
    """The argv to exec for `command`: its own words when they need no shell, else sh -c.

    `env` is the command's environment: exported bash functions (when /bin/sh is bash) could
    give any word a meaning of its own, so their presence sends every command to the shell.
    """
    if _SPECIAL.search(command):
        return [SHELL, "-c", command]
    words = [word for word in re.split(r"[ \t]+", command) if word]
    if not words or "=" in words[0] or words[0] in _SHELL_WORDS:
        return [SHELL, "-c", command]
    if any(key.startswith("BASH_FUNC_") for key in (os.environ if env is None else env)):
        return [SHELL, "-c", command]
    return words


def exec_failure(argv: list[str], error: OSError) -> tuple[int, str]:
    """What sh would have said and returned when a command cannot be exec'd (127 or 126)."""
    if isinstance(error, FileNotFoundError):
        return 127, f"{argv[0]}: not found"
    return 126, f"{argv[0]}: cannot execute: {error.strerror}"


#: How our own subcommands run: forked from the runner (the default), or with 0, exec'd as
#: `helios-doit` like any other program.
FORK_ENV = "HELIOS_DOIT_FORK"


def forks(env: Mapping[str, str] | None) -> bool:
    """Do our own subcommands fork from the runner (not `HELIOS_DOIT_FORK=0`)?"""
    return (env if env is not None else os.environ).get(FORK_ENV, "1").strip().lower() not in ("0", "false", "no")


def own_command(argv: list[str], env: Mapping[str, str] | None) -> list[str] | None:
    """The arguments of a `helios-doit render|merge ...` that runs this very installation, else None."""
    if len(argv) < 2 or lookup(argv[1]) is None or os.path.basename(argv[0]) != "helios-doit":
        return None
    if not forks(env):
        return None
    path = (env if env is not None else os.environ).get("PATH", os.defpath)
    found = shutil.which(argv[0], path=path) if os.sep not in argv[0] else argv[0]
    ours = os.path.join(os.path.dirname(sys.executable), "helios-doit")
    if found is None or not os.path.exists(ours) or not os.path.samefile(found, ours):
        return None
    return argv[1:]


#: The names of the runner's own threads (progress, watchdog, output), which hold no lock a forked child takes.
OWN_THREAD = "helios-doit-"
#: Signals held back while a child is forked: until the child has its own session and default
#: handlers, and the parent knows the child, a stop must reach neither half-made process.
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT}


class Forked:
    """A child forked to run one of our own subcommands; what LocalAdapter needs of a Popen.

    `on_fork(pid)` runs in the parent once the child leads its own session and before the child
    may do anything: the child waits for a go byte, and exits at once if the parent died first.
    """

    def __init__(self, args: list[str], cwd: str, env: dict[str, str] | None,
                 on_fork: Callable[[int], None] | None = None):
        command = lookup(args[0])
        if command is None:
            raise ValueError(f"helios-doit {args[0]}: not one of our own subcommands")
        command.preload()  # here, once: every later child has it loaded
        if not os.path.isdir(cwd):
            raise FileNotFoundError(2, "No such file or directory", cwd)  # as Popen says it
        self.args = args
        self.returncode: int | None = None
        self.pid = 0
        fds: list[int] = []
        held = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            for _ in range(4):
                fds.extend(os.pipe())
            out_r, out_w, err_r, err_w, ready_r, ready_w, go_r, go_w = fds
            pid = _fork_runner()
            if pid == 0:  # pragma: no cover  (the child; measured through its effects)
                _child(command.main, args, cwd, env, out_w, err_w, ready_w, go_r, held)
            self.pid = pid
            for fd in (out_w, err_w, ready_w, go_r):
                os.close(fd)
                fds.remove(fd)
            os.read(ready_r, 1)  # EOF once the child leads its own session: a stop now reaches it
            os.close(ready_r)
            fds.remove(ready_r)
            if on_fork is not None:
                on_fork(pid)
            os.write(go_w, b"g")
            os.close(go_w)
            fds.remove(go_w)
            self.stdout = open(out_r, "rb", buffering=0)
            fds.remove(out_r)
            self.stderr = open(err_r, "rb", buffering=0)
            fds.remove(err_r)
            signal.pthread_sigmask(signal.SIG_SETMASK, held)  # a stop held back is handled here ...
        except BaseException:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
            for fd in fds:
                os.close(fd)
            if self.pid:  # ... and the child it interrupted is stopped with it
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
                for stream in ("stdout", "stderr"):
                    if hasattr(self, stream):
                        getattr(self, stream).close()
            raise

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if timeout is None:
            while self.returncode is None:
                _, status = os.waitpid(self.pid, 0)
                self.returncode = os.waitstatus_to_exitcode(status)
            return self.returncode
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(["helios-doit", *self.args], timeout)
            time.sleep(0.01)
        assert self.returncode is not None
        return self.returncode


def _fork_runner() -> int:
    """`os.fork()` of the runner, its buffered output written first (or the child would write it
    again). Call with STOP_SIGNALS blocked."""
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.flush()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: "multi-threaded, use of fork()"
        return os.fork()


def _child(main: Callable[[list[str]], int], args: list[str], cwd: str, env: dict[str, str] | None, out_w: int,
           err_w: int, ready_w: int, go_r: int, mask: set[signal.Signals | int]) -> None:
    """Become `helios-doit ARGS` as a fresh process would be, run it, and never return."""
    code = 1
    try:
        try:
            os.setsid()
            os.close(ready_w)
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, 0)
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            os.dup2(go_r, 3)
            _fresh_streams()
            os.closerange(4, os.sysconf("SC_OPEN_MAX"))  # the runner's locks, logs and doit's queues
            if os.read(3, 1) != b"g":  # the runner died before it could register this child
                os._exit(1)
            os.close(3)
            _become_child(mask)
            code = _run_entry(main, args, cwd, env)
        except KeyboardInterrupt:
            _die_by_sigint()
        except BaseException:
            traceback.print_exc()
        finally:
            _flush()
    finally:
        os._exit(code)  # whatever happened above, never return into the runner's stack


def _become_child(mask: set[signal.Signals | int]) -> None:
    """What every process forked to run our subcommands does once, after it leads its own session."""
    gc.freeze()  # the runner's objects are never collected here: none can close a reused fd
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGCHLD):
        signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # a stop sent meanwhile arrives now


def _run_entry(main: Callable[[list[str]], int], args: list[str], cwd: str, env: dict[str, str] | None) -> int:
    """Run `helios-doit ARGS` (its registered `main`) in `cwd` with `env` (None: this process' own)
    as a fresh process would, on fds 0-2 as they are now; its exit code. KeyboardInterrupt is the
    caller's to die by."""
    os.chdir(cwd)
    if env is not None:
        os.environ.clear()
        os.environ.update(env)
    time.tzset()  # the command's TZ, as a new process reads it
    if "numpy.random" in sys.modules:  # its global generator is not reseeded by fork, unlike `random`
        sys.modules["numpy.random"].seed()  # (imported afresh, it seeds itself: no import here)
    _fresh_streams()
    sys.argv = ["helios-doit", *args]
    try:
        return _exit_code(main(args[1:]))
    except SystemExit as exc:
        return _exit_code(exc.code)
    finally:
        _flush()


def _fresh_streams() -> None:
    """Standard streams of this process' own on fds 0-2: the runner's may have been mid-write (and
    locked) on another thread when it forked."""
    sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False))
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), write_through=False)
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), line_buffering=True,
                                  errors="backslashreplace")


def _die_by_sigint() -> None:
    """End as an exec'd Python ends on Ctrl-C: killed by SIGINT."""
    _flush()
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGINT)


def _exit_code(value: object) -> int:
    if value is None:
        return 0
    if isinstance(value, int):
        return value & 0xFF
    print(value, file=sys.stderr)
    return 1


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
