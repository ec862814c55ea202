"""JobSpec -> doit task dicts: `chunk:<id>` per chunk and `merge` after all of them.

Completion is decided by our durable records (`actions.Complete`), never by doit's own dep
file, which only holds what a run managed to save when it ended. `merge` waits for the
`chunk` group through `task_dep`; its record pins the content of every chunk output it
consumed, so a re-rendered but identical chunk does not force a new merge.
"""
from __future__ import annotations

import gc
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, NoReturn, TypeVar

T = TypeVar("T")

from . import events, supervise
from .actions import Expect, TaskJob, chunk_done, clean_task, run_task
from .options import RunOptions
from .progress import PROGRESS_ENV
from .spec import Chunk, Job, JobError, load_job
from .places import Place
from .state import StateDir, chunk_task_name, fingerprint, inputs_digest, inputs_states, save_inputs_cache

#: The job `doit` renders when no `job=` is given.
EXAMPLE_JOB = Path(__file__).resolve().parent.parent / "examples" / "orbit" / "job.json"

TaskDicts = Iterator[dict[str, Any]]
_NO_KWARGS: dict[str, Any] = {}  # one for every chunk's uptodate: doit keeps what it is given


def chunk_tasks(job: Job, state: StateDir, digest: str, options: RunOptions = RunOptions()) -> TaskDicts:
    yield {"basename": "chunk", "name": None, "doc": f"render all {len(job.spec.chunks)} chunks"}
    looked = time.time()
    roots = job.output_roots
    job_dir, state_root = str(job.job_dir), str(state.root)
    expects: dict[int, Expect] = {}  # shared: most chunks have the same frame count
    for chunk in job.spec.chunks:
        name = chunk_task_name(chunk.id)
        output = str(job.outputs[chunk.id])
        print_fp = chunk_fingerprint(chunk, digest)
        if chunk.frame_count not in expects:
            expects[chunk.frame_count] = Expect(chunk.frame_count, job.spec.metadata.width, job.spec.metadata.height)
        expect = expects[chunk.frame_count]
        work = TaskJob(name, chunk.command, job_dir, output, state_root, print_fp,
                       adapter=options.executor, expect=expect, chunk_id=chunk.id, options=options, looked=looked,
                       roots=roots)
        last = chunk.start_frame + chunk.frame_count - 1
        yield {
            "basename": "chunk",
            "name": str(chunk.id),
            "doc": f"frames {chunk.start_frame}-{last} -> {chunk.output_file}",
            "actions": [(run_task, [work])],
            "targets": [output],
            # Checked when doit gets to the chunk (another runner may have redone it since we
            # loaded); a plain function with its signature attached costs doit no inspection.
            "uptodate": [(chunk_done, (work,), _NO_KWARGS)],
            # `doit clean` deletes the output only if its record vouches for it, else moves it aside.
            "clean": [(clean_task, [work])],
            "verbosity": 2,
        }


def chunk_fingerprint(chunk: Chunk, digest: str) -> str:
    """What a chunk's record is tied to: its JobSpec entry and the content of the job's inputs.

    Equal to `fingerprint(chunk.model_dump(by_alias=True), digest)` (what records hold),
    without pydantic's dump, which is most of the cost for 10,000 chunks.
    """
    entry = {"id": chunk.id, "startFrame": chunk.start_frame, "frameCount": chunk.frame_count,
             "outputFile": chunk.output_file, "command": chunk.command}
    return fingerprint(entry, digest)


def merge_command(job: Job, mode: str | None = None) -> str:
    """The job's mergeCommand, or the built-in stitcher when there is none or `mode` is "builtin"."""
    if mode not in (None, "", "auto", "builtin", "command"):
        raise JobError([f"merge={mode}: unknown merge mode; use merge=builtin or merge=command"])
    if job.spec.merge_command and mode != "builtin":
        return job.spec.merge_command
    if mode == "command":
        raise JobError([f"{job.source}: merge=command, but the job has no mergeCommand"])
    if job.merge_output is None:
        raise JobError([f"{job.source}: merge=builtin needs to know the merged file; add an outputFile"])
    rel = [os.path.relpath(p, job.job_dir) for p in [job.merge_output, *(job.outputs[i] for i in job.frame_order)]]
    return shlex.join(["helios-doit", "merge", "--", *rel])  # a file named "-x.mov" is never an option


def merge_task(job: Job, state: StateDir, command: str, options: RunOptions = RunOptions()) -> dict[str, Any]:
    inputs = tuple(str(job.outputs[i]) for i in job.frame_order)
    output = str(job.merge_output) if job.merge_output else None
    print_fp = fingerprint(command, output and os.path.relpath(output, job.job_dir))
    meta = job.spec.metadata
    work = TaskJob("merge", command, str(job.job_dir), output, str(state.root), print_fp, inputs,
                   adapter=options.merge_executor, expect=Expect(meta.total_frames, fps=meta.fps), options=options,
                   looked=time.time(), roots=job.output_roots,
                   sources=tuple(chunk_task_name(i) for i in job.frame_order))
    return {
        "basename": "merge",
        "doc": f"stitch the chunks into {os.path.relpath(output, job.job_dir) if output else 'the merged output'}",
        "actions": [(run_task, [work])],
        "task_dep": ["chunk"],
        "targets": [output] if output else [],
        "uptodate": [work.complete()],  # checked when doit gets to it: the chunks run first
        "clean": [(clean_task, [work])],
        "verbosity": 2,
    }


def doit_config(job: Job, state: StateDir, options: RunOptions = RunOptions()) -> dict[str, Any]:
    from .reporter import Reporter

    config = {
        # Completion lives in our records; doit's own state is only a cache of this run, so it
        # stays in memory: nothing for a second runner to lock, a full disk to break, or a
        # read-only folder to refuse.
        "dep_file": ":memory:",
        "backend": "sqlite3",
        "default_tasks": ["chunk", "merge"],
        "reporter": Reporter,
    }
    if options.keep_going:
        config["continue"] = True
    return config


def namespace(job: Job, merge: str | None = None, options: RunOptions = RunOptions()) -> dict[str, Any]:
    """What a dodo file holds for `job`: DOIT_CONFIG and the task creators; used by dodo.py and the CLI.

    `merge` is "builtin" to stitch with our stitcher even when the job has a mergeCommand.
    Bad values exit 2 like a bad job, before anything is written.
    """
    try:
        command = merge_command(job, merge)
    except JobError as err:
        _refuse(err)
    # doit is about to make ~200,000 long-lived objects per 10,000 chunks from our task dicts;
    # collecting cycles while they are made only walks them over and over (0.3 s of a no-op
    # run). The reporter freezes them and turns collection back on when the run starts.
    gc.disable()
    if "dask" in (options.executor, options.merge_executor) and not options.scheduler:
        from .dask_executor import ensure_cluster  # one cluster for every doit worker process

        options = ensure_cluster(options)
    state = StateDir(job.state_dir)
    states = inputs_states(state, job.inputs, job.job_dir)
    digest = inputs_digest(states)
    outputs = {chunk_task_name(i): Place(p, job.output_roots, str(state.aside)) for i, p in job.outputs.items()}
    if job.merge_output:
        outputs["merge"] = Place(str(job.merge_output), job.output_roots, str(state.aside))
    supervise.watch(state.root, outputs)
    from .reporter import announce

    # The state folder is made when a run starts (the reporter's hook), not here: `doit list`
    # and `info` only read, and work on a read-only job folder.
    announce(state.root, {chunk.id: chunk.frame_count for chunk in job.spec.chunks},
             on_start=lambda: save_inputs_cache(state, states))
    supervise.ensure_handlers()
    events.run_id()  # made here, in the main process, so that every worker shares it
    if options.progress_json:
        os.environ[PROGRESS_ENV] = os.path.abspath(options.progress_json)

    def task_chunk() -> TaskDicts:
        yield from chunk_tasks(job, state, digest, options)

    def task_merge() -> dict[str, Any]:
        return merge_task(job, state, command, options)

    task_chunk.__doc__ = "render one chunk of the job (chunk:<id>)"
    task_merge.__doc__ = "stitch the rendered chunks into the final output"
    return {"DOIT_CONFIG": doit_config(job, state, options), "task_chunk": task_chunk, "task_merge": task_merge}


def load_or_exit(source: str | os.PathLike[str], output_root: str | None = None, cwd: str | None = None) -> Job:
    """Load a job; on a bad one print one line per fault and exit 2 before anything runs."""
    try:
        return load_job(source, output_root, Path(cwd) if cwd else None)
    except JobError as err:
        _refuse(err)


def refuse_bad(make: Callable[[], T]) -> T:
    """`make()`, or its JobError as one line per fault and exit 2."""
    try:
        return make()
    except JobError as err:
        _refuse(err)


def _refuse(err: JobError) -> NoReturn:
    for line in err.lines:
        sys.stderr.write(f"helios-doit: {line}\n")
    raise SystemExit(2) from None
