"""The end of a run: one line saying what it did and how long it took, and failures said as a
person would, with what to do about each."""
from __future__ import annotations

import json
import os
import re
import signal
import sys

from harness import CLI, REPO, run, wait_for

DONE = r"helios-doit: done in \d+\.\d s: "


def last_line(text: str) -> str:
    return text.rstrip("\n").splitlines()[-1]


def test_a_run_ends_with_what_it_did_and_a_rerun_with_nothing_to_do(make_job):
    job = make_job(chunks=4)
    result = job.doit("-n", "2")
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(DONE + f"4 chunks rendered, 0 already done; merged into {job.merged}", last_line(result.stdout))

    assert job.runs()[-1] == "merge"  # the first run's commands; read, so the log starts again
    again = job.doit()
    assert again.returncode == 0 and job.runs() == []  # the rerun ran no command
    assert again.stdout.splitlines() == ["-- chunk:0", "-- chunk:1", "-- chunk:2", "-- chunk:3", "-- merge",
                                         f"helios-doit: nothing to do: 4 chunks and the merge were done already ({job.merged})"]

    job.output(2).unlink()  # rendered again to the same bytes: the merged file stands
    partial = job.cli()
    assert re.fullmatch(DONE + f"1 chunk rendered, 3 already done; the merge was done already \\({job.merged}\\)",
                        last_line(partial.stdout))


def test_a_run_of_some_chunks_says_so_without_the_merge(make_job):
    job = make_job(chunks=3)
    first = job.cli("--chunk", "1")
    assert re.fullmatch(DONE + "1 chunk rendered, 0 already done", last_line(first.stdout))
    again = job.doit("chunk:1")
    assert last_line(again.stdout) == "helios-doit: nothing to do: 1 chunk was done already"


def test_keep_going_says_why_the_merge_did_not_run_and_counts_what_was_done(make_job):
    job = make_job(chunks=4)
    (job.folder / "fail-1").touch()
    result = job.cli("--keep-going", "--concurrency", "2")
    assert result.returncode == 1
    out = result.stdout
    assert "UnmetDependency" not in out and "helios-doit: chunk:" not in out
    assert "helios-doit: 1 chunk failed; rerun to retry what is not done:\n" in out
    assert "helios-doit: merge: not run, because chunk 1 failed\n" in out
    assert re.fullmatch(r"helios-doit: failed after \d+\.\d s: 3 chunks rendered, 0 already done, 1 failed; not merged",
                        last_line(out))


def test_chunks_stopped_by_a_signal_are_counted_as_stopped(make_job):
    job = make_job(chunks=4, frames=4)
    (job.folder / "pause-0").touch()  # chunk 0 holds mid-render until the test stops the run
    runner = job.start_doit("-n", "2")
    wait_for(lambda: job.output(0).exists(), what="chunk 0 to render")
    wait_for(lambda: job.recorded() == {"chunk 1", "chunk 2", "chunk 3"}, what="the other chunks to be done")
    os.killpg(runner.pid, signal.SIGINT)  # Ctrl-C
    out, err = runner.communicate(timeout=30)
    assert runner.returncode == -signal.SIGINT, err
    assert re.fullmatch(r"helios-doit: stopped after \d+\.\d s: 3 chunks rendered, 0 already done, 1 stopped; "
                        "not merged", last_line(out)), out
    assert "stopped by SIGINT" in err


def wrong_frames_job(folder, commands: list[str]):
    """A job of 12-frame chunks of the bundled composition, each rendered by its command."""
    folder.mkdir()
    comp = REPO / "examples" / "orbit" / "composition.py"
    chunks = [{"id": i, "startFrame": 12 * i, "frameCount": 12, "outputFile": f"part_{i}.mov",
               "command": command.format(render=f"{sys.executable} -m helios_doit render {comp} -o part_{i}.mov "
                                                f"--width 64 --height 36 --start-frame {12 * i}")}
              for i, command in enumerate(commands)]
    spec = {"metadata": {"totalFrames": 12 * len(chunks), "fps": 30, "width": 64, "height": 36,
                         "duration": 12 * len(chunks) / 30},
            "chunks": chunks, "outputFile": "out.mov"}
    (folder / "job.json").write_text(json.dumps(spec))
    return folder / "job.json"


def test_a_wrong_output_is_not_to_be_retried_but_fixed(tmp_path):
    job = wrong_frames_job(tmp_path / "job", ["{render} --frame-count 10"])  # 10 frames of 12, every time
    result = job_run(job)
    assert result.returncode == 1
    assert ("helios-doit: 1 chunk failed; fix the renderer or the job, then run again (its output was wrong, "
            "the same way every time it runs):\n") in result.stdout
    assert "rerun" not in result.stdout
    assert "chunk 0 failed: the command exited 0 but its output is wrong: part_0.mov: expected 12 frames, found 10" \
        in result.stdout


def test_wrong_and_failed_chunks_each_get_their_advice(tmp_path):
    job = wrong_frames_job(tmp_path / "job", ["{render} --frame-count 10", "exit 3", "{render} --frame-count 12"])
    result = job_run(job, "--keep-going")
    assert result.returncode == 1
    assert ("helios-doit: 2 chunks failed; fix the renderer or the job for chunk 0 (its output was wrong, the same "
            "way every time), then rerun to retry what is not done:\n") in result.stdout
    assert "helios-doit: merge: not run, because chunks 0 and 1 failed\n" in result.stdout
    assert re.fullmatch(r"helios-doit: failed after \d+\.\d s: 1 chunk rendered, 0 already done, 2 failed; not merged",
                        last_line(result.stdout))


def job_run(job, *args: str):
    return run([*CLI, "job", "run", str(job), *args])
