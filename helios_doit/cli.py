"""`helios-doit job run FILE [--chunk ID] [--concurrency N] [--no-merge]`: Helios' flags over doit.

The CLI builds the same task namespace as dodo.py and hands it to doit's own `DoitMain`, so
there is one executor and one meaning of "done". Options it does not know go to `doit run`.
"""
from __future__ import annotations

import argparse
import sys

from doit.cmd_base import ModuleTaskLoader
from doit.doit_cmd import DoitMain

from . import supervise
from .tasks import load_or_exit, namespace

#: doit's exit codes -> ours: 0 done, 1 a chunk or the merge failed, 2 bad input or arguments.
_EXIT = {0: 0, 1: 1, 2: 1, 3: 2}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="helios-doit", description="Run chunked Helios render jobs with doit.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    job = commands.add_parser("job", help="run a job").add_subparsers(dest="action", required=True, metavar="ACTION")
    run = job.add_parser(
        "run",
        help="render a job's chunks and merge them",
        description="Render a job's chunks and merge them. Options not listed here are passed to `doit run`.",
    )
    run.add_argument("file", metavar="FILE", help="job file (JSON or YAML), or an http(s) URL")
    run.add_argument("--chunk", type=int, metavar="ID", help="render only this chunk; never merges")
    run.add_argument("--concurrency", type=int, default=1, metavar="N", help="chunks rendered at once (doit -n)")
    run.add_argument("--no-merge", action="store_true", help="render the chunks but do not merge")
    run.add_argument("--output-root", metavar="DIR", help="also allow outputs under DIR (outside the job folder)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args, doit_args = _parser().parse_known_args(argv)
    if args.concurrency < 1:
        return _usage(f"--concurrency must be at least 1, got {args.concurrency}")
    job = load_or_exit(args.file, args.output_root)
    if args.chunk is not None and args.chunk not in job.chunk_ids:
        known = ", ".join(map(str, job.chunk_ids[:20])) + (", ..." if len(job.chunk_ids) > 20 else "")
        return _usage(f"{args.file}: no chunk with id {args.chunk}; the job has chunks {known}")
    if args.chunk is not None:
        targets = [f"chunk:{args.chunk}"]
    else:
        targets = ["chunk"] if args.no_merge else ["chunk", "merge"]
    run_args = ["run", *(["-n", str(args.concurrency)] if args.concurrency > 1 else []), *doit_args, *targets]
    try:
        code = DoitMain(ModuleTaskLoader(namespace(job)), config_filenames=()).run(run_args)
    except KeyboardInterrupt:
        supervise.report_stop()
        return supervise.stop_code()
    return _EXIT.get(code, 1)


def _usage(message: str) -> int:
    sys.stderr.write(f"helios-doit: {message}\n")
    return 2
