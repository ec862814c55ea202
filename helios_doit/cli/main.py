"""The `helios-doit` command: one module per subcommand (`cmd_*`), imported only when it is used,
so running a job of shell commands never loads PyAV or Dask.
"""
from __future__ import annotations

import argparse
import functools
import importlib
import os
import signal
import sys
from typing import Any, Callable

from ..core.errors import HeliosDoitError
from ..core.usage import Parser

#: name -> (help, "module" whose `add_arguments(parser)` and `run(args) -> exit code` it is)
COMMANDS: dict[str, tuple[str, str]] = {
    "job": ("run a job's chunks and merge them (helios-doit job run FILE)", "helios_doit.cli.cmd_job"),
    "render": ("render a composition to a video, or emit a job for it", "helios_doit.cli.cmd_render"),
    "merge": ("stitch rendered chunks into one video: merge OUTPUT INPUT...", "helios_doit.cli.cmd_merge"),
    "plan": ("write a job for any frame-range command", "helios_doit.cli.cmd_plan"),
    "seams": ("draw every seam of a job or video into a PNG", "helios_doit.cli.cmd_seams"),
    "status": ("show where every chunk and the merge of a job stand", "helios_doit.cli.cmd_status"),
    "worker": ("render the chunk of an array job's index (Kubernetes, Slurm, AWS Batch, Cloud Run)", "helios_doit.cli.cmd_worker"),
    "init": ("write a dodo.py in a job folder, so that plain `doit` runs the job there", "helios_doit.cli.cmd_init"),
    "export": ("print a Kubernetes Indexed Job or a Slurm array script for a job", "helios_doit.cli.cmd_export"),
    "prune": ("remove what a job's aside/ holds, or its scratch mirror of a bucket: prune JOB [--aside] [--scratch]",
              "helios_doit.cli.cmd_prune"),
    "schema": ("print the JobSpec as JSON Schema, for editors and CI", "helios_doit.cli.cmd_schema"),
}


#: name -> (help, a function that imports and returns the module): commands of the layers above
#: this one (the render service), which register themselves (`register`) before `main` runs.
REGISTERED: dict[str, tuple[str, Callable[[], Any]]] = {}


def register(name: str, text: str, load: Callable[[], Any]) -> None:
    """A subcommand of a layer above the command line: `load()` gives its `add_arguments` and `run`."""
    REGISTERED[name] = (text, load)


def main(argv: list[str] | None = None) -> int:
    """The command line; a pipe closed by its reader (`| head`) ends it quietly (exit 141, as a
    shell reports death by SIGPIPE)."""
    try:
        return _main(sys.argv[1:] if argv is None else argv)
    except HeliosDoitError as err:  # anything raised to a user: its lines, its exit code
        for line in err.lines:
            sys.stderr.write(f"helios-doit: {line}\n")
        return err.exit_code
    except BrokenPipeError:
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 128 + signal.SIGPIPE


def _main(argv: list[str]) -> int:
    parser = Parser(prog="helios-doit", description="Run chunked video render jobs with doit.")
    parser.add_argument("--version", action="version", version=f"helios-doit {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    chosen: Callable[[argparse.Namespace], int] | None = None
    subs: dict[str, Parser] = {}
    known: dict[str, tuple[str, Callable[[], Any]]] = {
        **{name: (text, functools.partial(importlib.import_module, module)) for name, (text, module) in COMMANDS.items()},
        **REGISTERED}
    for name, (text, load) in known.items():
        sub = subs[name] = commands.add_parser(name, help=text, description=text)
        if argv and argv[0] == name:
            module = load()
            module.add_arguments(sub)
            chosen = module.run
    if argv and not argv[0].startswith("-") and argv[0] not in known:
        parser.unknown_command(argv[0], list(known))
    args, extra = parser.parse_known_args(argv)
    accepts = getattr(args, "accept_extra", None)  # `job run` passes doit's own run options on
    if accepts is not None:
        args.doit_args = accepts(extra)
    elif extra:
        subs[args.command].unknown(extra)
    assert chosen is not None
    return chosen(args)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("helios-doit")
    except PackageNotFoundError:
        return "unknown"
