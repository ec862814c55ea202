"""Crashes, kills and parallel modes: what survives, what is redone, what is left running."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from harness import REPO, alive, descendants, kill_tree, wait_for


def parent_of(pid: int) -> int:
    return int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])


def chunk_pids(job, what: str = "start") -> dict[str, int]:
    """Chunk -> pid of its stand-in renderer, from runs.log."""
    pids = {}
    for line in job.started():
        parts = line.split()
        if parts[0] == "chunk" and parts[2] == what:
            pids[f"chunk {parts[1]}"] = int(parts[3])
    return pids


def test_sigkill_of_the_whole_runner_keeps_chunks_finished_before_it(make_job):
    job = make_job(chunks=6, frames=4)
    (job.folder / "slow").touch()  # 1.2 s a chunk
    runner = job.start_doit("-n", "2")
    wait_for(lambda: len(job.recorded()) >= 2, what="two chunks to finish")
    kill_tree(runner)
    finished = job.recorded()
    job.runs()
    (job.folder / "slow").unlink()
    result = job.doit("-n", "2")
    assert result.returncode == 0, result.stderr
    rerun = set(job.runs())
    assert not finished & rerun, f"finished before the kill and rendered again: {finished & rerun}"
    assert rerun | finished == {f"chunk {i}" for i in range(6)} | {"merge"}
    assert job.merged.read_text() == job.expected_merge()


def test_sigkill_while_a_done_chunk_is_rendered_again_redoes_it(make_job):
    job = make_job(chunks=2)
    assert job.doit().returncode == 0
    job.runs()
    job.output(1).unlink()  # the user wants it again
    (job.folder / "slow").touch()
    runner = job.start_doit("chunk:1")
    wait_for(lambda: job.output(1).exists() and job.output(1).stat().st_size > 0, what="a partial output")
    kill_tree(runner)
    partial = job.output(1).read_text()
    assert 0 < partial.count("frame") < 8  # half-written, as plain doit would then accept
    (job.folder / "slow").unlink()
    job.runs()
    assert job.doit().returncode == 0
    assert job.runs() == ["chunk 1"]
    assert job.output(1).read_text().count("frame") == 8
    assert job.merged.read_text() == job.expected_merge()


@pytest.mark.parametrize("par_type", ["process", "thread"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_every_chunk_command_and_keeps_finished_chunks(make_job, par_type, sig):
    job = make_job(chunks=4, frames=4)
    (job.folder / "fail-0").touch()  # chunk 0 fails fast; the others are slow
    (job.folder / "slow").touch()
    runner = job.start_doit("-n", "3", "-P", par_type, "--continue")
    # Chunks 1-3 at once: every worker is past its start (a process still in its after-fork
    # hooks would take the signal there).
    wait_for(lambda: all(job.output(i).exists() for i in (1, 2, 3)), what="three partial outputs")
    commands = list(chunk_pids(job).values())
    if sig == signal.SIGINT:
        os.killpg(runner.pid, sig)  # Ctrl-C in a terminal: the runner's whole process group
    else:
        runner.send_signal(sig)  # `kill PID` of the main process
    out, err = runner.communicate(timeout=30)
    assert runner.returncode == -sig  # it ends by the signal, as a shell expects (exit 130/143)
    assert f"stopped by {sig.name}" in err and "Traceback" not in err, err
    assert not any(alive(pid) for pid in commands)
    assert not descendants(runner.pid)
    for i in (1, 2, 3):
        assert not job.output(i).exists() or (job.state / "records" / f"chunk-{i}.json").exists()
    assert not list((job.state / "running").iterdir())

    (job.folder / "fail-0").unlink()
    (job.folder / "slow").unlink()
    job.runs()
    assert job.doit("-n", "2").returncode == 0
    assert job.merged.read_text() == job.expected_merge()


@pytest.mark.parametrize("par_type", ["process", "thread"])
def test_parallel_modes_render_the_job(make_job, par_type):
    job = make_job(chunks=8, frames=2)
    result = job.doit("-n", "4", "-P", par_type)
    assert result.returncode == 0, result.stderr
    assert sorted(job.runs()) == sorted([f"chunk {i}" for i in range(8)] + ["merge"])
    assert job.merged.read_text() == job.expected_merge()


SPAWN_DOIT = (
    "import multiprocessing, sys\n"
    "multiprocessing.set_start_method('spawn')\n"
    "from doit.doit_cmd import DoitMain\n"
    "from doit.cmd_base import DodoTaskLoader\n"
    "sys.exit(DoitMain(DodoTaskLoader()).run(sys.argv[1:]))\n"
)


def test_spawn_start_method(make_job):
    job = make_job(chunks=4, frames=2)
    argv = [sys.executable, "-c", SPAWN_DOIT, "-f", str(REPO / "dodo.py"), "-n", "2", f"job={job.file}"]
    result = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert sorted(job.runs()) == ["chunk 0", "chunk 1", "chunk 2", "chunk 3", "merge"]
    assert job.merged.read_text() == job.expected_merge()


def test_a_worker_process_that_dies_does_not_hang_the_run(make_job):
    job = make_job(chunks=4, frames=4)
    (job.folder / "slow").touch()
    runner = job.start_doit("-n", "2")
    wait_for(lambda: len(chunk_pids(job)) >= 2, what="two chunk commands")
    running = {name: pid for name, pid in chunk_pids(job).items() if name not in chunk_pids(job, "done") and alive(pid)}
    victim_chunk, command_pid = sorted(running.items())[0]
    doit_worker = command_pid  # walk up from the renderer to the doit worker process running it
    while parent_of(doit_worker) != runner.pid:
        doit_worker = parent_of(doit_worker)
    os.kill(doit_worker, signal.SIGKILL)
    out, err = runner.communicate(timeout=30)
    assert runner.returncode == 1  # stopped because a worker died: a failure, not a user's signal
    assert "stopped by SIGTERM" not in err
    assert f"died (signal SIGKILL) while running {victim_chunk}" in err, err
    assert not alive(command_pid)
    victim = int(victim_chunk.split()[1])
    assert not job.output(victim).exists() and not (job.state / "aside").exists()  # its partial output removed
    (job.folder / "slow").unlink()
    job.runs()
    assert job.doit("-n", "2").returncode == 0
    assert job.merged.read_text() == job.expected_merge()


@pytest.mark.parametrize("par_type", ["process", "thread"])
def test_a_command_starts_able_to_hear_a_stop_and_stops_at_once(make_job, par_type):
    """A stop is held back in Python while a command starts, never by the signal mask, which the
    command would inherit: deaf to SIGTERM, it would sit out the grace period and be SIGKILLed."""
    job = make_job(chunks=2, frames=1)
    for chunk in job.data["chunks"]:
        chunk["command"] = "sleep 30"  # plain words: exec'd directly, no shell to reset the mask
    job.save()
    runner = job.start_doit("-n", "2", "-P", par_type)
    wait_for(lambda: len([p for p in descendants(runner.pid) if _comm(p) == "sleep"]) == 2, what="two sleeps")
    sleeps = [p for p in descendants(runner.pid) if _comm(p) == "sleep"]
    for pid in sleeps:
        blocked = int(next(line for line in open(f"/proc/{pid}/status") if line.startswith("SigBlk:")).split()[1], 16)
        assert not blocked & (1 << (signal.SIGTERM - 1) | 1 << (signal.SIGINT - 1)), f"SigBlk {blocked:x}"
    started = time.monotonic()
    runner.send_signal(signal.SIGTERM)
    runner.communicate(timeout=30)
    assert runner.returncode == -signal.SIGTERM
    assert time.monotonic() - started < 2.5  # not the 3 s grace and a SIGKILL
    assert not any(alive(pid) for pid in sleeps)


def _comm(pid: int) -> str:
    try:
        return open(f"/proc/{pid}/comm").read().strip()
    except OSError:
        return ""
