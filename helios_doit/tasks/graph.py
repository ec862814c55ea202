"""JobSpec -> the task graph: `chunk:<id>` per chunk and `merge` after all of them. Pure.

Building the graph reads (the job, the inputs' content) and writes nothing, so `doit list`,
`info` and `status` are safe on any job folder; everything a run does to the world when it
starts lives in `session`. Completion is decided by our durable records (`complete.Complete`),
never by doit's own dep file. `merge` waits for the `chunk` group through `task_dep`; its record
pins the content of every chunk output it consumed, so a re-rendered but identical chunk does
not force a new merge.
"""
from __future__ import annotations

import os
import posixpath
import shlex
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Iterator

from ..spec.errors import JobError
from ..spec.model import Chunk, Job
from ..state.content import fingerprint, inputs_digest, inputs_states
from ..state.folder import StateDir
from ..state.names import CHUNK, MERGE, TaskName
from .action import do_task
from .clean import clean_task
from .options import RunOptions
from .uptodate import task_done
from .work import Expect, Work

TaskDicts = Iterator[dict[str, Any]]
_NO_KWARGS: dict[str, Any] = {}  # one for every chunk's uptodate: doit keeps what it is given


@dataclass(frozen=True)
class Graph:
    """A job's tasks as work items, before doit sees them: what `status` reads too."""

    job: Job
    state: StateDir
    chunks: tuple[Work, ...]  # in the job's order
    merge: Work
    inputs: dict[str, list[Any]]  # the content state of each input: the session caches it for the next run


def build(job: Job, options: RunOptions = RunOptions(), merge: str | None = None) -> Graph:
    """The graph of `job`; `merge` is "builtin" to stitch with our stitcher even when the job has
    a mergeCommand. A bad `merge` value is a JobError."""
    command, own = merge_command(job, merge)
    state = StateDir(job.state_dir)
    states = inputs_states(state, job.inputs, job.job_dir)
    digest = inputs_digest(states)
    meta = job.spec.metadata
    remote = job.remote
    scan = scan_prefix(job) if remote else ""
    expects: dict[int, Expect] = {}  # shared: most chunks have the same frame count
    chunks = []
    for chunk in job.spec.chunks:
        expect = expects.get(chunk.frame_count)
        if expect is None:
            expect = expects[chunk.frame_count] = Expect(chunk.frame_count, meta.width, meta.height, meta.fps)
        chunks.append(Work(TaskName(chunk.id), chunk.command, str(job.job_dir), job.outputs[chunk.id],
                              str(state.root), chunk_fingerprint(chunk, digest), adapter=options.executor,
                              expect=expect, options=options, roots=job.output_roots,
                              first_frame=chunk.start_frame, remote=remote, scan=scan))
    output = str(job.merge_output) if job.merge_output else None
    by_id = {work.chunk_id: work for work in chunks}
    merge_work = Work(TaskName.merge(), command, str(job.job_dir), output, str(state.root),
                         fingerprint(command, output and os.path.relpath(output, job.job_dir)),
                         tuple(job.outputs[i] for i in job.frame_order), adapter=options.merge_executor,
                         expect=Expect(meta.total_frames, fps=meta.fps), options=options,
                         roots=job.output_roots, sources=tuple(TaskName(i) for i in job.frame_order),
                         remote=remote, scan=scan,
                         source_fingerprints=tuple(by_id[i].fingerprint for i in job.frame_order) if remote else (),
                         own=own)
    return Graph(job, state, tuple(chunks), merge_work, states)


def scan_prefix(job: Job) -> str:
    """The one key prefix under which a bucket job's records and outputs all are: listed once to
    decide every task (Helios' `../renders` outputs widen it to the project's folder)."""
    assert job.remote is not None
    paths: list[str | Path] = [*job.outputs.values(), *([job.merge_output] if job.merge_output else [])]
    keys = [job.remote.key_of(p) or "" for p in paths]
    folders = [job.remote.folder, *(posixpath.dirname(key) for key in keys)]
    common = posixpath.commonpath(folders) if all(folders) else ""
    return common


def chunk_fingerprint(chunk: Chunk, digest: str) -> str:
    """What a chunk's record is tied to: its JobSpec entry and the content of the job's inputs.

    Equal to `fingerprint(chunk.model_dump(by_alias=True), digest)` (what records hold),
    without pydantic's dump, which is most of the cost for 10,000 chunks.
    """
    entry = {"id": chunk.id, "startFrame": chunk.start_frame, "frameCount": chunk.frame_count,
             "outputFile": chunk.output_file, "command": chunk.command}
    return fingerprint(entry, digest)


def merge_command(job: Job, mode: str | None = None) -> tuple[str, tuple[str, ...] | None]:
    """The job's mergeCommand, or the built-in stitcher when there is none or `mode` is "builtin":
    (the command line, for people and the record; our own `merge`'s arguments, which it runs as)."""
    if mode not in (None, "", "auto", "builtin", "command"):
        raise JobError([f"merge={mode}: unknown merge mode; use merge=builtin or merge=command"])
    if job.spec.merge_command and mode != "builtin":
        return job.spec.merge_command, None
    if mode == "command":
        raise JobError([f"{job.source}: merge=command, but the job has no mergeCommand"])
    if job.merge_output is None:
        raise JobError([f"{job.source}: merge=builtin needs to know the merged file; add an outputFile"])
    paths: list[str | Path] = [job.merge_output, *(job.outputs[i] for i in job.frame_order)]
    rel = [os.path.relpath(p, job.job_dir) for p in paths]
    args = ("merge", "--", *rel)  # a file named "-x.mov" is never an option
    return shlex.join(["helios-doit", *args]), args


def chunk_tasks(graph: Graph, clean: bool = True) -> TaskDicts:
    """doit's task dicts for the chunks: the group task `chunk`, then `chunk:<id>` each. doit makes
    the clean action of every task whatever the command; `clean=False` (any command but `doit
    clean`) spares a run 3.6 MB per 10,000 chunks."""
    yield {"basename": CHUNK, "name": None, "doc": f"render all {len(graph.chunks)} chunks"}
    for work, chunk in zip(graph.chunks, graph.job.spec.chunks):
        last = chunk.start_frame + chunk.frame_count - 1
        yield {
            "basename": CHUNK,
            "name": str(chunk.id),
            "doc": f"frames {chunk.start_frame}-{last} -> {chunk.output_file}",
            "actions": [(do_task, [work])],
            # doit runs a task whose target file is missing; a bucket job's outputs are objects.
            "targets": [work.output] if work.remote is None else [],
            # Checked when doit gets to the chunk (another runner may have redone it since we
            # loaded); a plain function with its signature attached costs doit no inspection.
            "uptodate": [(task_done, (work,), _NO_KWARGS)],
            # `doit clean` deletes the output only if its record vouches for it, else moves it aside.
            "clean": [(clean_task, [work])] if clean else [],
            "verbosity": 2,
        }


def merge_task(graph: Graph, clean: bool = True) -> dict[str, Any]:
    work = graph.merge
    output = work.output
    return {
        "basename": MERGE,
        "doc": f"stitch the chunks into {os.path.relpath(output, work.cwd) if output else 'the merged output'}",
        "actions": [(do_task, [work])],
        "task_dep": [CHUNK],
        "targets": [output] if output and work.remote is None else [],
        # checked when doit gets to it: the chunks run first
        "uptodate": [(task_done, (work,), _NO_KWARGS)],
        "clean": [(clean_task, [work])] if clean else [],
        "verbosity": 2,
    }
