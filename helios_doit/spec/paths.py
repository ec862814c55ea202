"""Two rules about where a job's files may be, shared by the job checks and the tools that write jobs.

Its own module, like `errors`, so that the video tools can use them without importing the JobSpec
models (and pydantic).
"""
from __future__ import annotations

import re
from pathlib import Path

#: `scheme://...`: a URL (s3://, https://), never a path to write (the shell would make a folder `s3:`).
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(text: str) -> bool:
    return bool(_URL.match(text))


def too_wide(folder: Path) -> bool:
    """`/` or the home folder: never a project folder that outputs may be anywhere under (a job
    from elsewhere would have the run of the whole disk)."""
    return folder in (Path("/"), Path.home().resolve())
