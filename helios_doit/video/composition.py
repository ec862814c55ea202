"""Compositions: Python files that draw any frame (and any stretch of audio) from absolute time.

A chunked render starts each chunk at an arbitrary frame on an arbitrary machine, so a
composition may never depend on what it drew before: frame i is a pure function of i (and of
the render settings), and audio is a pure function of the absolute sample index. That is what
makes chunks concatenate into exactly the video a single render would have produced.

    from helios_doit.video.composition import Composition, Frame

    comp = Composition(width=640, height=360, fps=30, duration=4.0)

    @comp.frame
    def draw(f: Frame):
        img = f.canvas("navy")
        ImageDraw.Draw(img).text((10, 10), f"frame {f.index}", font=f.font(24))
        return img
"""
from __future__ import annotations

import functools
import importlib.util
import itertools
import math
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Union

import numpy as np
from PIL import Image, ImageFont

from ..core.errors import BadInput

Number = Union[int, float, Fraction, str]
FrameResult = Union[Image.Image, np.ndarray]


class CompositionError(BadInput):
    """A composition that cannot be loaded or that drew something unusable; one line, for users."""


def parse_number(value: Number, what: str = "value") -> Fraction:
    """An exact positive rational from 30, 29.97, "30000/1001" or a Fraction.

    Floats go through their shortest decimal text, so 29.97 means 2997/100 and not the binary
    approximation: frame and sample boundaries computed from it must agree on every machine.
    """
    try:
        if isinstance(value, bool):
            raise TypeError
        number = Fraction(repr(value)) if isinstance(value, float) else Fraction(value)
    except (TypeError, ValueError, ZeroDivisionError):
        raise CompositionError(f"{what} must be a number such as 30, 29.97 or 30000/1001, got {value!r}") from None
    if number <= 0:
        raise CompositionError(f"{what} must be greater than 0, got {value!r}")
    return number


def format_number(value: Fraction) -> str:
    """The shortest text that `parse_number` reads back as exactly `value` ("30", "29.97", "30000/1001")."""
    if value.denominator == 1:
        return str(value.numerator)
    den = value.denominator
    twos = fives = 0
    while den % 2 == 0:
        den //= 2
        twos += 1
    while den % 5 == 0:
        den //= 5
        fives += 1
    if den != 1:
        return f"{value.numerator}/{value.denominator}"
    digits = max(twos, fives)
    text = f"{value.numerator * 10**digits // value.denominator:0{digits + 1}d}"
    return f"{text[:-digits]}.{text[-digits:]}".rstrip("0").rstrip(".")


def frame_total(duration: Fraction, fps: Fraction) -> int:
    """round(duration * fps), halves up as in JavaScript's Math.round, on exact rationals."""
    return math.floor(duration * fps + Fraction(1, 2))


@dataclass(frozen=True)
class Frame:
    """What a frame function gets: where it is in time and how big to draw."""

    index: int
    time: float  # seconds from the start of the composition
    width: int
    height: int
    fps: float
    total_frames: int
    scale: float  # render size relative to the composition's own size (min of both axes)

    @property
    def progress(self) -> float:
        """0.0 on the first frame, 1.0 on the last."""
        return self.index / (self.total_frames - 1) if self.total_frames > 1 else 0.0

    def canvas(self, color: Any = "black") -> Image.Image:
        """A fresh RGB image of the render size, filled with `color`."""
        return Image.new("RGB", (self.width, self.height), color)

    def font(self, size: float) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
        """Pillow's built-in font at `size` pixels of the composition's own size, scaled to the render."""
        return _font(max(1, round(size * self.scale)))


@dataclass(frozen=True)
class AudioBlock:
    """A run of samples to produce: `count` samples starting at absolute sample `start`."""

    start: int
    count: int
    sample_rate: int
    channels: int

    @property
    def times(self) -> np.ndarray:
        """Each sample's time in seconds, from its absolute index (so blocks never drift apart)."""
        return (self.start + np.arange(self.count, dtype=np.float64)) / self.sample_rate

    def silence(self) -> np.ndarray:
        return np.zeros((self.channels, self.count), dtype=np.float32)


class Composition:
    """A video's defaults and the functions that draw it.

    width, height, fps and duration are defaults that a render may override; drawing code
    reads the render's size from `Frame.width`/`Frame.height` (or uses `Frame.scale`).
    """

    def __init__(
        self,
        width: int = 1280,
        height: int = 720,
        fps: Number = 30,
        duration: Number = 5.0,
        *,
        sample_rate: int = 48000,
        channels: int = 2,
    ) -> None:
        for name, value in (("width", width), ("height", height), ("sample_rate", sample_rate)):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise CompositionError(f"Composition {name} must be a positive integer, got {value!r}")
        if not isinstance(channels, int) or not 1 <= channels <= 8:
            raise CompositionError(f"Composition channels must be an integer from 1 to 8, got {channels!r}")
        self.width, self.height = width, height
        self.fps = parse_number(fps, "Composition fps")
        self.duration = parse_number(duration, "Composition duration")
        self.sample_rate, self.channels = sample_rate, channels
        self._draw: Callable[[Frame], FrameResult] | None = None
        self._sound: Callable[[AudioBlock], np.ndarray] | None = None

    def frame(self, fn: Callable[[Frame], FrameResult]) -> Callable[[Frame], FrameResult]:
        """Decorator: the function that draws one frame and returns a PIL image or an HxWx3 uint8 array."""
        self._draw = fn
        return fn

    def audio(self, fn: Callable[[AudioBlock], np.ndarray]) -> Callable[[AudioBlock], np.ndarray]:
        """Decorator: the function that returns float samples in [-1, 1], shaped (channels, count) or (count,)."""
        self._sound = fn
        return fn

    @property
    def has_audio(self) -> bool:
        return self._sound is not None

    @property
    def has_frames(self) -> bool:
        return self._draw is not None

    def draw(self, index: int, *, width: int, height: int, fps: Fraction, total_frames: int) -> np.ndarray:
        """Frame `index` as a C-contiguous (height, width, 3) uint8 array, checked."""
        if self._draw is None:
            raise CompositionError("the composition has no frame function; decorate one with @comp.frame")
        scale = min(width / self.width, height / self.height)
        frame = Frame(index, float(index / fps), width, height, float(fps), total_frames, scale)
        return _as_rgb(self._draw(frame), index, width, height)

    def sound(self, start: int, count: int) -> np.ndarray:
        """Samples [start, start + count) as float32 (channels, count), clipped to [-1, 1]."""
        block = AudioBlock(start, count, self.sample_rate, self.channels)
        if self._sound is None:
            return block.silence()
        return _as_samples(self._sound(block), block)


def load_composition(path: str | Path) -> Composition:
    """Import a composition file by path and return the one Composition it defines."""
    path = Path(path)
    if not path.exists():
        raise CompositionError(f"{path}: no such composition file; check the path")
    if not path.is_file():
        raise CompositionError(f"{path}: is not a file; give the path of a composition's .py file")
    # A fresh module name per load: two compositions (or one loaded twice) never share a module.
    name = f"helios_composition_{next(_loads)}_{''.join(c if c.isalnum() else '_' for c in path.stem)}"
    spec = importlib.util.spec_from_file_location(name, path.resolve())
    if spec is None or spec.loader is None:
        raise CompositionError(f"{path}: cannot be imported as Python; give a .py file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look a module up by name
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)  # so a composition can import helper modules next to it
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        sys.modules.pop(name, None)
        raise CompositionError(f"{path}:{exc.lineno}: syntax error: {exc.msg}") from None
    except BaseException:
        sys.modules.pop(name, None)
        raise
    finally:
        if folder in sys.path:
            sys.path.remove(folder)
    found: dict[int, list[str]] = {}
    objects: dict[int, Composition] = {}
    for attr, value in vars(module).items():
        if isinstance(value, Composition):
            found.setdefault(id(value), []).append(attr)
            objects[id(value)] = value
    if not found:
        raise CompositionError(f"{path}: defines no Composition; create one with `comp = Composition(...)`")
    if len(found) > 1:
        names = ", ".join(names[0] for names in found.values())
        raise CompositionError(f"{path}: defines {len(found)} Compositions ({names}); keep one per file")
    comp = next(iter(objects.values()))
    if not comp.has_frames:
        raise CompositionError(f"{path}: the composition has no frame function; decorate one with @comp.frame")
    return comp


_loads = itertools.count()


@functools.lru_cache(maxsize=32)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _as_rgb(result: object, index: int, width: int, height: int) -> np.ndarray:
    where = f"frame {index}"
    if result is None:
        raise CompositionError(f"{where}: the frame function returned None; return the image it drew")
    if isinstance(result, Image.Image):
        if result.size != (width, height):
            raise CompositionError(
                f"{where}: the frame function returned a {result.width}x{result.height} image, but the render is "
                f"{width}x{height}; draw at f.width x f.height (f.canvas() has that size)"
            )
        if result.mode != "RGB":
            result = result.convert("RGB")
        return np.asarray(result)
    if isinstance(result, np.ndarray):
        if result.dtype != np.uint8 or result.ndim != 3 or result.shape[2] not in (3, 4):
            raise CompositionError(
                f"{where}: the frame function returned an array of shape {result.shape} and dtype {result.dtype}; "
                "return uint8 shaped (height, width, 3)"
            )
        if result.shape[:2] != (height, width):
            raise CompositionError(
                f"{where}: the frame function returned a {result.shape[1]}x{result.shape[0]} array, but the render is "
                f"{width}x{height}; draw at f.width x f.height"
            )
        return np.ascontiguousarray(result[:, :, :3])
    raise CompositionError(
        f"{where}: the frame function returned {type(result).__name__}; return a PIL image or a numpy array"
    )


def _as_samples(result: object, block: AudioBlock) -> np.ndarray:
    where = f"audio samples {block.start}-{block.start + block.count - 1}"
    if not isinstance(result, np.ndarray):
        raise CompositionError(f"{where}: the audio function returned {type(result).__name__}; return a numpy array")
    samples = np.asarray(result, dtype=np.float32)
    if samples.ndim == 1:
        samples = samples[np.newaxis, :]
    if samples.ndim != 2 or samples.shape[1] != block.count or samples.shape[0] not in (1, block.channels):
        raise CompositionError(
            f"{where}: the audio function returned shape {result.shape}; return ({block.channels}, {block.count}) "
            f"or ({block.count},) samples (block.count of them)"
        )
    samples = np.broadcast_to(samples, (block.channels, block.count))
    return np.clip(np.nan_to_num(samples), -1.0, 1.0).astype(np.float32)
