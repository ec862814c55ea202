"""The Dask executor for real: a `dask scheduler` and `dask worker` processes on loopback.

Chunk commands go through `where.py`, which notes the Dask worker it ran in (from
`HELIOS_DOIT_DASK_WORKER_NAME`) and the pids of its ancestors, then execs the harness'
stand-in renderer, so its pid is also the one the renderer writes to runs.log.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

pytest.importorskip("distributed")

from harness import alive, wait_for  # noqa: E402

WHERE = r'''
import os, sys
pid, chain = os.getpid(), []
while pid > 1:
    chain.append(pid)
    pid = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
fd = os.open("where.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
os.write(fd, f"{sys.argv[3]} {os.environ.get('HELIOS_DOIT_DASK_WORKER_NAME')} {os.environ.get('HELIOS_DOIT_DASK_WORKER')} {' '.join(map(str, chain))}\n".encode())
os.close(fd)
os.execv("/bin/sh", ["sh", *sys.argv[1:]])
'''


class Cluster:
    """A scheduler and named workers, each a `python -m dask ...` process of its own."""

    def __init__(self, root: Path):
        self.root, self.workers, self.logs = root, {}, []
        info = root / "scheduler.json"
        self.scheduler = self._start("scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                                     "--scheduler-file", str(info))
        wait_for(lambda: info.exists() and info.stat().st_size > 0, 30, "the scheduler")
        self.address = json.loads(info.read_text())["address"]

    def _start(self, *args: str) -> subprocess.Popen[bytes]:
        log = open(self.root / f"{args[0]}-{len(self.logs)}.log", "wb")
        self.logs.append(log)
        return subprocess.Popen([sys.executable, "-m", "dask", *args], cwd=self.root, stdout=log, stderr=log,
                                stdin=subprocess.DEVNULL, start_new_session=True)

    def add_worker(self, name: str) -> None:
        self.workers[name] = self._start("worker", self.address, "--name", name, "--nthreads", "1", "--no-nanny",
                                         "--host", "127.0.0.1", "--no-dashboard", "--death-timeout", "30",
                                         "--local-directory", str(self.root / name))

    def wait_workers(self, *names: str) -> None:
        def joined() -> bool:
            text = "".join(p.read_text() for p in self.root.glob("scheduler-*.log"))
            return all(f"name: {name}" in text for name in names)

        wait_for(joined, 30, f"workers {names}")

    def close(self) -> None:
        for proc in [*self.workers.values(), self.scheduler]:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        for log in self.logs:
            log.close()


def start_cluster(root: Path, *names: str) -> Cluster:
    root.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(root)
    for name in names:
        cluster.add_worker(name)
    cluster.wait_workers(*names)
    return cluster


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = start_cluster(tmp_path_factory.mktemp("dask"), "w1", "w2")
    yield cluster
    cluster.close()


def via_where(job) -> None:
    """Every chunk command runs through where.py."""
    (job.folder / "where.py").write_text(WHERE)
    for chunk in job.data["chunks"]:
        chunk["command"] = chunk["command"].replace("sh ", f"{sys.executable} where.py ", 1)
    job.save()


def where(job) -> list[tuple[str, str, str, list[int]]]:
    """(chunk id, worker name, worker address, pids from the command up) for every command run."""
    lines = (job.folder / "where.log").read_text().splitlines()
    return [(p[0], p[1], p[2], [int(x) for x in p[3:]]) for p in (line.split() for line in lines)]


def test_chunks_run_in_dask_workers_under_doit(make_job, dask_cluster):
    job = make_job(chunks=6, frames=1)
    via_where(job)
    (job.folder / "slow").touch()  # 0.3 s a chunk, so that both workers get some
    runner = job.start_doit("-n", "4", "-P", "thread", "executor=dask", f"scheduler={dask_cluster.address}")
    out, err = runner.communicate(timeout=60)
    assert runner.returncode == 0, out + err
    runs = where(job)
    assert sorted(r[0] for r in runs) == [str(i) for i in range(6)]
    assert {r[1] for r in runs} == {"w1", "w2"}
    worker_pids = {name: proc.pid for name, proc in dask_cluster.workers.items()}
    for _, name, _, chain in runs:
        assert runner.pid not in chain, "a chunk command ran as a child of the runner"
        assert worker_pids[name] in chain, f"a chunk command did not run under Dask worker {name}"
    assert job.merged.read_text() == job.expected_merge()
    assert not list((job.state / "running").iterdir())
    assert "[chunk 3] chunk 3: wrote frames 3-3" in out  # output reaches the runner's terminal


def test_cli_runs_on_a_scheduler(make_job, dask_cluster):
    job = make_job(chunks=3, frames=2)
    via_where(job)
    result = job.cli("--executor", "dask", "--scheduler", dask_cluster.address, "--concurrency", "2", "-P", "thread")
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(r[0] for r in where(job)) == ["0", "1", "2"]
    assert {r[1] for r in where(job)} <= {"w1", "w2"}
    assert job.merged.read_text() == job.expected_merge()


def test_without_a_scheduler_a_local_cluster_runs_the_job(make_job):
    job = make_job(chunks=2, frames=2)
    via_where(job)
    result = job.cli("--executor", "dask", "--concurrency", "2", "-P", "thread")
    assert result.returncode == 0, result.stdout + result.stderr
    runs = where(job)
    assert sorted(r[0] for r in runs) == ["0", "1"]
    assert all(r[2].startswith("tcp://127.0.0.1:") for r in runs)
    assert "Traceback" not in result.stderr and "WARNING" not in result.stderr, result.stderr
    assert job.merged.read_text() == job.expected_merge()


def test_the_chunk_timeout_kills_the_whole_remote_tree(make_job, dask_cluster):
    job = make_job(chunks=1)
    job.data["chunks"][0]["command"] = "sleep 60 & echo $! > sleeper.pid; wait"
    job.save()
    result = job.doit("chunk_timeout=1", "executor=dask", f"scheduler={dask_cluster.address}")
    assert result.returncode == 1
    assert "chunk 0 failed: timed out" in result.stdout
    sleeper = int((job.folder / "sleeper.pid").read_text())
    wait_for(lambda: not alive(sleeper), 5, "the timed-out command's child to die")


def test_a_chunk_that_fails_for_good_stops_the_other_remote_chunk(make_job, dask_cluster):
    job = make_job(chunks=2, frames=20)
    via_where(job)
    (job.folder / "slow").touch()  # 6 s a chunk
    # fails once the other is rendering
    job.data["chunks"][0]["command"] = "until [ -s part_1.txt ]; do sleep 0.05; done; echo broken >&2; exit 7"
    job.save()
    started = time.monotonic()
    result = job.doit("-n", "2", "-P", "thread", "executor=dask", f"scheduler={dask_cluster.address}")
    assert result.returncode == 1
    assert time.monotonic() - started < 5, "the slow chunk should have been stopped"
    assert "chunk 0 failed: exit code 7" in result.stdout
    assert [r[0] for r in where(job)] == ["1"] and not alive(where(job)[0][3][0])
    assert not job.output(1).exists()


@pytest.mark.parametrize("par_type", ["thread", "process", "none"])
def test_sigterm_to_the_runner_stops_the_remote_commands(make_job, dask_cluster, par_type):
    job = make_job(chunks=4, frames=20)
    via_where(job)
    (job.folder / "slow").touch()  # 6 s a chunk
    pool = ["-n", "2", "-P", par_type] if par_type != "none" else []  # none: the main thread runs the chunk
    runner = job.start_doit(*pool, "executor=dask", f"scheduler={dask_cluster.address}")
    want = 2 if pool else 1
    wait_for(lambda: (job.folder / "where.log").exists() and len(where(job)) >= want, 30, "remote commands")
    wait_for(lambda: all(job.output(int(r[0])).exists() for r in where(job)), 10, "partial outputs")
    commands = [r[3][0] for r in where(job)]
    assert all(alive(pid) for pid in commands)
    runner.send_signal(signal.SIGTERM)
    out, err = runner.communicate(timeout=30)
    assert runner.returncode == -signal.SIGTERM, out + err
    assert "stopped by SIGTERM" in err and "Traceback" not in err, err
    wait_for(lambda: not any(alive(pid) for pid in commands), 3, "the remote commands to die")
    for chunk_id, *_ in where(job):
        assert not job.output(int(chunk_id)).exists(), f"a partial output was left behind\n{out}{err}"
    assert not list((job.state / "running").iterdir()), out + err


def test_a_chunk_lost_with_its_worker_is_rendered_again_elsewhere(make_job, tmp_path):
    cluster = start_cluster(tmp_path / "dask", "w1", "w2")
    try:
        job = make_job(chunks=4, frames=4)
        via_where(job)
        for i in range(4):
            (job.folder / f"pause-{i}").touch()  # every command holds after its first frame
        runner = job.start_doit("-n", "2", "-P", "thread", "executor=dask", f"scheduler={cluster.address}")
        wait_for(lambda: (job.folder / "where.log").exists() and len(where(job)) >= 2, 30, "two remote commands")
        chunk_id, victim, _, chain = where(job)[0]
        wait_for(lambda: job.output(int(chunk_id)).exists() and job.output(int(chunk_id)).read_text(), 10,
                 "a partial output")
        os.kill(cluster.workers[victim].pid, signal.SIGKILL)  # the worker only: its command is orphaned
        wait_for(lambda: not alive(chain[0]), 5, "the orphaned command to be killed by its watcher")
        for i in range(4):
            (job.folder / f"pause-{i}").unlink()
        out, err = runner.communicate(timeout=60)
        assert runner.returncode == 0, out + err
        assert f"chunk {chunk_id} done {chain[0]}" not in job.started(), "the orphaned command went on"
        runs = where(job)
        again = [r for r in runs if r[0] == chunk_id]
        assert len(again) == 2 and again[1][1] != victim
        assert sorted({r[0] for r in runs}) == ["0", "1", "2", "3"]
        for i in range(4):
            assert job.output(i).read_text().count("frame") == 4
        assert job.merged.read_text() == job.expected_merge()
        assert "was lost; the command runs again on" in (job.state / "logs" / f"chunk-{chunk_id}.log").read_text()
    finally:
        cluster.close()
