"""Remove the coverage data files of processes killed while they wrote them (and stray journals).

The suite SIGKILLs runners, doit's workers and forked renders on purpose, at any moment; one that
dies while coverage saves its data leaves a file that cannot be read. `coverage combine` keeps
such a file, warns about it, and `coverage report` warns again and counts it "errored": noise on
a passing run, for a file that holds nothing to measure. Usage: unreadable_coverage.py FOLDER
"""
from __future__ import annotations

import glob
import os
import sys

from coverage import CoverageData
from coverage.exceptions import CoverageException


def main(folder: str) -> int:
    for path in sorted(glob.glob(os.path.join(folder, "run.*"))):
        if path.endswith("-journal"):
            continue
        try:
            CoverageData(path).read()
        except CoverageException:
            os.remove(path)
    for journal in glob.glob(os.path.join(folder, "run.*-journal")):
        if not os.path.exists(journal[: -len("-journal")]):
            os.remove(journal)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
