"""Small synthetic clips, encoded with PyAV the way a chunk renderer writes them.

Every frame's picture depends only on its global frame number, and every audio sample on
its global sample number, so chunks of one "render" line up exactly and a stitched file
can be compared with a direct render frame by frame and sample by sample.
"""
from __future__ import annotations

import hashlib
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Sequence

import av
import numpy as np

PIX_FMT = {"libx264": "yuv420p", "prores_ks": "yuv422p10le", "ffv1": "yuv420p", "mpeg4": "yuv420p"}


def picture(index: int, width: int, height: int) -> np.ndarray:
    """An RGB frame that differs from its neighbours by a small, steady motion."""
    y, x = np.mgrid[0:height, 0:width]
    base = ((x * 255) // max(1, width - 1)).astype(np.uint8)
    frame = np.stack([base, ((y * 255) // max(1, height - 1)).astype(np.uint8), np.full_like(base, (index * 5) % 256)], axis=-1)
    size = max(4, height // 4)
    left = (index * 3) % max(1, width - size)
    frame[height // 3: height // 3 + size, left: left + size] = (255, 255, 255)
    return frame


def sample_offset(frame: int, fps: int, sample_rate: int) -> int:
    """The first audio sample of a frame, so per-chunk sample counts add up to a direct render."""
    return frame * sample_rate // fps


def tone(first: int, count: int, sample_rate: int, channels: int) -> np.ndarray:
    t = (np.arange(first, first + count) / sample_rate).astype(np.float64)
    mono = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)
    return np.ascontiguousarray(np.repeat(mono[:, None], channels, axis=1).reshape(1, -1))


def encode_clip(
    path: Path,
    *,
    codec: str = "libx264",
    start: int = 0,
    frames: int = 24,
    width: int = 160,
    height: int = 90,
    fps: int = 24,
    audio: str | None = "pcm_s16le",
    sample_rate: int = 48000,
    channels: int = 2,
    pictures: Sequence[int] | None = None,
    pix_fmt: str | None = None,
) -> Path:
    """Write frames start..start+frames-1 (pts from zero) and their share of the audio."""
    with av.open(str(path), "w") as container:
        video = container.add_stream(codec, rate=fps)
        video.width, video.height = width, height
        video.pix_fmt = pix_fmt or PIX_FMT[codec]
        video.time_base = Fraction(1, fps)
        if codec == "libx264":
            video.options = {"bf": "0", "g": "1000", "preset": "ultrafast"}
        sound = None
        if audio:
            sound = container.add_stream(audio, rate=sample_rate, layout="stereo" if channels == 2 else "mono")
        for i in range(frames):
            number = pictures[i] if pictures is not None else start + i
            frame = av.VideoFrame.from_ndarray(picture(number, width, height), format="rgb24")
            frame.pts = i
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        if sound is not None:
            first = sample_offset(start, fps, sample_rate)
            count = sample_offset(start + frames, fps, sample_rate) - first
            block = av.AudioFrame.from_ndarray(tone(first, count, sample_rate, channels), format="s16", layout=sound.layout.name)
            block.sample_rate = sample_rate
            block.pts = 0
            container.mux(sound.encode(block))
            container.mux(sound.encode(None))
    return path


def encode_chunks(folder: Path, counts: Sequence[int], suffix: str = ".mov", **kwargs: object) -> list[Path]:
    """Chunks part_0..part_n-1 of one render, `counts[i]` frames each."""
    paths, start = [], 0
    for i, count in enumerate(counts):
        paths.append(encode_clip(folder / f"part_{i}{suffix}", start=start, frames=count, **kwargs))  # type: ignore[arg-type]
        start += count
    return paths


def drop_first_packets(source: Path, target: Path, count: int = 1) -> Path:
    """Copy a clip without its first video packets, so it no longer starts on a keyframe."""
    with av.open(str(source)) as src, av.open(str(target), "w") as dst:
        streams = {s.index: dst.add_stream_from_template(s) for s in src.streams if s.type in ("video", "audio")}
        seen = 0
        for packet in src.demux(list(src.streams)):
            if packet.size == 0 or packet.stream.index not in streams:
                continue
            if packet.stream.type == "video":
                seen += 1
                if seen <= count:
                    continue
            packet.stream = streams[packet.stream.index]
            dst.mux(packet)
    return target


def frame_hashes(path: Path) -> list[str]:
    """One digest per decoded video frame, in presentation order."""
    with av.open(str(path)) as container:
        return [hashlib.sha1(frame.to_ndarray(format="rgb24").tobytes()).hexdigest() for frame in container.decode(video=0)]


def duration(path: Path) -> float:
    """Seconds from the first frame's timestamp to the end of the last one, as a player sees it."""
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        packets = [p for p in container.demux(video) if p.size]
        end = max(p.pts + (p.duration or 0) for p in packets)
        return float((end - min(p.pts for p in packets)) * video.time_base)


def audio_pcm(path: Path) -> np.ndarray:
    """Every decoded audio sample of the first audio stream, interleaved s16."""
    with av.open(str(path)) as container:
        blocks = [frame.to_ndarray() for frame in _audio_frames(container)]
    return np.concatenate([b.reshape(-1) for b in blocks]) if blocks else np.zeros(0, np.int16)


def _audio_frames(container: av.container.InputContainer) -> Iterator[av.AudioFrame]:
    yield from container.decode(audio=0)
