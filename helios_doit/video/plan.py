"""Job building: split a frame range into chunks and write the JobSpec that runs them.

`emit_job` writes what `helios render --emit-job` writes, for our own compositions;
`plan_job` does the same for any renderer that takes a frame range on its command line
(Blender, a script of your own), from command and output templates.
"""
from __future__ import annotations

import json
import math
import os
import re
import shlex
from fractions import Fraction
from pathlib import Path, PurePosixPath
from typing import Any, Iterable

from ..core.errors import BadInput
from ..spec.paths import is_url, too_wide
from ..state.atomic import write_atomic
from .composition import (
    CompositionError,
    format_number,
    frame_total,
    load_composition,
    parse_number,
)
from .render import VIDEO_CODECS, RenderError, resolve

#: Tokens of --command-template; --output-template has all but {output}.
TOKENS = ("id", "start", "end", "count", "output")
_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


def upload_hint(url: str) -> str:
    """How a local job file gets to `url`, said as an example."""
    tools = {"s3": "aws s3 cp", "gs": "gcloud storage cp", "az": "az storage blob upload"}
    tool = tools.get(url.split("://", 1)[0].lower())
    return f"e.g. {tool} job.json {url}" if tool else "with your store's own tools"


class PlanError(BadInput):
    """A template or setting that cannot make a job; one line, for users."""


def split_frames(start: int, count: int, concurrency: int) -> list[tuple[int, int]]:
    """Helios' split: chunks of ceil(count / concurrency) frames, the last one shorter, none empty."""
    if count < 1 or concurrency < 1:
        raise PlanError(f"need at least one frame and one chunk, got {count} frames in {concurrency} chunks")
    size = math.ceil(count / concurrency)
    return [(start + offset, min(size, count - offset)) for offset in range(0, count, size)]


def emit_job(composition: str, output: str, *, concurrency: int, fps: Any, width: int, height: int,
             duration: Any, start_frame: int = 0, frame_count: int | None = None, video_codec: str = "libx264",
             quality: int | None = None, audio_codec: str = "pcm_s16le") -> dict[str, Any]:
    """The JobSpec for rendering `composition` to `output` in chunks; pure, paths as given.

    `composition` and `output` are paths relative to the job file's folder. Chunk files sit next
    to the output as `<stem>.part<i><ext>` (.mov, or .mkv for codecs .mov cannot hold) and always
    carry PCM audio, so seams have no gaps; the merge applies a non-PCM `audio_codec`. Each
    command names its duration too: progress through the composition depends on it.
    """
    fps_q, duration_q = parse_number(fps, "fps"), parse_number(duration, "duration")
    count = frame_total(duration_q, fps_q) - start_frame if frame_count is None else frame_count
    chunk_ext = VIDEO_CODECS[video_codec].chunk_extension if video_codec in VIDEO_CODECS else ".mov"
    out = PurePosixPath(output)
    chunks: list[dict[str, Any]] = []
    parts: list[str] = []
    for index, (start, n) in enumerate(split_frames(start_frame, count, concurrency)):
        part = str(out.with_name(f"{out.stem}.part{index}{chunk_ext}"))
        argv = ["helios-doit", "render", composition, "-o", part, "--start-frame", str(start), "--frame-count", str(n),
                "--width", str(width), "--height", str(height), "--fps", format_number(fps_q),
                "--duration", format_number(duration_q), "--video-codec", video_codec,
                *(["--quality", str(quality)] if quality is not None else []), "--audio-codec", "pcm_s16le"]
        chunks.append({"id": index, "startFrame": start, "frameCount": n, "outputFile": part, "command": shlex.join(argv)})
        parts.append(part)
    merge = ["helios-doit", "merge", output, *parts, *(["--audio-codec", audio_codec] if audio_codec != "pcm_s16le" else [])]
    return {
        "metadata": {"totalFrames": count, "fps": _json_number(fps_q), "width": width, "height": height,
                     "duration": _json_number(count / fps_q)},
        "chunks": chunks,
        "mergeCommand": shlex.join(merge),
        "outputFile": output,
        "inputs": [composition],
    }


#: Seconds of rendering a chunk should carry, at least, for its own costs (a process, an encoder
#: warming up its memory, a verification) to stay small beside it; and the rough cost of a frame's
#: pixel in our renderer (2-core machine, libx264, one thread), to judge a render's size by.
CHUNK_WORK = 2.0
PIXEL_SECONDS = 20e-9


def auto_chunks(frames: int, width: int, height: int, cores: int) -> int:
    """How many chunks a render is worth on a machine with `cores`: one per core, but none with
    less than CHUNK_WORK seconds of rendering; a small render stays one chunk."""
    work = frames * width * height * PIXEL_SECONDS
    return max(1, min(cores, int(work // CHUNK_WORK)))


def write_emitted_job(job_path: str, composition: str, output_path: str, *, concurrency: int | None, fps: str | None,
                      duration: str | None, video_codec: str, audio_codec: str, start_frame: int | None,
                      frame_count: int | None, width: int | None, height: int | None, quality: int | None,
                      cores: int = 1) -> tuple[Path, int, str | None]:
    """`helios-doit render ... --emit-job JOB.json`: check everything, then write the job (and only
    then); returns it, its number of chunks (`concurrency`, else `auto_chunks` for `cores`) and, for
    outputs outside the job's folder (Helios' layout), a line saying how to run it."""
    if concurrency is not None and concurrency < 1:
        raise RenderError(f"--concurrency must be at least 1, got {concurrency}")
    job_file = job_place(job_path, "--emit-job", RenderError)
    comp = load_composition(composition)
    output = Path(output_path).absolute()
    # Helios' own layout (`-o renders/final.mp4 --emit-job jobs/job.json`): outputs as ../renders/...,
    # which a run allows from the folder that holds both, or with an output root.
    holder = Path(os.path.commonpath([job_file.parent.resolve(), output.parent.resolve()]))
    root = holder if not output.resolve().is_relative_to(job_file.parent.resolve()) else None
    if root is not None and too_wide(holder):  # no project folder: a run would need it all
        raise RenderError(f"{output_path}: is outside the job's folder {job_file.parent}, and they share no folder but "
                          f"{holder}; put the job file in the output's folder or above it")
    s = resolve(comp, output, start_frame=start_frame or 0, frame_count=frame_count, width=width, height=height,
                fps=fps, duration=duration, video_codec=video_codec, quality=quality,
                audio_codec=audio_codec)
    if concurrency is None:
        concurrency = auto_chunks(s.frame_count, s.width, s.height, cores)
    job = emit_job(_relative(Path(composition).absolute(), job_file.parent), _relative(output, job_file.parent),
                   concurrency=concurrency, fps=s.fps, width=s.width, height=s.height, duration=s.duration,
                   start_frame=s.start_frame, frame_count=s.frame_count, video_codec=s.codec.name, quality=s.quality,
                   audio_codec=s.audio_codec or "pcm_s16le")
    faults = _job_faults(job, job_file, root)
    if faults:
        raise RenderError(f"{job_path}: {faults[0]}")
    write_job(job_file, job)
    return job_file, len(job["chunks"]), _layout_note(job_file, holder) if root is not None else None


def _layout_note(job_file: Path, holder: Path) -> str:
    """How to run a job whose outputs lie outside its folder: from the folder that holds both, or
    with an output root."""
    return (f"the job's outputs are outside its folder {job_file.parent} (Helios' layout): run it from {holder}, the "
            f"folder that holds both (cd {shlex.quote(str(holder))} && helios-doit job run "
            f"{shlex.quote(_relative(job_file, holder))}), or give --output-root {shlex.quote(str(holder))}")


def plan_job(frames: int, concurrency: int, command_template: str, output_template: str, start: int = 0,
             fps: Any = 30, width: int = 1920, height: int = 1080, *, merge_command: str | None = None,
             output_file: str | None = None, inputs: Iterable[str] = ()) -> dict[str, Any]:
    """A JobSpec for any frame-range renderer. Tokens: {id} {start} {end} (inclusive) {count} {output}.

    `{output}` is shell-quoted in the command; `{{` and `}}` are literal braces, and a format
    spec works as in Python (`{id:04d}`). The merge command may use `{outputs}` (every chunk's
    output, quoted) and `{output}` (the merged file); by default it is `helios-doit merge`
    into `output_file`, which defaults to `output<ext of the chunks>`.
    """
    fps_q = _plan_number(fps, "--fps")
    for name, value in (("--frames", frames), ("--concurrency", concurrency), ("--width", width), ("--height", height)):
        if value < 1:
            raise PlanError(f"{name} must be at least 1, got {value}")
    if start < 0:
        raise PlanError(f"--start must be 0 or more, got {start}")
    chunks: list[dict[str, Any]] = []
    parts: list[str] = []
    for index, (first, count) in enumerate(split_frames(start, frames, concurrency)):
        values: dict[str, Any] = {"id": index, "start": first, "end": first + count - 1, "count": count}
        part = fill(output_template, values, "--output-template")
        if part in parts:
            raise PlanError(f"--output-template gives {part!r} to chunks {parts.index(part)} and {index}; "
                            "include {id} or {start} in it")
        command = fill(command_template, {**values, "output": shlex.quote(part)}, "--command-template")
        chunks.append({"id": index, "startFrame": first, "frameCount": count, "outputFile": part, "command": command})
        parts.append(part)
    if output_file is None and merge_command is None:
        output_file = "output" + PurePosixPath(parts[0]).suffix
    quoted = " ".join(shlex.quote(p) for p in parts)
    if merge_command is None:
        merge = shlex.join(["helios-doit", "merge", str(output_file), *parts])
    elif output_file is None and re.search(r"(?<!\{)\{output(:[^}]*)?\}", merge_command):
        raise PlanError("--merge-command uses {output}; name the merged file with --output-file")
    else:
        tokens = {"outputs": quoted, **({"output": shlex.quote(output_file)} if output_file is not None else {})}
        merge = fill(merge_command, tokens, "--merge-command")
    job: dict[str, Any] = {
        "metadata": {"totalFrames": frames, "fps": _json_number(fps_q), "width": width, "height": height,
                     "duration": _json_number(frames / fps_q)},
        "chunks": chunks,
        "mergeCommand": merge,
    }
    if output_file is not None:
        job["outputFile"] = output_file
    if inputs:
        job["inputs"] = list(inputs)
    return job


def fill(template: str, values: dict[str, Any], what: str) -> str:
    """Replace {name} / {name:spec} tokens; any other {...} is an error naming the known tokens."""
    def one(match: re.Match[str]) -> str:
        text = match.group(0)
        if text in ("{{", "}}"):
            return text[0]
        if match.group(1) is None:
            raise PlanError(f"{what}: unmatched {text!r} in {template!r}; write {text * 2} for a literal brace")
        name, _, spec = match.group(1).partition(":")
        if name not in values:
            known = " ".join("{" + key + "}" for key in values)
            raise PlanError(f"{what}: unknown token {text} in {template!r}; known: {known} ({{{{ and }}}} are literal braces)")
        try:
            return format(values[name], spec)
        except ValueError as exc:
            raise PlanError(f"{what}: bad format {text}: {exc}") from None

    return _TOKEN.sub(one, template)


def _plan_number(raw: Any, flag: str) -> Fraction:
    try:
        return parse_number(raw, flag)
    except CompositionError as exc:
        raise PlanError(str(exc)) from None


def _json_number(value: Fraction) -> int | float:
    return value.numerator if value.denominator == 1 else float(value)


def _relative(path: Path, folder: Path) -> str:
    """`path` relative to the job's folder (with / separators), as commands run there."""
    return Path(os.path.relpath(path, folder)).as_posix()


def _job_faults(job: dict[str, Any], job_file: Path, root: Path | None = None) -> list[str]:
    """The runner's own checks, run before the file exists, so a refused job is never written."""
    from pydantic import ValidationError

    from ..spec.checks import check_job
    from ..spec.model import STATE_ROOT, JobSpec

    try:
        spec = JobSpec.model_validate(job)
    except ValidationError as exc:
        return [str(exc).splitlines()[0]]
    state_dir = job_file.parent / STATE_ROOT / job_file.name
    return check_job(spec, job_file.parent, job_file, state_dir, root)[3]


def job_place(job_path: str, flag: str, error: type[BadInput]) -> Path:
    """Where a job file is to be written, refused before any work: a URL, a folder that does not
    exist, or a folder given where the file's name belongs (it cannot be replaced by a file)."""
    if is_url(job_path):
        raise error(f"{flag} {job_path}: writes a local file; write it here ({flag} job.json), then upload "
                    f"it ({upload_hint(job_path)})")
    job_file = Path(job_path).absolute()
    if not job_file.parent.is_dir():
        raise error(f"{job_path}: folder {job_file.parent} does not exist; create it first")
    if job_file.is_dir():
        raise error(f"{job_path}: is a folder; name the job file in it ({flag} {os.path.join(job_path, 'job.json')})")
    return job_file


def write_job(path: Path, job: dict[str, Any]) -> None:
    write_atomic(path, (json.dumps(job, indent=2) + "\n").encode())
