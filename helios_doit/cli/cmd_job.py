"""`helios-doit job run FILE`: Helios' `job run` flags over doit's own `DoitMain`.

It builds the same task namespace as dodo.py: one executor, one meaning of "done". `doit run`'s
own options (`-a`, `-v 2`, `-P thread`...) pass through; anything else is refused with one line.
"""
from __future__ import annotations

import argparse

from ..state.names import CHUNK, MERGE, TaskName
from ..spec.errors import JobError
from ..tasks.options import MAX_WORKERS, refusal
from ..tasks.refuse import load_or_exit, refuse, refuse_bad
from ..tasks.session import namespace
from .doit_run import EXIT_CODES, Stopped, run_doit
from .flags import add_option_flags, options_from_flags
from ..core.usage import Parser, one_line


def add_arguments(parser: Parser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    run = actions.add_parser(
        "run",
        help="render a job's chunks and merge them",
        description="Render a job's chunks and merge them. doit run's own options (-a, -v 2, -P thread ...) pass through.",
    )
    run.add_argument("file", metavar="FILE", help="job file (JSON or YAML), or an http(s) URL")
    run.add_argument("--chunk", type=int, action="append", metavar="ID",
                     help="render only this chunk; repeat it for more (--chunk 1 --chunk 2); never merges")
    run.add_argument("--concurrency", type=int, default=1, metavar="N", help="chunks rendered at once (doit -n)")
    run.add_argument("--no-merge", action="store_true", help="render the chunks but do not merge")
    run.add_argument("--merge", choices=["builtin", "command"], help="merge with the built-in stitcher, or the job's mergeCommand")
    run.add_argument("--output-root", metavar="DIR", help="also allow outputs under DIR (outside the job folder)")
    run.add_argument("--storage", metavar="URL", help="outputs and records go to this bucket folder (s3://bucket/folder)")
    run.add_argument("--adapter", metavar="NAME", help="Helios' flag: local (the default) is the only one here; "
                     "see --executor, `helios-doit worker` and `helios-doit export`")
    add_option_flags(run)
    run.set_defaults(accept_extra=lambda extra: _doit_run_options(run, extra))


#: Helios adapters and what does their job here.
_ADAPTERS = {
    "aws": "AWS Batch: `helios-doit export` and `helios-doit worker`",
    "gcp": "Cloud Run jobs: `helios-doit worker` (it reads CLOUD_RUN_TASK_INDEX)",
    "k8s": "Kubernetes: `helios-doit export k8s`",
    "kubernetes": "Kubernetes: `helios-doit export k8s`",
}


#: `doit run`'s options that may pass through, and whether each takes a value. Not the others:
#: `--reporter`, `--db-file` and `--backend` are refused as plain doit refuses them (`tasks.options.REFUSED`),
#: `-o`, `--pdb` and the like take the terminal away.
_DOIT_OPTIONS = {"-a": False, "--always-execute": False, "-c": False, "--continue": False, "-v": True,
                 "--verbosity": True, "-n": True, "--process": True, "-P": True, "--parallel-type": True,
                 "-s": False, "--single": False, "--failure-verbosity": True, "--auto-delayed-regex": False}


def _doit_run_options(parser: Parser, extra: list[str]) -> list[str]:
    """`extra`, if it is only `doit run` options that may pass through; else one line and exit 2."""
    index = 0
    while index < len(extra):
        word = extra[index]
        name = word.split("=", 1)[0] if word.startswith("--") else word[:2]
        takes = _DOIT_OPTIONS.get(name)
        if (why := refusal(word)) is not None:  # said as plain doit says it
            refuse(JobError([why]))
        if takes is None:
            parser.unknown(extra[index:], _DOIT_OPTIONS)
        inline = "=" in word if word.startswith("--") else len(word) > 2  # --process=2, -n2
        if takes and not inline:
            if index + 1 >= len(extra) or extra[index + 1].startswith("-"):
                parser.error(f"option {word} needs a value")
            index += 1
        elif not takes and inline:
            parser.unknown(extra[index:], _DOIT_OPTIONS)
        index += 1
    return extra


def run(args: argparse.Namespace) -> int:
    if not 1 <= args.concurrency <= MAX_WORKERS:
        return one_line("helios-doit", f"--concurrency {args.concurrency}: give a whole number from 1 to {MAX_WORKERS} "
                        "(a run never starts more workers than it has chunks to run)")
    if args.adapter not in (None, "local"):
        here = _ADAPTERS.get(args.adapter.lower(), "batch schedulers: `helios-doit export k8s|slurm` and "
                                                    "`helios-doit worker`")
        return one_line("helios-doit", f"--adapter {args.adapter}: helios-doit runs chunks locally (--adapter local) or on Dask "
                      f"(--executor dask); for {here}")
    job = load_or_exit(args.file, args.output_root, storage=args.storage)
    run_options = refuse_bad(lambda: options_from_flags(args, ["-n", str(args.concurrency), *args.doit_args]))
    chunks = list(dict.fromkeys(args.chunk or []))  # as given, each once
    ids = set(job.chunk_ids)
    if unknown := [chunk_id for chunk_id in chunks if chunk_id not in ids]:
        known = ", ".join(map(str, job.chunk_ids[:20])) + (", ..." if len(job.chunk_ids) > 20 else "")
        which = f"chunk with id {unknown[0]}" if len(unknown) == 1 else f"chunks with ids {', '.join(map(str, unknown))}"
        return one_line("helios-doit", f"{args.file}: no {which}; the job has chunks {known}")
    if chunks:
        targets = [TaskName(chunk_id).doit for chunk_id in chunks]
    else:
        targets = [CHUNK] if args.no_merge else [CHUNK, MERGE]
    concurrency = ["-n", str(args.concurrency)] if args.concurrency > 1 else []
    keep_going = ["--continue"] if run_options.keep_going and "--continue" not in args.doit_args else []
    run_args = ["run", *concurrency, *keep_going, *args.doit_args, *targets]
    try:
        return EXIT_CODES.get(run_doit(namespace(job, args.merge, run_options), run_args), 1)
    except Stopped as stop:
        return stop.exit_code

