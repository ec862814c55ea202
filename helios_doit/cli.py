"""The `helios-doit` command: `job run` over doit, and the video tools (render, merge, plan, seams).

`job run` takes the flags of Helios' `helios job run`, builds the same task namespace as
dodo.py and hands it to doit's own `DoitMain`: one executor, one meaning of "done". Options
it does not know go to `doit run`. A subcommand's module is imported only when it is used,
so running a job of shell commands never loads PyAV.
"""
from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from typing import Callable

from . import options

#: doit's exit codes -> ours: 0 done, 1 a chunk or the merge failed, 2 bad input or arguments.
_EXIT = {0: 0, 1: 1, 2: 1, 3: 2}

#: name -> (help, module, function adding its arguments, function running it)
COMMANDS: dict[str, tuple[str, str, str, str]] = {
    "job": ("run a job's chunks and merge them (helios-doit job run FILE)", "helios_doit.cli", "_add_job_arguments", "_run_job"),
    "render": ("render a composition to a video, or emit a job for it", "helios_doit.video.render", "add_render_arguments", "run_render"),
    "merge": ("stitch rendered chunks into one video: merge OUTPUT INPUT...", "helios_doit.video.stitch", "add_merge_arguments", "run_merge"),
    "plan": ("write a job for any frame-range command", "helios_doit.video.plan", "add_plan_arguments", "run_plan"),
    "seams": ("draw every seam of a job or video into a PNG", "helios_doit.video.seams", "add_seams_arguments", "run_seams"),
    "status": ("show where every chunk and the merge of a job stand", "helios_doit.status", "add_status_arguments", "run_status"),
    "worker": ("render the chunk of an array job's index (Kubernetes, Slurm, AWS Batch, Cloud Run)", "helios_doit.array", "add_worker_arguments", "run_worker"),
    "export": ("print a Kubernetes Indexed Job or a Slurm array script for a job", "helios_doit.export", "add_export_arguments", "run_export"),
}


def main(argv: list[str] | None = None) -> int:
    """The command line; a pipe closed by its reader (`| head`) ends it quietly (exit 141, as a
    shell reports death by SIGPIPE)."""
    try:
        return _main(sys.argv[1:] if argv is None else argv)
    except BrokenPipeError:
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 128 + signal.SIGPIPE


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="helios-doit", description="Run chunked video render jobs with doit.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen: Callable[[argparse.Namespace], int] | None = None
    for name, (text, module_name, add, run) in COMMANDS.items():
        sub = commands.add_parser(name, help=text, description=text)
        if argv and argv[0] == name:
            module = importlib.import_module(module_name)
            getattr(module, add)(sub)
            chosen = getattr(module, run)
    args, extra = parser.parse_known_args(argv)
    if args.command == "job":
        args.doit_args = extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    assert chosen is not None
    return chosen(args)


def _add_job_arguments(parser: argparse.ArgumentParser) -> None:
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
    options.add_arguments(run)


def _run_job(args: argparse.Namespace) -> int:
    if args.concurrency < 1:
        return _usage(f"--concurrency must be at least 1, got {args.concurrency}")
    from . import supervise
    from .tasks import load_or_exit, namespace, refuse_bad

    job = load_or_exit(args.file, args.output_root)
    run_options = refuse_bad(lambda: options.from_args(args, args.doit_args))
    if args.chunk is not None and args.chunk not in job.chunk_ids:
        known = ", ".join(map(str, job.chunk_ids[:20])) + (", ..." if len(job.chunk_ids) > 20 else "")
        return _usage(f"{args.file}: no chunk with id {args.chunk}; the job has chunks {known}")
    if args.chunk is not None:
        targets = [f"chunk:{args.chunk}"]
    else:
        targets = ["chunk"] if args.no_merge else ["chunk", "merge"]
    concurrency = ["-n", str(args.concurrency)] if args.concurrency > 1 else []
    keep_going = ["--continue"] if run_options.keep_going and "--continue" not in args.doit_args else []
    run_args = ["run", *concurrency, *keep_going, *args.doit_args, *targets]
    from doit.cmd_base import ModuleTaskLoader
    from doit.doit_cmd import DoitMain

    try:
        loader = ModuleTaskLoader(namespace(job, args.merge, run_options))
        code = DoitMain(loader, config_filenames=()).run(run_args)
    except KeyboardInterrupt:
        supervise.report_stop()
        return supervise.stop_code()
    return _EXIT.get(code, 1)


def _usage(message: str) -> int:
    sys.stderr.write(f"helios-doit: {message}\n")
    return 2
