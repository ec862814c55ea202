"""`helios-doit status JOB [--json]`: where every chunk and the merge stand; reads only (see tasks.status)."""
from __future__ import annotations

import argparse
import json
import sys

from ..spec.errors import JobError
from ..tasks.refuse import load_or_exit
from ..tasks.status import job_status, render_table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="JOB", help="job file (JSON or YAML), or an http(s) URL")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--output-root", metavar="DIR", help="as given to the run: outputs may be under DIR")
    parser.add_argument("--storage", metavar="URL", help="outputs and records go to this bucket folder (s3://bucket/folder)")
    parser.add_argument("--merge", choices=["builtin", "command"], help="as given to the run, if it was")


def run(args: argparse.Namespace) -> int:
    job = load_or_exit(args.file, args.output_root, storage=args.storage)
    try:
        report = job_status(job, args.merge)
    except JobError as err:
        for line in err.lines:
            print(f"helios-doit: {line}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2) if args.json else render_table(report))
    return 0
