"""A stand-in for the real Helios CLI (`helios render`, `helios merge`), for tests: real video
through PyAV, in the job format and with the habits of `@helios-project/cli` 0.45.2.

- `helios render IN -o OUT --emit-job JOB --concurrency K ...` writes a job as Helios does: chunk
  files `temp_<ms>_<rand>_part_<i>.mov` next to OUT, every path relative to the job's folder
  (`../renders/...` when OUT is outside it) and never quoted, `helios merge OUT PARTS...`, no
  `outputFile`.
- `helios render IN -o OUT --start-frame S --frame-count N --fps F ...` writes N frames of H.264
  in a .mov, printing `Progress: Rendered k / N frames` as it goes (and waiting there while the
  file HELIOS_FAKE_HOLD names exists). With HELIOS_FAKE_25FPS=1 it has Helios' canvas bug (its
  WebCodecs path feeds ffmpeg `-f h264 -i -` with no frame rate): in `--mode canvas` (the default)
  the file is 25 fps whatever `--fps` says, with the right frames; `--mode dom` is not affected.
- `helios merge OUT PARTS...` joins the parts by stream copy, in the order given.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from fractions import Fraction
from pathlib import Path


def main(argv: list[str]) -> int:
    if argv[:1] == ["render"]:
        return render(argv[1:])
    if argv[:1] == ["merge"]:
        return merge(argv[1], argv[2:])
    print(f"helios: unknown command {argv[:1]}", file=sys.stderr)
    return 1


def render(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="helios render")
    parser.add_argument("input")
    parser.add_argument("-o", "--output", default="output.mp4")
    parser.add_argument("--start-frame", type=int, default=0)
    parser.add_argument("--frame-count", type=int)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=180)
    parser.add_argument("--fps", type=float, default=30)
    parser.add_argument("--duration", type=float, default=1)
    parser.add_argument("--mode", default="canvas")
    parser.add_argument("--audio-codec", default="pcm_s16le")
    parser.add_argument("--emit-job")
    parser.add_argument("--concurrency", type=int, default=1)
    args = parser.parse_args(argv)
    if args.emit_job:
        return emit(args)
    frames = args.frame_count or round(args.duration * args.fps) - args.start_frame
    canvas_bug = os.environ.get("HELIOS_FAKE_25FPS") == "1" and args.mode == "canvas"
    rate = Fraction(25) if canvas_bug else Fraction(args.fps).limit_denominator(1001)
    import av
    import numpy as np

    with av.open(args.output, "w", format="mov") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = args.width, args.height, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        for k in range(frames):
            level = (args.start_frame + k) * 7 % 256
            picture = np.full((args.height, args.width, 3), level, dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts = k
            for packet in stream.encode(frame):
                container.mux(packet)
            if (k + 1) % 5 == 0 or k + 1 == frames:
                print(f"Progress: Rendered {k + 1} / {frames} frames", flush=True)
                hold = os.environ.get("HELIOS_FAKE_HOLD")  # a test looks at the run meanwhile
                while hold and k + 1 < frames and os.path.exists(hold):
                    time.sleep(0.02)
        for packet in stream.encode(None):
            container.mux(packet)
    print(f"Render complete! Output saved to: {os.path.abspath(args.output)}")
    return 0


def emit(args: argparse.Namespace) -> int:
    job_dir = Path(args.emit_job).absolute().parent
    out = Path(args.output).absolute()
    total = round(args.duration * args.fps)
    size = -(-total // args.concurrency)
    stem = f"temp_{int(time.time() * 1000)}_{random.choice('abcdefgh')}{os.urandom(3).hex()}"
    rel = lambda p: os.path.relpath(p, job_dir)  # noqa: E731  (Helios' own path.relative)
    comp = rel(Path(args.input).absolute())
    chunks, parts = [], []
    for i, start in enumerate(range(0, total, size)):
        count = min(size, total - start)
        part = rel(out.parent / f"{stem}_part_{i}.mov")
        parts.append(part)
        chunks.append({"id": i, "startFrame": start, "frameCount": count, "outputFile": part,
                       "command": f"helios render {comp} -o {part} --start-frame {start} --frame-count {count} "
                                  f"--width {args.width} --height {args.height} --fps {args.fps:g} --mode {args.mode} "
                                  f"--audio-codec {args.audio_codec}"})
    job = {"metadata": {"totalFrames": total, "fps": args.fps, "width": args.width, "height": args.height,
                        "duration": args.duration},
           "chunks": chunks, "mergeCommand": f"helios merge {rel(out)} {' '.join(parts)}"}
    Path(args.emit_job).write_text(json.dumps(job, indent=2))
    print(f"Job spec written to {args.emit_job}")
    return 0


def merge(output: str, parts: list[str]) -> int:
    import av

    with av.open(output, "w") as out:
        target = None
        offset = 0
        for part in parts:
            with av.open(part) as source:
                stream = source.streams.video[0]
                if target is None:
                    target = out.add_stream_from_template(stream)
                last = 0
                for packet in source.demux(stream):
                    if packet.dts is None:
                        continue
                    packet.pts += offset
                    packet.dts += offset
                    last = max(last, packet.pts + (packet.duration or 1))
                    packet.stream = target
                    out.mux(packet)
                offset = last
    print(f"Merged {len(parts)} files into {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
