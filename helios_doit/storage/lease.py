"""A lease on one task in a bucket: two runners on one bucket never render a chunk at once.

Taken with a create-only write (S3 `If-None-Match: *`: one winner), renewed while the task runs
(every third of its ttl, each renewal a new version), deleted when it ends. A runner that dies
stops renewing it; a waiting runner that has seen the same version for a whole ttl, by its own
clock, takes it over with a write conditional on that version (S3 `If-Match`), so two runners
cannot both take over one lease. No runner reads another machine's clock: a lease says how long
its holder renews it for, never until when, so runners whose clocks disagree (by seconds or by
hours) still agree on who holds it. A lease whose holder the caller knows to be dead (a runner
on this machine) is taken over at once, and a damaged one has no holder. The lease is not the
last line: a runner asks whether it still holds it right before each write it makes (and takes
its record back if it lost it while writing), and an upload is create-only, so even a runner
paused past its lease cannot write over another's output.
"""
from __future__ import annotations

import errno
import json
import os
import socket
import threading
import time
import uuid
from typing import Any, Callable

from .store import Exists, StorageError, Store

LEASE_TTL_ENV = "HELIOS_DOIT_LEASE_TTL"
DEFAULT_TTL = 120.0
MAX_TTL = 86400.0


def lease_ttl() -> float:
    """The ttl from the environment (checked when the job is loaded: a bad one is refused there)."""
    try:
        value = float(os.environ.get(LEASE_TTL_ENV, DEFAULT_TTL))
    except ValueError:
        return DEFAULT_TTL
    return value if 1 <= value <= MAX_TTL else DEFAULT_TTL


class Lease:
    def __init__(self, store: Store, key: str, owner: dict[str, Any] | None = None, ttl: float | None = None,
                 dead: Callable[[dict[str, Any]], bool] = lambda holder: False):
        self.store, self.key, self.dead = store, key, dead
        self.ttl = ttl or lease_ttl()
        self.owner = {"host": socket.gethostname(), "pid": os.getpid(), **(owner or {})}
        self.version: str | None = None
        self.lost = False
        self._watched: tuple[str, float] | None = None  # another's version, and when (our clock) we first saw it
        self._done = threading.Event()
        self._writing = threading.Lock()  # the renewer and `confirm` each write after the version they hold
        self._thread: threading.Thread | None = None

    def _body(self) -> bytes:
        # A new nonce in every write: identical bytes would keep the version, and a stale
        # conditional write would pass. The ttl says how long the holder renews for, not until when.
        return json.dumps({**self.owner, "nonce": uuid.uuid4().hex, "ttl": self.ttl}).encode()

    def holder(self) -> dict[str, Any] | None:
        """The live lease of another runner, or None once we hold it. A lease that cannot be read,
        is damaged, or was not renewed for its ttl as we watched it has no live holder: damage never
        blocks a task."""
        for _ in range(5):
            try:
                self.version = self.store.create(self.key, self._body())
            except Exists:
                version, current = self._read()
                if version is None:
                    continue  # released meanwhile: take it
                if self._live(version, current):
                    return current
                self.version = self.store.replace(self.key, self._body(), version)
                if self.version is None:
                    continue  # taken or renewed meanwhile: look again
            self._watched = None
            return None
        return {"host": "another runner"}  # a write race each time: wait a moment

    def _read(self) -> tuple[str | None, dict[str, Any]]:
        ident = self.store.info(self.key)
        if ident is None:
            return None, {}
        try:
            data = self.store.read(self.key, 65536)
            body = json.loads(data) if data else {}
        except (StorageError, ValueError) as exc:
            if isinstance(exc, StorageError) and exc.errno != errno.EFBIG:
                raise
            body = {}
        return ident.version, body if isinstance(body, dict) else {}

    def _live(self, version: str, body: dict[str, Any]) -> bool:
        """Is the lease at `version` held? Renewed since we first saw it (a new version), or seen
        for less than its ttl by our own monotonic clock; not damaged; not a holder known dead."""
        ttl = body.get("ttl")
        if not isinstance(ttl, (int, float)) or isinstance(ttl, bool) or not 0 < ttl <= MAX_TTL or self.dead(body):
            return False
        now = time.monotonic()
        if self._watched is None or self._watched[0] != version:
            self._watched = (version, now)
            return True
        return now - self._watched[1] < ttl

    def confirm(self) -> bool:
        """Renew now, and say whether the lease is still ours: asked right before publishing, so a
        runner paused past its lease (a stopped VM, a long GC) learns it before it writes. A store
        that does not answer is said as such (StorageError), not as a lost lease."""
        with self._writing:
            if self.lost or self.version is None:
                return False
            self.version = self.store.replace(self.key, self._body(), self.version)
            self.lost = self.version is None
            return not self.lost

    def keep(self) -> None:
        """Renew every third of the ttl until released; a lease that was taken from us is lost."""
        def renew() -> None:
            while not self._done.wait(self.ttl / 3):
                with self._writing:
                    try:
                        renewed = self.store.replace(self.key, self._body(), self.version) if self.version else None
                        if renewed is None:
                            self.lost = True
                            return
                        self.version = renewed
                    except StorageError:
                        continue  # a blip: the next renewal may pass; the lease lasts a whole ttl
        self._thread = threading.Thread(target=renew, name="helios-doit-lease", daemon=True)
        self._thread.start()

    def release(self) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join(5)
        if not self.lost and self.version is not None:
            try:
                self.store.delete_if(self.key, self.version)
            except StorageError:
                pass  # it expires on its own


def acquire(store: Store, key: str, stopping: Callable[[], object], on_wait: Callable[[dict[str, Any]], None],
            owner: dict[str, Any] | None = None, dead: Callable[[dict[str, Any]], bool] = lambda holder: False) -> Lease:
    """Wait while another runner holds the task's lease; then hold it (and keep it renewed). A
    lease whose holder `dead` knows to be gone (a runner of this machine) is taken over at once."""
    lease = Lease(store, key, owner, dead=dead)
    told = False
    while (holder := lease.holder()) is not None:
        if not told:
            on_wait(holder)
            told = True
        for _ in range(10):
            if stopping():
                raise InterruptedError("stopped while waiting for another runner's lease")
            time.sleep(0.2)
    lease.keep()
    return lease
