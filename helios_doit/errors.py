"""The error every entry point turns into one line per fault and exit code 2.

Its own module so that the video tools and option parsing can raise it without importing the
JobSpec models (and pydantic) in every render and merge process.
"""
from __future__ import annotations

import re


class JobError(Exception):
    """A job that must not run. `lines` holds one self-contained line per fault."""

    def __init__(self, lines: list[str]):
        # A newline (or other control character) in a path from the job must not split a line.
        lines = [_CONTROL.sub(lambda m: repr(m.group())[1:-1], line) for line in lines]
        super().__init__("\n".join(lines))
        self.lines = lines


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
