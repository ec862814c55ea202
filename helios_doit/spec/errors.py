"""`JobError`: a job that must not run, every fault of it one line (exit 2).

Its own module so that the video tools and option parsing can raise it without importing the
JobSpec models (and pydantic) in every render and merge process.
"""
from __future__ import annotations

from ..core.errors import BadInput


class JobError(BadInput):
    """A job that must not run. `lines` holds one self-contained line per fault."""

    def __init__(self, lines: list[str]):
        super().__init__(*lines)
