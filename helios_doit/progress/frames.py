"""How far a running chunk is, read from its renderer's own output.

Renderers say it in their own words: Helios `Progress: Rendered 12 / 30 frames` (and so does
`helios-doit render`), Blender `Fra:112 Mem:...` (the absolute frame it is on), ffmpeg
`frame=   12 fps=...` (frames written so far, lines ended by `\\r`). The meter looks at the
output as it streams, in any chunking, and keeps only a short tail between calls.
"""
from __future__ import annotations

import re

_HELIOS = re.compile(rb"Rendered (\d{1,12}) / \d{1,12} frames")
_BLENDER = re.compile(rb"(?<![A-Za-z])Fra:(\d{1,12})(?=\D)")  # a number at the end of a read may go on
_FFMPEG = re.compile(rb"(?<![A-Za-z_])frame=\s{0,20}(\d{1,12})(?=\D)")
_KEEP = 64  # bytes kept between calls: a progress line split across two reads is still seen


class FrameMeter:
    """Frames a chunk of `count` frames starting at `first` has rendered, as its output says."""

    def __init__(self, first: int, count: int):
        self.first, self.count = first, count
        self.frames: int | None = None  # None until the renderer has said anything we understand
        self._rest = b""

    def feed(self, data: bytes) -> int | None:
        """The frames done so far if `data` changed them, else None."""
        text = self._rest + data
        self._rest = text[-_KEEP:]
        found = None
        for pattern, absolute in ((_HELIOS, False), (_FFMPEG, False), (_BLENDER, True)):
            last = None
            for last in pattern.finditer(text):
                pass
            if last is not None:
                value = int(last.group(1))
                found = value - self.first if absolute else value  # Blender names the frame it is on
                break
        if found is None:
            return None
        found = max(0, min(found, self.count))
        if found == self.frames:
            return None
        self.frames = found
        return found
