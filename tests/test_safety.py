"""One writer per output, and never a byte destroyed that helios-doit did not write.

The runner alone is SIGKILLed in the middle of a chunk (its commands, in sessions of their own,
are not), and the same command is started again at once, in every way a job can be run. The
output must be one writer's whole file. Outputs whose place holds a stranger's file, a symlink,
or a folder that became a symlink since the job loaded are never deleted or followed.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from harness import CLI, DOIT, REPO, alive, descendants, wait_for

LINES = 8
#: Appends a line with its pid every 0.1 s: two writers at once show as two pids, or too many lines.
WRITER = f'for i in $(seq 1 {LINES}); do echo "$$ line $i" >> {{out}}; sleep 0.1; done'


#: The same, held after its second line for as long as a file `hold` exists in the job's folder.
HELD_WRITER = (f'for i in $(seq 1 {LINES}); do echo "$$ line $i" >> {{out}}; '
               f'if [ $i -eq 2 ]; then while [ -f hold ]; do sleep 0.02; done; fi; sleep 0.1; done')


def writer_job(folder: Path, chunks: int = 1, writer: str = WRITER) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    spec = {
        "metadata": {"totalFrames": chunks, "fps": 24, "width": 320, "height": 180, "duration": chunks / 24},
        "chunks": [{"id": i, "startFrame": i, "frameCount": 1, "outputFile": f"out_{i}.txt",
                    "command": writer.format(out=f"out_{i}.txt")} for i in range(chunks)],
        "outputFile": "merged.txt",
        "mergeCommand": "cat " + " ".join(f"out_{i}.txt" for i in range(chunks)) + " > merged.txt",
    }
    job = folder / "job.json"
    job.write_text(json.dumps(spec))
    return job


def writers(path: Path) -> list[str]:
    return [line.split()[0] for line in path.read_text().splitlines()]


MODES = {
    "job run": lambda job: [*CLI, "job", "run", str(job)],
    "doit": lambda job: [*DOIT, f"job={job}"],
    "doit -n 2": lambda job: [*DOIT, "-n", "2", f"job={job}"],
    "doit -n 2 -P thread": lambda job: [*DOIT, "-n", "2", "-P", "thread", f"job={job}"],
    "doit chunk:0": lambda job: [*DOIT, "chunk:0", f"job={job}"],
    "worker": lambda job: [*CLI, "worker", str(job), "--index", "0"],
}


@pytest.mark.parametrize("mode", MODES)
def test_sigkill_of_the_runner_alone_then_an_immediate_rerun_leaves_one_writer(tmp_path, mode):
    chunks = 2 if "-n 2" in mode else 1
    job = writer_job(tmp_path / "job", chunks)
    argv = MODES[mode](job)
    runner = subprocess.Popen(argv, cwd=REPO, start_new_session=True, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    outputs = [job.parent / f"out_{i}.txt" for i in range(chunks)]
    wait_for(lambda: all(p.exists() and len(p.read_text().splitlines()) >= 2 for p in outputs), 30,
             "every chunk to be writing")
    below = descendants(runner.pid)
    first = {p: writers(p)[0] for p in outputs}
    os.kill(runner.pid, signal.SIGKILL)  # the runner alone: its commands live in sessions of their own
    runner.wait()
    again = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stdout + again.stderr
    for path in outputs:
        lines = writers(path)
        assert len(lines) == LINES and len(set(lines)) == 1, f"{path.name}: {path.read_text()}"
        assert lines[0] != first[path]  # rendered again by the new runner, not finished by the orphan
        assert not alive(int(first[path]))
    aside = job.parent / ".helios-doit" / "job.json" / "aside"
    if mode == "doit -n 2":  # doit's worker processes outlive the main one: they stop their commands cleanly
        assert not aside.exists()
    else:  # the partial output of an attempt that died is not ours to delete: moved aside
        assert len(list(aside.iterdir())) == chunks and "which died" in again.stderr
    wait_for(lambda: not any(alive(pid) for pid in below), 5, "the first runner's processes to be gone")


@pytest.mark.parametrize("next_job", ["the same job", "another job naming that output"])
def test_an_orphan_the_guard_missed_is_killed_before_the_chunk_is_rendered_again(tmp_path, next_job):
    """The second defence: with the runner's guard killed first, its command outlives it; the
    next runner finds it through the running marker (its group and its attempt tag), its job's
    own or the copy beside the output, and kills it. The command is held after its second line
    (however slow the machine), so it is still there, alive, when the next runner starts."""
    job = writer_job(tmp_path / "job", writer=HELD_WRITER)
    following = job
    if next_job != "the same job":  # the job emitted again under another name: the same outputs
        following = job.with_name("job-v2.json")
        following.write_text(job.read_text().replace("merged.txt", "merged-v2.txt"))
    hold = job.parent / "hold"
    hold.touch()
    output = job.parent / "out_0.txt"
    runner = subprocess.Popen([*CLI, "job", "run", str(job)], cwd=REPO, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: output.exists() and len(output.read_text().splitlines()) >= 2, 60, "the chunk to be writing")
    guard = [pid for pid in descendants(runner.pid) if b"reaper.py" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert len(guard) == 1
    os.kill(guard[0], signal.SIGKILL)
    os.kill(runner.pid, signal.SIGKILL)
    runner.wait()
    orphan = int(writers(output)[0])
    time.sleep(0.5)
    assert alive(orphan)  # nobody guards it now
    again = subprocess.Popen([*CLI, "job", "run", str(following)], cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    wait_for(lambda: not alive(orphan), 60, "the next runner to kill the orphan")
    hold.unlink()  # the new attempt goes on
    out, err = again.communicate(timeout=60)
    assert again.returncode == 0, out + err
    lines = writers(output)
    assert len(lines) == LINES and len(set(lines)) == 1 and lines[0] != str(orphan)


def test_kill_9_of_doit_n_2_leaves_no_worker_process_behind(tmp_path):
    job = writer_job(tmp_path / "job", chunks=2)
    runner = subprocess.Popen([*DOIT, "-n", "2", f"job={job}"], cwd=REPO, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: all((job.parent / f"out_{i}.txt").exists() for i in range(2)), 30, "both chunks to start")
    below = descendants(runner.pid)
    assert len(below) >= 4  # two doit workers, their commands, the guards
    os.kill(runner.pid, signal.SIGKILL)
    runner.wait()
    wait_for(lambda: not any(alive(pid) for pid in below), 5, "every worker, command and guard to be gone")
    assert not list((job.parent / ".helios-doit" / "job.json" / "running").iterdir())  # they cleaned up


def test_a_symlink_in_an_outputs_place_is_moved_aside_and_its_target_kept(make_job):
    job = make_job(chunks=2)
    (job.folder / "takes").mkdir()
    (job.folder / "takes" / "take3.txt").write_text("precious\n")
    job.output(1).symlink_to("takes/take3.txt")
    (job.folder / "fail-1").touch()
    result = job.cli()
    assert result.returncode == 1
    assert (job.folder / "takes" / "take3.txt").read_text() == "precious\n"
    assert "moved the symlink in its output's place" in result.stderr
    [moved] = (job.state / "aside").iterdir()
    assert moved.is_symlink() and os.readlink(moved) == "takes/take3.txt"
    (job.folder / "fail-1").unlink()
    assert job.cli().returncode == 0
    assert not job.output(1).is_symlink() and job.output(1).read_text().count("frame") == 8


def test_a_folder_that_became_a_symlink_since_the_job_loaded_is_never_followed(make_job, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.txt").write_text("precious\n")
    job = make_job(chunks=2)
    job.data["chunks"][0]["command"] += f" && ln -sfn {outside} sub"  # an earlier chunk makes the link
    job.data["chunks"][1]["outputFile"] = "sub/victim.txt"
    job.data["chunks"][1]["command"] = "echo never > sub/victim.txt"
    job.save()
    result = job.cli()
    assert result.returncode == 1
    assert (outside / "victim.txt").read_text() == "precious\n"
    assert "sub is now a symlink" in result.stdout and "nothing was run or removed there" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_a_strangers_file_in_an_outputs_place_is_moved_aside_not_deleted(make_job):
    job = make_job(chunks=2)
    assert job.cli().returncode == 0
    job.output(0).write_text("a file the user put here\n")  # not the file the record vouches for
    job.runs()
    result = job.cli()
    assert result.returncode == 0, result.stderr
    assert job.runs() == ["chunk 0"]
    [moved] = (job.state / "aside").iterdir()
    assert moved.read_text() == "a file the user put here\n"
    assert f"moved the file in its output's place {job.output(0)}" in result.stderr


def test_doit_clean_deletes_only_what_a_record_vouches_for(make_job):
    job = make_job(chunks=2)
    assert job.doit().returncode == 0
    job.output(1).write_text("edited by hand\n")
    result = job.doit("clean", "chunk:0", "chunk:1")
    assert result.returncode == 0, result.stderr
    assert not job.output(0).exists() and not job.output(1).exists()
    [moved] = (job.state / "aside").iterdir()
    assert moved.read_text() == "edited by hand\n"


def test_a_marker_left_behind_by_a_live_runner_never_gets_its_commands_killed(tmp_path):
    """Chunk 0 replaces its output folder with a symlink and fails: its partial output cannot be
    removed, which must not keep its running marker behind, and a second runner taking chunk 0
    must never kill what the first, still alive, runs for chunk 1."""
    folder = tmp_path / "job"
    (folder / "elsewhere").mkdir(parents=True)
    spec = {
        "metadata": {"totalFrames": 2, "fps": 1, "width": 1, "height": 1, "duration": 2},
        "chunks": [{"id": 0, "startFrame": 0, "frameCount": 1, "outputFile": "sub/out0.txt",
                    "command": f"echo x > sub/out0.txt; rm -rf sub; ln -s {folder / 'elsewhere'} sub; exit 3"},
                   {"id": 1, "startFrame": 1, "frameCount": 1, "outputFile": "out1.txt",
                    "command": "until [ -f go ]; do sleep 0.05; done; echo done > out1.txt"}],
        "mergeCommand": "cat out1.txt > all.txt", "outputFile": "all.txt"}
    (folder / "job.json").write_text(json.dumps(spec))
    first = subprocess.Popen([*CLI, "job", "run", str(folder / "job.json"), "--keep-going", "--concurrency", "2",
                              "-P", "thread"], cwd=REPO, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    state = folder / ".helios-doit" / "job.json"
    wait_for(lambda: (state / "failures" / "chunk-0.json").exists(), 30, "chunk 0 to fail")
    assert not (state / "running" / "chunk-0.json").exists()
    second = subprocess.run([*CLI, "job", "run", str(folder / "job.json"), "--chunk", "0"], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert second.returncode == 1
    (folder / "go").touch()
    out, err = first.communicate(timeout=30)
    assert first.returncode == 1 and "killed" not in out, out
    assert (folder / "out1.txt").read_text() == "done\n"


def test_doit_clean_leaves_a_chunk_another_runner_is_rendering_alone(make_job):
    job = make_job(chunks=1)
    (job.folder / "pause-0").touch()
    runner = job.start_doit("chunk:0")
    wait_for(lambda: job.output(0).exists(), what="the chunk to render")
    cleaned = job.doit("clean", "chunk:0")
    assert cleaned.returncode == 1
    assert cleaned.stderr.splitlines() == [
        "helios-doit: chunk 0: another runner is working on it; not cleaned (stop that run first)"]
    (job.folder / "pause-0").unlink()
    assert runner.wait(30) == 0
    assert job.output(0).read_text().count("frame") == 8 and not (job.state / "aside").exists()


@pytest.mark.parametrize("second", ["job run", "doit"])
def test_two_jobs_that_name_one_output_never_write_it_at_once(tmp_path, second):
    first = writer_job(tmp_path / "shot", writer=HELD_WRITER)
    again = first.with_name("job-v2.json")  # the job emitted again under another name: the same outputs
    again.write_text(first.read_text().replace("merged.txt", "merged-v2.txt"))
    (first.parent / "hold").touch()
    # No merge for the first: it would find its chunk's output replaced by the second job's (and refuse, rightly).
    runner = subprocess.Popen([*MODES["job run"](first), "--no-merge"], cwd=REPO, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    out = first.parent / "out_0.txt"
    wait_for(lambda: out.exists() and len(out.read_text().splitlines()) >= 2, 30, "the first job to be writing")
    other = subprocess.Popen(MODES[second](again), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.5)  # the second job's runner is up, and at the output
    assert len(set(writers(out))) == 1 and other.poll() is None  # it waits; nobody else writes
    (first.parent / "hold").unlink()
    assert runner.wait(timeout=60) == 0
    stdout, stderr = other.communicate(timeout=60)
    assert other.returncode == 0, stdout + stderr
    assert "chunk 0: waiting: a runner of another job writes out_0.txt now" in stderr, stderr
    lines = writers(out)
    assert len(lines) == LINES and len(set(lines)) == 1, out.read_text()  # one writer's whole file: the second's
    (kept,) = (first.parent / ".helios-doit" / "job-v2.json" / "aside").iterdir()  # the first's, moved aside
    assert len(writers(kept)) == LINES and writers(kept)[0] != lines[0]


@pytest.mark.parametrize("planted", [".helios-doit/.outputs", ".helios-doit/.outputs/locks"])
@pytest.mark.parametrize("kind", ["symlink", "file"])
def test_a_link_or_file_where_the_outputs_locks_belong_is_moved_aside_never_followed(make_job, tmp_path, planted, kind):
    outside = tmp_path / "outside"
    (outside / "locks").mkdir(parents=True)
    (outside / "locks" / "part_0.txt.output-lock").write_text("precious\n")
    (outside / "part_0.txt.output-lock").write_text("precious\n")
    job = make_job(chunks=1)
    place = job.folder / planted
    place.parent.mkdir(parents=True)
    if kind == "symlink":
        place.symlink_to(outside)
    else:
        place.write_text("notes\n")
    result = job.cli()
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{place} was not a folder of ours (a link, or a file); moved it to" in result.stderr, result.stderr
    assert sorted(p.name for p in outside.rglob("*")) == ["locks", "part_0.txt.output-lock", "part_0.txt.output-lock"]
    assert all(p.read_text() == "precious\n" for p in outside.rglob("*.output-lock"))
    [moved] = (job.state / "aside").iterdir()
    assert moved.is_symlink() if kind == "symlink" else moved.read_text() == "notes\n"
    assert job.cli().returncode == 0


def test_a_job_file_named_like_the_outputs_lock_folder_never_waits_on_itself(make_job):
    job = make_job(chunks=2, name=".outputs")
    for chunk in job.data["chunks"]:  # outputs named as its task locks are: chunk-0.lock would be both
        chunk["outputFile"] = f"chunk-{chunk['id']}"
        chunk["command"] = chunk["command"].replace(f"part_{chunk['id']}.txt", f"chunk-{chunk['id']}")
    job.data["mergeCommand"] = "sh merge.sh merge chunk-0 chunk-1"
    job.data["outputFile"] = "merge"
    job.save()
    result = job.cli(timeout=60)
    assert result.returncode == 0 and "waiting" not in result.stderr, result.stdout + result.stderr
    assert (job.folder / "merge").is_file()


def test_a_marker_planted_beside_an_output_never_gets_a_process_group_killed(make_job):
    """The outputs' folder may be writable by others: what a marker there names is killed only
    if it carries that attempt's tag, never a process group by its number."""
    from helios_doit.executors import reaper

    job = make_job(chunks=1)
    bystander = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        planted = job.folder / ".helios-doit" / ".outputs" / "running" / "part_0.txt.output.json"
        planted.parent.mkdir(parents=True)
        planted.write_text(json.dumps({"machine": reaper.machine(), "tag": "x:1:1", "pgid": bystander.pid, "pid": 1}))
        result = job.cli()
        assert result.returncode == 0, result.stdout + result.stderr
        assert bystander.poll() is None  # alive
    finally:
        bystander.kill()
        bystander.wait()
