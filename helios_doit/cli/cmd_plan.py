"""`helios-doit plan`: a job for any frame-range command (Blender, ffmpeg, a script) from templates."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..core.errors import os_fault
from ..video.plan import PlanError, job_place, plan_job, write_job
from ..core.usage import one_line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`helios-doit plan --frames N --concurrency K --command-template ... --output-template ...`."""
    parser.add_argument("--frames", required=True, metavar="N", help="number of frames")
    parser.add_argument("--concurrency", required=True, metavar="K", help="number of chunks")
    parser.add_argument("--command-template", required=True, metavar="CMD",
                        help="chunk command; tokens {id} {start} {end} (inclusive) {count} {output} (quoted)")
    parser.add_argument("--output-template", required=True, metavar="PATH", help="chunk output; tokens {id} {start} {end} {count}")
    parser.add_argument("--start", default="0", metavar="S", help="first frame (default 0; Blender counts from 1)")
    parser.add_argument("-o", "--output", metavar="JOB.json", help="write the job here (default: print it)")
    parser.add_argument("--merge-command", metavar="CMD", help="tokens {outputs} (quoted chunk files) {output}; default helios-doit merge")
    parser.add_argument("--output-file", metavar="OUT", help="the merged file (default: output<ext of the chunks>)")
    parser.add_argument("--input", action="append", default=[], metavar="FILE", help="a file every chunk depends on (repeatable)")
    parser.add_argument("--fps", default="30", metavar="F", help="frame rate of the chunks (default 30); video chunks and the merge are checked against it")
    parser.add_argument("--width", default="1920", metavar="W", help="frame width (default 1920); video chunks are checked against it")
    parser.add_argument("--height", default="1080", metavar="H", help="frame height (default 1080); video chunks are checked against it")


def run(args: argparse.Namespace) -> int:
    """The subcommand: 0 with the job printed or written, 2 for bad templates or numbers."""
    try:
        numbers = {key: _plan_int(getattr(args, key), "--" + key) for key in ("frames", "concurrency", "start", "width", "height")}
        job = plan_job(numbers["frames"], numbers["concurrency"], args.command_template, args.output_template,
                       numbers["start"], args.fps, numbers["width"], numbers["height"], merge_command=args.merge_command,
                       output_file=args.output_file, inputs=args.input)
        if args.output:
            write_job(job_place(args.output, "-o", PlanError), job)
        else:
            sys.stdout.write(json.dumps(job, indent=2) + "\n")
    except PlanError as exc:
        return one_line("helios-doit", str(exc))
    except OSError as exc:
        return one_line("helios-doit", f"{args.output}: {os_fault(exc)}", 1)
    return 0


def _plan_int(raw: Any, flag: str) -> int:
    try:
        return int(raw)
    except (TypeError, ValueError):
        raise PlanError(f"{flag} must be a whole number, got {raw!r}") from None
