"""Whether a chunk's output, or a merged file, is what the job asked for; each answer one line.

A chunk is checked when its command exits 0: it must decode, hold exactly its frames at the
job's size, and start on a keyframe. What a stream copy carries over unchanged (its packet
count, the digests of its first and last video packets, and an 8x8 picture of its first
frame) goes into its record. The merged file is checked against the job (frame count and
duration) and then seam by seam against those facts: a merge that joined the chunks in the
wrong order, or took a wrong file, has the right frame count but the wrong frames at its seams.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Sequence

import av

from .probe import MediaInfo, ProbeError, probe, signature

#: Mean grey-level difference under which two 8x8 pictures show the same frame after re-encoding.
SAME_PICTURE = 12.0


@dataclass(frozen=True)
class ChunkFacts:
    """What a verified chunk's video holds, as its record keeps it."""

    frames: int
    packets: int
    first: str | None
    last: str | None
    signature: str | None

    def as_record(self) -> dict[str, Any]:
        return {"frames": self.frames, "packets": self.packets, "first": self.first, "last": self.last,
                "signature": self.signature}

    @classmethod
    def from_record(cls, data: Any) -> ChunkFacts | None:
        """None for a record without them (a chunk that is not a video, or an older record)."""
        try:
            return cls(int(data["frames"]), int(data["packets"]), data["first"], data["last"], data["signature"])
        except (TypeError, KeyError, ValueError):
            return None


@dataclass(frozen=True)
class Verdict:
    """What verifying a chunk found: the problem (None: it is what the job asked for), its facts,
    and, when the frame rate is the only thing wrong and a remux can fix it, the file's rate."""

    problem: str | None
    facts: ChunkFacts | None = None
    rate: Fraction | None = None  # set only when the chunk can be retimed to the job's rate
    not_retimable: str | None = None  # the rate is wrong, and this is why a remux cannot fix it


def judge_chunk(path: str | Path, frame_count: int, width: int, height: int, fps: float | None = None) -> Verdict:
    """Why a chunk's output is not what the job asked for (`problem`, None if it is), and its facts.
    Given the job's `fps`, the chunk must have that frame rate, and so last `frame_count / fps`
    seconds. Also whether a wrong frame rate is all that is wrong (Helios' canvas path writes 25 fps
    whatever the job says, with the right frames): then `rate` is the file's own."""
    try:
        info = probe(path)
    except ProbeError as exc:
        message = str(exc)
        prefix = f"{Path(path).name}: "
        message = message[len(prefix):] if message.startswith(prefix) else message
        if message.startswith("no such file"):
            return Verdict("was not written")
        return Verdict(message if message.startswith("does not decode") else f"does not decode: {message}")
    video = info.video
    if video is None:
        return Verdict("has no video stream")
    if (video.width, video.height) != (width, height):
        return Verdict(f"expected {width}x{height}, found {video.width}x{video.height}")
    if video.frames != frame_count:
        return Verdict(f"expected {frame_count} frames, found {video.frames}")
    if fps is not None and (problem := check_timing(video.frame_rate, video.span, frame_count, fps)):
        if not wrong_rate(video.frame_rate, fps):
            return Verdict(problem)
        why = _not_retimable(info, frame_count, fps)
        if why is not None:
            return Verdict(problem, not_retimable=why)
        return Verdict(f"{float(video.frame_rate):g} fps, expected {fps:g}: the renderer ignored the job's frame rate",
                       rate=video.frame_rate)
    if not video.first_is_keyframe:
        return Verdict("does not start on a keyframe, so it cannot be stitched without re-encoding")
    return Verdict(None, ChunkFacts(video.frames, video.frames, video.first_packet, video.last_packet, video.signature))


def wrong_rate(rate: Fraction, fps: float) -> bool:
    """A frame rate other than the job's: compared to a thousandth (29.97 is 30000/1001 in a file)."""
    return abs(float(rate) - fps) > fps / 1000


def _not_retimable(info: MediaInfo, frames: int, fps: float) -> str | None:
    """Why new timestamps alone cannot give this chunk the job's frame rate, or None if they can."""
    video = info.picture
    if not video.first_is_keyframe:
        return "it does not start on a keyframe"
    if abs(video.span - frames / float(video.frame_rate)) > 0.5 / float(video.frame_rate):
        return f"its frames are not evenly spaced at {float(video.frame_rate):g} fps (they last {video.span:.3f} s)"
    expected = frames / fps
    for audio in info.audio:
        if abs(audio.duration - expected) > 0.5 / fps:
            return (f"its audio lasts {audio.duration:.3f} s, not the {expected:.3f} s of {frames} frames at {fps:g} fps, "
                    "and audio cannot be retimed without re-encoding")
    return None


def check_timing(rate: Fraction, span: float, frames: int, fps: float) -> str | None:
    """A chunk's frame rate and duration against the job's. Rates are compared to a thousandth
    (29.97 in a job is the 30000/1001 of a file); the duration to half a frame."""
    if wrong_rate(rate, fps):
        return (f"{float(rate):g} fps, expected {fps:g}: the renderer ignored the job's frame rate "
                f"({frames} frames last {frames / float(rate):.3f} s instead of {frames / fps:.3f} s)")
    expected = frames / fps
    if abs(span - expected) > 0.5 / fps:
        return f"lasts {span:.3f} s, expected {expected:.3f} s ({frames} frames at {fps:g} fps)"
    return None


def verify_merged(path: str | Path, total_frames: int, fps: float, chunks: Sequence[ChunkFacts] = (),
                  labels: Sequence[str] = ()) -> str | None:
    """One line saying how a merged file differs from what the job rendered, or None. `chunks`
    (in frame order, named by `labels`) are the facts of what was merged: seams are checked."""
    seams = _seam_packets(chunks)
    try:
        info = probe(path, packets_at=frozenset(seams))
    except ProbeError as exc:
        return str(exc).split(": ", 1)[-1]
    return check_merged(info, total_frames, fps) or (check_seams(info, chunks, labels) if chunks else None)


def check_merged(info: MediaInfo, total_frames: int, fps: float) -> str | None:
    """`verify_merged` for a file already probed, without the seams."""
    if info.video is None:
        return "has no video stream"
    if info.video.frames != total_frames:
        return f"expected {total_frames} frames, found {info.video.frames}"
    expected = total_frames / fps
    if abs(info.video.span - expected) > 0.5 / fps:
        return f"lasts {info.video.span:.3f} s, expected {expected:.3f} s ({total_frames} frames at {fps:g} fps)"
    return None


def _seam_packets(chunks: Sequence[ChunkFacts]) -> dict[int, tuple[int, str]]:
    """Packet index in the merged file -> (chunk position, "first" | "last")."""
    found: dict[int, tuple[int, str]] = {}
    offset = 0
    for k, chunk in enumerate(chunks):
        found[offset] = (k, "first")
        found[offset + chunk.packets - 1] = (k, "last")
        offset += chunk.packets
    return found


def check_seams(info: MediaInfo, chunks: Sequence[ChunkFacts], labels: Sequence[str] = ()) -> str | None:
    """Every chunk's first and last packets where a stream copy in frame order puts them; if no
    packet was copied as it was (the merge encoded again), every chunk's first picture instead."""
    assert info.video is not None
    names = list(labels) or [f"chunk {k}" for k in range(len(chunks))]
    found = dict(info.video.packets)
    offsets, copied = [], []
    offset = 0
    for chunk in chunks:
        offsets.append(offset)
        copied.append(found.get(offset) == chunk.first and found.get(offset + chunk.packets - 1) == chunk.last)
        offset += chunk.packets
    if all(copied):
        return None
    if any(copied):
        k = copied.index(False)
        return (f"the merged file's frames {offsets[k]}-{offsets[k] + chunks[k].packets - 1} are not {names[k]}'s: "
                "the chunks were joined out of frame order, or a wrong file was taken")
    return _check_pictures(info.path, chunks, names)


def _check_pictures(path: Path, chunks: Sequence[ChunkFacts], names: Sequence[str]) -> str | None:
    """The merge encoded again: decode the merged file up to its last seam and compare the first
    frame of every chunk's stretch with that chunk's first picture."""
    starts: dict[int, int] = {}
    frame = 0
    for k, chunk in enumerate(chunks):
        if chunk.signature:
            starts[frame] = k
        frame += chunk.frames
    if not starts:
        return None
    last = max(starts)
    with av.open(str(path)) as container:
        for index, decoded in enumerate(container.decode(video=0)):
            if index in starts:
                k = starts[index]
                distance = signature_distance(signature(decoded), chunks[k].signature or "")
                if distance > SAME_PICTURE:
                    return (f"the merged file's frame {index} is not {names[k]}'s first frame (they differ by "
                            f"{distance:.0f} grey levels): the chunks were joined out of frame order, or a wrong file was taken")
            if index >= last:
                return None
    return f"the merged file ends before frame {last}"


def signature_distance(a: str, b: str) -> float:
    """Mean absolute difference of two signatures, in grey levels (0-255)."""
    x, y = bytes.fromhex(a), bytes.fromhex(b)
    if len(x) != len(y) or not x:
        return 255.0
    return sum(abs(p - q) for p, q in zip(x, y)) / len(x)
