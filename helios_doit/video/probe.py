"""What a rendered media file holds, found cheaply enough to run after every chunk.

The runner must not take a chunk as done on the strength of an exit code alone: a renderer
that crashed while finalising can leave a file that opens but stops early, or does not
decode at all. Probing demuxes every packet (so truncation shows as a short count) but
decodes only the first video frame (so the cost stays close to reading the file once).
"""
from __future__ import annotations

import dataclasses
import hashlib
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, cast

import av

from ..core.errors import HeliosDoitError

#: Extensions we treat as video containers (lower case, with the dot).

_PCM = re.compile(r"pcm_([suf])(8|16|24|32|64)(le|be)?$")


class ProbeError(HeliosDoitError):
    """A file that cannot be read as media; the message is one line naming the file."""


@dataclass(frozen=True)
class VideoInfo:
    codec: str
    width: int
    height: int
    pix_fmt: str | None
    time_base: Fraction
    frame_rate: Fraction
    frames: int  # video packets demuxed (one frame each for the codecs chunks use)
    first_is_keyframe: bool
    span: float  # seconds from the first packet's pts to the last packet's end
    extradata_digest: str | None  # codec configuration (SPS/PPS...); chunks must agree on it
    # What a stream copy carries over byte for byte: the first and last video packets (in decode
    # order), any others asked for by index, and a tiny picture of the first frame, for a merge
    # that encoded again. A merged file is checked against its chunks' with these: seams in order.
    first_packet: str | None = None
    last_packet: str | None = None
    packets: tuple[tuple[int, str], ...] = ()
    signature: str | None = None  # 8x8 grey levels of the first frame, hex

    @property
    def duration(self) -> float:
        return float(self.frames / self.frame_rate)

    @property
    def size(self) -> str:
        return f"{self.width}x{self.height}"


@dataclass(frozen=True)
class AudioInfo:
    codec: str
    sample_rate: int
    channels: int
    layout: str
    time_base: Fraction
    samples: int

    @property
    def is_pcm(self) -> bool:
        return pcm_sample_bytes(self.codec) is not None

    @property
    def duration(self) -> float:
        return self.samples / self.sample_rate if self.sample_rate else 0.0


@dataclass(frozen=True)
class MediaInfo:
    path: Path
    format_name: str
    video: VideoInfo | None
    audio: tuple[AudioInfo, ...]
    layout: tuple[str, ...]  # the kind of every stream, in file order ("video", "audio", "data"...)
    size_bytes: int

    @property
    def picture(self) -> VideoInfo:
        """Its video stream, for a file known to be a video (a chunk, a merge): else a ProbeError."""
        if self.video is None:
            raise ProbeError(f"{self.path.name}: no video stream")
        return self.video


#: Per-stream decoder options for opening a file: libav's stream probing would otherwise decode
#: a first video frame only to learn the pixel format, and `probe` decodes that frame itself
#: (one decode per file instead of two; ~55 ms for a 1280x720 keyframe here).
_NO_PROBE_DECODE = [{"skip_frame": "all"}] * 32


def open_media(path: str | Path, **kwargs: Any) -> Any:
    """av.open for reading, without a decode in stream probing: pix_fmt is unknown until a
    frame is decoded, everything else (codecs, sizes, rates, time bases, extradata) is there."""
    return av.open(str(path), stream_options=cast(Any, _NO_PROBE_DECODE), **kwargs)  # PyAV's stub says list[str]


def pcm_sample_bytes(codec: str) -> int | None:
    """Bytes per sample of one channel for a PCM codec name, None for anything else."""
    match = _PCM.match(codec)
    return int(match.group(2)) // 8 if match else None


def probe(path: str | Path, decode: bool = True, packets_at: frozenset[int] = frozenset()) -> MediaInfo:
    """`decode=False` skips decoding the first video frame: the pixel format stays unknown (None)
    and a first frame that does not decode goes unnoticed; the rest is checked all the same.
    `packets_at`: video packets (by index, in decode order) whose digests to report."""
    path = Path(path)
    name = path.name or str(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ProbeError(f"{name}: no such file") from None
    except OSError as exc:
        raise ProbeError(f"{name}: cannot read: {exc.strerror}") from None
    if path.is_dir():
        raise ProbeError(f"{name}: is a folder, not a media file")
    try:
        container = open_media(path, metadata_errors="replace")
    except (av.FFmpegError, OSError, ValueError, UnicodeError) as exc:
        raise ProbeError(f"{name}: not a readable media file ({_reason(exc)})") from None
    try:
        with container:
            return _probe_open(container, path, name, size, decode, packets_at)
    except ProbeError:
        raise
    except (av.FFmpegError, OSError, ValueError, UnicodeError, MemoryError) as exc:
        raise ProbeError(f"{name}: damaged or truncated ({_reason(exc)})") from None


def _probe_open(container: Any, path: Path, name: str, size: int, decode: bool,
                packets_at: frozenset[int] = frozenset()) -> MediaInfo:
    layout = tuple(stream.type for stream in container.streams)
    video_stream = container.streams.video[0] if container.streams.video else None
    audio_streams = list(container.streams.audio)
    if video_stream is None and not audio_streams:
        raise ProbeError(f"{name}: has neither video nor audio streams")
    scan = _Scan(video_stream, audio_streams, decode, _Marks(packets_at))
    for packet in container.demux([s for s in [video_stream, *audio_streams] if s is not None]):
        scan.see(packet)
    video = _video_of(container, scan, name) if video_stream is not None else None
    audio = tuple(_audio_of(stream, scan) for stream in audio_streams)
    return MediaInfo(path, container.format.name, video, audio, layout, size)


@dataclasses.dataclass
class _Scan:
    """What one pass over a file's packets finds: counts, timestamps, and (for video) the marks."""

    video_stream: Any
    audio_streams: list[Any]
    decode: bool
    marks: _Marks
    counts: dict[int, int] = dataclasses.field(default_factory=dict)
    samples: dict[int, int] = dataclasses.field(default_factory=dict)
    decoded_samples: dict[int, int] = dataclasses.field(default_factory=dict)
    first_pts: dict[int, int] = dataclasses.field(default_factory=dict)
    end_pts: dict[int, int] = dataclasses.field(default_factory=dict)
    first_key: bool | None = None
    first_frame: bool = False
    decode_error: str | None = None

    def __post_init__(self) -> None:
        streams = ([self.video_stream] if self.video_stream is not None else []) + self.audio_streams
        self.counts = {stream.index: 0 for stream in streams}
        self.samples = {stream.index: 0 for stream in self.audio_streams}
        self.decoded_samples = {stream.index: 0 for stream in self.audio_streams}
        self.first_frame = not self.decode  # "decoded" already when we were asked not to

    def see(self, packet: Any) -> None:
        stream = packet.stream
        if packet.size == 0:  # end-of-stream marker that PyAV yields for flushing decoders
            return
        index = stream.index
        self.counts[index] += 1
        if packet.pts is not None:
            self.first_pts[index] = min(self.first_pts.get(index, packet.pts), packet.pts)
            end = packet.pts + (packet.duration or 0)
            self.end_pts[index] = max(self.end_pts.get(index, end), end)
        if stream is self.video_stream:
            if self.first_key is None:
                self.first_key = bool(packet.is_keyframe)
            self.marks.see(self.counts[index] - 1, packet)
            if not self.first_frame and self.decode_error is None:
                self.picture(lambda: stream.codec_context.decode(packet))
            return
        per_sample = pcm_sample_bytes(stream.codec_context.name)
        if per_sample is not None:
            self.samples[index] += packet.size // (per_sample * max(1, stream.codec_context.channels))
        else:
            # Compressed audio carries priming and padding; only decoding tells the true count.
            for frame in stream.codec_context.decode(packet):
                self.decoded_samples[index] += frame.samples

    def picture(self, frames: Any) -> None:
        try:
            self.first_frame = self.marks.picture(frames())
        except av.FFmpegError as exc:
            self.decode_error = _reason(exc)


def _video_of(container: Any, scan: _Scan, name: str) -> VideoInfo:
    stream = scan.video_stream
    count = scan.counts[stream.index]
    if not scan.first_frame and scan.decode_error is None and count:
        scan.picture(lambda: stream.codec_context.decode(None))
    if not count:
        raise ProbeError(f"{name}: the video stream has no frames")
    # Without a keyframe first, failing to decode is expected; first_is_keyframe tells callers.
    if scan.decode_error is not None and scan.first_key:
        raise ProbeError(f"{name}: does not decode: {scan.decode_error}")
    if not scan.first_frame and scan.first_key:
        raise ProbeError(f"{name}: does not decode: no frame came out of {count} video packets")
    marks = scan.marks
    video = dataclasses.replace(
        _video_info(stream, count, bool(scan.first_key), scan.first_pts, scan.end_pts, name),
        first_packet=marks.first, last_packet=marks.digest(marks.last), packets=tuple(sorted(marks.found.items())),
        signature=marks.signature)
    _check_complete(container, stream, video, name)
    return video


def _audio_of(stream: Any, scan: _Scan) -> AudioInfo:
    ctx = stream.codec_context
    total = scan.samples[stream.index]
    if pcm_sample_bytes(ctx.name) is None:
        for frame in ctx.decode(None):
            scan.decoded_samples[stream.index] += frame.samples
        total = scan.decoded_samples[stream.index]
        tb = Fraction(stream.time_base)
        if stream.index in scan.end_pts and tb <= Fraction(1, ctx.sample_rate):
            # The last packet's duration marks where the encoder's end padding begins
            # (priming sits before pts 0), so timestamps give the true length when fine enough.
            span = round((scan.end_pts[stream.index] - max(0, scan.first_pts[stream.index])) * tb * ctx.sample_rate)
            total = min(total, span) if span > 0 else total
    layout_name = ctx.layout.name if ctx.layout is not None else f"{ctx.channels} channels"
    return AudioInfo(ctx.name, ctx.sample_rate, ctx.channels, layout_name, Fraction(stream.time_base), total)


class _Marks:
    """Digests of the video packets a probe is asked for (and the first and last), and the first
    frame's signature, gathered in the probe's one pass over the file."""

    def __init__(self, wanted: frozenset[int]):
        self.wanted = wanted
        self.found: dict[int, str] = {}
        self.first: str | None = None
        self.last: Any = None
        self.signature: str | None = None

    def see(self, index: int, packet: Any) -> None:
        if index == 0:
            self.first = self.digest(packet)
        if index in self.wanted and (digest := self.digest(packet)) is not None:
            self.found[index] = digest
        self.last = packet

    @staticmethod
    def digest(packet: Any) -> str | None:
        return hashlib.sha1(bytes(packet)).hexdigest()[:16] if packet is not None else None

    def picture(self, frames: Any) -> bool:
        """Keep the first decoded frame's signature; True once there is one."""
        if frames and self.signature is None:
            self.signature = signature(frames[0])
        return bool(frames)


def signature(frame: Any) -> str:
    """A frame as 8x8 grey levels: enough to tell frames of different moments apart, cheap to keep."""
    return bytes(frame.reformat(width=8, height=8, format="gray").to_ndarray().tobytes()).hex()


def _video_info(stream: Any, frames: int, first_key: bool, first_pts: dict[int, int], end_pts: dict[int, int], name: str) -> VideoInfo:
    ctx = stream.codec_context
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate:
        raise ProbeError(f"{name}: the video stream has no frame rate")
    rate = Fraction(rate)
    time_base = Fraction(stream.time_base)
    index = stream.index
    span = 0.0
    if index in first_pts:
        end = end_pts[index]
        # A muxer that stores no packet durations (end == last pts): count the last frame as 1/fps.
        span = float((end - first_pts[index]) * time_base)
        if end_pts[index] <= first_pts[index] or span < float((frames - 1) / rate):
            span = float(frames / rate)
    extradata = ctx.extradata
    digest = hashlib.sha1(bytes(extradata)).hexdigest()[:16] if extradata else None
    pix_fmt = ctx.pix_fmt if ctx.pix_fmt else None
    return VideoInfo(ctx.name, ctx.width, ctx.height, pix_fmt, time_base, rate, frames, first_key, span, digest)


def _check_complete(container: Any, stream: Any, video: VideoInfo, name: str) -> None:
    """A file cut short still opens when its index comes first; compare what it declares with what it holds."""
    if stream.frames and video.frames < stream.frames:
        raise ProbeError(f"{name}: truncated: the header lists {stream.frames} video frames, found {video.frames}")
    declared = None
    tag = (stream.metadata or {}).get("DURATION")  # Matroska writes it when the file is finalised
    if tag:
        declared = _parse_clock(tag)
    elif container.format.name.startswith("matroska") and container.duration:
        declared = container.duration / 1_000_000
    if declared is not None and video.span < declared - 1.5 / float(video.frame_rate):
        raise ProbeError(f"{name}: truncated: the header says {declared:.3f} s of video, the frames end at {video.span:.3f} s")


def _parse_clock(text: str) -> float | None:
    match = re.fullmatch(r"(\d+):(\d\d):(\d\d(?:\.\d+)?)", text.strip())
    if not match:
        return None
    return int(match.group(1)) * 3600 + int(match.group(2)) * 60 + float(match.group(3))


def _reason(exc: BaseException) -> str:
    """libav's message without the errno and file name PyAV wraps around it."""
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())


def mismatch(info: MediaInfo, ref: MediaInfo, ref_name: str) -> str | None:
    """Why `info` cannot be stream-copied after `ref` (a stitch would break at the seam), or None."""
    if info.video is None or ref.video is None:
        return "has no video stream" if info.video is None else f"has a video stream, but {ref_name} has none"
    if info.layout != ref.layout:
        return f"streams are {', '.join(info.layout)}, but {ref_name} has {', '.join(ref.layout)}"
    v, r = info.video, ref.video
    for what, mine, theirs in (
        ("video codec is", v.codec, r.codec),
        ("video is", v.size, r.size),
        ("pixel format is", v.pix_fmt, r.pix_fmt),
        ("frame rate is", v.frame_rate, r.frame_rate),
        ("video time base is", v.time_base, r.time_base),
        ("video codec configuration (extradata) is", v.extradata_digest, r.extradata_digest),
    ):
        if mine != theirs:
            return f"{what} {mine}, but {ref_name} is {theirs}"
    for number, (a, b) in enumerate(zip(info.audio, ref.audio), 1):
        for part, ours, others in (("codec", a.codec, b.codec), ("sample rate", a.sample_rate, b.sample_rate),
                                   ("channel count", a.channels, b.channels)):
            if ours != others:
                return f"audio stream {number} {part} is {ours}, but {ref_name} has {others}"
    return None
