"""Our own subcommands, `helios-doit render` and `helios-doit merge`: their arguments and what
they do, registered with the executors (`executors.own`) so that a chunk's render, or the
built-in merge, is forked from its runner and called here, not exec'd as a new Python.

Importing this module is cheap (PyAV and numpy are imported when a command runs, or by
`preload`); the command line's `render` and `merge` are these same functions.

`render` exit codes: 0 rendered (or job written), 1 the composition failed while drawing or the
environment failed, 2 bad input, 130 stopped.
"""
from __future__ import annotations

import argparse
import ctypes
import importlib
import os
import signal
import traceback
from pathlib import Path
from typing import Any, Callable

from ..core.errors import os_fault
from ..core.usage import Parser, one_line
from ..executors import own


def add_render_arguments(parser: argparse.ArgumentParser) -> None:
    """`helios-doit render COMPOSITION -o OUT ...`: Helios' flags. Numbers are parsed in run for one-line errors."""
    parser.add_argument("composition", metavar="COMPOSITION", help="composition file (.py)")
    parser.add_argument("-o", "--output", default="output.mp4", metavar="OUT", help="output video (default: output.mp4)")
    parser.add_argument("--start-frame", metavar="S", help="first frame to render (default 0)")
    parser.add_argument("--frame-count", metavar="N", help="frames to render (default: to the end)")
    parser.add_argument("--width", metavar="W", help="width in pixels (default: the composition's)")
    parser.add_argument("--height", metavar="H", help="height in pixels (default: the composition's)")
    parser.add_argument("--fps", metavar="F", help="frames per second, e.g. 30, 29.97 or 30000/1001")
    parser.add_argument("--duration", metavar="SECONDS", help="length in seconds (default: the composition's)")
    parser.add_argument("--video-codec", default="libx264", metavar="CODEC",
                        help="libx264 (default), libx265, libvpx-vp9, ffv1 (.mkv, lossless) or prores_ks")
    parser.add_argument("--quality", metavar="CRF", help="CRF; 0 is lossless for libx264")
    parser.add_argument("--audio-codec", default="pcm_s16le", metavar="CODEC", help="pcm_s16le (default) or aac")
    parser.add_argument("--emit-job", metavar="JOB.json", help="write a chunked job for `helios-doit job run` instead of rendering")
    parser.add_argument("--concurrency", metavar="N", help="with --emit-job: split into N chunks (default: one per core, for renders big enough)")


def render_command(args: argparse.Namespace) -> int:
    """`helios-doit render`: 0 rendered (or job written), 1 the composition failed while drawing, 2 bad input."""
    from .composition import CompositionError
    from .plan import CHUNK_WORK, write_emitted_job
    from .render import RenderError, render

    try:
        numbers = {name: _integer(getattr(args, name), flag)
                   for name, flag in (("start_frame", "--start-frame"), ("frame_count", "--frame-count"),
                                      ("width", "--width"), ("height", "--height"), ("quality", "--quality"))}
        if args.emit_job:
            concurrency = _integer(args.concurrency, "--concurrency")
            cores = len(os.sched_getaffinity(0))
            path, chunks, note = write_emitted_job(args.emit_job, args.composition, args.output, concurrency=concurrency,
                                             fps=args.fps, duration=args.duration, video_codec=args.video_codec,
                                             audio_codec=args.audio_codec, cores=cores, **numbers)
            why = "" if concurrency is not None else (
                f" (for its size and {cores} cores: chunks of at least ~{CHUNK_WORK:g} s of rendering; "
                "--concurrency N to choose)" if chunks > 1 else
                " (a small render: one chunk renders it soonest; --concurrency N to split it anyway)")
            print(f"wrote {path}: {chunks} chunk{'s' if chunks > 1 else ''}{why}")
            if note:
                print(note)
            return 0
        if args.concurrency is not None:
            raise RenderError("--concurrency only applies with --emit-job JOB.json")
        _roomy_heap()
        previous = _on_sigterm()
        try:
            stats = render(args.composition, args.output, fps=args.fps, duration=args.duration,
                           video_codec=args.video_codec, audio_codec=args.audio_codec,
                           start_frame=numbers["start_frame"] or 0, frame_count=numbers["frame_count"],
                           width=numbers["width"], height=numbers["height"], quality=numbers["quality"])
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
    except (RenderError, CompositionError) as exc:
        return _fail(str(exc), 2)
    except KeyboardInterrupt:
        return _fail("render stopped (Ctrl-C); the partial output was removed", 130)
    except OSError as exc:  # the environment: a full disk, a folder that cannot be written
        return _fail(f"{args.emit_job or args.output}: {os_fault(exc)}", 1)
    except Exception as exc:
        traceback.print_exc()
        return _fail(f"{args.composition}: render failed: {type(exc).__name__}: {exc}", 1)
    last = stats.start_frame + stats.frame_count - 1
    print(f"rendered frames {stats.start_frame}-{last} ({stats.width}x{stats.height}, {stats.video_codec}) to "
          f"{stats.output} in {stats.seconds:.1f} s ({stats.frames_per_second:.0f} frames/s)")
    return 0


def _integer(raw: str | None, flag: str) -> int | None:
    from .render import RenderError

    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise RenderError(f"{flag} must be a whole number, got {raw!r}") from None


def _roomy_heap() -> None:
    """Keep freed memory in this process instead of giving it back to the system at once (glibc's
    default for blocks over 128 KB): an encoder allocates and frees its frame pool as it warms up,
    and every page handed back is faulted in and zeroed again. A render is one short process."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return  # not glibc
    for option, value in ((-3, 32 << 20), (-1, 256 << 20), (-2, 64 << 20)):  # M_MMAP_THRESHOLD, M_TRIM_, M_TOP_PAD
        mallopt(option, value)


def _on_sigterm() -> Any:
    """SIGTERM (how a runner stops a chunk) unwinds like Ctrl-C, so the partial file is removed."""
    try:
        return signal.signal(signal.SIGTERM, _stop)
    except ValueError:  # not the main thread: leave signals alone
        return None


def _stop(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


def _fail(message: str, code: int) -> int:
    return one_line("helios-doit", message.splitlines()[0] if message else "render failed", code)


def add_merge_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("output", metavar="OUTPUT", help="the merged file; its extension picks the container")
    parser.add_argument("inputs", metavar="INPUT", nargs="+", help="chunk files, in order")
    parser.add_argument("--stitcher", choices=("builtin", "ffmpeg"), default="builtin",
                        help="builtin: PyAV remux (default); ffmpeg: the concat demuxer of an ffmpeg on PATH")
    parser.add_argument("--audio-codec", metavar="CODEC",
                        help="copy, aac, pcm_s16le...; default: copy PCM where the container plays it, else encode AAC once")
    parser.add_argument("-y", "--overwrite", action="store_true", help="replace OUTPUT if it exists (as ffmpeg's -y)")


def merge_command(args: argparse.Namespace) -> int:
    """`helios-doit merge`: 0 merged and verified; the stitcher's exit code otherwise. An existing
    OUTPUT is replaced only with -y: `merge out.part0.mov out.part1.mov` (the output forgotten) would
    otherwise write over chunk 0. A job's own merge finds its output's place cleared by the runner."""
    from .stitch import StitchError, get_stitcher

    if not args.overwrite and os.path.lexists(args.output) and not os.path.isdir(args.output):
        return one_line("helios-doit", _exists(args.output, args.inputs))
    try:
        result = get_stitcher(args.stitcher).stitch([Path(p) for p in args.inputs], Path(args.output), audio_codec=args.audio_codec)
    except StitchError as exc:
        return one_line("helios-doit", str(exc), exc.exit_code)
    audio = ", ".join(f"{codec} {samples} samples" for codec, samples in zip(result.audio_codecs, result.audio_samples))
    print(f"merged {len(args.inputs)} chunks into {args.output}: {result.frames} frames, {result.duration:.3f} s"
          + (f"; audio {audio}" if audio else ""))
    return 0


def _exists(output: str, inputs: list[str]) -> str:
    """An existing OUTPUT, said with what was probably meant: a chunk given where the merged file goes."""
    chunk_like = any(os.path.splitext(p)[1].lower() == os.path.splitext(output)[1].lower() for p in inputs)
    hint = " (a chunk? the merged file comes first: merge OUTPUT INPUT...)" if chunk_like else ""
    return f"{output} exists{hint}; give -y to replace it"


def _main(name: str, add: Callable[[argparse.ArgumentParser], None],
          command: Callable[[argparse.Namespace], int]) -> Callable[[list[str]], int]:
    """`helios-doit NAME ARGS...` as a function of ARGS, with the command line's manners."""
    def main(args: list[str]) -> int:
        parser = Parser(prog=f"helios-doit {name}")
        add(parser)
        parsed, extra = parser.parse_known_args(args)
        if extra:
            parser.unknown(extra)
        return command(parsed)
    return main


def _preload() -> None:
    for module in ("render", "stitch", "verify"):
        importlib.import_module(f"{__package__}.{module}")


own.register("render", _main("render", add_render_arguments, render_command), _preload)
own.register("merge", _main("merge", add_merge_arguments, merge_command), _preload)
