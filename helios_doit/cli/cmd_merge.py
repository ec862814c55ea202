"""`helios-doit merge OUTPUT INPUT...`: stitch rendered chunks into one video, then verify it."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..video.stitch import StitchError, get_stitcher
from ..core.usage import one_line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("output", metavar="OUTPUT", help="the merged file; its extension picks the container")
    parser.add_argument("inputs", metavar="INPUT", nargs="+", help="chunk files, in order")
    parser.add_argument("--stitcher", choices=("builtin", "ffmpeg"), default="builtin",
                        help="builtin: PyAV remux (default); ffmpeg: the concat demuxer of an ffmpeg on PATH")
    parser.add_argument("--audio-codec", metavar="CODEC",
                        help="copy, aac, pcm_s16le...; default: copy PCM where the container plays it, else encode AAC once")


def run(args: argparse.Namespace) -> int:
    try:
        result = get_stitcher(args.stitcher).stitch([Path(p) for p in args.inputs], Path(args.output), audio_codec=args.audio_codec)
    except StitchError as exc:
        return one_line("helios-doit", str(exc), exc.exit_code)
    audio = ", ".join(f"{codec} {samples} samples" for codec, samples in zip(result.audio_codecs, result.audio_samples))
    print(f"merged {len(args.inputs)} chunks into {args.output}: {result.frames} frames, {result.duration:.3f} s"
          + (f"; audio {audio}" if audio else ""))
    return 0
