"""pytest fixtures. Helpers live in `harness.py`; this file keeps the environment clean and
makes jobs.

Every test runs without the developer's own HELIOS_DOIT_* and DASK_* settings (an exported
HELIOS_DOIT_FORK=0 would change what the fork tests test): tests set what they need.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterator

import pytest
from harness import Job, kill_tree, new_job

for _key in [key for key in os.environ if key.startswith(("HELIOS_DOIT_", "DASK_"))]:
    del os.environ[_key]


@pytest.fixture
def make_job(tmp_path: Path) -> Iterator[Callable[..., Job]]:
    """make_job(chunks=4, frames=8) -> a valid job with stand-in render and merge scripts."""
    jobs: list[Job] = []

    def make(chunks: int = 4, frames: int = 8, folder: str = "job", name: str = "job.json") -> Job:
        job = new_job(tmp_path / folder, chunks, frames, name)
        jobs.append(job)
        return job

    yield make
    for job in jobs:  # a failed test must not leave runners behind
        for proc in job.background:
            if proc.poll() is None:
                kill_tree(proc)
