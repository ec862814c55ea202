"""Fault injection: kills at chosen points and at random moments, interrupted merges, damaged
state. The job always completes correctly, finished chunks never run again, every output is
one writer's whole file, and nothing unverified is accepted."""
from __future__ import annotations

import os
import random

import pytest
from harness import Job, kill_runner, kill_tree, new_job, wait_for


def assert_one_writer_each(job, chunks: int, frames: int) -> None:
    """Every chunk output holds its frames once, all written by one process."""
    for i in range(chunks):
        lines = job.output(i).read_text().splitlines()
        assert len(lines) == frames, f"chunk {i}: {lines}"
        assert len({line.rsplit("pid=", 1)[1] for line in lines}) == 1, f"chunk {i} has two writers: {lines}"


def kill(runner, whom: str) -> None:
    """SIGKILL the runner alone or with all it started; either way wait until nothing it started is
    left, so that what was done before the kill is known."""
    (kill_runner if whom == "runner" else kill_tree)(runner)


#: point -> how to stop there, the task hit, and whether that task counts as done after the kill
POINTS = {
    "during-output": ("pause-1", "chunk 1", False),
    "before-command": ("before-command:chunk-1", "chunk 1", False),
    "before-record": ("before-record:chunk-1", "chunk 1", False),
    "after-record": ("after-record:chunk-1", "chunk 1", True),
    "during-merge": ("pause-merge", "merge", False),
    "before-merge-record": ("before-record:merge", "merge", False),
}
EVERYTHING = {"chunk 0", "chunk 1", "chunk 2", "merge"}
CASES = [(point, whom, mode) for i, point in enumerate(POINTS) for whom, mode in
         ((("runner", "-n 2"), ("tree", "serial")) if i % 2 else (("runner", "serial"), ("tree", "-n 2")))]


@pytest.mark.parametrize("point,whom,mode", CASES)
def test_a_kill_at_a_chosen_point_then_a_rerun_redoes_exactly_what_was_not_done(make_job, point, whom, mode):
    job = make_job(chunks=3, frames=3)
    (job.folder / "pid-lines").touch()
    how, hit, hit_done = POINTS[point]
    if how.startswith("pause-"):  # the stand-in renderer (or merge) pauses after its first write
        (job.folder / how).touch()
        reached = (lambda: job.output(1).exists()) if how == "pause-1" else job.merged.exists
    else:
        job.env["HELIOS_DOIT_PAUSE_AT"] = how
        flag = job.state / f"paused-{how.replace(':', '-', 1)}"
        reached = flag.exists
    runner = job.start_doit(*(["-n", "2"] if mode == "-n 2" else []))
    wait_for(reached, 30, f"the runner to reach {point}")
    kill(runner, whom)
    done_before = job.recorded()
    assert (hit in done_before) == hit_done
    for pause in job.folder.glob("pause-*"):
        pause.unlink()
    job.env.pop("HELIOS_DOIT_PAUSE_AT", None)
    job.runs()
    result = job.doit()
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(job.runs()) == sorted(EVERYTHING - done_before)  # what was not done, and only that
    assert_one_writer_each(job, 3, 3)
    assert job.merged.read_text() == job.expected_merge()
    assert job.doit().returncode == 0 and job.runs() == []


@pytest.mark.parametrize("seed", range(3))
def test_sigkill_at_a_random_moment_then_rerun(make_job, seed):
    rng = random.Random(seed)
    job = make_job(chunks=6, frames=3)
    (job.folder / "slow").write_text("0.1")  # 0.3 s a chunk: kills land while chunks run
    (job.folder / "pid-lines").touch()
    finished_before_a_kill: set[str] = set()
    for _ in range(2):
        runner = job.start_doit("-n", "2")
        # Never vacuous: some chunks are done, the job is not.
        target = len(job.recorded()) + rng.randint(1, 2)
        wait_for(lambda: len(job.recorded()) >= target, 30, f"{target} chunks to be recorded")
        kill(runner, rng.choice(["runner", "tree"]))
        finished_before_a_kill = job.recorded()
        assert "merge" not in finished_before_a_kill
    job.runs()
    (job.folder / "slow").unlink()
    result = job.doit("-n", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    again = set(job.runs())
    assert again and not again & finished_before_a_kill, f"seed {seed}: ran again after it was recorded: {again & finished_before_a_kill}"
    assert_one_writer_each(job, 6, 3)
    assert job.merged.read_text() == job.expected_merge()


def test_two_runners_at_once_one_killed_the_other_finishes_with_one_writer_per_output(make_job):
    job = make_job(chunks=6, frames=3)
    (job.folder / "slow").write_text("0.1")
    (job.folder / "pid-lines").touch()
    first = job.start_doit("-n", "2")
    second = job.start_doit("-n", "2")
    wait_for(lambda: len(job.recorded()) >= 2, 30, "two chunks to be recorded")
    kill(first, "runner")
    assert second.wait(60) == 0, second.stdout.read() + second.stderr.read()
    assert_one_writer_each(job, 6, 3)
    assert job.merged.read_text() == job.expected_merge()
    job.runs()
    assert job.doit().returncode == 0 and job.runs() == []


def test_a_merge_killed_halfway_is_merged_again_and_no_chunk_reruns(make_job):
    job = make_job(chunks=3)
    job.data["mergeCommand"] = f"head -c 20 part_0.txt > out.txt; [ -f hold ] && sleep 30; {job.data['mergeCommand']}"
    job.save()
    (job.folder / "hold").touch()
    runner = job.start_doit()
    wait_for(lambda: job.merged.exists(), what="the merge to start writing")
    kill_tree(runner)
    assert job.merged.read_text() != job.expected_merge()  # half-written
    job.runs()
    (job.folder / "hold").unlink()
    result = job.doit()
    assert result.returncode == 0, result.stderr
    assert job.runs() == ["merge"]
    assert job.merged.read_text() == job.expected_merge()


DAMAGE = {
    "records-garbage": lambda state: (state / "records" / "chunk-1.json").write_bytes(b"\x00garbage{"),
    "record-truncated": lambda state: (state / "records" / "chunk-2.json").write_text('{"task": "chunk-2", "fing'),
    "record-deleted": lambda state: (state / "records" / "chunk-0.json").unlink(),
    "doit-db-garbage": lambda state: (state / "doit.sqlite3").write_bytes(b"not a database at all" * 100),
    "inputs-cache-garbage": lambda state: (state / "inputs.json").write_text("[[["),
    "run-log-garbage": lambda state: next((state / "runs").glob("*.jsonl")).write_bytes(b"\xff\n{half"),
    "stale-running-marker": lambda state: (state / "running" / "chunk-1.json").write_text('{"pid": 1, "pgid": "x"}'),
    "state-folder-deleted": lambda state: __import__("shutil").rmtree(state),
    "record-is-a-folder": lambda state: ((state / "records" / "chunk-1.json").unlink(),
                                         (state / "records" / "chunk-1.json" / "inside").mkdir(parents=True)),
    "lock-is-a-folder": lambda state: ((state / "locks" / "chunk-2.lock").unlink(missing_ok=True),
                                       (state / "locks" / "chunk-2.lock").mkdir(),
                                       (state / "records" / "chunk-2.json").unlink()),  # so that it is taken
    "runs-is-a-file": lambda state: (__import__("shutil").rmtree(state / "runs"), (state / "runs").write_text("x")),
    "running-is-a-file": lambda state: ((state / "running").rmdir(), (state / "running").write_text("x")),
    "record-wrong-types": lambda state: (state / "records" / "chunk-1.json").write_text(
        (state / "records" / "chunk-1.json").read_text().replace('"inputs":', '"inputs":5,"was":')),
    "record-is-a-fifo": lambda state: ((state / "records" / "chunk-2.json").unlink(),
                                       os.mkfifo(state / "records" / "chunk-2.json")),
    "marker-is-a-fifo": lambda state: os.mkfifo(state / "running" / "chunk-0.json"),
}

# what must run again after the damage (content-identical chunks do not force a merge)
RERUN = {"records-garbage": ["chunk 1"], "record-truncated": ["chunk 2"], "record-deleted": ["chunk 0"],
         "state-folder-deleted": ["chunk 0", "chunk 1", "chunk 2", "merge"], "record-is-a-folder": ["chunk 1"],
         "lock-is-a-folder": ["chunk 2"],
         "record-wrong-types": ["chunk 1"], "record-is-a-fifo": ["chunk 2"]}
#: what is moved aside into the state folder's aside/, never deleted (it may hold someone's files): the
#: damage, and an output no record vouches for any more
ASIDE = {"record-is-a-folder": ["chunk-1.json", "part_1.txt"], "lock-is-a-folder": ["chunk-2.lock", "part_2.txt"], "runs-is-a-file": ["runs"], "running-is-a-file": ["running"]}


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Job:
    """A job run to the end once, copied by each test that damages its state."""
    root = tmp_path_factory.mktemp("finished")
    job = new_job(root, chunks=3)
    assert job.doit().returncode == 0
    job.runs()
    return job


@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_state_is_recovered_by_redoing_work(finished, tmp_path, damage):
    job = finished.copy_to(tmp_path / "job")
    DAMAGE[damage](job.state)
    result = job.doit()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(job.runs()) == RERUN.get(damage, [])
    assert job.merged.read_text() == job.expected_merge()
    assert job.doit().returncode == 0 and job.runs() == []
    aside = sorted(p.name.rsplit("-", 1)[-1] for p in (job.state / "aside").glob("*")) if damage in ASIDE else []
    assert aside == [name.rsplit("-", 1)[-1] for name in ASIDE.get(damage, [])]


def test_a_chunk_output_replaced_behind_our_back_is_rendered_again(make_job):
    job = make_job(chunks=2)
    job.doit()
    job.runs()
    job.output(0).write_text("someone else's file\n")
    assert job.doit().returncode == 0
    assert job.runs() == ["chunk 0"]
    assert job.merged.read_text() == job.expected_merge()
