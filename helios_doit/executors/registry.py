"""Executors by name: where chunk commands run. A leaf module, so that options can check a name
and tasks can carry one (plain, picklable data) without importing any executor: a local run
never loads Dask."""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .base import WorkerAdapter

#: name -> "module:Class", imported on first use
ADAPTERS: dict[str, str] = {
    "local": "helios_doit.executors.local:LocalAdapter",
    "dask": "helios_doit.executors.dask_adapter:DaskAdapter",
}


def get_adapter(name: str, scheduler: str | None = None) -> WorkerAdapter:
    """The adapter called `name`; `scheduler` is the address of a distributed engine, if it has one."""
    module, _, cls = ADAPTERS[name].partition(":")
    adapter: WorkerAdapter = getattr(importlib.import_module(module), cls)(scheduler)
    return adapter
