"""Where a command's output goes: its log file, and the terminal a line at a time.

Under `-n` several workers share one terminal; each live line is written with a single
`write(2)` of at most PIPE_BUF bytes, which POSIX keeps whole, so lines of different chunks
never mix within a line. Carriage-return progress is shown as its last state per line.
"""
from __future__ import annotations

import os
import select
import time
from typing import BinaryIO

_PIPE_BUF = getattr(select, "PIPE_BUF", 512)
_FDS = {"stdout": 1, "stderr": 2}


class LogSink:
    """An OutputSink that tees into a log file and prefixed live lines."""

    def __init__(self, log: BinaryIO, prefix: str, live: bool = True):
        self.log = log
        self.prefix = prefix.encode()
        self.live = live
        self.partial = {"stdout": b"", "stderr": b""}

    def __call__(self, stream: str, data: bytes) -> None:
        self.log.write(data)
        self.log.flush()
        if not self.live:
            return
        lines = (self.partial[stream] + data).split(b"\n")
        self.partial[stream] = lines.pop()
        for line in lines:
            self._show(stream, line)

    def close(self) -> None:
        for stream, rest in self.partial.items():
            if rest and self.live:
                self._show(stream, rest)
        self.partial = {"stdout": b"", "stderr": b""}

    def _show(self, stream: str, line: bytes) -> None:
        line = line.rstrip(b"\r").rsplit(b"\r", 1)[-1]
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


def open_log(path: os.PathLike[str], header: str) -> BinaryIO:
    """Logs keep every attempt: each run appends a header line and, at the end, a footer."""
    log = open(path, "ab")
    log.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {header}\n".encode())
    log.flush()
    return log
