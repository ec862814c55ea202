"""Stitch rendered chunks into one file without re-encoding the video.

Chunks are checked for compatibility first, because a stream copy of mismatched chunks
"succeeds" and yields a file that breaks at a seam. The result is written under a temporary
name next to the output and renamed only once it holds every frame, so a crash or a refusal
never leaves a half-written file under the final name. Compressed audio (AAC) is decoded
and encoded once instead of copied: each chunk's encoder priming would otherwise leave a
gap at every seam.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import av
import numpy as np

from ..core.errors import HeliosDoitError
from ..state.atomic import NewFile, new_file
from .probe import MediaInfo, ProbeError, mismatch, open_media, probe
from .retime import muxer_for

#: Containers that hold PCM audio and whose usual players play it. This libav's mp4 muxer
#: accepts PCM (as ISO 'ipcm'), but browsers and QuickTime do not play that, so MP4 gets AAC.
PCM_CONTAINERS = frozenset({".mov", ".mkv", ".avi", ".mxf"})
LOSSY_BITRATE_PER_CHANNEL = 96_000

Verify = Callable[[MediaInfo], "str | None"]  # the merged file, probed: why it is wrong, or None


class StitchError(HeliosDoitError):
    """A merge that did not happen, in one line. exit_code 2: bad inputs or arguments; 1: writing failed."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(" ".join(message.split()), exit_code=exit_code)


@dataclass(frozen=True)
class StitchResult:
    output: Path
    frames: int
    duration: float  # seconds: frames / fps
    audio_samples: tuple[int, ...]  # per audio stream
    video_codec: str
    audio_codecs: tuple[str, ...]


class Stitcher(Protocol):
    def stitch(self, inputs: Sequence[Path], output: Path, *, audio_codec: str | None = None) -> StitchResult: ...


def check_compatible(inputs: Sequence[Path]) -> list[MediaInfo]:
    """Probe every chunk; refuse (exit code 2) naming the first one that cannot follow the first chunk."""
    if not inputs:
        raise StitchError("no chunks to merge; give at least one input", 2)
    names = [Path(p).name for p in inputs]
    names = names if len(set(names)) == len(names) else [str(p) for p in inputs]
    infos: list[MediaInfo] = []
    for path in inputs:
        try:
            infos.append(_probe_after(infos[0] if infos else None, path))
        except ProbeError as exc:
            raise StitchError(str(exc), 2) from None
    for name, info in zip(names, infos):
        problem = mismatch(info, infos[0], names[0])
        if problem:
            raise StitchError(f"{name}: {problem}; render every chunk with the same settings", 2)
        if not info.picture.first_is_keyframe:
            raise StitchError(f"{name}: does not start on a keyframe, so it cannot be stream-copied; render it again", 2)
    return infos


def _probe_after(first: MediaInfo | None, path: Path) -> MediaInfo:
    """Probe a chunk; decode its first frame only when the first chunk's does not vouch for it.

    Decoding a keyframe is most of a probe's cost (~55 ms at 1280x720). A chunk whose codec
    configuration (extradata: H.264/HEVC SPS and PPS, VP9/AV1 config records) is byte-identical
    to the first chunk's has the first chunk's pixel format, and the runner decoded every chunk
    when it finished it; anything else is decoded here.
    """
    if first is None or first.video is None or first.video.extradata_digest is None:
        return probe(path)
    info = probe(path, decode=False)
    if info.video is not None and info.video.extradata_digest == first.video.extradata_digest:
        return dataclasses.replace(info, video=dataclasses.replace(info.video, pix_fmt=first.video.pix_fmt))
    return probe(path)


def plan_audio(infos: Sequence[MediaInfo], output: Path, audio_codec: str | None) -> tuple[str | None, ...]:
    """Per audio stream: None to stream-copy, else the codec to encode to (once, at the merge)."""
    plans: list[str | None] = []
    choice = None if audio_codec in (None, "auto") else audio_codec
    if choice not in (None, "copy"):
        try:
            known = av.Codec(choice, "w").type == "audio"
        except (ValueError, av.FFmpegError):
            known = False
        if not known:
            raise StitchError(f"--audio-codec {choice}: this build has no such audio encoder; use copy, aac or pcm_s16le", 2)
    lossy = "libopus" if output.suffix.lower() == ".webm" else "aac"
    for audio in infos[0].audio:
        if choice == "copy":
            if not audio.is_pcm and len(infos) > 1:
                raise StitchError(f"the chunks' audio is {audio.codec}, which cannot be stream-copied across seams "
                                  f"(each chunk's encoder priming leaves a gap); use --audio-codec {lossy}", 2)
            plans.append(None)
        elif choice is not None:
            plans.append(None if choice == audio.codec and audio.is_pcm else choice)
        elif audio.is_pcm:
            plans.append(None if output.suffix.lower() in PCM_CONTAINERS else lossy)
        else:
            plans.append(None if len(infos) == 1 and audio.codec == lossy else lossy)
    return tuple(plans)


class _AtomicStitcher:
    """Checks, a temporary file, a frame count, a rename: what every stitcher must do alike."""

    def stitch(self, inputs: Sequence[Path], output: Path, *, audio_codec: str | None = None,
               expected_frames: int | None = None, verify: Verify | None = None) -> StitchResult:
        output = Path(output)
        inputs = [Path(p) for p in inputs]
        if not output.parent.is_dir():
            raise StitchError(f"{output}: the folder {output.parent} does not exist", 2)
        if output.is_dir() or any(p.resolve() == output.resolve() for p in inputs):
            raise StitchError(f"{output}: is a folder or one of the inputs; give a new path for the merged file", 2)
        infos = check_compatible(inputs)
        total = sum(info.video.frames for info in infos if info.video is not None)
        if expected_frames is not None and total != expected_frames:
            raise StitchError(f"the chunks hold {total} frames, but the job has {expected_frames}; render the chunks again", 2)
        plans = plan_audio(infos, output, audio_codec)
        fmt = _check_container(output, infos[0], plans)
        try:
            # Nameless until it is checked: a merge stopped or killed at any moment leaves nothing.
            with new_file(output) as tmp:
                samples = self._write(infos, plans, tmp, fmt)
                tmp.file.flush()
                merged = probe(tmp.path, decode=False)  # its first frame is the first chunk's, decoded already
                found = merged.video.frames if merged.video else 0
                if found != total:
                    raise StitchError(f"{output.name}: the merged file holds {found} frames, the chunks {total}")
                problem = verify(merged) if verify else None
                if problem:
                    raise StitchError(f"{output.name}: {problem}")
        except ProbeError as exc:
            raise StitchError(f"{output.name}: the merged file does not read back: {str(exc).split(': ', 1)[-1]}") from None
        except (av.FFmpegError, OSError, ValueError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise StitchError(f"{output.name}: writing failed: {reason}") from None
        fps = infos[0].picture.frame_rate
        return StitchResult(output, found, float(found / fps), samples or tuple(a.samples for a in merged.audio),
                            merged.picture.codec, tuple(a.codec for a in merged.audio))

    def _write(self, infos: Sequence[MediaInfo], plans: Sequence[str | None], tmp: NewFile,
               fmt: str) -> tuple[int, ...] | None:
        raise NotImplementedError


def _check_container(output: Path, first: MediaInfo, plans: Sequence[str | None]) -> str:
    """Ask this libav build's muxer whether it takes our streams, before any work is done; the
    muxer's name (from the output's extension)."""
    try:
        container = muxer_for(output)
    except (ValueError, av.FFmpegError):
        raise StitchError(f"{output.name}: cannot tell the container from the extension; use .mov, .mp4 or .mkv", 2) from None
    try:
        with open_media(first.path) as src:
            _add_streams(container, src, plans, first)
        return str(container.format.name)
    except ValueError as exc:
        hint = "another output extension" + ("" if "video" in str(exc) or len(container.streams) == 0 else " or --audio-codec")
        raise StitchError(f"{output.name}: {exc}; choose {hint}", 2) from None
    finally:
        container.close()


def _add_streams(out: Any, src: Any, plans: Sequence[str | None], info: MediaInfo) -> list[Any]:
    video = src.streams.video[0]
    # With its frame rate, Matroska keeps each frame's duration (without it, the last frame has none).
    streams = [out.add_stream_from_template(video, **({"rate": video.average_rate} if video.average_rate else {}))]
    for stream, codec, meta in zip(src.streams.audio, plans, info.audio):
        if codec is None:
            streams.append(out.add_stream_from_template(stream))
            continue
        # Matroska stores no channel order ("2 channels"); encoders want a named layout.
        encoded = out.add_stream(codec, rate=meta.sample_rate, layout=av.AudioLayout(f"{meta.channels}c").name)
        if codec in ("aac", "libopus"):
            encoded.bit_rate = LOSSY_BITRATE_PER_CHANNEL * meta.channels
        streams.append(encoded)
    return streams


class PyAVStitcher(_AtomicStitcher):
    """The built-in stitcher: a packet-level remux through libav, holding a packet at a time."""

    def _write(self, infos: Sequence[MediaInfo], plans: Sequence[str | None], tmp: NewFile, fmt: str) -> tuple[int, ...]:
        fps = infos[0].picture.frame_rate
        codecs: list[str | None] = [None, *plans]  # stream 0 is the video, always copied
        starts = [Fraction(0)] * len(codecs)  # per output stream: seconds already written
        last_dts: list[int | None] = [None] * len(codecs)
        written = [0] * len(codecs)  # samples fed to each audio encoder
        targets: list[Any] = []
        done = 0  # video frames of the chunks before this one
        with av.open(tmp.file, "w", format=fmt) as out:
            for info in infos:
                # The first chunk is the template of the output's streams: open it fully (pixel
                # format included); the others only give packets.
                with (open_media(info.path) if targets else av.open(str(info.path))) as src:
                    sources = [src.streams.video[0], *src.streams.audio]
                    if not targets:
                        targets = _add_streams(out, src, plans, info)
                        out.start_encoding()
                    slot = {stream.index: j for j, stream in enumerate(sources)}
                    keep = [0] + [_chunk_samples(audio, done, info.picture.frames, fps) for audio in info.audio]
                    fed = [0] * len(codecs)
                    for packet in src.demux(sources):
                        if not packet.size:  # PyAV's end-of-stream marker; decoders are flushed below
                            continue
                        j = slot[packet.stream.index]
                        if codecs[j] is None:
                            last_dts[j] = _copy(out, packet, targets[j], starts[j], last_dts[j])
                        else:
                            fed[j] += _encode(out, packet.decode(), targets[j], written[j] + fed[j], keep[j] - fed[j])
                    for j, source in enumerate(sources):
                        if codecs[j] is not None:
                            fed[j] += _encode(out, source.codec_context.decode(None), targets[j], written[j] + fed[j], keep[j] - fed[j])
                            fed[j] += _silence(out, targets[j], written[j] + fed[j], keep[j] - fed[j], source)
                            written[j] += fed[j]
                    starts[0] += info.picture.frames / fps
                    done += info.picture.frames
                    for j, audio in enumerate(info.audio, 1):
                        starts[j] += Fraction(audio.samples, audio.sample_rate)
            for j, codec in enumerate(codecs):
                if codec is not None:
                    out.mux(targets[j].encode(None))
        return tuple(written[j] if codecs[j] else sum(info.audio[j - 1].samples for info in infos) for j in range(1, len(codecs)))


def _chunk_samples(audio: Any, before: int, frames: int, fps: Fraction) -> int:
    """How much of a chunk's decoded audio belongs to it. Compressed audio in a coarse time base
    (AAC in Matroska) hides where the encoder's padding starts; there the chunk's frames decide."""
    if audio.is_pcm or audio.time_base <= Fraction(1, audio.sample_rate):
        return int(audio.samples)
    rate = int(audio.sample_rate)
    return round((before + frames) * rate / fps) - round(before * rate / fps)


def _copy(out: Any, packet: Any, target: Any, start: Fraction, last: int | None) -> int:
    """Move a packet to the output's time base, shifted to where its stream's previous chunk ended."""
    tb_in, tb_out = Fraction(packet.time_base), Fraction(target.time_base)
    shift = start - (packet.stream.start_time or 0) * tb_in

    def rescale(ts: int | None) -> int | None:
        return None if ts is None else round((shift + ts * tb_in) / tb_out)

    pts, dts = rescale(packet.pts), rescale(packet.dts if packet.dts is not None else packet.pts)
    duration = round(packet.duration * tb_in / tb_out) if packet.duration else 0
    if dts is not None and last is not None and dts <= last:
        dts = last + 1  # two time bases rounding onto one tick at a seam; muxers demand rising DTS
    if pts is not None and dts is not None and pts < dts:
        pts = dts
    packet.stream = target
    packet.time_base = tb_out
    packet.pts, packet.dts, packet.duration = pts, dts, duration
    out.mux(packet)
    return dts if dts is not None else (last or 0)


def _encode(out: Any, frames: Sequence[Any], target: Any, pts: int, room: int) -> int:
    """Feed decoded audio to the one encoder, cut at the chunk's own length (drops AAC end padding)."""
    count = 0
    for frame in frames:
        if room - count <= 0:
            break
        if frame.samples > room - count:
            data = frame.to_ndarray()
            width = room - count if frame.format.is_planar else (room - count) * len(frame.layout.channels)
            cut = av.AudioFrame.from_ndarray(np.ascontiguousarray(data[:, :width]), format=frame.format.name, layout=frame.layout.name)
            cut.sample_rate, frame = frame.sample_rate, cut
        frame.pts = pts + count
        frame.time_base = Fraction(1, target.codec_context.sample_rate)
        out.mux(target.encode(frame))
        count += frame.samples
    return count


def _silence(out: Any, target: Any, pts: int, missing: int, source: Any) -> int:
    """Pad a chunk whose audio decodes short, so later chunks stay in sync with the video."""
    if missing <= 0:
        return 0
    ctx = source.codec_context  # the encoder's resampler wants every frame in the decoder's format
    frame = av.AudioFrame(format=ctx.format.name, layout=ctx.layout, samples=missing)
    for plane in frame.planes:
        plane.update(bytes(plane.buffer_size))
    frame.sample_rate = ctx.sample_rate
    return _encode(out, [frame], target, pts, missing)


class FfmpegConcatStitcher(_AtomicStitcher):
    """ffmpeg's concat demuxer, for those who prefer their ffmpeg; same checks, same atomic write."""

    def __init__(self, binary: str):
        self.binary = binary

    def _write(self, infos: Sequence[MediaInfo], plans: Sequence[str | None], tmp: NewFile, fmt: str) -> None:
        maps = [arg for k, kind in enumerate(infos[0].layout) if kind in ("video", "audio") for arg in ("-map", f"0:{k}")]
        audio: list[str] = []
        for k, plan in enumerate(plans):
            audio += [f"-c:a:{k}", plan or "copy"]
            if plan in ("aac", "libopus"):
                audio += [f"-b:a:{k}", str(LOSSY_BITRATE_PER_CHANNEL * infos[0].audio[k].channels)]
        with tempfile.TemporaryDirectory(prefix="helios-doit-concat-") as folder:
            listing = Path(folder) / "list.txt"
            quoted = [str(info.path.resolve()).replace("'", "'\\''") for info in infos]
            listing.write_text("".join(f"file '{path}'\n" for path in quoted), encoding="utf-8")
            command = [self.binary, "-hide_banner", "-nostdin", "-loglevel", "error", "-f", "concat", "-safe", "0",
                       "-i", str(listing), *maps, "-c:v", "copy", *audio, "-f", fmt, "-y", _for_others(tmp.path)]
            try:
                done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace")
            except OSError as exc:
                raise StitchError(f"cannot run {self.binary}: {exc.strerror}") from None
        if done.returncode != 0:
            lines = [line for line in done.stderr.splitlines() if line.strip()]
            raise StitchError(f"ffmpeg failed with exit code {done.returncode}: {lines[-1] if lines else 'no message'}")
        return None


def _for_others(path: str) -> str:
    """The path of a file being written, as another process (ffmpeg) can open it."""
    return path.replace("/proc/self/", f"/proc/{os.getpid()}/", 1)


def get_stitcher(name: str = "builtin") -> Stitcher:
    if name == "builtin":
        return PyAVStitcher()
    if name == "ffmpeg":
        binary = shutil.which("ffmpeg")
        if binary is None:
            raise StitchError("--stitcher ffmpeg needs an ffmpeg binary on PATH, and there is none; use --stitcher builtin", 2)
        return FfmpegConcatStitcher(binary)
    raise StitchError(f"unknown stitcher {name!r}; use builtin or ffmpeg", 2)
