"""Give a chunk the job's frame rate by rewriting its timestamps, never its pictures.

Helios' canvas path pipes H.264 to ffmpeg without a frame rate, so every chunk comes out at
25 fps whatever the job says: the frames and their count are right, only the clock is wrong.
Re-encoding would cost a generation of quality and the time of a render; a remux costs a read
and a write. The chunk is only retimed when nothing else is wrong with it (the verifier decides
that first), its frames are evenly spaced, and its audio already lasts as long as the job's
frames do: audio cannot be retimed without re-encoding, so audio that followed the wrong clock
is refused rather than left out of sync. The new file replaces the old one atomically: a retime
killed at any moment leaves the chunk as the renderer wrote it.
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from ..core.errors import HeliosDoitError
from ..state.atomic import new_file

#: How far from a whole frame a timestamp may sit (muxers round) and still count as evenly spaced.
SLACK = Fraction(1, 20)


class RetimeError(HeliosDoitError):
    """A chunk that cannot be retimed without re-encoding; one line saying why."""


def exact_rate(fps: float | Fraction) -> Fraction:
    """The job's frame rate as the renderer meant it: 29.97 is 2997/100, not its binary float."""
    return Fraction(repr(fps)) if isinstance(fps, float) else Fraction(fps)


def retime_chunk(path: str | Path, fps: float | Fraction) -> str:
    """Remux `path` in place to `fps` by stream copy; returns the note to keep in the chunk's record.
    Raises RetimeError (the file untouched) when its frames are not evenly spaced at its own rate,
    or it holds streams other than video and audio."""
    path = Path(path)
    target = exact_rate(fps)
    try:
        with av.open(str(path)) as src:
            video = src.streams.video[0]
            others = [s.type for s in src.streams if s.type not in ("video", "audio")]
            if others:
                raise RetimeError(f"it also holds a {others[0]} stream, whose timing a remux cannot vouch for")
            source = Fraction(video.average_rate or video.guessed_rate or 0)
            if not source:
                raise RetimeError("it has no frame rate to retime from")
            with muxer_for(path) as probe:
                muxer = str(probe.format.name)
            with new_file(path) as tmp:
                with av.open(tmp.file, "w", format=muxer) as out:
                    _remux(src, out, video, source, target)
    except (av.FFmpegError, OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise RetimeError(f"the remux failed: {' '.join(str(reason).split())}") from None
    return f"retimed from {float(source):g} fps to {float(target):g} fps (timestamps rewritten, not re-encoded)"


def _remux(src: Any, out: Any, video: Any, source: Fraction, target: Fraction) -> None:
    """Every video packet at frame position (its time x the file's rate), each frame 1/target
    long; audio packets as they are."""
    audio = list(src.streams.audio)
    new_video = out.add_stream_from_template(video, rate=target)
    new_video.time_base = 1 / target
    targets = {video.index: new_video, **{a.index: out.add_stream_from_template(a) for a in audio}}
    out.start_encoding()  # the muxer fixes its time bases here
    tb_out = Fraction(new_video.time_base)
    per_frame = 1 / (target * tb_out)  # ticks of the new time base per frame
    positions: list[int] = []
    for packet in src.demux([video, *audio]):
        if not packet.size:
            continue
        stream = targets[packet.stream.index]
        if packet.stream.index != video.index:
            packet.stream = stream
            out.mux(packet)
            continue
        tb_in = Fraction(packet.time_base)
        pts = _frame_at(packet.pts, tb_in, source)
        dts = _frame_at(packet.dts if packet.dts is not None else packet.pts, tb_in, source)
        if pts is None or dts is None:
            raise RetimeError("a video packet has no timestamp, so its frame's place is unknown")
        positions.append(pts)
        packet.stream = stream
        packet.time_base = tb_out
        packet.pts, packet.dts = round(pts * per_frame), round(dts * per_frame)
        packet.duration = round(per_frame)
        out.mux(packet)
    positions.sort()
    if not positions or positions != list(range(positions[0], positions[0] + len(positions))):
        raise RetimeError(f"its frames are not evenly spaced at {float(source):g} fps, so new timestamps "
                          "would not match the pictures")


def _frame_at(ts: int | None, tb: Fraction, rate: Fraction) -> int | None:
    """The frame position of a timestamp, if it sits on a whole frame; a stray one raises."""
    if ts is None:
        return None
    exact = ts * tb * rate
    frame = round(exact)
    if abs(exact - frame) > SLACK:
        raise RetimeError(f"its frames are not evenly spaced at {float(rate):g} fps (a frame at {float(ts * tb):.4f} s), "
                          "so new timestamps would not match the pictures")
    return frame


def muxer_for(path: Path) -> Any:
    """An output container of the muxer libav picks for `path`'s extension, to ask it (its name,
    the streams it takes): opened at a name beside `path`, which nothing touches before a header is
    written. Close it unused. Raises ValueError (or av.FFmpegError) for an extension libav has no
    muxer for."""
    return av.open(str(path.with_name(f".{path.stem}.muxer-probe{path.suffix}")), "w")
