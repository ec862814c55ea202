"""A bucket (any fsspec URL) as the few operations a render job needs, each fault said in one line.

The guarantees come from the store, not from us: an upload appears whole or not at all, and a
create-only write (S3 `If-None-Match: *`, GCS generation 0) has one winner, so two runners never
both write one output. Every call goes through `_guard`, which turns the many ways a store or its
client fails into `StorageError`: one line naming the URL and what to do.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
from dataclasses import dataclass
from typing import Any, Iterator

from ..core.errors import EnvironmentFault
from .url import SCRATCH_ENV, split_url

#: Bytes a state object (a record, a lease, a job) may have; a bigger one is damage, never read whole.
MAX_SMALL_BYTES = 64 * 1024 * 1024

#: Bytes read from the store at a time.
BLOCK = 8 * 2**20


class StorageError(EnvironmentFault):
    """The store failed or refused: the message is the one line a user sees."""


class Exists(StorageError):
    """A create-only write found the object there already: someone else wrote it."""


@dataclass(frozen=True, slots=True)
class Identity:
    """Which bytes an object holds, as the store tells it: size and its version (S3 ETag, GCS
    generation, a local file's mtime). A record pins its output to this."""

    size: int
    version: str

    @property
    def tag(self) -> str:
        """The version in a form safe inside a key: records put it in their names."""
        return hashlib.sha256(self.version.encode()).hexdigest()[:16]


def identity(info: dict[str, Any]) -> Identity:
    for field in ("ETag", "generation", "etag", "mtime", "created", "LastModified"):
        value = info.get(field)
        if value not in (None, ""):
            return Identity(int(info.get("size") or 0), str(value).strip('"'))
    return Identity(int(info.get("size") or 0), "")


def _reason(exc: BaseException) -> str:
    name = type(exc).__name__
    text = str(exc).splitlines()[0] if str(exc) else name
    if name in ("NoCredentialsError", "PartialCredentialsError"):
        return ("no credentials for the store: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or "
                "AWS_PROFILE), as for any S3 client")
    if name in ("EndpointConnectionError", "ConnectTimeoutError", "ClientConnectorError", "ConnectionError"):
        return f"cannot reach the store ({text}); check AWS_ENDPOINT_URL and the network"
    if isinstance(exc, PermissionError) or "AccessDenied" in text or "Forbidden" in text:
        return f"access denied ({text}); check the credentials' permissions on the bucket"
    if "NoSuchBucket" in text or "bucket does not exist" in text:
        return "the bucket does not exist; create it or fix the URL"
    return text


@contextlib.contextmanager
def _guard(url: str) -> Iterator[None]:
    try:
        yield
    except StorageError:
        raise
    except FileExistsError:
        raise Exists(f"{url}: already there", errno=errno.EEXIST) from None
    except Exception as exc:  # every client library has its own exceptions: all are one line here
        raise StorageError(f"{url}: {_reason(exc)}", errno=errno.EIO) from None


def _filesystem(protocol: str) -> Any:
    import fsspec

    if protocol == "s3":
        # Bounded: a dead endpoint is said in seconds, not after minutes of retries. A listing is
        # never cached: another runner's record must be seen.
        fs = fsspec.filesystem("s3", skip_instance_cache=True, use_listings_cache=False,
                               config_kwargs={"retries": {"max_attempts": 2, "mode": "standard"},
                                              "connect_timeout": 3, "read_timeout": 60})
        fs.retries = 1
        # Listing times are never read: botocore's dateutil parse of each costs more than the rest.
        fs.connect()
        fs.session.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=str)
        return fs
    if protocol in ("file", "local"):
        return fsspec.filesystem("file", auto_mkdir=True)
    return fsspec.filesystem(protocol, skip_instance_cache=True)


#: Reads again of an object replaced while it was read, before that is a fault.
_REREADS = 5


class Store:
    """One bucket (or folder) of an object store, addressed by keys relative to `root`."""

    def __init__(self, root: str):
        self.root = root.rstrip("/")
        self.protocol, self.base = split_url(self.root)
        with _guard(self.root):
            self.fs = _filesystem(self.protocol)

    def url(self, key: str) -> str:
        return f"{self.root}/{key}" if key else self.root

    def _path(self, key: str) -> str:
        return f"{self.base}/{key}".strip("/") if self.protocol != "file" else f"{self.base}/{key}"

    def check(self) -> None:
        """The bucket is there and we may list it: asked once before anything runs."""
        with _guard(self.root):
            try:
                self.fs.ls(self._path(""), detail=False)
            except FileNotFoundError:
                raise StorageError(f"{self.root}: the bucket does not exist; create it or fix the URL", errno=errno.ENOENT) from None

    def read(self, key: str, cap: int = MAX_SMALL_BYTES) -> bytes | None:
        """A small object's bytes, or None if there is none.

        An object replaced between the client's look at it and its read (a lease its holder
        renews every few seconds) fails the read with EBUSY (s3fs reads only the version it
        looked at): that is no fault, the new version is read."""
        with _guard(self.url(key)):
            for tries_left in range(_REREADS, -1, -1):
                try:
                    with self.fs.open(self._path(key), "rb") as f:
                        data = f.read(cap + 1)
                    break
                except FileNotFoundError:
                    return None
                except OSError as exc:
                    if exc.errno != errno.EBUSY or not tries_left:
                        raise
        if len(data) > cap:
            raise StorageError(f"{self.url(key)}: more than {cap} bytes; not a file of a job", errno=errno.EFBIG)
        return bytes(data)

    def info(self, key: str) -> Identity | None:
        with _guard(self.url(key)):
            try:
                return identity(self.fs.info(self._path(key)))
            except FileNotFoundError:
                return None

    def listing(self, prefix: str) -> dict[str, Identity]:
        """Every object under `prefix` with its identity, in as few requests as the store allows
        (S3: one per 1,000 keys): a no-op rerun decides every chunk from this."""
        with _guard(self.url(prefix)):
            if self.protocol == "s3":
                return self._listing_s3(prefix)
            try:
                found = self.fs.find(self._path(prefix), detail=True)
            except FileNotFoundError:
                return {}
        base = self._path("").rstrip("/") + "/"
        return {name[len(base):] if name.startswith(base) else name: identity(info)
                for name, info in found.items() if info.get("type") != "directory"}

    def _listing_s3(self, prefix: str) -> dict[str, Identity]:
        """ListObjectsV2 page by page, keys and ETags only: s3fs' find builds a folder tree of the
        listing, quadratic in the folders (a record folder per task)."""
        bucket, path, _ = self.fs.split_path(self._path(prefix))
        ask: dict[str, Any] = {"Bucket": bucket, "Prefix": f"{path.rstrip('/')}/" if path else ""}
        found: dict[str, Identity] = {}
        while True:
            reply = self.fs.call_s3("list_objects_v2", **ask)
            for item in reply.get("Contents", ()):
                found[item["Key"]] = Identity(int(item["Size"]), str(item["ETag"]).strip('"'))
            if not reply.get("IsTruncated"):
                return found
            ask["ContinuationToken"] = reply["NextContinuationToken"]

    def create(self, key: str, data: bytes) -> str | None:
        """Write a small object only if there is none (raises Exists if there is); returns the
        version written (S3: from the reply, no second request)."""
        with _guard(self.url(key)):
            if self.protocol == "s3":
                bucket, path, _ = self.fs.split_path(self._path(key))
                return str(self.fs.call_s3("put_object", Bucket=bucket, Key=path, Body=data, IfNoneMatch="*")["ETag"]).strip('"')
            self.fs.pipe_file(self._path(key), data, mode="create")
        found = self.info(key)
        return found.version if found else None

    def put(self, key: str, data: bytes) -> None:
        with _guard(self.url(key)):
            self.fs.pipe_file(self._path(key), data)

    def replace(self, key: str, data: bytes, version: str) -> str | None:
        """Overwrite a small object only if it still has `version`; returns the new version, or
        None if it changed or went. Atomic on S3 (`If-Match`); elsewhere a check then a write (one
        coordinator assumed)."""
        with _guard(self.url(key)):
            if self.protocol == "s3":
                reply = self._if_match("put_object", key, version, Body=data)
                return str(reply["ETag"]).strip('"') if reply is not None else None
            current = self.info(key)
            if current is None or current.version != version:
                return None
            self.fs.pipe_file(self._path(key), data)
        found = self.info(key)
        return found.version if found else None

    def delete_if(self, key: str, version: str) -> None:
        """Delete an object only if it still has `version` (S3 `If-Match`; elsewhere checked first)."""
        with _guard(self.url(key)):
            if self.protocol == "s3":
                self._if_match("delete_object", key, version)
                return
            current = self.info(key)
            if current is not None and current.version == version:
                self.fs.rm_file(self._path(key))

    def _if_match(self, method: str, key: str, version: str, **more: Any) -> dict[str, Any] | None:
        """An S3 call made only if the object still has `version`; None if it changed or went
        (s3fs says a failed If-Match as EINVAL, a missing key as FileNotFoundError)."""
        bucket, path, _ = self.fs.split_path(self._path(key))
        try:
            reply: dict[str, Any] = self.fs.call_s3(method, Bucket=bucket, Key=path, IfMatch=f'"{version}"', **more)
            return reply
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                return None
            raise

    def upload(self, local: str, key: str) -> Identity:
        """Upload a file only if there is no object at `key` (Exists if there is): the one writer
        of an output. It appears whole or not at all; returns what the store holds."""
        with _guard(self.url(key)):
            if self.protocol == "s3":
                return self._upload_s3(local, key)
            if self.protocol == "file":
                return self._upload_file(local, key)
            with open(local, "rb") as src, self.fs.open(self._path(key), "xb") as dst:
                shutil.copyfileobj(src, dst, 8 * 2**20)
            return identity(self.fs.info(self._path(key)))

    def _upload_file(self, local: str, key: str) -> Identity:
        """A folder as a store: copied under a temp name, then linked into place (fails if taken)."""
        dest = self._path(key)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        tmp = f"{dest}.{os.urandom(6).hex()}.part"
        try:
            shutil.copyfile(local, tmp)
            os.link(tmp, dest)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return identity(self.fs.info(dest))

    def _upload_s3(self, local: str, key: str) -> Identity:
        bucket, path, _ = self.fs.split_path(self._path(key))
        size = os.path.getsize(local)
        if size >= 4 * 2**30:  # beyond one PUT: a multipart upload, completed create-only
            self.fs.put_file(local, self._path(key), mode="create", chunksize=64 * 2**20)
            return identity(self.fs.info(self._path(key)))
        with open(local, "rb") as body:  # streamed from disk: memory stays flat in the file's size
            reply = self.fs.call_s3("put_object", Bucket=bucket, Key=path, Body=body, IfNoneMatch="*")
        return Identity(size, str(reply["ETag"]).strip('"'))

    def download(self, key: str, local: str, within: str | None = None) -> None:
        """Into `local` through a temp name: a killed download leaves no file that looks whole.
        With `within`, a folder on the way that is a symlink out of it is refused, not followed."""
        tmp = f"{local}.{os.urandom(6).hex()}.part"
        folder = os.path.dirname(local)
        if within is not None:
            inside(folder, within)  # before a folder is made through a symlink, and after
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"{folder}: cannot make the scratch folder: {exc.strerror}; set {SCRATCH_ENV} to a "
                               "writable folder", errno=exc.errno or errno.EIO) from None
        if within is not None:
            inside(folder, within)
        try:
            with _guard(self.url(key)):
                # Streamed in blocks: memory stays flat in the size of the video.
                with self.fs.open(self._path(key), "rb", block_size=BLOCK, cache_type="none") as src, \
                        open(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst, BLOCK)
            os.replace(tmp, local)
        except OSError as exc:
            raise StorageError(f"{local}: cannot write the scratch folder: {exc.strerror}; set {SCRATCH_ENV} to a "
                               "writable folder with room", errno=exc.errno or errno.EIO) from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def delete(self, key: str) -> None:
        with _guard(self.url(key)):
            try:
                self.fs.rm_file(self._path(key))
            except FileNotFoundError:
                pass

    def copy(self, key: str, to: str) -> None:
        """One object to another key (never a glob: `[`, `*` in a key are plain characters)."""
        with _guard(self.url(key)):
            self.fs.cp_file(self._path(key), self._path(to))


def inside(folder: str, root: str) -> None:
    """`folder` (or the part of it that exists) really is inside `root`: no symlink leads out."""
    found = folder
    while not os.path.lexists(found) and os.path.dirname(found) != found:
        found = os.path.dirname(found)
    real, top = os.path.realpath(found), os.path.realpath(root)
    if real != top and not real.startswith(top.rstrip(os.sep) + os.sep) and not top.startswith(real.rstrip(os.sep) + os.sep):
        raise StorageError(f"{folder}: leads out of {root} (a symlink); remove it", errno=errno.ELOOP)


_STORES: dict[tuple[int, str], Store] = {}


def store_for(root: str) -> Store:
    """One client per store and process (a forked worker makes its own: clients do not survive fork)."""
    key = (os.getpid(), root)
    if key not in _STORES:
        _STORES[key] = Store(root)
    return _STORES[key]
