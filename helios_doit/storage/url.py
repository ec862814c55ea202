"""Where a job in a bucket lives, here and there: its store, its keys, and the local scratch that
mirrors the bucket on this machine (commands run there; nothing assumes a shared disk)."""
from __future__ import annotations

import hashlib
import os
import posixpath
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

#: Schemes read as object stores (fsspec protocols); http(s) jobs are fetched read-only instead.
STORE_SCHEMES = ("s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "file", "memory")

#: The folder under which each bucket gets its local mirror (default ~/.cache/helios-doit/scratch).
SCRATCH_ENV = "HELIOS_DOIT_SCRATCH"


def is_store_url(text: str) -> bool:
    try:
        return urllib.parse.urlsplit(text).scheme.lower() in STORE_SCHEMES and "://" in text
    except ValueError:
        return False


def split_url(url: str) -> tuple[str, str]:
    """("s3", "bucket/key...") of a store URL."""
    scheme, _, rest = url.partition("://")
    scheme = {"s3a": "s3", "gcs": "gs", "abfs": "az", "abfss": "az", "local": "file"}.get(scheme.lower(), scheme.lower())
    return scheme, rest


def scratch_root() -> Path:
    given = os.environ.get(SCRATCH_ENV)
    base = Path(given) if given else Path.home() / ".cache" / "helios-doit" / "scratch"
    return base.absolute()


@dataclass(frozen=True, slots=True)
class Remote:
    """A job whose folder is in a store: `root` is the bucket's URL, `folder` the job folder's key
    in it, `mirror` the local folder that stands for the bucket's root on this machine. Plain data:
    every task carries it to doit's workers."""

    root: str  # "s3://bucket"
    folder: str  # "shot1" ("" at the bucket's root)
    mirror: str  # the local folder that stands for the key `prefix`: <scratch>/s3-bucket-1a2b3c4d
    name: str = "job.json"  # the job's own key, under folder
    prefix: str = ""  # the key `mirror` stands for ("" : the bucket's root)
    state: str = ""  # the key of the job's state folder in the bucket (set when the job is loaded)
    job_file: str = ""  # `--storage`: the local job file, published as `job_key` (one job per folder)
    inputs: tuple[str, ...] = ()  # the keys of the job's inputs: what a machine fetches before a command
    assets: str = ""  # Helios' assetsUrl: a bucket folder fetched into the job's folder as well

    @property
    def job_key(self) -> str:
        return f"{self.folder}/{self.name}" if self.folder else self.name

    @property
    def job_dir(self) -> Path:
        return Path(self.local_of(self.folder))

    def key_of(self, local: str | os.PathLike[str]) -> str | None:
        """The key of a local path under the mirror, or None if it is outside it. Asked for every
        chunk of every check: a normalized path inside the mirror is cut, not relpath'd."""
        local = os.fspath(local)
        head = self.mirror.rstrip(os.sep) + os.sep
        if local.startswith(head) and os.sep + ".." not in local and os.sep + "." + os.sep not in local and os.sep == "/":
            rel = local[len(head):]
            return f"{self.prefix.rstrip('/')}/{rel}" if self.prefix else rel
        rel = os.path.relpath(local, self.mirror)
        if rel == "." or rel.startswith(".." + os.sep) or rel == ".." or os.path.isabs(rel):
            return None
        return posixpath.join(self.prefix, rel.replace(os.sep, "/")) if self.prefix else rel.replace(os.sep, "/")

    def local_of(self, key: str) -> str:
        rel = key[len(self.prefix):].lstrip("/") if self.prefix else key
        return os.path.join(self.mirror, *[part for part in rel.split("/") if part])

    def url_of(self, key: str) -> str:
        return f"{self.root}/{key}"

    def state_prefix(self, state_name: str) -> str:
        """Where the job's records, logs and leases live in the bucket: next to the job, as locally."""
        return posixpath.join(self.folder, ".helios-doit", state_name)


def remote_for(url: str, mirror_base: Path | None = None) -> Remote:
    """The Remote of a job URL: `s3://bucket/shot1/job.json` -> root s3://bucket, folder shot1."""
    scheme, rest = split_url(url)
    rest = rest.strip("/")
    if scheme == "file":
        root_path, name = posixpath.split("/" + rest)
        folder = ""
        bucket = root_path
        root = f"file://{root_path}"
    else:
        bucket, _, key = rest.partition("/")
        folder, name = posixpath.split(key)
        root = f"{scheme}://{bucket}"
    return Remote(root, folder, str(mirror_for(root, mirror_base)), name or "job.json")


def mirror_for(root: str, base: Path | None = None) -> Path:
    """This machine's local folder for the bucket `root`: one per bucket under the scratch folder."""
    scheme, rest = split_url(root)
    digest = hashlib.sha256(root.encode()).hexdigest()[:8]
    label = "".join(c if c.isalnum() or c in "-_." else "-" for c in rest.strip("/"))[-40:] or "root"
    return (base or scratch_root()) / f"{scheme}-{label}-{digest}"


def storage_for(url: str, job_dir: Path, job_file: Path) -> Remote:
    """A local job whose outputs and state go to `url` (`--storage`): the job folder stands for
    the URL's folder."""
    scheme, rest = split_url(url.rstrip("/"))
    bucket, _, key = rest.strip("/").partition("/")
    if scheme == "file":
        return Remote(f"file:///{rest.strip('/')}", "", str(job_dir), job_file.name, "", job_file=str(job_file))
    return Remote(f"{scheme}://{bucket}", key, str(job_dir), job_file.name, key, job_file=str(job_file))
