"""`helios-doit merge OUTPUT INPUT...`: stitch rendered chunks into one video, then verify it; the
command lives with the video layer (`video.commands`), which the runner forks for the built-in merge."""
from __future__ import annotations

from ..video.commands import add_merge_arguments as add_arguments
from ..video.commands import merge_command as run

__all__ = ["add_arguments", "run"]
