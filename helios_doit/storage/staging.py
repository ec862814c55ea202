"""A bucket job's chunk on a machine that shares no disk with the runner (a Dask worker).

The runner sends a `Stage` with the command. On the worker, the job's inputs are fetched into
that machine's own mirror of the bucket and the command runs there; its output goes back through
the bucket under the job's `staging/` prefix, from where the runner takes it into its own mirror,
verifies and publishes it as for any chunk. A worker that shares the runner's mirror (a
LocalCluster) runs in place and stages nothing.
"""
from __future__ import annotations

import dataclasses
import os
import uuid
from dataclasses import dataclass

from .mirror import fetch, fetch_assets
from .store import StorageError, inside, store_for
from .url import Remote, mirror_for


@dataclass(frozen=True)
class Stage:
    remote: Remote  # as the runner sees it: its mirror
    machine: str  # the runner's machine: a worker there with the same mirror runs in place
    cwd: str  # the command's folder, a key
    output: str | None  # the output's key
    area: str  # where staged outputs go: <state>/staging/<task>/


def on_worker(stage: Stage, machine: str) -> tuple[str, str | None, bool]:
    """(the command's folder, its output, whether to stage it) on this machine, inputs fetched."""
    here = dataclasses.replace(stage.remote, mirror=str(mirror_for(stage.remote.root)))
    cwd, output = here.local_of(stage.cwd), here.local_of(stage.output) if stage.output else None
    if machine == stage.machine and here.mirror == stage.remote.mirror:
        return cwd, output, False
    folders = [cwd, *([os.path.dirname(output)] if output else [])]
    for folder in folders:  # nothing is made, removed or run through a symlink out of the mirror
        inside(folder, here.mirror)
    missing = fetch(store_for(here.root), here, list(here.inputs))
    if missing:
        raise StorageError(f"{here.url_of(missing[0])}: an input of the job is gone from the bucket")
    if here.assets:
        fetch_assets(here, here.assets)
    for folder in folders:  # Helios' layout: outputs in ../renders
        os.makedirs(folder, exist_ok=True)
        inside(folder, here.mirror)
    return cwd, output, True


def send(stage: Stage, local: str) -> str:
    """Upload the worker's output under the job's staging prefix; its key goes back to the runner."""
    key = f"{stage.area}{uuid.uuid4().hex}/{os.path.basename(local)}"
    store_for(stage.remote.root).upload(local, key)
    return key


def receive(stage: Stage, key: str, local: str) -> None:
    """The staged output into the runner's own place for it; the staged object is dropped, taken
    or not (a failed attempt runs the command again)."""
    if not key.startswith(stage.area) or "/../" in key:
        raise StorageError(f"{key}: not a staged output of this task")
    store = store_for(stage.remote.root)
    try:
        store.download(key, local, within=stage.remote.mirror)
    finally:
        store.delete(key)


def sweep(remote: Remote, area: str) -> None:
    """Drop what earlier attempts staged and never took (a runner killed meanwhile): asked under
    the task's lease, when it starts and when it is cleaned."""
    store = store_for(remote.root)
    for key in store.listing(area.rstrip("/")):
        store.delete(key)
