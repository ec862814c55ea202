"""Loading a job: read a file or fetch a URL, parse JSON or YAML, validate, resolve every path.

Loading is strict on purpose. The runner deletes partial outputs, so every path it may
delete is checked here, before anything runs: a job that fails any check is refused as a
whole with one line per fault, and nothing is run, written or deleted.
"""
from __future__ import annotations

import dataclasses
import http.client
import json
import os
import stat
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, cast

import yaml
from pydantic import TypeAdapter, ValidationError

from ..storage.mirror import use_mirror
from ..storage.url import Remote, is_store_url
from .bucket import (bucket_output_root, check_keys, fetch_assets_of, fetch_inputs, job_remote, read_remote,
                     storage_remote)
from .checks import check_job
from .errors import JobError
from .model import STATE_ROOT, Chunk, Job, JobSpec
from .paths import too_wide

#: Seconds a job URL may take to arrive, in all (a server that trickles is given up on).
FETCH_TIMEOUT_ENV = "HELIOS_DOIT_FETCH_TIMEOUT"
DEFAULT_FETCH_TIMEOUT = 30.0

#: A job file has no business being bigger (10,000 chunks take ~3 MB).
MAX_JOB_BYTES = 64 * 1024 * 1024

_CHUNK: TypeAdapter[Chunk] = TypeAdapter(Chunk)

def load_job(
    source: str | os.PathLike[str], output_root: str | os.PathLike[str] | None = None, cwd: Path | None = None,
    storage: str | None = None,
) -> Job:
    """Read, parse and validate a job file or URL; raise JobError with every fault found.

    Relative paths given by the user (`source`, `output_root`) are taken from `cwd`, which is
    also a URL job's folder; doit changes directory before it loads dodo.py, so it passes
    the directory the user started in.
    """
    source = os.fspath(source)
    cwd = (cwd or Path.cwd()).resolve()
    remote = job_remote(source, cwd) if is_store_url(source) else None
    if remote is not None:
        # A bucket job's outputs stay in its folder there, or under a bucket folder the user names.
        root = bucket_output_root(remote, os.fspath(output_root)) if output_root is not None else None
        text, job_file, job_dir = read_remote(source, remote, MAX_JOB_BYTES), None, remote.job_dir
    else:
        text, job_file, job_dir = _read(source, cwd)
        root = (cwd / output_root).resolve() if output_root is not None else _project_folder(cwd, job_dir)
    if storage:
        remote = storage_remote(storage, remote, job_dir, job_file, text)
    name = source
    data = _parse(text, name)
    state_dir = job_dir / STATE_ROOT / (remote.name if remote else _state_name(source, job_file))
    try:
        spec = JobSpec.model_validate(data)
    except ValidationError as exc:
        # Every fault at once: the checks across fields run on what did validate, so a fix does not
        # reveal the next fault on the next run.
        faults = [f"{name}: {_describe(err, data)}" for err in exc.errors()]
        salvaged = _salvage(data, exc.errors())
        if salvaged is not None:
            partial, broken, positions = salvaged
            in_bucket = remote is not None and not storage
            if in_bucket:  # its inputs are in the bucket, not here yet: checked once the job is valid
                partial = partial.model_copy(update={"inputs": []})
            faults += [f"{name}: {fault}" for fault in check_job(partial, job_dir, job_file, state_dir, root,
                                                                  remote if in_bucket else None, broken, positions)[3]]
        raise JobError(faults) from None
    if remote is not None:
        remote = dataclasses.replace(remote, state=remote.state_prefix(state_dir.name))
        if (spec.inputs or spec.assets_url) and not storage:  # checked without them first: a bad job fetches nothing
            _outputs, _merged, _inputs, faults = check_job(spec.model_copy(update={"inputs": []}), job_dir, job_file,
                                                            state_dir, root, remote)
            if faults:
                raise JobError([f"{name}: {fault}" for fault in faults])
            check_keys(remote, [*_outputs.values(), *([_merged] if _merged else [])], name)
            use_mirror(str(remote.job_dir), remote.mirror)  # before the first byte lands there: `prune --scratch` leaves it
            remote = dataclasses.replace(remote, inputs=fetch_inputs(remote, spec.inputs, source))
            if spec.assets_url:  # Helios' asset bundle: fetched like inputs, and counted as inputs
                remote, assets = fetch_assets_of(remote, spec.assets_url, source)
                spec = spec.model_copy(update={"inputs": list(dict.fromkeys([*spec.inputs, *assets]))})
    outputs, merge_output, inputs, faults = check_job(spec, job_dir, job_file, state_dir, root,
                                                      remote if remote is not None and not storage else None)
    if faults:
        raise JobError([f"{name}: {fault}" for fault in faults])
    roots = tuple(dict.fromkeys(str(r) for r in (job_dir.resolve(), root) if r is not None))
    if remote is not None:
        check_keys(remote, [*outputs.values(), *([merge_output] if merge_output else [])], name)
        in_mirror = root is not None and root.is_relative_to(remote.mirror)
        for used in dict.fromkeys([str(remote.job_dir), *([str(root)] if in_mirror else [])]):
            use_mirror(used, remote.mirror)  # this process uses the job's scratch (and its output root's) from here on
    return Job(spec, source, job_file, job_dir, state_dir, outputs, merge_output, inputs, roots, remote)


def locate(source: str | os.PathLike[str], cwd: Path | None = None) -> tuple[Path, Remote | None]:
    """Where a job keeps its state on this machine, and its bucket if it is in one, without reading
    or validating the job: what pruning needs, even for a job that no longer loads. Nothing is
    fetched; a local job file must exist."""
    source = os.fspath(source)
    cwd = (cwd or Path.cwd()).resolve()
    if is_store_url(source):
        remote = job_remote(source, cwd)
        return remote.job_dir / STATE_ROOT / remote.name, remote
    if _is_url(source):
        return cwd / STATE_ROOT / _state_name(source, None), None
    path = (cwd / source).resolve()
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "no such job file"
        raise JobError([f"{source}: {what}; give the path of a job file (JSON or YAML)"])
    return path.parent / STATE_ROOT / _state_name(source, path), None


def _project_folder(cwd: Path, job_dir: Path) -> Path | None:
    """Helios' layout: `helios render -o renders/out.mp4 --emit-job jobs/job.json` writes outputs as
    `../renders/...`, and its users run the job from the project folder. Run from a folder that
    holds the job's folder, outputs may be anywhere under it (files there that helios-doit did not
    write are still never deleted: they are moved aside). Never from `/` or the home folder: a
    job from elsewhere would have the run of the whole disk."""
    if too_wide(cwd):
        return None
    return cwd if job_dir != cwd and job_dir.is_relative_to(cwd) else None


def _is_url(source: str) -> bool:
    try:
        return urllib.parse.urlsplit(source).scheme in ("http", "https")
    except ValueError:  # e.g. "http://[::1": not a URL we can fetch, so read it as a path
        return source.lower().startswith(("http://", "https://"))


def _read(source: str, cwd: Path) -> tuple[str, Path | None, Path]:
    if _is_url(source):
        return _fetch(source), None, cwd
    path = cwd / source
    try:
        text = _read_text(path, source)
    except IsADirectoryError:
        raise JobError([f"{source}: is a folder; give the path of a job file (JSON or YAML)"]) from None
    except FileNotFoundError:
        raise JobError([f"{source}: no such job file; check the path"]) from None
    except UnicodeDecodeError as exc:
        raise JobError([f"{source}: not a text file ({exc.reason} at byte {exc.start}); give a JSON or YAML job"]) from None
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise JobError([f"{source}: cannot read the job file: {reason}"]) from None
    resolved = path.resolve()
    return text, resolved, resolved.parent


def _read_text(path: Path, source: str) -> str:
    """A job file's text: a regular file (never a FIFO or a device to wait on), at most MAX_JOB_BYTES."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(21, "Is a directory", str(path))
        if not stat.S_ISREG(st.st_mode):
            raise JobError([f"{source}: is not a regular file; give the path of a job file (JSON or YAML)"])
        if st.st_size > MAX_JOB_BYTES:
            raise JobError([f"{source}: is {st.st_size} bytes; a job file is at most {MAX_JOB_BYTES} bytes"])
        data = os.read(fd, MAX_JOB_BYTES + 1)
        while len(data) <= MAX_JOB_BYTES and (more := os.read(fd, MAX_JOB_BYTES + 1 - len(data))):
            data += more
    finally:
        os.close(fd)
    if len(data) > MAX_JOB_BYTES:
        raise JobError([f"{source}: more than {MAX_JOB_BYTES} bytes; a job file is at most that"])
    return data.decode("utf-8")


def _fetch(url: str) -> str:
    """The job at `url`, within an overall deadline and MAX_JOB_BYTES, or one line saying why not."""
    try:
        limit = float(os.environ.get(FETCH_TIMEOUT_ENV) or DEFAULT_FETCH_TIMEOUT)
    except ValueError:
        limit = DEFAULT_FETCH_TIMEOUT
    if not 0 < limit < float("inf"):  # nan, inf or 0 would switch the deadline off
        limit = DEFAULT_FETCH_TIMEOUT
    deadline = time.monotonic() + limit
    parts: list[bytes] = []
    size = 0
    try:
        # The timeout bounds each wait for the server; the deadline bounds the whole transfer.
        with urllib.request.urlopen(url, timeout=min(10.0, limit)) as response:
            declared = response.headers.get("Content-Length")
            if declared and declared.strip().isdigit() and int(declared) > MAX_JOB_BYTES:
                raise JobError([f"{url}: the server announces {int(declared)} bytes; a job is at most {MAX_JOB_BYTES}"])
            while block := response.read1(65536):
                size += len(block)
                if size > MAX_JOB_BYTES:
                    raise JobError([f"{url}: more than {MAX_JOB_BYTES} bytes; a job is at most that"])
                if time.monotonic() > deadline:
                    raise JobError([f"{url}: not received within {limit:g} s ({size} bytes so far); "
                                    f"check the server, or raise {FETCH_TIMEOUT_ENV}"])
                parts.append(block)
            if declared and declared.strip().isdigit() and size < int(declared):
                raise http.client.IncompleteRead(b"", int(declared) - size)
    except JobError:
        raise
    except http.client.IncompleteRead as exc:
        raise JobError([f"{url}: the server closed the connection after {size + len(exc.partial)} bytes, "
                        f"before the end it announced; try again"]) from None
    except urllib.error.HTTPError as exc:
        raise JobError([f"{url}: cannot fetch the job: HTTP Error {exc.code}: {exc.reason}"]) from None
    except (OSError, ValueError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        if isinstance(exc, TimeoutError) or "timed out" in str(reason):
            reason = f"no answer within {min(10.0, limit):g} s"
        raise JobError([f"{url}: cannot fetch the job: {reason}"]) from None
    try:
        return b"".join(parts).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JobError([f"{url}: not text ({exc.reason} at byte {exc.start}); serve a JSON or YAML job"]) from None


class _JobYamlLoader(yaml.SafeLoader):
    """YAML without aliases: `*name` makes a document grow exponentially as it is read (a parse bomb)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.events.AliasEvent):
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed in a job",
                                              cast(Any, self).peek_event().start_mark)  # untyped in PyYAML's stubs
        return super().compose_node(parent, index)


def _parse(text: str, name: str) -> Any:
    suffix = urllib.parse.urlsplit(name).path.lower() if _is_url(name) else name.lower()
    try:
        if suffix.endswith((".yaml", ".yml")):
            data = _parse_yaml(text, name)
        else:
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise JobError([f"{name}: malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"]) from None
    except RecursionError:
        raise JobError([f"{name}: nested too deeply to be a job"]) from None
    except ValueError as exc:  # e.g. a number of 5,000 digits
        raise JobError([f"{name}: cannot be read: {str(exc).splitlines()[0]}"]) from None
    if not isinstance(data, dict):
        raise JobError([f"{name}: the job must be an object with metadata, chunks and mergeCommand, got {type(data).__name__}"])
    return data


def _parse_yaml(text: str, name: str) -> Any:
    try:
        return yaml.load(text, Loader=_JobYamlLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise JobError([f"{name}: malformed YAML{where}: {problem}"]) from None


#: Stands in for a part of a job that did not validate, so that the rest can be checked.
_STAND_IN_METADATA = {"totalFrames": 1, "fps": 1, "width": 1, "height": 1, "duration": 1}
_STAND_IN_CHUNK = {"id": 0, "startFrame": 0, "frameCount": 1, "outputFile": "-", "command": "-"}


def _salvage(data: dict[str, Any], errors: list[Any]) -> tuple[JobSpec, frozenset[str], tuple[int, ...]] | None:
    """What of an invalid job did validate: the top-level fields without a fault, and each chunk
    validated on its own (the valid ones kept, with their places in the job's list), with the names
    of the parts that did not (`metadata`, `chunks`, `mergeCommand`...): checks needing them are skipped."""
    broken = frozenset(str(err["loc"][0]) for err in errors if err["loc"])
    kept = {key: value for key, value in data.items() if key not in broken}
    raw_chunks = data.get("chunks")
    chunks, positions = [], []
    for index, raw in enumerate(raw_chunks if isinstance(raw_chunks, list) else []):
        try:
            chunks.append(_CHUNK.validate_python(raw))
        except ValidationError:
            continue
        positions.append(index)
    try:
        spec = JobSpec.model_validate({**kept, "metadata": kept.get("metadata", _STAND_IN_METADATA),
                                       "chunks": [_STAND_IN_CHUNK]})
    except ValidationError:
        return None  # nothing sound to check across
    return spec.model_copy(update={"chunks": chunks}), broken, tuple(positions)


def _describe(err: Any, data: dict[str, Any]) -> str:
    """One line for one pydantic error: where (naming the chunk by its id), what, got what."""
    loc = err["loc"]
    where = ""
    for part in loc:
        if isinstance(part, int):
            where += f"[{part}]"
        else:
            where += f".{part}" if where else str(part)
    if len(loc) >= 2 and loc[0] == "chunks" and isinstance(loc[1], int):
        chunks = data.get("chunks")
        raw = chunks[loc[1]] if isinstance(chunks, list) and loc[1] < len(chunks) else None
        if isinstance(raw, dict) and "id" in raw and loc[2:3] != ("id",):
            where = f"chunk {raw['id']!r} ({where})"
    kind = err["type"]
    if kind == "missing":
        return f"{where}: required field is missing"
    got = err.get("input")
    shown = json.dumps(got) if isinstance(got, (str, int, float, bool, type(None))) else type(got).__name__
    shown = shown if len(shown) <= 80 else shown[:60] + f"... ({len(shown)} characters)"
    message = err["msg"][0].lower() + err["msg"][1:]
    if kind == "dataclass_type":  # a chunk that is not an object: say it as for the models
        message = "input should be a valid dictionary"
    return f"{where}: {message}, got {shown}"


def _state_name(source: str, job_file: Path | None) -> str:
    if job_file is not None:
        return job_file.name
    import hashlib

    base = Path(urllib.parse.urlsplit(source).path).name or "job"
    return f"{base}-{hashlib.sha256(source.encode()).hexdigest()[:8]}"
