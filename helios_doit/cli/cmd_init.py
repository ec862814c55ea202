"""`helios-doit init [FOLDER]`: a dodo.py in a job folder, so that plain doit runs the job there.

`doit -n 4` (the folder's job.json), `doit -n 4 job=other.json`, `doit chunk:0`, `doit list`:
the same tasks, records and guarantees as `helios-doit job run`, with helios-doit installed
from a wheel (the repository's own dodo.py is for the bundled example).
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..core.errors import os_fault
from ..state.atomic import write_atomic
from ..core.usage import one_line

TEMPLATE = '''"""doit entry point written by `helios-doit init`: `doit -n 4` renders {job} (or job=FILE)."""
import os

from helios_doit.tasks.session import dodo

globals().update(dodo(os.path.join(os.path.dirname(os.path.abspath(__file__)), "{job}")))
'''


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", nargs="?", default=".", metavar="FOLDER", help="the job's folder (default: here)")
    parser.add_argument("--job", default="job.json", metavar="FILE", help="the job plain `doit` runs (default job.json)")


def run(args: argparse.Namespace) -> int:
    if "/" in args.job or args.job.startswith(".") or '"' in args.job or "\\" in args.job or not args.job.isprintable():
        return one_line("helios-doit init", f"--job {args.job!r}: give a file name in the folder, e.g. --job job.json")
    folder = Path(args.folder)
    if not folder.is_dir():
        return one_line("helios-doit init", f"{args.folder}: no such folder; create it, or give the job's folder")
    target = folder / "dodo.py"
    text = TEMPLATE.format(job=args.job)
    refused = f"{target} exists and is not ours; it was left as it is (move it away, then run init again)"
    try:
        if target.is_symlink() or target.exists():
            if target.is_file() and not target.is_symlink() and target.read_text(errors="replace") == text:
                print(f"{target} is already there; run `doit -n 4` in {folder}")
                return 0
            return one_line("helios-doit init", refused)
        temp = folder / f".dodo.py.{os.getpid()}.tmp"
        write_atomic(temp, text.encode())
        try:
            os.link(temp, target)  # whole, and never over a file that appeared meanwhile
        except FileExistsError:
            return one_line("helios-doit init", refused)
        finally:
            temp.unlink(missing_ok=True)
    except OSError as exc:
        return one_line("helios-doit init", f"{target}: {os_fault(exc)}", 1)
    print(f"wrote {target}; in {folder}: `doit -n 4` renders {args.job}, `doit chunk:0` one chunk, `doit list` lists them")
    return 0
