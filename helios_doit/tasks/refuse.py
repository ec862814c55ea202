"""Bad input stops everything before it starts: one line per fault on stderr, exit code 2."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable, NoReturn, TypeVar

from ..spec.errors import JobError
from ..spec.load import load_job
from ..spec.model import Job

T = TypeVar("T")


def load_or_exit(source: str | os.PathLike[str], output_root: str | None = None, cwd: str | None = None,
                 storage: str | None = None) -> Job:
    """A job; on a bad one print one line per fault and exit 2 before anything runs."""
    return refuse_bad(lambda: load_job(source, output_root, Path(cwd) if cwd else None, storage))


def refuse_bad(make: Callable[[], T]) -> T:
    """`make()`, or its JobError as one line per fault and exit 2."""
    try:
        return make()
    except JobError as err:
        refuse(err)


def refuse(err: JobError) -> NoReturn:
    for line in err.lines:
        sys.stderr.write(f"helios-doit: {line}\n")
    raise SystemExit(2) from None
