"""Output places: the only way the runner deletes, moves or makes room for a file.

The promise is that helios-doit never destroys a byte it did not write. A job names its
outputs; a run may delete what is in such a place only when it is the partial output of the
attempt it is running, or the file its own record vouches for (same size and modification
time, a regular file). Anything else found there (a file of unknown origin, a symlink, a
folder) is moved aside into the state folder's `aside/` with one line saying where.

Paths are checked when the job loads, and again here at the moment of acting: the folder is
reached from the allowed root one component at a time without following symlinks, so a
folder that became a symlink since the job loaded (an earlier chunk's `ln -s /elsewhere sub`)
is refused, never followed. Each action then works through the folder's descriptor.
"""
from __future__ import annotations

import contextlib
import errno
import os
import stat
import time
from dataclasses import dataclass
from typing import Iterator, Sequence

from ..core.errors import EnvironmentFault
from ..spec.model import STATE_ROOT

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


class PlaceError(EnvironmentFault):
    """An output place that may not be touched now; one line for the user."""


@dataclass(frozen=True, slots=True)
class Place:
    """An output path (its folder resolved at load time, its name never followed) and where it may live."""

    path: str
    roots: tuple[str, ...]  # folders outputs may be in: the job's folder, an output root
    aside: str  # the state folder's aside/, where files of unknown origin go


def stamp_of(st: os.stat_result) -> list[int] | None:
    """(size, mtime in ns) of a regular file: what a record pins an output to; None otherwise."""
    return [st.st_size, st.st_mtime_ns] if stat.S_ISREG(st.st_mode) else None


@contextlib.contextmanager
def folder_of(place: Place, create: bool = False) -> Iterator[int | None]:
    """The descriptor of the output's folder, reached from its root without following a symlink.

    Yields None when the folder does not exist (and `create` is False): the place is empty.
    """
    folder, _ = os.path.split(place.path)
    root = _root_of(folder, place.roots)
    fd = os.open(root, _DIR_FLAGS)
    try:
        walked = root
        for part in [p for p in folder[len(root):].split(os.sep) if p]:
            walked = os.path.join(walked, part)
            try:
                nxt = _open_dir(part, fd, create)
            except FileNotFoundError:
                yield None
                return
            except OSError as exc:
                raise PlaceError(_not_a_folder(walked, fd, part, exc)) from None
            os.close(fd)
            fd = nxt
        yield fd
    finally:
        os.close(fd)


#: In an output's folder, under `.helios-doit`: the locks and markers of the outputs there (see `output_claim`).
OUTPUTS = ".outputs"


@dataclass(frozen=True, slots=True)
class OutputClaim:
    """Where one writer of an output says so, whichever job it runs (see `output_claim`)."""

    lock: str  # held from clearing the output's place to its record
    marker: str  # a copy of the running marker of the attempt that writes it: what to reap if its runner died
    notes: tuple[str, ...] = ()  # what was found where one of its folders belongs, and where it went


def output_claim(place: Place, label: str) -> OutputClaim:
    """Two jobs that name one output (a job emitted again under another name, two shots that
    share a folder) have task locks and running markers of their own, in their own state
    folders, and would otherwise both write it at once, or one would start while a command of the
    other, whose runner died, still writes. So the output has a lock and a running marker of its
    own in its folder, the one place every such job shares (also on shared storage), under
    `.helios-doit/.outputs/`: reached as the output's place is (a folder that became a symlink is
    refused), and what is not a folder where one of ours belongs (a link, a file) is moved
    aside, never followed. Names end in `.output-lock` and `.output.json`, never like a
    task's lock or marker, should a job file be named `.outputs`."""
    folder, name = os.path.split(place.path)
    with folder_of(place, create=True) as top:
        assert top is not None  # made if missing
        fd = os.dup(top)
    walked, notes = folder, list[str]()
    try:
        for part in (STATE_ROOT, OUTPUTS):
            current, fd = fd, -1  # _own_folder closes it, whatever happens
            fd = _own_folder(current, walked, part, place.aside, label, notes)
            walked = os.path.join(walked, part)
        for part in ("locks", "running"):
            os.close(_own_folder(os.dup(fd), walked, part, place.aside, label, notes))
    finally:
        if fd >= 0:
            os.close(fd)
    return OutputClaim(os.path.join(walked, "locks", f"{name}.output-lock"),
                       os.path.join(walked, "running", f"{name}.output.json"), tuple(notes))


def _own_folder(fd: int, folder: str, part: str, aside: str, label: str, notes: list[str]) -> int:
    """The descriptor of the folder `part` in `fd` (at `folder`), made if missing; a link or a
    file there is moved aside (said in `notes`). `fd` is closed."""
    try:
        try:
            return _open_dir(part, fd, True)
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise PlaceError(_not_a_folder(os.path.join(folder, part), fd, part, exc)) from None
        where = _move_aside(fd, part, folder, aside, label)
        notes.append(f"{label}: {os.path.join(folder, part)} was not a folder of ours (a link, or a file); "
                     f"moved it to {where}")
        return _open_dir(part, fd, True)
    finally:
        os.close(fd)


def _open_dir(part: str, fd: int, create: bool) -> int:
    try:
        return os.open(part, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
    except FileNotFoundError:
        if not create:
            raise
        with contextlib.suppress(FileExistsError):  # another runner may make it at the same time
            os.mkdir(part, 0o777, dir_fd=fd)
        return os.open(part, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fd)


def _not_a_folder(walked: str, fd: int, part: str, exc: OSError) -> str:
    with contextlib.suppress(OSError):
        if stat.S_ISLNK(os.lstat(part, dir_fd=fd).st_mode):
            target = os.readlink(part, dir_fd=fd)
            return f"{walked} is now a symlink (to {target}); outputs are never written or removed through one"
    if exc.errno == errno.ENOTDIR:
        return f"{walked} is not a folder"
    return f"cannot open the folder {walked}: {exc.strerror}"


def _root_of(folder: str, roots: Sequence[str]) -> str:
    for root in sorted(roots, key=len, reverse=True):
        if folder == root or folder.startswith(root.rstrip(os.sep) + os.sep):
            return root
    raise PlaceError(f"{folder} is outside every folder outputs may be in ({', '.join(roots)})")


@dataclass(frozen=True, slots=True)
class _Found:
    """What is in an output's place now, and the descriptor of its folder to act through."""

    fd: int
    name: str
    st: os.stat_result

    @property
    def kind(self) -> str:
        return "symlink" if stat.S_ISLNK(self.st.st_mode) else "folder" if stat.S_ISDIR(self.st.st_mode) else "file"

    def unlink(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.name, dir_fd=self.fd)


@contextlib.contextmanager
def _look(place: Place, create: bool = False) -> Iterator[_Found | None]:
    name = os.path.basename(place.path)
    with folder_of(place, create) as fd:
        found = None
        if fd is not None:
            with contextlib.suppress(FileNotFoundError):
                found = _Found(fd, name, os.lstat(name, dir_fd=fd))
        yield found


def clear(place: Place, vouched: list[int] | None, label: str, why: str | None = None,
          create: bool = False) -> str | None:
    """Make the place empty before an attempt. Deletes only the file `vouched` describes (the
    stamp in our record); moves anything else aside. Returns the line to show, if anything moved.
    `create` also makes the output's folder (inside its root only; never through a symlink)."""
    with _look(place, create) as found:
        if found is None:
            return None
        if vouched is not None and stamp_of(found.st) == vouched:
            found.unlink()
            return None
        return _set_aside(place, found, label, why or "no record of ours vouches for it")


def discard(place: Place, label: str) -> str | None:
    """After a failed attempt of ours: remove its partial output. A regular file or a symlink that
    appeared during our attempt is ours to unlink (unlinking a symlink never touches its target);
    a folder is moved aside. Returns the line to show, if anything moved."""
    with _look(place) as found:
        if found is None:
            return None
        if found.kind != "folder":
            found.unlink()
            return None
        return _set_aside(place, found, label, "the failed attempt left a folder there")


def set_aside(place: Place, label: str, why: str) -> str | None:
    """Move whatever is in the place aside (the evidence of a failure, or a stranger's file)."""
    with _look(place) as found:
        return None if found is None else _set_aside(place, found, label, why)


#: How a name in aside/ starts: the moment (local time) its entry was moved there.
_MOVED = "%Y%m%d-%H%M%S"


def aside_name(name: str, label: str = "") -> str:
    """A new name in aside/ for `name`: when it was moved, and for which task."""
    return "-".join(filter(None, [time.strftime(_MOVED), os.urandom(3).hex(), label.replace(" ", "-"), name]))


def moved_at(name: str) -> float | None:
    """When the entry of aside/ called `name` was moved there, as `aside_name` wrote it in its name;
    None for a name it did not make."""
    try:
        return time.mktime(time.strptime(name[:15], _MOVED))  # 15: the length of a _MOVED moment
    except ValueError:
        return None


def _set_aside(place: Place, found: _Found, label: str, why: str) -> str:
    where = _move_aside(found.fd, found.name, os.path.dirname(place.path), place.aside, label)
    return f"{label}: moved the {found.kind} in its output's place {place.path} to {where} ({why})"


def _move_aside(fd: int, name: str, folder: str, aside: str, label: str) -> str:
    """Move the entry `name` of the folder `fd` (at `folder`) into the state folder's `aside`, or,
    on another filesystem than that, beside itself under a name of its own; returns where it went."""
    moved = aside_name(name, label)
    os.makedirs(aside, exist_ok=True)
    aside_fd = os.open(aside, _DIR_FLAGS)
    try:
        os.rename(name, moved, src_dir_fd=fd, dst_dir_fd=aside_fd)
        return os.path.join(aside, moved)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        moved = f".{name}.aside-{moved[:22]}"  # on another filesystem than the state folder: beside it
        os.rename(name, moved, src_dir_fd=fd, dst_dir_fd=fd)
        return os.path.join(folder, moved)
    finally:
        os.close(aside_fd)
