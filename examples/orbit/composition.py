"""Orbit: planets circling a sun, with the frame number printed large so chunk seams can be checked.

Every position is a function of the frame's time alone, so any chunk can start anywhere.
Render it whole or one stretch of it:

    helios-doit render examples/orbit/composition.py -o orbit.mp4
    helios-doit render examples/orbit/composition.py -o part.mov --start-frame 60 --frame-count 30
"""
from __future__ import annotations

import functools
import math

import numpy as np
from PIL import Image, ImageDraw

from helios_doit.video.composition import Composition, Frame

comp = Composition(width=640, height=360, fps=30, duration=4.0)

# (orbit radius, radius, turns per second, colour) in the composition's own 640x360 pixels.
PLANETS = [
    (60, 8, 0.50, (120, 200, 255)),
    (100, 12, 0.25, (255, 140, 90)),
    (145, 10, -0.18, (160, 255, 160)),
]


@functools.lru_cache(maxsize=4)
def background(width: int, height: int) -> Image.Image:
    """A vertical gradient; cached per size because it depends on nothing else."""
    ramp = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    top, bottom = np.array([10, 12, 30], np.float32), np.array([40, 20, 60], np.float32)
    pixels = (top + (bottom - top) * ramp) * np.ones((1, width, 1), np.float32)
    return Image.fromarray(pixels.round().astype(np.uint8), "RGB")


@comp.frame
def draw(f: Frame) -> Image.Image:
    img = background(f.width, f.height).copy()
    d = ImageDraw.Draw(img)
    s = f.scale
    cx, cy = f.width / 2, f.height / 2
    d.ellipse([cx - 22 * s, cy - 22 * s, cx + 22 * s, cy + 22 * s], fill=(255, 220, 80))
    for orbit, radius, turns, colour in PLANETS:
        d.ellipse([cx - orbit * s, cy - orbit * s, cx + orbit * s, cy + orbit * s], outline=(70, 70, 110), width=max(1, round(s)))
        angle = 2 * math.pi * turns * f.time
        x, y = cx + orbit * s * math.cos(angle), cy + orbit * s * math.sin(angle)
        d.ellipse([x - radius * s, y - radius * s, x + radius * s, y + radius * s], fill=colour)
    d.text((12 * s, 8 * s), f"frame {f.index:04d}", font=f.font(36), fill="white")
    d.text((12 * s, 50 * s), f"{f.time:6.3f} s  of {f.total_frames} frames", font=f.font(16), fill=(200, 200, 220))
    bar = f.height - 10 * s
    d.rectangle([0, bar, f.width * f.progress, f.height], fill=(255, 220, 80))
    return img
