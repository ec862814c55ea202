"""`helios-doit job run FILE`: Helios' `job run` flags over doit's own `DoitMain`.

It builds the same task namespace as dodo.py: one executor, one meaning of "done". Options it
does not know go to `doit run`.
"""
from __future__ import annotations

import argparse
import sys

from ..state.names import CHUNK, MERGE, TaskName
from ..tasks.refuse import load_or_exit, refuse_bad
from ..tasks.session import namespace
from .doit_run import EXIT_CODES, Stopped, run_doit
from .flags import add_option_flags, options_from_flags


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    run = actions.add_parser(
        "run",
        help="render a job's chunks and merge them",
        description="Render a job's chunks and merge them. Options not listed here are passed to `doit run`.",
    )
    run.add_argument("file", metavar="FILE", help="job file (JSON or YAML), or an http(s) URL")
    run.add_argument("--chunk", type=int, metavar="ID", help="render only this chunk; never merges")
    run.add_argument("--concurrency", type=int, default=1, metavar="N", help="chunks rendered at once (doit -n)")
    run.add_argument("--no-merge", action="store_true", help="render the chunks but do not merge")
    run.add_argument("--merge", choices=["builtin", "command"], help="merge with the built-in stitcher, or the job's mergeCommand")
    run.add_argument("--output-root", metavar="DIR", help="also allow outputs under DIR (outside the job folder)")
    add_option_flags(run)


def run(args: argparse.Namespace) -> int:
    if args.concurrency < 1:
        return _usage(f"--concurrency must be at least 1, got {args.concurrency}")
    job = load_or_exit(args.file, args.output_root)
    run_options = refuse_bad(lambda: options_from_flags(args, args.doit_args))
    if args.chunk is not None and args.chunk not in job.chunk_ids:
        known = ", ".join(map(str, job.chunk_ids[:20])) + (", ..." if len(job.chunk_ids) > 20 else "")
        return _usage(f"{args.file}: no chunk with id {args.chunk}; the job has chunks {known}")
    if args.chunk is not None:
        targets = [TaskName(args.chunk).doit]
    else:
        targets = [CHUNK] if args.no_merge else [CHUNK, MERGE]
    concurrency = ["-n", str(args.concurrency)] if args.concurrency > 1 else []
    keep_going = ["--continue"] if run_options.keep_going and "--continue" not in args.doit_args else []
    run_args = ["run", *concurrency, *keep_going, *args.doit_args, *targets]
    try:
        return EXIT_CODES.get(run_doit(namespace(job, args.merge, run_options), run_args), 1)
    except Stopped as stop:
        return stop.code


def _usage(message: str) -> int:
    sys.stderr.write(f"helios-doit: {message}\n")
    return 2
