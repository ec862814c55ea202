"""Beeps: a beep at the start of every second, and a white flash on the same frames.

At 30 fps the beeps start exactly on frames 0, 30, 60 and 90, which are also where the
bundled job's four chunks start: a seam that dropped or doubled samples would move a beep
off its flash, and the quiet hum under the beeps would click where the audio jumps.
"""
from __future__ import annotations

import numpy as np
from PIL import ImageDraw

from helios_doit.video.composition import AudioBlock, Composition, Frame

comp = Composition(width=640, height=360, fps=30, duration=4.0, sample_rate=48000, channels=2)

BEEP_SECONDS = 0.15
BEEP_HZ, HUM_HZ = 880.0, 110.0
FADE_SECONDS = 0.005  # ramps at both ends of a beep, so the beep itself never clicks


@comp.audio
def sound(block: AudioBlock) -> np.ndarray:
    t = block.times
    into = t - np.floor(t)  # seconds since the last whole second
    beeping = into < BEEP_SECONDS
    ramp = np.clip(np.minimum(into, BEEP_SECONDS - into) / FADE_SECONDS, 0.0, 1.0)
    beep = np.where(beeping, 0.5 * ramp * np.sin(2 * np.pi * BEEP_HZ * t), 0.0)
    hum = 0.05 * np.sin(2 * np.pi * HUM_HZ * t)
    return (beep + hum).astype(np.float32)


@comp.frame
def draw(f: Frame):
    into = f.time - int(f.time)
    flash = into < BEEP_SECONDS
    img = f.canvas("white" if flash else (15, 15, 25))
    d = ImageDraw.Draw(img)
    ink = (0, 0, 0) if flash else (230, 230, 240)
    s = f.scale
    d.text((20 * s, 20 * s), f"frame {f.index:04d}", font=f.font(40), fill=ink)
    d.text((20 * s, 70 * s), f"second {int(f.time)}" + ("  BEEP" if flash else ""), font=f.font(28), fill=ink)
    # A hand sweeping once per second: where it stands says how far into the second this frame is.
    x = 20 * s + into * (f.width - 40 * s)
    d.rectangle([x - 3 * s, f.height - 60 * s, x + 3 * s, f.height - 20 * s], fill=(255, 80, 80))
    return img
