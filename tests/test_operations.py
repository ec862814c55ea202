"""When things go wrong: retries, timeouts, keep-going, and two runners on one job."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import time

from harness import alive, chunk_command, wait_for

FLAKY = (
    "n=$(cat tries-{id} 2>/dev/null || echo 0); n=$((n+1)); echo $n > tries-{id}; "
    "if [ $n -le {fails} ]; then echo \"attempt $n breaks\" >&2; {how}; fi; "
    "sh render.sh part_{id}.txt {id} {start} 8"
)


def flaky(job, chunk_id: int, fails: int, how: str = "exit 5") -> None:
    chunk = job.data["chunks"][chunk_id]
    chunk["command"] = FLAKY.format(id=chunk_id, fails=fails, how=how, start=chunk["startFrame"])
    job.save()


def record(job, chunk_id: int) -> dict:
    return json.loads((job.state / "records" / f"chunk-{chunk_id}.json").read_text())


def test_a_flaky_chunk_is_retried_and_its_attempts_are_counted(make_job):
    job = make_job(chunks=2)
    flaky(job, 1, fails=2)
    result = job.cli("--retries", "2", "--retry-delay", "0.05")
    assert result.returncode == 0, result.stdout + result.stderr
    assert record(job, 1)["attempts"] == 3 and record(job, 0)["attempts"] == 1
    log = (job.state / "logs" / "chunk-1.log").read_text()
    assert "attempt 1/3" in log and "attempt 3/3" in log and "exit code 5" in log
    runs = (job.state / "runs").glob("*.jsonl")
    retries = [e for path in runs for e in map(json.loads, path.read_text().splitlines()) if e["event"] == "task-retry"]
    assert [(e["chunkId"], e["attempt"]) for e in retries] == [(1, 1), (1, 2)]


def test_a_retry_delay_of_0_retries_at_once(make_job):
    job = make_job(chunks=1)
    flaky(job, 0, fails=2)
    result = job.cli("--retries", "2", "--retry-delay", "0")
    assert result.returncode == 0, result.stdout + result.stderr
    assert record(job, 0)["attempts"] == 3
    assert "R  chunk:0 attempt 1 failed: exit code 5; retrying in 0.0s" in result.stdout
    assert job.doit("-a", "retry_delay=0").returncode == 0


def test_death_by_signal_is_retried_too(make_job):
    job = make_job(chunks=1)
    flaky(job, 0, fails=1, how="kill -9 $$")
    result = job.doit("retries=1", "retry_delay=0.05")
    assert result.returncode == 0, result.stdout + result.stderr
    assert record(job, 0)["attempts"] == 2


def test_a_fatal_exit_code_is_final_at_once(make_job):
    job = make_job(chunks=1)
    flaky(job, 0, fails=5, how="exit 64")
    result = job.cli("--retries", "4", "--retry-delay", "0.05", "--fatal-exit-codes", "2,64")
    assert result.returncode == 1
    assert "chunk 0 failed: exit code 64" in result.stdout
    failure = json.loads((job.state / "failures" / "chunk-0.json").read_text())
    assert failure["attempts"] == 1 and failure["exitCode"] == 64
    assert "attempt 1 breaks" in failure["stderrTail"]


def test_a_fatal_exit_code_128_plus_n_also_means_death_by_signal_n(make_job):
    job = make_job(chunks=1)
    flaky(job, 0, fails=5, how="kill -9 $$")
    result = job.cli("--retries", "4", "--retry-delay", "0.05", "--fatal-exit-codes", "137")
    assert result.returncode == 1
    assert "chunk 0 failed: killed by SIGKILL" in result.stdout
    assert json.loads((job.state / "failures" / "chunk-0.json").read_text())["attempts"] == 1


def test_exhausted_retries_report_attempts_and_stderr(make_job):
    job = make_job(chunks=1)
    flaky(job, 0, fails=9)
    result = job.cli("--retries", "1", "--retry-delay", "0.05")
    assert result.returncode == 1
    assert "chunk 0 failed after 2 attempts: exit code 5" in result.stdout
    assert "attempt 2 breaks" in result.stdout


def test_a_hung_chunk_times_out_and_its_whole_tree_is_killed(make_job):
    job = make_job(chunks=1)
    job.data["chunks"][0]["command"] = "sleep 60 & echo $! > sleeper.pid; wait"
    job.save()
    started = time.monotonic()
    result = job.doit("chunk_timeout=1")
    assert time.monotonic() - started < 20
    assert result.returncode == 1
    assert "chunk 0 failed: timed out" in result.stdout
    sleeper = int((job.folder / "sleeper.pid").read_text())
    wait_for(lambda: not alive(sleeper), 5, "the timed-out command's child to die")


def test_keep_going_finishes_the_others_and_does_not_merge(make_job):
    job = make_job(chunks=4)
    (job.folder / "fail-1").touch()
    result = job.cli("--keep-going", "--concurrency", "2")
    assert result.returncode == 1
    for i in (0, 2, 3):
        assert (job.state / "records" / f"chunk-{i}.json").exists()
    assert not job.merged.exists()
    assert "chunk 1 failed: exit code 3" in result.stdout


def test_without_keep_going_a_failure_stops_the_running_chunks(make_job):
    job = make_job(chunks=3, frames=20)
    (job.folder / "slow").touch()  # 6 s a chunk
    # fails once both others are rendering
    job.data["chunks"][0]["command"] = ("until [ -s part_1.txt ] && [ -s part_2.txt ]; do sleep 0.05; done; "
                                        "echo broken >&2; exit 7")
    job.save()
    started = time.monotonic()
    result = job.doit("-n", "3")
    assert result.returncode == 1
    assert time.monotonic() - started < 5, "the slow chunks should have been stopped"
    assert "chunk 0 failed: exit code 7" in result.stdout
    assert "stopped because of that (their partial outputs removed): chunk:1, chunk:2" in result.stdout
    assert result.stdout.splitlines()[-1].endswith(": 0 chunks rendered, 0 already done, 1 failed, 2 stopped; not merged")
    pids = [int(line.split()[3]) for line in job.started() if " start " in line]
    assert len(pids) == 2 and not any(alive(pid) for pid in pids)
    assert not job.output(1).exists() and not job.output(2).exists()


def test_two_runners_on_one_job_render_each_chunk_once(make_job):
    job = make_job(chunks=6, frames=3)
    (job.folder / "slow").touch()  # 0.9 s a chunk
    first = job.start_doit("-n", "2")
    second = job.start_doit("-n", "2")
    assert first.wait(60) == 0 and second.wait(60) == 0, (first.stderr.read(), second.stderr.read())
    runs = job.runs()
    assert sorted(r for r in runs if r.startswith("chunk")) == [f"chunk {i}" for i in range(6)]
    assert job.merged.read_text() == job.expected_merge()


def test_a_chunk_another_runner_finished_after_this_run_started_is_not_rendered_again(make_job):
    job = make_job(chunks=4, frames=3)
    (job.folder / "slow").touch()  # 0.9 s a chunk, one at a time: chunk 3 comes last
    first = job.start_doit()
    wait_for(lambda: "chunk 0 start" in " ".join(job.started()), what="the first runner to start")
    second = job.doit("chunk:3")
    assert second.returncode == 0, second.stderr
    assert first.wait(60) == 0, first.stderr.read()
    shown = first.stdout.read()
    assert "-- chunk:3" in shown  # up to date by the time this runner got to it
    assert "ok merge in" in shown and "[4/4 chunks, 12/12 frames]" in shown
    assert [r for r in job.runs() if r.startswith("chunk")].count("chunk 3") == 1
    assert job.merged.read_text() == job.expected_merge()


def test_bad_operation_options_are_bad_input(make_job):
    job = make_job(chunks=1)
    result = job.cli("--retries", "-1")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "helios-doit: --retries -1: not valid; give a whole number of extra attempts, e.g. --retries 2"
    ]
    result = job.doit("chunk_timeout=soon")
    assert result.returncode == 2
    assert "chunk_timeout=soon: not valid" in result.stderr
    assert not job.state.exists()


def test_a_runner_that_waited_for_a_chunks_lock_checks_again_and_skips_it(make_job):
    """The re-check under the lock: the second runner decided chunk 0 was not done, then waited for
    the lock while the first rendered it; once it holds the lock it must see the new record."""
    job = make_job(chunks=1)
    (job.folder / "pause-0").touch()  # the first runner holds chunk 0 mid-render
    first = job.start_doit("chunk:0")
    wait_for(lambda: job.output(0).exists(), what="the first runner to render chunk 0")
    second = job.start_doit("chunk:0")
    wait_for(lambda: "task-wait" in "".join(p.read_text() for p in (job.state / "runs").glob("*.jsonl")),
             what="the second runner to wait for the lock")
    (job.folder / "pause-0").unlink()
    assert first.wait(30) == 0 and second.wait(30) == 0
    assert job.runs() == ["chunk 0"]
    assert "-- chunk:0 (done by another runner)" in second.stdout.read()


def test_the_merge_runs_again_when_a_chunks_content_changes_at_the_same_size(make_job):
    job = make_job(chunks=2)
    assert job.doit().returncode == 0
    job.runs()
    # Rendered again with the same number of bytes but other content: only MD5 tells them apart.
    job.data["chunks"][1]["command"] = chunk_command(1, 8, 8, "AAAA")
    job.save()
    assert job.doit().returncode == 0
    job.data["chunks"][1]["command"] = chunk_command(1, 8, 8, "BBBB")
    job.save()
    job.runs()
    assert job.doit().returncode == 0
    assert job.runs() == ["chunk 1", "merge"]
    assert "BBBB" in job.merged.read_text() and job.merged.read_text() == job.expected_merge()


def test_a_chunks_record_is_dropped_before_it_renders_again(make_job):
    job = make_job(chunks=1)
    assert job.doit().returncode == 0
    record = job.state / "records" / "chunk-0.json"
    assert record.exists()
    job.data["chunks"][0]["command"] = chunk_command(0, 0, 8, "again")
    job.save()
    (job.folder / "pause-0").touch()
    runner = job.start_doit("chunk:0")
    wait_for(lambda: "again" in (job.output(0).read_text() if job.output(0).exists() else ""), what="the new render")
    assert not record.exists()  # while the chunk renders again, nothing says it is done
    (job.folder / "pause-0").unlink()
    assert runner.wait(30) == 0
    assert record.exists()


def test_what_a_command_left_running_in_its_group_is_killed_when_it_exits(make_job):
    job = make_job(chunks=1)
    job.data["chunks"][0]["command"] = "sleep 60 & echo $! > sleeper.pid; echo done > part_0.txt"
    job.save()
    assert job.doit("chunk:0").returncode == 0
    sleeper = int((job.folder / "sleeper.pid").read_text())
    wait_for(lambda: not alive(sleeper), 5, "the command's leftover to be killed")


def test_a_leftover_that_closed_its_pipes_is_dead_before_the_next_task_runs(make_job):
    """Killed when its command exits, not only when the runner ends: the merge, in the same run,
    finds the chunk command's background process gone (a zombie at most: no writer)."""
    job = make_job(chunks=1)
    job.data["chunks"][0]["command"] = ("sleep 60 </dev/null >/dev/null 2>&1 & echo $! > sleeper.pid; "
                                        "echo done > part_0.txt")
    job.data["mergeCommand"] = ("s=$(cut -d' ' -f3 /proc/$(cat sleeper.pid)/stat 2>/dev/null); "
                                'if [ -n "$s" ] && [ "$s" != Z ]; then echo leftover alive >&2; exit 1; fi; '
                                "cp part_0.txt out.txt")
    job.save()
    try:
        result = job.doit()
        assert result.returncode == 0, result.stdout + result.stderr
    finally:
        with contextlib.suppress(OSError, ValueError):
            os.kill(int((job.folder / "sleeper.pid").read_text()), signal.SIGKILL)
