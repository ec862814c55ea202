"""`helios-doit seams JOB_OR_VIDEO`: draw every seam of a job or video into a PNG, to look for jumps."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..video import is_video_path
from ..video.seams import SeamsError, job_report, seams_report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="JOB_OR_VIDEO", help="a job file (its merged output, else its chunks) or a video")
    parser.add_argument("-o", "--output", default="seams.png", metavar="PNG", help="where to write the report (default seams.png)")
    parser.add_argument("--at", metavar="FRAMES", help="seam frames of a video, comma separated (first frame after each seam)")
    parser.add_argument("--context", type=int, default=6, metavar="N", help="frames either side of each seam to plot (default 6)")
    parser.add_argument("--output-root", metavar="DIR", help="as for job run: outputs may live under DIR")


def run(args: argparse.Namespace) -> int:
    try:
        seams = [int(part) for part in args.at.split(",") if part.strip()] if args.at else None
    except ValueError:
        return _fail(SeamsError(f"--at takes frame numbers separated by commas, got {args.at!r}"))
    try:
        if is_video_path(args.source):
            report = seams_report(Path(args.source), Path(args.output), seams, args.context)
        else:
            report = job_report(args.source, Path(args.output), seams, args.context, args.output_root)
    except SeamsError as exc:
        return _fail(exc)
    print(f"wrote {report.output} ({report.size[0]}x{report.size[1]}): {len(report.seams)} seams")
    return 0


def _fail(exc: SeamsError) -> int:
    sys.stderr.write(f"helios-doit: {exc}\n")
    return exc.exit_code
