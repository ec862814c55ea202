"""`helios-doit seams JOB_OR_VIDEO`: draw every seam of a job or video into a PNG, to look for jumps."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..video import is_video_path
from ..video.seams import SeamsError, job_report, seams_report
from ..core.usage import one_line


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
        return one_line("helios-doit", f"--at takes frame numbers separated by commas, got {args.at!r}")
    try:
        if is_video_path(args.source):
            report = seams_report(Path(args.source), Path(args.output), seams, args.context)
        else:
            report = job_report(args.source, Path(args.output), seams, args.context, args.output_root)
    except SeamsError as exc:
        return one_line("helios-doit", str(exc), exc.exit_code)
    print(f"wrote {report.output} ({report.size[0]}x{report.size[1]}): {len(report.seams)} seams")
    return 0

