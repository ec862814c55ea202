"""`helios-doit render`: encode a frame range of a composition with PyAV, as a stand-alone chunk.

Every output is made to be concatenated by stream copy: it starts on a keyframe, its video
and audio timestamps start at zero, libx264 gets no B-frames (pts == dts), and its audio
holds exactly the samples of its frames, [floor(s*sr/fps), floor((s+n)*sr/fps)), on exact
rationals, so the chunks' samples add up to those of a single render with no gap or overlap.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, BinaryIO

import av
import numpy as np
from av.video.reformatter import (
    ColorPrimaries,
    ColorRange,
    Colorspace,
    ColorTrc,
    VideoReformatter,
)

from ..core.errors import BadInput
from ..state.atomic import new_file
from . import THREADS_ENV
from .composition import (
    CompositionError,
    format_number,
    frame_total,
    load_composition,
    parse_number,
)

#: Set to a whole number to pin the encoder's thread count (0 = let the encoder decide).


class RenderError(BadInput):
    """Bad render settings; raised before anything is written. One line, for users."""


@dataclass(frozen=True)
class VideoCodec:
    name: str
    extensions: tuple[str, ...]  # containers that take it, best first
    pix_fmt: str
    lossless_pix_fmt: str | None = None  # used at quality 0
    quality_range: tuple[int, int] | None = None  # --quality is this codec's CRF
    default_quality: int | None = None
    options: tuple[tuple[str, str], ...] = ()

    @property
    def chunk_extension(self) -> str:
        """Chunks go in .mov (holds PCM and every codec here but ffv1/VP9), else the codec's own container."""
        return ".mov" if ".mov" in self.extensions else self.extensions[0]


VIDEO_CODECS: dict[str, VideoCodec] = {
    c.name: c
    for c in (
        VideoCodec("libx264", (".mp4", ".mov", ".mkv"), "yuv420p", "yuv444p", (0, 51), None, (("bf", "0"),)),
        VideoCodec("libx265", (".mp4", ".mov", ".mkv"), "yuv420p", None, (0, 51), None,
                   (("x265-params", "bframes=0:log-level=error"),)),
        VideoCodec("libvpx-vp9", (".mkv", ".webm", ".mp4"), "yuv420p", None, (0, 63), 31, (("b", "0"), ("row-mt", "1"))),
        VideoCodec("ffv1", (".mkv",), "bgr0"),
        VideoCodec("prores_ks", (".mov", ".mkv"), "yuv422p10le"),
    )
}
#: Audio codec -> containers that take it. Chunks always carry PCM; the merge picks the final codec.
AUDIO_CODECS: dict[str, tuple[str, ...]] = {"pcm_s16le": (".mov", ".mkv", ".mp4"), "aac": (".mp4", ".mov", ".mkv")}
_FORMATS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm"}


@dataclass(frozen=True)
class Settings:
    """A render's settings, resolved against the composition's defaults and checked."""

    start_frame: int
    frame_count: int
    total_frames: int
    width: int
    height: int
    fps: Fraction
    duration: Fraction
    codec: VideoCodec
    quality: int | None
    audio_codec: str | None  # None in RenderStats when the composition has no audio


@dataclass(frozen=True)
class RenderStats(Settings):
    output: Path = Path()
    audio_samples: int = 0
    seconds: float = 0.0

    @property
    def video_codec(self) -> str:
        return self.codec.name

    @property
    def frames_per_second(self) -> float:
        return self.frame_count / self.seconds if self.seconds > 0 else math.inf


def sample_at(frame: int, fps: Fraction, sample_rate: int) -> int:
    """The first audio sample of `frame`: floor(frame * sample_rate / fps), exactly."""
    return math.floor(frame * sample_rate / fps)


def resolve(comp: Any, output: Path | None, *, start_frame: int = 0, frame_count: int | None = None,
            width: int | None = None, height: int | None = None, fps: Any = None, duration: Any = None,
            video_codec: str = "libx264", quality: int | None = None, audio_codec: str = "pcm_s16le") -> Settings:
    """Apply Helios' flag semantics and refuse anything the encoder or container would reject."""
    try:
        fps_q = parse_number(fps if fps is not None else comp.fps, "--fps")
        duration_q = parse_number(duration if duration is not None else comp.duration, "--duration")
    except CompositionError as exc:
        raise RenderError(str(exc)) from None
    width, height = comp.width if width is None else width, comp.height if height is None else height
    if width < 1 or height < 1:
        raise RenderError(f"--width and --height must be at least 1, got {width}x{height}")
    total = frame_total(duration_q, fps_q)
    if total < 1:
        raise RenderError(f"{format_number(duration_q)} s at {format_number(fps_q)} fps is no frame; raise --duration")
    if start_frame < 0:
        raise RenderError(f"--start-frame must be 0 or more, got {start_frame}")
    count = total - start_frame if frame_count is None else frame_count
    if start_frame >= total or count < 1 or start_frame + count > total:
        asked = f"frames {start_frame}-{start_frame + count - 1}" if count >= 1 else f"{count} frames from {start_frame}"
        raise RenderError(f"{asked} are outside the render's {total} frames (0-{total - 1}: {format_number(duration_q)} s "
                          f"at {format_number(fps_q)} fps); lower --start-frame/--frame-count or raise --duration")
    codec = VIDEO_CODECS.get(video_codec)
    if codec is None or video_codec not in av.codecs_available:
        known = ", ".join(name for name in VIDEO_CODECS if name in av.codecs_available)
        raise RenderError(f"unknown video codec {video_codec!r}; use one of {known}")
    if audio_codec not in AUDIO_CODECS:
        raise RenderError(f"unknown audio codec {audio_codec!r}; use pcm_s16le or aac")
    if quality is not None:
        if codec.quality_range is None:
            kind = "lossless" if codec.name == "ffv1" else "fixed quality"
            raise RenderError(f"--quality does not apply to {codec.name} ({kind}); leave it out")
        low, high = codec.quality_range
        if not low <= quality <= high:
            raise RenderError(f"--quality for {codec.name} is a CRF from {low} to {high}, got {quality}")
    pix_fmt = _pix_fmt(codec, quality)
    if pix_fmt.startswith("yuv42") and (width % 2 or (pix_fmt.startswith("yuv420") and height % 2)):
        raise RenderError(f"{codec.name} ({pix_fmt}) needs an even width and height, got {width}x{height}; use even sizes")
    if output is not None:
        ext = output.suffix.lower()
        if ext not in _FORMATS:
            raise RenderError(f"{output}: unknown container {ext or '(no extension)'}; use .mp4, .mov, .mkv or .webm")
        if ext not in codec.extensions:
            fix = f"use {' or '.join(codec.extensions)} (e.g. {output.stem}{codec.extensions[0]})"
            raise RenderError(f"{output}: {codec.name} cannot go in {ext}; {fix}")
        if comp.has_audio and ext not in AUDIO_CODECS[audio_codec]:
            raise RenderError(f"{output}: {audio_codec} audio cannot go in {ext}; use .mov or .mkv")
    return Settings(start_frame, count, total, width, height, fps_q, duration_q, codec, quality, audio_codec)


def render(composition: str | Path, output: str | Path, *, start_frame: int = 0, frame_count: int | None = None,
           width: int | None = None, height: int | None = None, fps: Any = None, duration: Any = None,
           video_codec: str = "libx264", quality: int | None = None, audio_codec: str = "pcm_s16le") -> RenderStats:
    """Render frames [start_frame, start_frame + frame_count) of a composition file to `output`.

    total frames = round(duration * fps), with duration and fps defaulting to the composition's;
    frame_count defaults to the rest. Bad settings raise RenderError (or CompositionError) before
    anything is written; the file appears only once complete (written beside it, then renamed).

    quality is the CRF; for libx264, quality 0 is lossless and uses yuv444p, so decoding gives
    back exactly the frames' YUV. ffv1 (.mkv) is always lossless and keeps RGB (bgr0).

    Threads: the encoder's own default (FFmpeg's thread_count 0, frame and slice threading
    allowed: libx264 then runs about 1.5 frame threads per core). Set HELIOS_DOIT_THREADS=N to
    pin N threads, e.g. for benchmarks; a pinned count also makes lossy output independent of
    the machine's core count.
    """
    composition, output = Path(composition), Path(output)
    comp = load_composition(composition)
    s = resolve(comp, output, start_frame=start_frame, frame_count=frame_count, width=width, height=height,
                fps=fps, duration=duration, video_codec=video_codec, quality=quality, audio_codec=audio_codec)
    threads = _threads()
    began = time.monotonic()
    output.parent.mkdir(parents=True, exist_ok=True)
    with new_file(output) as partial:  # nameless until complete: a stop or a kill leaves nothing
        samples = _encode(comp, s, partial.file, _FORMATS[output.suffix.lower()], threads)
    return RenderStats(**{**vars(s), "audio_codec": s.audio_codec if comp.has_audio else None}, output=output,
                       audio_samples=samples, seconds=time.monotonic() - began)


def _pix_fmt(codec: VideoCodec, quality: int | None) -> str:
    return codec.lossless_pix_fmt if quality == 0 and codec.lossless_pix_fmt else codec.pix_fmt


def _threads() -> int | None:
    raw = os.environ.get(THREADS_ENV, "").strip()
    if not raw:
        return None
    if not raw.isdigit():
        raise RenderError(f"{THREADS_ENV} must be a whole number (0 = the encoder decides), got {raw!r}")
    return int(raw)


def _encode(comp: Any, s: Settings, target: BinaryIO, fmt: str, threads: int | None) -> int:
    """Write the video (and audio) to `target`; return the number of audio samples written."""
    pix_fmt = _pix_fmt(s.codec, s.quality)
    # mov/mp4 pick their own timescale (e.g. 1/15360); asking for the fps's numerator keeps pts = frame number.
    options = {"video_track_timescale": str(s.fps.numerator)} if fmt in ("mov", "mp4") else {}
    rate, tag = comp.sample_rate, pix_fmt.startswith("yuv")
    first = sample_at(s.start_frame, s.fps, rate)
    with av.open(target, "w", format=fmt, options=options) as container:
        video = _video_stream(container, s, pix_fmt, fmt, threads)
        audio: Any = None
        audio_codec = s.audio_codec or "pcm_s16le"  # resolved: always set when the composition has audio
        if comp.has_audio:
            audio = container.add_stream(audio_codec, rate=rate, layout=_layout(comp.channels))
        if audio is not None:
            audio.time_base = Fraction(1, rate)
        last_report = time.monotonic()
        # One colour converter for the whole render, on this thread: a frame's own `reformat` makes
        # a new one per frame, whose slice threads are started and joined for every frame.
        convert = VideoReformatter().reformat
        for k, index in enumerate(range(s.start_frame, s.start_frame + s.frame_count)):
            rgb = comp.draw(index, width=s.width, height=s.height, fps=s.fps, total_frames=s.total_frames)
            frame = convert(av.VideoFrame.from_ndarray(rgb, format="rgb24"), format=pix_fmt, threads=1,
                            **(_BT709 if tag else {}))
            frame.pts, frame.time_base = k, 1 / s.fps
            container.mux(video.encode(frame))
            start, end = sample_at(index, s.fps, rate), sample_at(index + 1, s.fps, rate)
            if audio is not None and end > start:
                container.mux(audio.encode(_audio_frame(comp.sound(start, end - start), audio_codec, rate, start - first)))
            if time.monotonic() - last_report > 1 or k + 1 == s.frame_count:  # in Helios' words: runners read it
                last_report = time.monotonic()
                print(f"Progress: Rendered {k + 1} / {s.frame_count} frames", flush=True)
        container.mux(video.encode(None))
        if audio is not None:
            container.mux(audio.encode(None))
    return sample_at(s.start_frame + s.frame_count, s.fps, rate) - first if comp.has_audio else 0


_BT709 = {"dst_colorspace": Colorspace.ITU709, "dst_color_range": ColorRange.MPEG,
          "dst_color_primaries": ColorPrimaries.BT709, "dst_color_trc": ColorTrc.BT709}


def _video_stream(container: Any, s: Settings, pix_fmt: str, fmt: str, threads: int | None) -> Any:
    video = container.add_stream(s.codec.name, rate=s.fps)
    video.width, video.height, video.pix_fmt = s.width, s.height, pix_fmt
    # Frames are stamped in the codec's time base, which stays 1/fps even where the muxer
    # changes the stream's once the header is written (Matroska: 1/1000).
    video.time_base = video.codec_context.time_base = 1 / s.fps
    opts = dict(s.codec.options)
    quality = s.quality if s.quality is not None else s.codec.default_quality
    if quality is not None:
        opts["crf"] = str(quality)
        if s.codec.name == "libvpx-vp9" and quality == 0:
            opts["lossless"] = "1"
    video.options = opts
    ctx = video.codec_context
    ctx.thread_type = "AUTO"  # FFmpeg's default; PyAV's own (slice only) would change libx264's output
    ctx.thread_count = threads or 0
    if pix_fmt.startswith("yuv"):  # converted as BT.709 (_BT709), so say so: players guess by size otherwise
        ctx.colorspace, ctx.color_range = Colorspace.ITU709, ColorRange.MPEG
        ctx.color_primaries, ctx.color_trc = ColorPrimaries.BT709, ColorTrc.BT709
    if s.codec.name == "libx265" and fmt in ("mov", "mp4"):
        video.codec_tag = "hvc1"  # what Apple players require for HEVC
    return video


def _layout(channels: int) -> str:
    return {1: "mono", 2: "stereo"}.get(channels, f"{channels}c")


def _audio_frame(samples: np.ndarray, codec: str, rate: int, pts: int) -> av.AudioFrame:
    if codec == "pcm_s16le":
        # Quantised here, sample by sample, so a chunk's samples match a single render's exactly.
        ints = np.round(samples * 32767.0).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(ints.T).reshape(1, -1), format="s16",
                                           layout=_layout(samples.shape[0]))
    else:
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples), format="fltp", layout=_layout(samples.shape[0]))
    frame.sample_rate, frame.pts, frame.time_base = rate, pts, Fraction(1, rate)
    return frame


