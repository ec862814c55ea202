"""Where a command's output goes: its log file, and the terminal a line at a time.

Under `-n` several workers share one terminal; each live line is written with a single
`write(2)` of at most PIPE_BUF bytes, which POSIX keeps whole, so lines of different chunks
never mix within a line. Carriage-return progress is shown as its last state per line.

Everything here is linear in the output's size, and bounded: a line without a newline is kept
to its last `LIVE_LINE` bytes for the terminal, and one attempt's log keeps its first three
quarters of `HELIOS_DOIT_LOG_LIMIT` bytes as they come and its last quarter at the end, with a
line saying how much was cut between them (a chatty renderer cannot fill the disk). A log
already over the limit when an attempt starts is rotated to `<log>.1`.
"""
from __future__ import annotations

import os
import select
import stat
import time
from typing import BinaryIO, Callable

from ..state.folder import open_own

_PIPE_BUF = getattr(select, "PIPE_BUF", 512)
_FDS = {"stdout": 1, "stderr": 2}
#: Bytes of one line shown live, at most (the end of the line: where progress is).
LIVE_LINE = 8192
#: Bytes of one attempt's output kept in its log (default 16 MiB).
LOG_LIMIT_ENV = "HELIOS_DOIT_LOG_LIMIT"
DEFAULT_LOG_LIMIT = 16 * 1024 * 1024


def log_limit() -> int:
    raw = os.environ.get(LOG_LIMIT_ENV, "")
    return int(raw) if raw.isdigit() and int(raw) >= 1024 else DEFAULT_LOG_LIMIT


class LogSink:
    """An OutputSink that tees into a task's log (bounded) and prefixed live lines."""

    def __init__(self, log_path: os.PathLike[str] | str, header: str, prefix: str,
                 on_output: Callable[[bytes], None] | None = None):
        self.prefix = prefix.encode()
        self.on_output = on_output  # sees the command's output as it comes (how far a renderer is)
        self.partial = {"stdout": b"", "stderr": b""}
        limit = log_limit()
        self.head_room = limit - limit // 4  # written as it comes
        self.tail_limit = limit // 4  # the end, kept in memory and written at close
        self.tail = bytearray()
        self.cut = 0
        self.path = os.fspath(log_path)
        self.log: BinaryIO | None = open_log(self.path, header, limit)

    def __call__(self, stream: str, data: bytes) -> None:
        self._keep(data)
        if self.on_output is not None:
            self.on_output(data)
        lines = data.split(b"\n")
        if len(lines) == 1:  # no line ends here: keep the end of the line, bounded
            self.partial[stream] = (self.partial[stream] + data)[-LIVE_LINE:]
            return
        self._show(stream, self.partial[stream] + lines[0])
        for line in lines[1:-1]:
            self._show(stream, line)
        self.partial[stream] = lines[-1][-LIVE_LINE:]

    def close(self, footer: str) -> None:
        """Show what is left of unfinished lines, write the log's tail and the attempt's outcome."""
        for stream, rest in self.partial.items():
            if rest:
                self._show(stream, rest)
        self.partial = {"stdout": b"", "stderr": b""}
        if self.log is None:
            return
        if self.cut:
            self._write(f"\n=== [{self.cut} bytes of output cut here: {LOG_LIMIT_ENV} is {log_limit()}] ===\n".encode())
        self._write(bytes(self.tail))
        self._write(f"=== {footer}\n".encode())
        self.log.close()
        self.log = None

    def _keep(self, data: bytes) -> None:
        if self.head_room > 0:
            now, data = data[: self.head_room], data[self.head_room:]
            self.head_room -= len(now)
            self._write(now)
        if data:
            self.tail += data
            if len(self.tail) > 2 * self.tail_limit:  # trimmed now and then: amortised linear
                extra = len(self.tail) - self.tail_limit
                del self.tail[:extra]
                self.cut += extra

    def _write(self, data: bytes) -> None:
        if self.log is None or not data:
            return
        try:
            self.log.write(data)
            self.log.flush()
        except OSError as exc:  # a full disk must not kill the render; the log just stops
            _write_all(2, f"helios-doit: cannot write the log {self.path} ({exc.strerror}); "
                          "this attempt's output is no longer logged\n".encode())
            try:
                self.log.close()
            except OSError:
                pass
            self.log = None

    def _show(self, stream: str, line: bytes) -> None:
        line = line.rstrip(b"\r").rsplit(b"\r", 1)[-1][-LIVE_LINE:]
        room = max(64, _PIPE_BUF - len(self.prefix) - 1)
        for start in range(0, max(len(line), 1), room):
            _write_all(_FDS[stream], self.prefix + line[start : start + room] + b"\n")


def _write_all(fd: int, data: bytes) -> None:
    try:
        while data:
            data = data[os.write(fd, data) :]
    except BlockingIOError:
        time.sleep(0.01)
        _write_all(fd, data)
    except OSError:
        pass  # a closed terminal must not fail the render; the log still has everything


def open_log(path: os.PathLike[str] | str, header: str, limit: int | None = None) -> BinaryIO:
    """Logs keep every attempt: each appends a header line and, at the end, a footer. A log over
    `limit` is first rotated to `<log>.1`, so a task's logs stay within about four limits. A link
    (or anything but a plain file of ours) in the log's place is moved aside, never written through."""
    path = os.fspath(path)
    limit = log_limit() if limit is None else limit
    try:
        st = os.lstat(path)
        if stat.S_ISREG(st.st_mode) and st.st_size > limit:
            os.replace(path, path + ".1")  # a rename: whatever is at `.1` is replaced, never written through
    except FileNotFoundError:
        pass
    fd = open_own(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT,
                  say=lambda line: _write_all(2, f"helios-doit: {line}\n".encode(errors="replace")))
    log = os.fdopen(fd, "ab")
    log.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {header}\n".encode())
    log.flush()
    return log
