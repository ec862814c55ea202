"""`helios-doit render COMPOSITION -o OUT ...`: render a composition, or emit a chunked job for it
(`--emit-job`); the command lives with the video layer (`video.commands`), which the runner forks."""
from __future__ import annotations

from ..video.commands import add_render_arguments as add_arguments
from ..video.commands import render_command as run

__all__ = ["add_arguments", "run"]
