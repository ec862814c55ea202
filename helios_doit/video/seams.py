"""A picture of every chunk seam, so a glitch where two chunks meet shows at a glance.

Chunks rendered apart can disagree at their boundary (an animation clock off by a frame, a
font not yet loaded, a repeated frame). Each row of the report puts the last frame before a
seam beside the first frame after it, with the frame-to-frame change around the seam: a
seam step that towers over (or drops under) its neighbours is the glitch. Only the frames
near each seam are decoded, seeking to the keyframe before each window.
"""
from __future__ import annotations

import os
import statistics
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..core.errors import HeliosDoitError
from . import is_video_path
from .probe import ProbeError, probe

THUMB_W = 320
MAX_THUMB_H = 320
PAD = 12
LABEL_H = 18
HEADER_H = 34
PLOT_W = 360
MIN_ROW_H = 110
INK, FAINT, SEAM, BAR, BAND = (30, 30, 30), (150, 150, 150), (214, 39, 40), (76, 120, 168), (253, 226, 226)


class SeamsError(HeliosDoitError):
    """One line; exit_code 2 for bad inputs or arguments, 1 for a failure while reading or writing."""

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message, exit_code=exit_code)


class ReportNotWritten(SeamsError):
    """The picture was drawn, but its folder cannot hold it (full, read-only): the place's fault, not
    the video's, so the service says it as it says a thumbnail it cannot keep. `strerror`: why."""

    def __init__(self, message: str, strerror: str):
        super().__init__(message, 1)
        self.strerror = strerror


@dataclass(frozen=True)
class Seam:
    frame: int  # the first frame after the seam
    steps: tuple[tuple[int, float], ...]  # (frame i, mean absolute difference of frames i-1 and i)
    before: str = ""  # what the frame before the seam is ("chunk 0")
    after: str = ""

    @property
    def step(self) -> float:
        return dict(self.steps).get(self.frame, 0.0)

    @property
    def neighbours(self) -> float:
        """The typical change away from the seam, what the seam step is judged against."""
        others = [d for i, d in self.steps if i != self.frame]
        return statistics.median(others) if others else 0.0


    @property
    def verdict(self) -> tuple[str, bool]:
        """What the chart says of the seam's step, in words that agree with its bars; and whether
        it stands out (a jump, or a freeze where the picture moves)."""
        ratio = self.step / max(self.neighbours, 0.5)
        if ratio > 4 or (self.neighbours > 1 and ratio < 0.25):
            return f"stands out (x{ratio:.1f})", True
        if self.step >= max(d for _, d in self.steps) and ratio > 1.5:
            return f"the largest change here (x{ratio:.1f} the typical), but no jump", False
        if ratio < 0.67 and self.neighbours > 1:
            return f"smaller than its neighbours (x{ratio:.1f}), but no freeze", False
        return "in line with its neighbours", False


@dataclass(frozen=True)
class SeamsReport:
    output: Path
    size: tuple[int, int]
    seams: tuple[Seam, ...]


def thumb_size(width: int, height: int) -> tuple[int, int]:
    h = max(2, round(THUMB_W * height / width))
    return (THUMB_W, h) if h <= MAX_THUMB_H else (max(2, round(MAX_THUMB_H * width / height)), MAX_THUMB_H)


def report_size(width: int, height: int, seams: int) -> tuple[int, int]:
    """The PNG's size, from the video's size and the number of seams only."""
    row = max(thumb_size(width, height)[1], MIN_ROW_H) + LABEL_H + PAD
    return PAD * 4 + THUMB_W * 2 + PLOT_W, HEADER_H + max(1, seams) * row + PAD


@dataclass(frozen=True)
class _Piece:
    path: Path
    first: int  # global index of its first frame
    frames: int
    name: str


def seams_report(video_or_parts: Path | str | Sequence[Path | str], output_png: Path | str,
                 seams: list[int] | None = None, context: int = 6, names: Sequence[str] | None = None) -> SeamsReport:
    """Seams default to the boundaries between parts; for one video they must be given."""
    paths = [Path(video_or_parts)] if isinstance(video_or_parts, (str, Path)) else [Path(p) for p in video_or_parts]
    if not paths:
        raise SeamsError("no video to look at")
    try:
        infos = [probe(p) for p in paths]
    except ProbeError as exc:
        raise SeamsError(str(exc)) from None
    pieces, start = [], 0
    for number, (path, info) in enumerate(zip(paths, infos)):
        if info.video is None:
            raise SeamsError(f"{path.name}: has no video stream")
        pieces.append(_Piece(path, start, info.video.frames, names[number] if names else f"part {number}"))
        start += info.video.frames
    total, video = start, infos[0].video
    assert video is not None
    if seams is None:
        if len(pieces) == 1:
            raise SeamsError(f"{paths[0].name}: a single video has no known seams; give them with --at 38,76")
        seams = [piece.first for piece in pieces[1:]]
    bad = [s for s in seams if not 0 < s < total]
    if bad:
        raise SeamsError(f"seam {bad[0]} is outside the video: a seam is the first frame after it, 1..{total - 1}")
    seams = sorted(set(seams))
    context = max(1, context)
    size = thumb_size(video.width, video.height)
    wanted = {i for s in seams for i in range(max(0, s - context - 1), min(total, s + context + 1))}
    frames: dict[int, np.ndarray] = {}
    try:
        for piece in pieces:
            local = {i - piece.first for i in wanted if piece.first <= i < piece.first + piece.frames}
            if local:
                grabbed = _grab(piece.path, local, size)
                frames.update({i + piece.first: a for i, a in grabbed.items()})
    except av.FFmpegError as exc:
        raise SeamsError(f"cannot decode the frames around the seams: {exc}", 1) from None
    rows = []
    for s in seams:
        steps = tuple((i, float(np.abs(frames[i].astype(np.int16) - frames[i - 1]).mean()))
                      for i in range(s - context, s + context + 1) if i - 1 in frames and i in frames)
        rows.append(Seam(s, steps, _owner(pieces, s - 1) if len(pieces) > 1 else "", _owner(pieces, s) if len(pieces) > 1 else ""))
    image = _draw(rows, frames, size, report_size(video.width, video.height, len(rows)), context, paths, total)
    output = Path(output_png)
    tmp = output.with_name(f".{output.name}.partial")
    try:
        image.save(tmp, format="PNG")
        os.replace(tmp, output)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ReportNotWritten(f"{output}: cannot write the report: {exc.strerror}", exc.strerror or str(exc)) from None
    return SeamsReport(output, image.size, tuple(rows))


def _owner(pieces: Sequence[_Piece], frame: int) -> str:
    return next((p.name for p in pieces if p.first <= frame < p.first + p.frames), "")


def _grab(path: Path, wanted: set[int], size: tuple[int, int]) -> dict[int, np.ndarray]:
    """Decode the wanted frames (by index), seeking to the keyframe before each run of them."""
    got: dict[int, np.ndarray] = {}
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        tb, origin = Fraction(stream.time_base or Fraction(1, 1000)), stream.start_time or 0
        fps = Fraction(stream.average_rate or stream.guessed_rate or 25)
        for low, high in _runs(sorted(wanted)):
            for target in (origin + int(low / fps / tb), origin):  # from the start if the seek overshoots
                container.seek(target, stream=stream, backward=True)
                first, index = None, -1
                for frame in container.decode(stream):
                    index = round((frame.pts - origin) * tb * fps) if frame.pts is not None else index + 1
                    first = index if first is None else first
                    if index in wanted:
                        got[index] = frame.to_ndarray(width=size[0], height=size[1], format="rgb24")
                    if index >= high:
                        break
                if first is None or first <= low:
                    break
    return got


def _runs(indices: list[int], gap: int = 12) -> list[tuple[int, int]]:
    """Group frame indices into windows decoded in one go; close windows share a seek."""
    runs: list[list[int]] = []
    for i in indices:
        if runs and i <= runs[-1][1] + gap:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return [(a, b) for a, b in runs]


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):
        return ImageFont.load_default()


def _draw(rows: Sequence[Seam], frames: dict[int, np.ndarray], thumb: tuple[int, int], size: tuple[int, int],
          context: int, paths: Sequence[Path], total: int) -> Image.Image:
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font, small = _font(14), _font(12)
    source = paths[0].name if len(paths) == 1 else f"{paths[0].name} … {paths[-1].name} ({len(paths)} files)"
    draw.text((PAD, 9), f"Seams of {source}: {len(rows)} seam{'s' * (len(rows) != 1)}, {total} frames; "
              f"bars: mean absolute difference of consecutive frames (0-255), ±{context} frames", fill=INK, font=font)
    row_h = (size[1] - HEADER_H - PAD) // max(1, len(rows))
    for number, seam in enumerate(rows):
        top = HEADER_H + number * row_h
        draw.line([(PAD, top - PAD // 2), (size[0] - PAD, top - PAD // 2)], fill=(225, 225, 225))
        for column, index, owner, edge in ((0, seam.frame - 1, seam.before, "last"), (1, seam.frame, seam.after, "first")):
            left = PAD + column * (THUMB_W + PAD)
            offset = (THUMB_W - thumb[0]) // 2
            if index in frames:
                image.paste(Image.fromarray(frames[index]), (left + offset, top))
            draw.rectangle([left + offset - 1, top - 1, left + offset + thumb[0], top + thumb[1]], outline=SEAM if column else FAINT)
            label = f"frame {index}" + (f" · {edge} of {owner}" if owner else (" · before the seam" if not column else " · after the seam"))
            draw.text((left, top + thumb[1] + 3), label, fill=INK, font=small)
        _plot(draw, seam, PAD * 3 + THUMB_W * 2, top, PLOT_W, row_h - PAD, context, font, small)
    return image


def _plot(draw: ImageDraw.ImageDraw, seam: Seam, left: int, top: int, width: int, height: int, context: int,
          font: ImageFont.ImageFont | ImageFont.FreeTypeFont, small: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> None:
    """Bars of the change at each step; the seam's step in red on a shaded band."""
    verdict, stands_out = seam.verdict
    draw.text((left, top), f"seam {seam.frame - 1}|{seam.frame}: change {seam.step:.1f}, typical {seam.neighbours:.1f}: {verdict}",
              fill=SEAM if stands_out else INK, font=small)
    plot_top, plot_bottom = top + LABEL_H + 4, top + height - LABEL_H
    slots = 2 * context + 1
    slot = width / slots
    peak = max([d for _, d in seam.steps] + [1.0])
    first = seam.frame - context
    band = left + (seam.frame - first) * slot
    draw.rectangle([band, plot_top, band + slot, plot_bottom], fill=BAND)
    for index, diff in seam.steps:
        x = left + (index - first) * slot
        bar_top = plot_bottom - max(1.0, (plot_bottom - plot_top - 4) * diff / peak)
        draw.rectangle([x + 2, bar_top, x + slot - 3, plot_bottom], fill=SEAM if index == seam.frame else BAR)
    draw.line([(left, plot_bottom), (left + width, plot_bottom)], fill=INK)
    draw.text((left, plot_bottom + 3), f"{first - 1}|{first}", fill=FAINT, font=small)
    draw.text((band, plot_bottom + 3), f"{seam.frame - 1}|{seam.frame}", fill=SEAM, font=small)
    end = f"{seam.frame + context - 1}|{seam.frame + context}"
    draw.text((left + width - draw.textlength(end, font=small), plot_bottom + 3), end, fill=FAINT, font=small)
    draw.text((left + width - draw.textlength(f"max {peak:.1f}", font=small), plot_top), f"max {peak:.1f}", fill=FAINT, font=small)


def job_report(source: str, output: Path, seams: list[int] | None, context: int, output_root: str | None) -> SeamsReport:
    from ..spec.errors import JobError
    from ..spec.load import load_job

    try:
        job = load_job(source, output_root)
    except JobError as exc:
        raise SeamsError(exc.lines[0] if len(exc.lines) == 1 else f"{exc.lines[0]} (and {len(exc.lines) - 1} more faults)") from None
    chunks = sorted(job.spec.chunks, key=lambda c: c.start_frame)
    if job.merge_output is not None and job.merge_output.is_file() and is_video_path(job.merge_output):
        at = seams if seams is not None else [c.start_frame - chunks[0].start_frame for c in chunks[1:]]
        if not at:
            raise SeamsError(f"{source}: the job has one chunk, so no seams")
        return seams_report(job.merge_output, output, at, context)
    # From the chunk files, the seams default to where each file really ends, which shows a short chunk as such.
    missing = [f"chunk {c.id} ({c.output_file})" for c in chunks if not os.path.isfile(job.outputs[c.id])]
    if missing:
        raise SeamsError(f"{source}: no merged output and {', '.join(missing[:3])} not rendered yet; render the job first")
    return seams_report([Path(job.outputs[c.id]) for c in chunks], output, seams, context, names=[f"chunk {c.id}" for c in chunks])
