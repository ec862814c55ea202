"""`helios-doit prune JOB [--aside] [--scratch] [--older-than DAYS]`: give back the disk that a
job's evidence and caches hold, saying what goes.

A run never deletes what it did not write: a file found in an output's place, a wrong output kept
as the evidence of a failure, a damaged state entry all go into the state folder's `aside/`, and
a job in a bucket keeps a local mirror (scratch) on every machine that ran it. Both grow unseen;
`status` shows aside/, and this removes it once a person has looked. It removes nothing else: only
entries of that job's aside/ (never following a link out of it), and with `--scratch` the job's
folder in this machine's mirror of its bucket (a cache: the bucket holds everything), never while
a process on this machine uses the job (each holds a shared lock on that folder from the moment it
loads the job until it ends).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import stat
import time
from pathlib import Path

from ..core.errors import os_fault
from ..core.usage import one_line
from ..spec.load import locate
from ..state.folder import StateDir
from ..state.places import moved_at
from ..storage.mirror import mirror_unused
from ..storage.url import is_store_url
from ..tasks.refuse import refuse_bad
from ..tasks.status import bytes_under, human_size

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NOFOLLOW
DAY = 86400.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="JOB", help="job file (JSON or YAML), or its URL")
    parser.add_argument("--aside", action="store_true", help="remove what aside/ holds (the default when neither is given)")
    parser.add_argument("--scratch", action="store_true",
                        help="a job in a bucket: remove this machine's mirror of the job's folder (a cache)")
    parser.add_argument("--older-than", metavar="DAYS",
                        help="only aside/ entries moved there more than DAYS ago, and a mirror unused for as long")


def run(args: argparse.Namespace) -> int:
    days = _days(args.older_than)
    if days is not None and days < 0:
        return one_line("helios-doit prune", f"--older-than {args.older_than}: give a number of days, 0 or more (e.g. 7)")
    if args.scratch and not is_store_url(args.file):
        return one_line("helios-doit prune", f"--scratch: {args.file} is not a job in a bucket, so it has no scratch mirror "
                        "(its folder is not a cache); leave --scratch out")
    state, remote = refuse_bad(lambda: locate(args.file))
    try:
        if args.aside or not args.scratch:
            _prune_aside(StateDir(state).aside, days)
        if args.scratch and remote is not None:
            return _prune_scratch(remote.job_dir, remote.mirror, days)
    except OSError as exc:
        return one_line("helios-doit prune", os_fault(exc), 1)
    return 0


def _days(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        return -1.0
    return value if value == value and value != float("inf") else -1.0


def _prune_aside(aside: Path, days: float | None) -> None:
    """Every entry of aside/ (moved there more than `days` ago, if given), through the folder's own
    descriptor: a link in aside/ is removed as a link, its target never touched."""
    try:
        fd = os.open(aside, _DIR)
    except FileNotFoundError:
        print(f"{aside}: nothing to prune (there is no aside/ folder)")
        return
    except OSError as exc:
        if not os.path.islink(aside):
            raise
        raise OSError(exc.errno, "is a symlink, not a folder of helios-doit's; nothing was removed", str(aside)) from None
    removed, size, kept = 0, 0, 0
    try:
        for name in sorted(os.listdir(fd)):
            st = os.lstat(name, dir_fd=fd)
            moved = moved_at(name)
            if days is not None and time.time() - (st.st_mtime if moved is None else moved) < days * DAY:
                kept += 1
                continue
            bytes_ = bytes_under(aside / name)
            if stat.S_ISDIR(st.st_mode):
                shutil.rmtree(name, dir_fd=fd)
            else:
                os.unlink(name, dir_fd=fd)
            removed, size = removed + 1, size + bytes_
            print(f"removed {aside / name} ({human_size(bytes_)})")
    finally:
        os.close(fd)
    newer = f"; kept {kept} moved there in the last {days:g} days" if kept else ""
    print(f"{aside}: removed {removed} entr{'y' if removed == 1 else 'ies'} ({human_size(size)}){newer}")


def _prune_scratch(folder: Path, mirror: str, days: float | None) -> int:
    """The job's folder in this machine's mirror of its bucket, unless a process here uses a job
    there, in a folder below, or in a folder above (whose outputs may be in this one)."""
    if not os.path.lexists(folder):
        print(f"{folder}: nothing to prune (no mirror of the job on this machine)")
        return 0
    if os.path.islink(folder) or not folder.is_dir():
        return one_line("helios-doit prune", f"{folder}: is not a folder of helios-doit's mirror; nothing was removed", 1)
    with mirror_unused(str(folder), mirror) as unused:
        if not unused:
            return one_line("helios-doit prune", f"{folder}: a process on this machine uses the job now (a run, a "
                            "status, a render service); prune the scratch once it has ended", 1)
        newest, size = _newest_and_size(folder)
        if days is not None and time.time() - newest < days * DAY:
            print(f"{folder}: kept (used {(time.time() - newest) / DAY:.1f} days ago, less than {days:g})")
            return 0
        shutil.rmtree(folder)
    print(f"removed the scratch mirror {folder} ({human_size(size)}); the bucket holds everything, a run fetches what it needs")
    return 0


def _newest_and_size(folder: Path) -> tuple[float, int]:
    newest, size = folder.lstat().st_mtime, 0
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            with contextlib.suppress(OSError):
                st = os.lstat(os.path.join(root, name))
                newest = max(newest, st.st_mtime)
                size += st.st_size if not stat.S_ISDIR(st.st_mode) else 0
    return newest, size
