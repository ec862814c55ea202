"""The dashboard: the queue at `/`, one job at `/jobs/{id}` (static files in `static/`, no build
step, no CDN), and what its pages show of a job besides its status: a chunk's first frame, its
log, the merged video's seams.

A thumbnail is made once from the verified output (never by rendering again) and kept in the
data folder under the output's stamp, so a chunk rendered again gets a new one. A log is read
without following a link, and only its end is sent.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import os
import shutil
import stat
from pathlib import Path
from typing import Any, Iterator

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from ..state.atomic import write_atomic
from ..state.files import read_json, stamp
from ..state.folder import StateDir
from ..spec.model import Job
from ..state.names import TaskName
from ..video import is_video_path
from .api import COOKIE, same_token
from .service import NotFound, Service, Unavailable

STATIC = Path(__file__).parent / "static"
#: The end of a log a browser gets, at most.
LOG_TAIL = 256 * 1024
#: A thumbnail's width in pixels.
THUMB_WIDTH = 320


def add_dashboard(app: FastAPI, service: Service, guarded: list[Any], token: str | None) -> None:
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def queue_page(request: Request) -> Response:
        given = request.query_params.get("token")
        if given is not None:  # the token once in the URL, then a cookie (the address bar forgets it)
            response: Response = RedirectResponse("/", 303)
            if token is not None and same_token(given, token):
                response.set_cookie(COOKIE, token, httponly=True, samesite="strict")
            return response
        return _page()

    @app.get("/jobs/{job_id}", include_in_schema=False)
    def job_page(job_id: str) -> Response:
        return _page()

    @app.get("/api/jobs/{job_id}/chunks/{chunk_id}/thumbnail", dependencies=guarded, tags=["dashboard"],
             responses={200: {"content": {"image/png": {}}}, 404: {"description": "no verified output yet"}})
    def thumbnail(job_id: str, chunk_id: int) -> Response:
        """The chunk's first frame (PNG), from its verified output."""
        path = _done_output(service, job_id, chunk_id)
        found = stamp(path)
        key = hashlib.sha256(f"{path}:{found}".encode()).hexdigest()[:20]
        thumb = service.queue.data / "thumbs" / job_id / f"{chunk_id}-{key}.png"
        with _kept(job_id):
            if not _ours(service.queue.data, thumb):
                _make_thumbnail(Path(path), thumb)
            return _cached(thumb, {"Cache-Control": "private, max-age=86400"})

    @app.get("/api/jobs/{job_id}/chunks/{chunk_id}/log", dependencies=guarded, tags=["dashboard"],
             response_class=PlainTextResponse)
    def log(job_id: str, chunk_id: int) -> Response:
        """The end of the chunk's log (every attempt, with its outcome)."""
        job = service.loaded(service.get(job_id))
        if job is None:
            raise NotFound(f"job {job_id}: its job file cannot be read now")
        path = StateDir(job.state_dir).log(TaskName(chunk_id).key)
        return PlainTextResponse(_tail(path), headers={"Cache-Control": "no-store"})

    @app.get("/api/jobs/{job_id}/seams", dependencies=guarded, tags=["dashboard"],
             responses={200: {"content": {"image/png": {}}}})
    def seams(job_id: str) -> Response:
        """Every seam of the merged video, side by side (PNG): jumps show at a glance."""
        job = service.loaded(service.get(job_id))
        output = str(job.merge_output) if job is not None and job.merge_output else None
        found = stamp(output) if output else None
        if job is None or output is None or found is None or not is_video_path(output):
            raise NotFound(f"job {job_id}: no merged video yet")
        key = hashlib.sha256(f"{output}:{found}".encode()).hexdigest()[:20]
        picture = service.queue.data / "seams" / f"{job_id}-{key}.png"
        with _kept(job_id):
            if not _ours(service.queue.data, picture):
                _make_seams(job, Path(output), picture)
            return _cached(picture, {})


@contextlib.contextmanager
def _kept(job_id: str) -> Iterator[None]:
    """A picture the data folder cannot hold now (gone, full, not ours to write) is a 503 line."""
    try:
        yield
    except OSError as exc:
        raise Unavailable(f"job {job_id}: no picture can be kept in the data folder now "
                          f"({exc.strerror or exc})") from None


def _ours(data: Path, path: Path) -> bool:
    """A picture this server made and kept: a plain file with one name, in plain folders of the data
    folder. Anything else there (a link a chunk's command put in the data folder, a file where a
    folder belongs, a folder where a picture belongs) is removed, and the picture made anew: the
    data folder is the service's own."""
    _folders(data, path.parent)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if stat.S_ISREG(st.st_mode) and st.st_nlink == 1:
        return True
    if stat.S_ISDIR(st.st_mode) and path.parent.resolve().is_relative_to(data.resolve()):
        shutil.rmtree(path)  # never follows a link inside it
    else:
        os.unlink(path)
    return False


def _folders(data: Path, folder: Path) -> None:
    """Every folder from the data folder down to `folder` a plain folder: a file or a link in the
    place of one is removed first (a link would take the pictures out of the data folder)."""
    here = data
    for part in folder.relative_to(data).parts:
        here = here / part
        try:
            st = os.lstat(here)
        except FileNotFoundError:
            st = None
        if st is not None and stat.S_ISDIR(st.st_mode):
            continue
        if st is not None:
            os.unlink(here)
        with contextlib.suppress(FileExistsError):  # another request made it meanwhile
            os.mkdir(here, 0o700)


def _cached(path: Path, headers: dict[str, str]) -> Response:
    """A kept picture, read without following a link (it was just checked; this checks again)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as picture:
        if os.fstat(fd).st_nlink != 1:
            raise NotFound("the picture is not one of ours")
        return Response(picture.read(64 * 2**20), media_type="image/png", headers=headers)


def _page() -> Response:
    return FileResponse(STATIC / "index.html", media_type="text/html", headers={"Cache-Control": "no-cache"})


def _done_output(service: Service, job_id: str, chunk_id: int) -> str:
    """A chunk's output, if its record vouches for it (a verified video)."""
    job = service.loaded(service.get(job_id))
    if job is None or chunk_id not in job.outputs:
        raise NotFound(f"job {job_id} has no chunk {chunk_id}")
    path = job.outputs[chunk_id]
    record = read_json(StateDir(job.state_dir).record(TaskName(chunk_id).key)) or {}
    if not is_video_path(path) or record.get("output") is None or stamp(path) != record.get("output"):
        raise NotFound(f"chunk {chunk_id} of job {job_id} has no verified video yet")
    return path


def _make_seams(job: Job, video: Path, picture: Path) -> None:
    """The merged video's seams, drawn under a name of its own (never through a link planted at a
    name known in advance), then renamed into place."""
    from ..video.seams import ReportNotWritten, SeamsError, seams_report

    chunks = sorted(job.spec.chunks, key=lambda c: c.start_frame)
    partial = picture.with_name(f".{picture.name}.{os.urandom(6).hex()}.png")
    try:
        seams_report(video, partial, [c.start_frame - chunks[0].start_frame for c in chunks[1:]], 6)
    except ReportNotWritten as exc:  # the data folder's fault: 503, as for a thumbnail (its path not said)
        raise OSError(errno.EIO, exc.strerror) from None
    except SeamsError as exc:
        raise NotFound(f"job {job.source}: {exc}") from None
    os.replace(partial, picture)


def _make_thumbnail(video: Path, thumb: Path) -> None:
    import av

    try:
        with av.open(str(video)) as container:
            frame = next(container.decode(video=0))
            height = max(2, round(frame.height * THUMB_WIDTH / frame.width / 2) * 2)
            image: Any = frame.to_ndarray(format="rgb24")
        from PIL import Image

        picture = Image.fromarray(image).resize((THUMB_WIDTH, height))
    except (av.FFmpegError, StopIteration, OSError) as exc:
        raise NotFound(f"{video.name}: no frame to show ({exc})") from None
    png = io.BytesIO()
    picture.save(png, format="PNG")
    write_atomic(thumb, png.getvalue())  # under a name of its own, never through a link; no partial file left


def _tail(path: Path) -> str:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NotFound("no log yet") from None
    except OSError as exc:
        raise NotFound(f"the log cannot be read ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as log:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:  # a hard link to someone's file is never sent
            raise NotFound("the log is not a file of ours")
        log.seek(max(0, st.st_size - LOG_TAIL))
        return log.read(LOG_TAIL).decode(errors="replace")

