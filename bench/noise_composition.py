"""A composition that compresses badly on purpose: fresh noise every frame, at 1280x720.

Used by bench P4 to make large chunks (hundreds of MB in all) quickly, so that stitching is
measured on real bytes. Each frame is a pure function of its index (seeded noise over a
moving gradient), and there is a stereo tone, so the chunks carry PCM audio as real
renders do.
"""
from __future__ import annotations

import numpy as np

from helios_doit.video.composition import AudioBlock, Composition, Frame

comp = Composition(width=1280, height=720, fps=30, duration=10.0, sample_rate=48000, channels=2)


@comp.frame
def draw(f: Frame) -> np.ndarray:
    rng = np.random.default_rng(f.index)
    noise = rng.integers(0, 256, size=(f.height, f.width, 3), dtype=np.uint8)
    ramp = np.linspace(0, 255, f.width, dtype=np.float32)[None, :, None]
    shift = (ramp + 7 * f.index) % 256
    return ((noise.astype(np.uint16) + shift.astype(np.uint16)) // 2).astype(np.uint8)


@comp.audio
def tone(block: AudioBlock) -> np.ndarray:
    return 0.2 * np.sin(2 * np.pi * 440.0 * block.times)
