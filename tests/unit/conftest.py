"""Fast, in-process unit tests of what decides "done" and what verifies outputs.

No doit, no subprocess: real files in tmp_path, real tiny videos made with PyAV. The whole
folder runs in seconds, so that mutation testing (mutmut) can run it once per mutant.
"""
from __future__ import annotations

import sys
from pathlib import Path

# media.py (the clip helpers the slow suite uses too) lives one folder up.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dataclasses import dataclass

import pytest

W, H, FPS = 64, 48, 24
COUNTS = (4, 4, 4)


@dataclass(frozen=True)
class Clips:
    """Tiny real videos, made once per session; tests copy one before changing it."""

    parts: tuple[Path, ...]  # three chunks of one render, 4 frames each, 64x48, 24 fps
    merged: Path  # the parts stream-copied in frame order (what a good merge writes)
    swapped: Path  # the parts stream-copied as 1, 0, 2 (right frame count, wrong order)
    reencoded: Path  # frames 0-11 encoded again as one stream (a merge that re-encodes)
    reencoded_swapped: Path  # the same, with chunk 0's and chunk 2's frames swapped
    no_keyframe: Path  # 5 frames without the first packet: 4 frames, no keyframe first
    audio_only: Path
    small: Path  # part 0's frames at 32x24
    undecodable: Path  # 4 frames whose first (key)frame is garbage: opens, does not decode


_made: list[Clips] = []


@pytest.fixture(scope="session")
def clips() -> Clips:
    """Made once per process, and kept for the processes forked from it (mutmut runs every mutant in
    a fork of the process that ran the suite once): the clips never change, so there is no need
    to encode them again for each mutant."""
    if _made and all(path.exists() for path in (*_made[0].parts, _made[0].undecodable)):
        return _made[0]
    _made.clear()
    _made.append(_make_clips())
    return _made[0]


def _make_clips() -> Clips:
    import atexit
    import os
    import shutil
    import tempfile

    from media import drop_first_packets, encode_chunks, encode_clip

    from helios_doit.video.stitch import PyAVStitcher

    folder = Path(tempfile.mkdtemp(prefix="helios-doit-unit-clips-"))
    maker = os.getpid()
    atexit.register(lambda: os.getpid() == maker and shutil.rmtree(folder, ignore_errors=True))
    opts = dict(width=W, height=H, fps=FPS, audio=None)
    parts = tuple(encode_chunks(folder, COUNTS, suffix=".mov", **opts))
    stitcher = PyAVStitcher()
    merged = stitcher.stitch(list(parts), folder / "merged.mov").output
    swapped = stitcher.stitch([parts[1], parts[0], parts[2]], folder / "swapped.mov").output
    reencoded = encode_clip(folder / "reencoded.mov", frames=12, codec="mpeg4", **opts)
    order = [8, 9, 10, 11, 4, 5, 6, 7, 0, 1, 2, 3]
    reencoded_swapped = encode_clip(folder / "reencoded_swapped.mov", frames=12, codec="mpeg4", pictures=order, **opts)
    five = encode_clip(folder / "five.mov", frames=5, **opts)
    no_keyframe = drop_first_packets(five, folder / "no_keyframe.mov")
    audio_only = folder / "audio_only.mov"
    import av
    import numpy as np
    with av.open(str(audio_only), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        frame.pts = 0
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    small = encode_clip(folder / "small.mov", frames=4, width=32, height=24, fps=FPS, audio=None)
    undecodable = folder / "undecodable.mov"
    with av.open(str(parts[0])) as src, av.open(str(undecodable), "w") as dst:
        target = dst.add_stream_from_template(src.streams.video[0])
        for n, packet in enumerate(p for p in src.demux(src.streams.video[0]) if p.size):
            if n == 0:
                size = packet.size
                garbage = av.Packet(bytes([0, 0, 0, (size - 4) & 0xFF, 0x65]) + bytes(size - 5))
                garbage.pts, garbage.dts, garbage.time_base, garbage.is_keyframe = packet.pts, packet.dts, packet.time_base, True
                packet = garbage
            packet.stream = target
            dst.mux(packet)
    return Clips(parts, merged, swapped, reencoded, reencoded_swapped, no_keyframe, audio_only, small, undecodable)
