"""How many processes a run starts: never more doit workers than it has chunks to run, nonsense
counts refused, and none left behind when the runner dies while it starts them or the system
cannot fork any more. Processes are counted in a pids cgroup, which also caps them: no test here
can fork without end."""
from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
from harness import CLI, DOIT, REPO, command_line, parent_of, pids_group, wait_for


def run_counting(job, argv, group, timeout=120):
    """Run `argv` in `group`; returns (the run, the doit workers it started): processes forked from
    the runner (its own command line), not its guards or the chunks' commands."""
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=group.enter)
    own = None
    workers: set[int] = set()
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        own = own or command_line(proc.pid)
        for pid in group.procs():
            if pid != proc.pid and parent_of(pid) == proc.pid and command_line(pid) == own:
                workers.add(pid)
        time.sleep(0.01)
    out, err = proc.communicate(timeout=30)
    return subprocess.CompletedProcess(argv, proc.returncode, out, err), workers


def test_a_run_starts_no_more_workers_than_it_has_chunks_to_run(make_job):
    job = make_job(chunks=4, frames=4)
    (job.folder / "slow").write_text("0.25")  # a second a chunk: every worker is seen
    with pids_group(300) as group:
        result, workers = run_counting(job, [*DOIT, "-n", "64", f"job={job.file}"], group)
        assert result.returncode == 0, result.stdout + result.stderr
        assert len(workers) == 4  # one per chunk; doit alone would have started 64 (one per -n slot)
        assert job.merged.read_text() == job.expected_merge()

        job.output(2).unlink()  # one chunk to render again
        result, workers = run_counting(job, [*CLI, "job", "run", str(job.file), "--concurrency", "64"], group)
        assert result.returncode == 0, result.stdout + result.stderr
        runs = job.runs()
        assert len(workers) == 1 and sorted(runs[:5]) == ["chunk 0", "chunk 1", "chunk 2", "chunk 3", "merge"]
        assert runs[5:] == ["chunk 2"]  # the same bytes again: the merge stands


@pytest.mark.parametrize("argv", [["-n", "99999999999999999999"], ["-n", "-2"], ["--process=5000"]])
def test_a_nonsense_number_of_workers_is_refused_before_anything_runs(make_job, argv):
    job = make_job(chunks=2, frames=1)
    result = subprocess.run([*DOIT, *argv, f"job={job.file}"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        f"helios-doit: {argv[0].replace('=', ' ')}{' ' + argv[1] if len(argv) > 1 else ''}: not a number of chunks "
        "at once; give a whole number from 1 to 1024 (a run never starts more workers than it has chunks to run)"]
    assert not job.state.exists() and job.runs() == []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_runner_that_dies_while_it_starts_its_workers_leaves_nothing_behind(make_job, sig):
    job = make_job(chunks=24, frames=2)
    (job.folder / "slow").write_text("2")
    with pids_group(600) as group:
        runner = subprocess.Popen([*DOIT, "-n", "24", f"job={job.file}"], cwd=REPO, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, preexec_fn=group.enter, start_new_session=True)
        own = b""
        # As soon as the runner has forked its third worker: in the middle of starting them.
        def forking() -> bool:
            nonlocal own
            own = own or command_line(runner.pid)
            return sum(parent_of(pid) == runner.pid and command_line(pid) == own for pid in group.procs()) >= 3
        wait_for(forking, 60, "the runner to start its workers")
        os.kill(runner.pid, sig)
        runner.wait(60)
        wait_for(lambda: not group.procs(), 20, "every process the runner started to end")
    (job.folder / "slow").unlink()
    again = subprocess.run([*DOIT, "-n", "4", f"job={job.file}"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr  # nothing left in the way of a rerun
    assert job.merged.read_text() == job.expected_merge()


def test_a_run_that_cannot_fork_its_workers_says_so_in_one_line_and_leaves_none(make_job):
    job = make_job(chunks=40, frames=2)
    (job.folder / "slow").write_text("0.2")
    with pids_group(24) as group:  # room for a few workers, their guards and commands
        result, _ = run_counting(job, [*DOIT, "-n", "40", f"job={job.file}"], group)
        assert result.returncode == 1, result.stdout + result.stderr
        lines = [line for line in result.stderr.splitlines() if line.startswith("helios-doit:")]
        assert lines == ["helios-doit: the run could not go on: Resource temporarily unavailable; the system is out "
                         "of processes or memory; run fewer at once (a lower -n / --concurrency); finished chunks are kept"]
        assert "Traceback" not in result.stderr + result.stdout
        wait_for(lambda: not group.procs(), 10, "no process of the run left")
