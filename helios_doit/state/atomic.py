"""Files that appear whole or not at all, written through nothing that was there before.

Two sizes of the same idea. `write_atomic` is for small state files (records, markers): a
temp file of its own, then a rename. `new_file` is for renders and merges: the file is made
without a name (Linux' O_TMPFILE) in the destination's folder, written, and only then linked
under a temp name and renamed into place. A render killed at any moment leaves nothing behind;
a symlink or hard link someone put at a temp name cannot be written through (there is none);
and renaming replaces a symlink at the destination itself, never its target. Where O_TMPFILE
is not supported (NFS), a temp name of its own is created exclusively, without following links.
"""
from __future__ import annotations

import contextlib
import errno
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def write_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Readers see the old file or the new one, never a torn one, whatever kills the writer."""
    path = os.fspath(path)
    # A temp name of its own per write (runners on several hosts may share the folder).
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{os.urandom(6).hex()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            while data:
                data = data[os.write(fd, data):]
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if exc.filename is None:  # os.write says no name: say where, for the one-line message
            raise OSError(exc.errno, exc.strerror, path) from None
        raise
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@dataclass
class NewFile:
    """A file being written: `file` to write (seekable), `path` to read it back before it is kept."""

    file: BinaryIO
    path: str


@contextlib.contextmanager
def new_file(path: str | os.PathLike[str]) -> Iterator[NewFile]:
    """Write a file that takes the name `path` only if the block ends without an exception."""
    path = Path(path)
    folder = os.open(path.parent, _DIR)
    named: str | None = None
    try:
        try:
            fd = os.open(path.parent, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOENT):
                raise
            named = _temp_name(path)
            fd = os.open(named, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                         dir_fd=folder)
        with os.fdopen(fd, "w+b") as handle:
            yield NewFile(handle, os.path.join(path.parent, named) if named else f"/proc/self/fd/{fd}")
            handle.flush()
            if named is None:
                named = _temp_name(path)
                os.link(f"/proc/self/fd/{fd}", named, dst_dir_fd=folder, follow_symlinks=True)
        os.replace(named, path.name, src_dir_fd=folder, dst_dir_fd=folder)
        named = None
    finally:
        if named is not None:
            with contextlib.suppress(OSError):
                os.unlink(named, dir_fd=folder)
        os.close(folder)


def _temp_name(path: Path) -> str:
    return f".{path.stem}.partial-{os.urandom(6).hex()}{path.suffix}"
