"""`helios-doit worker JOB [--index N]`: one chunk per task of a batch scheduler's array job.

Kubernetes Indexed Jobs, AWS Batch and Cloud Run jobs, and Slurm arrays start N copies of
one command and tell each its index in an environment variable. The index is the chunk's
position in `chunks`. The worker renders that chunk through the same doit task as every
other entry point (lock, records, verification), so it is idempotent: a chunk that is done
already exits 0 at once. Its exit code tells the scheduler whether trying again can help.
"""
from __future__ import annotations

import argparse
import os
import sys

from ..spec.errors import JobError
from ..state.files import read_json
from ..state.folder import StateDir
from ..state.names import TaskName
from ..tasks.options import RunOptions
from ..tasks.refuse import load_or_exit, refuse_bad
from ..tasks.session import namespace
from .doit_run import Stopped, run_doit
from .flags import add_option_flags, options_from_flags

#: Where schedulers put the array index, in the order they are read.
INDEX_VARIABLES = ("JOB_COMPLETION_INDEX", "AWS_BATCH_JOB_ARRAY_INDEX", "SLURM_ARRAY_TASK_ID", "CLOUD_RUN_TASK_INDEX")

EXIT_DONE = 0
EXIT_BAD_INPUT = 2  # the job, the index or an option is wrong: fatal
EXIT_FATAL = 3  # the chunk failed in a way a retry cannot fix (a fatal exit code, a wrong output)
EXIT_RETRY = 75  # EX_TEMPFAIL: the chunk failed, was killed or timed out; try again


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="JOB", help="job file (JSON or YAML) on storage every worker sees")
    parser.add_argument("--index", type=int, metavar="N", help=f"chunk position; default: ${INDEX_VARIABLES[0]} and the like")
    parser.add_argument("--output-root", metavar="DIR", help="also allow outputs under DIR")
    parser.add_argument("--storage", metavar="URL", help="outputs and records go to this bucket folder (s3://bucket/folder)")
    add_option_flags(parser)


def array_index(given: int | None, env: dict[str, str] | os._Environ[str] = os.environ) -> int:
    if given is not None:
        return given
    for name in INDEX_VARIABLES:
        value = env.get(name)
        if value not in (None, ""):
            try:
                return int(value)
            except ValueError:
                raise JobError([f"${name}={value!r}: not a chunk index; expected a whole number"]) from None
    raise JobError([f"no chunk index: pass --index N or set one of ${', $'.join(INDEX_VARIABLES)}"])


def run(args: argparse.Namespace) -> int:
    job = load_or_exit(args.file, args.output_root, storage=args.storage)
    index = refuse_bad(lambda: array_index(args.index))
    if not 0 <= index < len(job.spec.chunks):
        sys.stderr.write(f"helios-doit: {args.file}: index {index} is out of range; the job has {len(job.spec.chunks)} chunks (0-{len(job.spec.chunks) - 1})\n")
        return EXIT_BAD_INPUT
    run_options = refuse_bad(lambda: options_from_flags(args, []))
    chunk = job.spec.chunks[index]
    try:
        code = run_doit(namespace(job, options=run_options), ["run", TaskName(chunk.id).doit])
    except Stopped:
        return EXIT_RETRY
    if code == 0:
        return EXIT_DONE
    if code == 3:
        return EXIT_BAD_INPUT
    return _failure_code(StateDir(job.state_dir), chunk.id, run_options)


def _failure_code(state: StateDir, chunk_id: int, run_options: RunOptions) -> int:
    failure = read_json(state.failure(TaskName(chunk_id).key)) or {}
    if failure.get("exitCode") in run_options.fatal_exit_codes:
        return EXIT_FATAL
    if failure.get("exitCode") == 0:  # exited 0 with a missing or wrong output: a rerun renders the same
        return EXIT_FATAL
    return EXIT_RETRY
