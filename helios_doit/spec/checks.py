"""Checks across fields of a JobSpec that a schema cannot express.

They exist because the runner deletes the output of a failed chunk: each path it may
delete must be one the job declares, inside the job's folder (or an output root the user
allowed explicitly), and claimed by exactly one chunk.
"""
from __future__ import annotations

import os
import shlex
import stat
from pathlib import Path
from typing import Callable, Sequence

from ..storage.url import Remote
from .model import STATE_ROOT, JobSpec
from .paths import is_url

#: Programs whose `merge OUTPUT INPUT...` argument order we know, so the merged file is known.
MERGE_PROGRAMS = ("helios", "helios-doit")


def check_job(
    spec: JobSpec, job_dir: Path, job_file: Path | None, state_dir: Path, output_root: Path | None,
    remote: Remote | None = None, broken: frozenset[str] = frozenset(), positions: Sequence[int] = (),
) -> tuple[dict[int, str], Path | None, tuple[Path, ...], list[str]]:
    """Every output resolved and checked; returns (outputs by chunk id, merged output, inputs, faults).
    `remote`: the job is in a bucket, and its places are said as the bucket's. `broken`: the parts of
    a job that failed validation (`metadata`, `chunks`, `mergeCommand`...), left out of `spec`:
    checks that need them are skipped, the others still run, so a job's faults are said at once;
    `positions` are then the kept chunks' places in the job's own list, for messages."""
    paths = _Paths(job_dir, job_file, state_dir, output_root, remote)
    inputs = paths.inputs(spec.inputs)  # first: an output may not be one of them, or it would be deleted
    if spec.merge_command is None and spec.output_file is None and not broken & {"mergeCommand", "outputFile"}:
        paths.faults.append("mergeCommand: required field is missing; add a mergeCommand, or an outputFile "
                            "to merge with the built-in stitcher")
    merge_raw = spec.output_file or (merge_output_of(spec.merge_command) if spec.merge_command else None)
    merge_what = "outputFile" if spec.output_file else "mergeCommand output"
    merge_output = paths.output(merge_raw, merge_what) if merge_raw else None
    if merge_output is not None:
        paths.clashes(merge_output, merge_raw or "", merge_what)
    outputs = paths.chunk_outputs(spec, merge_output, positions)
    faults = paths.outside_fault() + paths.faults + _check_frames(spec, broken)
    if spec.merge_command and not faults and "chunks" not in broken:
        faults += _check_merge_order(spec, outputs, lambda raw: paths.resolve(raw, "mergeCommand", False))
        faults += paths.faults  # what resolving the merge command's paths found (an unusable name)
    return outputs, Path(merge_output) if merge_output else None, tuple(inputs), faults


class _Paths:
    """The job's paths as the shell will see them, and the faults found in them so far."""

    HOW = ("keep outputs inside the job's folder, run from a folder that holds them (Helios' layout: the "
           "project folder), or allow another folder with output_root=PATH (CLI: --output-root)")

    def __init__(self, job_dir: Path, job_file: Path | None, state_dir: Path, output_root: Path | None,
                 remote: Remote | None = None):
        self.remote = remote
        self.faults: list[str] = []
        self.job_dir = job_dir
        self.allowed = [job_dir.resolve()] + ([output_root] if output_root else [])
        self.roots = [str(root) for root in self.allowed]
        self.state_parent = state_dir.parent
        self.resolve = _resolver(job_dir, self.faults)
        self.job_file = str(job_file) if job_file is not None else None
        self.input_texts: set[str] = set()
        self.outside: list[str] = []  # said in one line: a job of 10,000 chunks is one mistake

    def outside_fault(self) -> list[str]:
        if not self.outside:
            return []
        more = f" (and {len(self.outside) - 1} more outputs)" if len(self.outside) > 1 else ""
        how = self.HOW if self.remote is None else (
            "a job in a bucket writes only in its folder there, or under a folder of that bucket given as "
            "output_root=URL (CLI: --output-root URL)")
        return [f"{self.outside[0]}{more}; {how}"]

    def _where(self, path: str) -> str:
        """A place as its user knows it: a path here, or an object of the job's bucket."""
        if self.remote is None:
            return path
        key = self.remote.key_of(path)
        return self.remote.url_of(key) if key is not None else "a place outside the bucket"

    def inputs(self, raws: list[str]) -> list[Path]:
        found_inputs: list[Path] = []
        for index, raw in enumerate(raws):
            found = self.resolve(raw, f"inputs[{index}]", True)
            if found is None:
                continue
            path = Path(found[0])
            if not path.is_file():
                self.faults.append(f"inputs[{index}]: {raw!r} is not a file (looked at {path}); fix the path or remove it")
            found_inputs.append(path)
        self.input_texts = {str(path) for path in found_inputs}
        return found_inputs

    def output(self, raw: str, what: str) -> str | None:
        """An output's place, if it may be one: inside an allowed folder, not state, not a folder."""
        if is_url(raw):
            self.faults.append(f"{what}: {raw!r} is a URL; an output is a path relative to the job's folder (put the "
                               "job in the bucket, or send a local job's outputs there with storage=URL / --storage URL)")
            return None
        found = self.resolve(raw, what, False)
        if found is None:
            return None
        path, is_dir = found
        if not any(_within(path, root) for root in self.roots):
            roots = " and ".join(self._where(root) + ("/" if self.remote else "") for root in self.roots)
            where = f"resolves to {path}" if self.remote is None else f"is {self._where(path)}"
            self.outside.append(f"{what}: {raw!r} {where}, outside {roots}")
        elif _within(path, str(self.state_parent)):
            self.faults.append(f"{what}: {raw!r} is inside the state folder {self.state_parent}; choose another path")
        elif (own := _helios_folder(path, self._scan_from(path))) is not None:
            self.faults.append(f"{what}: {raw!r} is inside {own}, a folder of helios-doit's own (another job's state, "
                               "or a render service's data); choose another path")
        elif is_dir:
            self.faults.append(f"{what}: {raw!r} is an existing folder; an output must be a file path")
        else:
            return path
        return None

    def _scan_from(self, path: str) -> str:
        """Where the search for a folder of helios-doit's own starts: the job's folder, for an
        output inside it (a job may live in one: a web job of the render service lives in its
        data folder), else the top (`/`, or the bucket's mirror): an output root named inside
        another job's state allows nothing there."""
        job_dir = self.roots[0]
        if _within(path, job_dir):
            return job_dir
        return self.remote.mirror if self.remote else os.sep

    def clashes(self, path: str, raw: str, what: str) -> bool:
        """An output that is the job file or an input: the runner would delete it."""
        if path == self.job_file:
            self.faults.append(f"{what}: {raw!r} is the job file itself; choose another output")
        elif path in self.input_texts:
            self.faults.append(f"{what}: {raw!r} is also listed in inputs, and outputs are deleted; choose another output")
        else:
            return False
        return True

    def chunk_outputs(self, spec: JobSpec, merge_output: str | None, positions: Sequence[int] = ()) -> dict[int, str]:
        """Each chunk's output; one chunk per output, none the merged file."""
        outputs: dict[int, str] = {}
        owners: dict[str, int] = {}
        for index, chunk in zip(positions or range(len(spec.chunks)), spec.chunks):
            what = f"chunk {chunk.id} (chunks[{index}]).outputFile"
            if chunk.id in outputs:
                self.faults.append(f"chunk {chunk.id} (chunks[{index}]).id: duplicate chunk id {chunk.id}; "
                                   "every chunk needs its own id")
                continue
            path = self.output(chunk.output_file, what)
            if path is None:
                outputs[chunk.id] = os.path.join(self.job_dir, chunk.output_file)
                continue
            outputs[chunk.id] = path
            if self.clashes(path, chunk.output_file, what):
                pass
            elif merge_output is not None and path == merge_output:
                self.faults.append(f"{what}: {chunk.output_file!r} is also the merged output; give the chunk its own file")
            elif path in owners:
                self.faults.append(f"{what}: {chunk.output_file!r} is also the output of chunk {owners[path]}; "
                                   "give each chunk its own file")
            else:
                owners[path] = chunk.id
        return outputs


def _helios_folder(path: str, base: str) -> str | None:
    """The folder of helios-doit's own (`.helios-doit`, `.helios-doit-serve`...) on the way from
    `base` to the output, or in the output's own place, if any: never another job's state or a
    service's queue, whichever folder allowed the output (the job's, its project folder, or an
    output root the user named, even one inside such a folder)."""
    parts = Path(os.path.relpath(path, base)).parts if _within(path, base) else ()  # its own name too
    for depth, part in enumerate(parts):
        if part == STATE_ROOT or part.startswith(STATE_ROOT + "-"):
            return os.path.join(base, *parts[:depth + 1])
    return None


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _resolver(job_dir: Path, faults: list[str]) -> Callable[[str, str, bool], tuple[str, bool] | None]:
    """Resolve paths as the shell will see them (symlinks and `..` included), cheaply for 10,000 chunks.

    Chunks share a few folders, so each folder is resolved once. An input that is a symlink is
    followed (it is read); an output's own name never is: the runner acts on the place itself,
    and a symlink found there is moved aside, its target untouched. A NUL byte or an over-long
    name is a fault, not a traceback.
    """
    folders: dict[str, str] = {}

    def resolve(raw: str, what: str, follow: bool = True) -> tuple[str, bool] | None:
        try:
            folder, name = os.path.split(os.path.join(job_dir, raw))
            real = folders.get(folder)
            if real is None:
                real = folders[folder] = os.path.realpath(folder)
            path = os.path.join(real, name) if name not in ("", ".", "..") else os.path.realpath(os.path.join(real, name))
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                return path, False
            if stat.S_ISLNK(st.st_mode) and follow:
                path = os.path.realpath(path)
                try:
                    st = os.stat(path)
                except FileNotFoundError:
                    return path, False
            return path, stat.S_ISDIR(st.st_mode)
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            faults.append(f"{what}: {raw!r} is not a usable path ({reason}); fix it")
            return None

    return resolve


def _check_frames(spec: JobSpec, broken: frozenset[str] = frozenset()) -> list[str]:
    """Chunks must tile one contiguous frame range exactly; it may start past 0. With a chunk that
    did not validate (in `broken`), only overlaps are judged: a gap may be that chunk's range."""
    faults: list[str] = []
    if len({c.id for c in spec.chunks}) != len(spec.chunks):
        return faults  # duplicated ids are reported as such; ranges can be judged once they are fixed
    ordered = sorted(spec.chunks, key=lambda c: (c.start_frame, c.id))
    for before, after in zip(ordered, ordered[1:]):
        end = before.start_frame + before.frame_count
        if after.start_frame < end:
            faults.append(
                f"chunk {after.id}.startFrame: {after.start_frame} overlaps chunk {before.id} "
                f"(frames {before.start_frame}-{end - 1}); chunk ranges must not overlap"
            )
        elif after.start_frame > end and "chunks" not in broken:
            faults.append(
                f"chunk {after.id}.startFrame: {after.start_frame} leaves frames {end}-{after.start_frame - 1} "
                f"after chunk {before.id} unrendered; chunk ranges must be contiguous"
            )
    total = sum(c.frame_count for c in spec.chunks)
    # Only ranges that tile have a meaningful sum: an overlap or gap already explains a mismatch.
    if not faults and not broken & {"chunks", "metadata"} and total != spec.metadata.total_frames:
        faults.append(
            f"metadata.totalFrames: {spec.metadata.total_frames}, but the chunks' frameCount add up to {total}; "
            "they must match"
        )
    return faults


def _check_merge_order(spec: JobSpec, outputs: dict[int, str],
                       resolve: Callable[[str], tuple[str, bool] | None]) -> list[str]:
    """A `helios merge OUT PART...` joins its parts in the order given: listing the chunk outputs
    in another order than their frames would scramble the video (with the right frame count)."""
    parts = merge_inputs_of(spec.merge_command or "")
    found = [resolve(part) for part in parts]
    paths = [f[0] for f in found if f is not None]
    by_path = {path: chunk_id for chunk_id, path in outputs.items()}
    if len(paths) != len(outputs) or set(paths) != set(by_path):
        return []  # not simply the chunk outputs: a merge of its own, judged by its result
    listed = [by_path[path] for path in paths]
    ordered = [chunk.id for chunk in sorted(spec.chunks, key=lambda c: c.start_frame)]
    if listed == ordered:
        return []
    k = next(i for i, (a, b) in enumerate(zip(listed, ordered)) if a != b)
    return [f"mergeCommand: lists chunk {listed[k]}'s output where chunk {ordered[k]}'s belongs (its frames come "
            f"first), so the merged video would be out of order; list the chunk outputs in frame order"]


def merge_inputs_of(command: str) -> list[str]:
    """The INPUTs of `helios merge OUTPUT INPUT...` (or ours), options left out; [] for any other command."""
    return _merge_words(command)[1:]


def merge_output_of(command: str) -> str | None:
    """The OUTPUT of `helios merge OUTPUT INPUT...` (or ours), options left out; else None: unknown to us."""
    words = _merge_words(command)
    return words[0] if words else None


def _merge_words(command: str) -> list[str]:
    """OUTPUT and the INPUTs of a merge by a program we know, with options (and their values) left
    out, wherever they are: `merge --audio-codec aac out.mp4 a.mov` names out.mp4."""
    try:
        argv = shlex.split(command)
    except ValueError:
        return []
    if len(argv) < 3 or os.path.basename(argv[0]) not in MERGE_PROGRAMS or argv[1] != "merge":
        return []
    words, after_dashes, value_next = [], False, False
    for word in argv[2:]:
        if value_next:  # the value of an option such as --audio-codec aac
            value_next = False
        elif word == "--" and not after_dashes:
            after_dashes = True
        elif after_dashes or not word.startswith("-"):
            words.append(word)
        else:
            value_next = "=" not in word
    return words
