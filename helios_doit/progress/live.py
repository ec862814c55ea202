"""The live progress display in a terminal, and how chunk commands' output stays readable under it.

A rich `Live` display redraws itself by moving the cursor up over its last drawing. Chunk
commands' prefixed lines do not pass through Python's `sys.stdout`: doit's worker processes
write them with write(2) straight to fd 1 and 2, so rich's own `redirect_stdout` cannot see
them, and each such line would be overwritten or torn by the next redraw. So while the
display is up, fd 1 (and fd 2 when it is a terminal) of this process point into pipes; the
worker processes started after that inherit them; a reader thread here prints every whole
line *above* the display through rich. Nothing is lost or mixed: each line reaches the pipe
in one write of at most PIPE_BUF bytes (see output.py), and the terminal gets the lines in
the order the pipe delivered them. `close()` puts the terminal back before the summary.
"""
from __future__ import annotations

import os
import selectors
import sys
import threading
import time
from typing import Any

from rich.console import Console, ConsoleDimensions, ConsoleOptions, Group, RenderableType, RenderResult
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from .model import Progress


class _TerminalConsole(Console):
    """A console on a saved terminal fd, sized from that fd (fd 0-2 may be pipes now)."""

    def __init__(self, fd: int, **kwargs: Any):
        self._terminal_fd = fd
        super().__init__(file=open(fd, "w", encoding="utf-8", errors="replace", closefd=False), **kwargs)

    @property
    def size(self) -> ConsoleDimensions:
        try:
            columns, lines = os.get_terminal_size(self._terminal_fd)
        except OSError:
            columns, lines = 80, 25
        return ConsoleDimensions(columns or 80, lines or 25)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        """rich sets it; this console always asks its terminal instead."""


class LiveView:
    """A bar with chunk and frame counts, running chunk ids, elapsed time and ETA, at the bottom."""

    def __init__(self, progress: Progress):
        self.progress = progress
        self.view: tuple[tuple[int, int, bool], list[str]] = (progress.bar(), progress.display_lines())
        self.saved: dict[int, int] = {}  # fd -> a copy of what it was (the terminal)
        self.readers: list[int] = []
        self.terminal = -1
        self.console: Console | None = None
        self.live: Live | None = None
        self.reader: threading.Thread | None = None
        self.drawn = 0.0  # when the display was last drawn (monotonic)

    def start(self) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        self.terminal = os.dup(1)
        self.console = _TerminalConsole(self.terminal, force_terminal=True, highlight=False)
        for fd in (1, 2) if os.isatty(2) else (1,):
            read, write = os.pipe()
            self.saved[fd] = os.dup(fd)
            os.dup2(write, fd)  # inheritable: workers started from now on write into the pipe
            os.close(write)
            self.readers.append(read)
        self.reader = threading.Thread(target=self._read, name="helios-doit-output", daemon=True)
        self.reader.start()
        # Drawn from the reporter's ticker (`update`), not from a thread of rich's own: a runner
        # whose threads are all its own forks its renders instead of exec'ing a new Python.
        # The drawing is made from the view each time rich renders it: when it redraws, and under
        # every line printed above it (rich would otherwise reprint what it drew last).
        self.live = Live(_Drawing(self), console=self.console, auto_refresh=False,
                         redirect_stdout=False, redirect_stderr=False, transient=False)
        self.live.start(refresh=True)

    def update(self) -> None:
        """Called with the reporter's lock held, 10 times a second, whenever events came in and
        before a line is printed above the display: take a copy (cheap: no chunk is walked), so
        that whatever draws next shows it; draw at most 4 times a second."""
        self.view = (self.progress.bar(), self.progress.display_lines())
        now = time.monotonic()
        if self.live is not None and now - self.drawn >= 0.25:
            self.drawn = now
            self.live.refresh()

    def print(self, text: str) -> None:
        """A line of our own (doit's `.  chunk:3`, `ok ...`), above the display."""
        if self.console is not None:
            self.console.print(Text(text.rstrip("\n")), soft_wrap=True)

    def close(self) -> None:
        """Give the terminal back: restore fd 1 and 2, show what is left in the pipes, final drawing."""
        self.update()
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, saved in self.saved.items():
            os.dup2(saved, fd)
            os.close(saved)
        self.saved.clear()
        if self.reader is not None:
            self.reader.join(2)  # ends when every worker process has closed its end
        if self.live is not None:
            self.live.stop()
        if self.console is not None:
            self.console.file.flush()

    def _read(self) -> None:
        selector = selectors.DefaultSelector()
        partial: dict[int, bytes] = {}
        for fd in self.readers:
            selector.register(fd, selectors.EVENT_READ)
            partial[fd] = b""
        while selector.get_map():
            for key, _ in selector.select():
                fd = int(key.fd)
                data = os.read(fd, 65536)
                if not data:
                    selector.unregister(fd)
                    os.close(fd)
                    data, partial[fd] = partial[fd] + b"\n" if partial[fd] else b"", b""
                else:
                    data, partial[fd] = _whole_lines(partial[fd] + data)
                if data and self.console is not None:
                    # one print per read: a burst of lines costs one redraw, not one each
                    self.console.print(Text.from_ansi(data.decode(errors="replace").rstrip("\n")), soft_wrap=True)
        selector.close()

    def _render(self) -> RenderableType:
        (total, made, fatal), lines = self.view
        bar = ProgressBar(total=max(total, 1), completed=made, width=30, complete_style="red" if fatal else "green")
        grid = Table.grid(padding=(0, 1))
        grid.add_row(bar, Text(lines[0]))
        return Group(grid, *(Text(line, no_wrap=True, overflow="ellipsis") for line in lines[1:]))


class _Drawing:
    """The display, as rich renders it: from the view at that moment."""

    def __init__(self, view: LiveView):
        self.view = view

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.view._render()


def _whole_lines(data: bytes) -> tuple[bytes, bytes]:
    end = data.rfind(b"\n") + 1
    return data[:end], data[end:]
