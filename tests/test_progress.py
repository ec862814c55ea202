"""Progress: the model fed with events, the progress file of real runs, and what a console shows."""
from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import time
from typing import Any

from harness import DOIT, REPO, _env, wait_for

from helios_doit.progress.model import PROGRESS_ENV, Progress, retry_line


class Clock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def ev(kind: str, at: float, **fields: Any) -> dict[str, Any]:
    return {"event": kind, "at": at, **fields}


def test_model_counts_frames_of_finished_chunks_and_holds_below_1_until_the_merge():
    clock = Clock()
    progress = Progress({0: 10, 1: 30}, merge=True, run_id="r1", clock=clock)
    progress.apply(ev("task-start", 1001, task="chunk-0", chunkId=0, attempt=1, attempts=1))
    progress.apply(ev("task-start", 1001, task="chunk-1", chunkId=1, attempt=1, attempts=1))
    clock.now = 1003
    assert progress.snapshot()["running"] == [0, 1]
    progress.apply(ev("task-done", 1003, task="chunk-1", chunkId=1, attempt=1, duration=2.0, frames=30))
    snap = progress.snapshot()
    assert (snap["chunksDone"], snap["framesDone"], snap["totalFrames"]) == (1, 30, 40)
    assert snap["overallProgress"] == 0.75 and snap["running"] == [0]
    # chunk 1 took 2 s for 30 frames: chunk 0's 10 frames, 2 s in, are due any moment
    assert snap["timeToFinish"] == 0.0
    progress.apply(ev("task-done", 1004, task="chunk-0", chunkId=0, attempt=1, duration=3.0))
    assert progress.snapshot()["overallProgress"] == 0.99 and progress.snapshot()["stage"] == "rendering"
    progress.apply(ev("task-start", 1004, task="merge", attempt=1))
    assert progress.snapshot()["stage"] == "merging"
    progress.apply(ev("task-done", 1005, task="merge", attempt=1, duration=1.0))
    progress.apply(ev("run-end", 1005, code=0))
    clock.now = 1005
    snap = progress.snapshot()
    assert snap["overallProgress"] == 1.0 and snap["done"] is True and snap["stage"] == "done"
    assert snap["timeToFinish"] == 0.0 and snap["elapsed"] == 5.0 and snap["merge"] == "done"
    assert snap["slowestChunks"] == [{"chunkId": 0, "duration": 3.0}, {"chunkId": 1, "duration": 2.0}]
    assert snap["errors"] == [] and snap["fatalErrorEncountered"] is False


def test_model_retry_then_success():
    progress = Progress({3: 8}, clock=Clock())
    progress.apply(ev("task-start", 1001, task="chunk-3", chunkId=3, attempt=1, attempts=3))
    progress.apply(ev("task-retry", 1002, task="chunk-3", chunkId=3, attempt=1, message="exit code 3", delay=1.0))
    assert progress.snapshot()["running"] == [3]  # waiting for its next attempt still counts as running
    progress.apply(ev("task-start", 1003, task="chunk-3", chunkId=3, attempt=2, attempts=3))
    progress.apply(ev("task-done", 1004, task="chunk-3", chunkId=3, attempt=2, duration=1.0))
    snap = progress.snapshot()
    assert snap["errors"] == [{"chunkId": 3, "attempt": 1, "willRetry": True, "message": "exit code 3"}]
    assert snap["fatalErrorEncountered"] is False and snap["chunksDone"] == 1
    assert progress.done_line("chunk-3") == "ok chunk:3 in 1.00s after 2 attempts [1/1 chunks, 8/8 frames]"
    assert retry_line(ev("task-retry", 1, task="chunk-3", attempt=1, message="exit code 3\nmore", delay=1.25)) == \
        "R  chunk:3 attempt 1 failed: exit code 3; retrying in 1.2s"


def test_model_final_failure_and_doit_callbacks_do_not_count_twice():
    progress = Progress({0: 8, 1: 8}, merge=True, clock=Clock())
    progress.apply(ev("task-start", 1001, task="chunk-1"))  # doit's callback: no attempt known
    progress.apply(ev("task-start", 1001, task="chunk-1", chunkId=1, attempt=1, attempts=2))  # the worker's
    progress.apply(ev("task-retry", 1002, task="chunk-1", chunkId=1, attempt=1, message="exit code 3"))
    progress.apply(ev("task-start", 1003, task="chunk-1", chunkId=1, attempt=2, attempts=2))
    progress.apply(ev("task-failed", 1004, task="chunk-1", chunkId=1, attempt=2, message="exit code 3",
                      exitCode=3, final=True))
    progress.apply(ev("task-failed", 1004, task="chunk:1", message="chunk 1 failed after 2 attempts", final=True))
    progress.apply(ev("task-skip", 1000, task="chunk-0", chunkId=0, reason="up to date"))
    progress.apply(ev("task-done", 1000, task="chunk:0"))  # doit's add_success after a skip changes nothing
    progress.apply(ev("task-failed", 1005, task="merge", notRun=True))
    snap = progress.snapshot()
    assert snap["errors"] == [
        {"chunkId": 1, "attempt": 1, "willRetry": True, "message": "exit code 3"},
        {"chunkId": 1, "attempt": 2, "willRetry": False, "message": "exit code 3"},
    ]
    assert snap["fatalErrorEncountered"] is True and snap["running"] == []
    assert (snap["chunksDone"], snap["framesDone"], snap["framesRendered"]) == (1, 8, 0)
    assert snap["merge"] == "not run" and snap["timeToFinish"] is None
    assert progress.failed_line("chunk-1") == "F  chunk:1 failed after 2 attempts: exit code 3"
    assert "chunk:1 attempt 2 failed: exit code 3" in progress.display_lines()


def test_model_builds_itself_from_a_bare_log():
    progress = Progress(clock=Clock())
    progress.apply(ev("run-start", 999, runId="r9", totalChunks=2, totalFrames=12, merge=False,
                      chunks=[[0, 0, 4], [1, 1, 8]]))
    progress.apply(ev("task-done", 1000, task="chunk-1", chunkId=1, attempt=1, duration=0.5, frames=8))
    snap = progress.snapshot()
    assert (snap["runId"], snap["totalChunks"], snap["totalFrames"], snap["framesDone"]) == ("r9", 2, 12, 8)
    assert snap["merge"] is None and snap["elapsed"] == 1.0


def run_with_progress(job: Any, *args: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    path = job.folder / "progress.json"
    job.env[PROGRESS_ENV] = str(path)
    result = job.doit(*args)
    return result, json.loads(path.read_text())


def test_progress_file_after_a_run(make_job):
    job = make_job(chunks=4)
    result, final = run_with_progress(job, "-n", "2")
    assert result.returncode == 0, result.stderr
    assert final["done"] is True and final["overallProgress"] == 1.0 and final["stage"] == "done"
    assert (final["chunksDone"], final["totalChunks"], final["framesDone"], final["totalFrames"]) == (4, 4, 32, 32)
    assert final["running"] == [] and final["errors"] == [] and final["fatalErrorEncountered"] is False
    assert len(final["slowestChunks"]) == 3 and final["merge"] == "done"
    # nothing to do the second time: every chunk counts as done, none was rendered
    result, again = run_with_progress(job)
    assert (again["chunksDone"], again["framesDone"], again["framesRendered"]) == (4, 32, 0)
    log = sorted((job.state / "runs").glob("*.jsonl"))
    events = [json.loads(line) for path in log for line in path.read_text().splitlines()]
    kinds = [event["event"] for event in events]
    assert kinds.count("run-start") == 2 and kinds.count("run-end") == 2
    [skipped] = [event for event in events if event["event"] == "tasks-skip"]
    assert skipped["chunks"] == [[0, 3]] and skipped["merge"] is True  # every chunk, as one range


def test_progress_file_is_current_during_a_run(make_job):
    job = make_job(chunks=3, frames=3)
    (job.folder / "slow").touch()
    path = job.folder / "sub" / "progress.json"
    job.env[PROGRESS_ENV] = str(path)
    runner = job.start_doit("-n", "1")
    seen: list[dict[str, Any]] = []

    def one_done_one_running() -> bool:
        if path.exists():
            seen.append(json.loads(path.read_text()))
        return bool(seen) and seen[-1]["chunksDone"] >= 1 and bool(seen[-1]["running"])

    wait_for(one_done_one_running, what="a progress file with one chunk done and one running")
    during = seen[-1]
    assert during["done"] is False and during["totalChunks"] == 3 and during["totalFrames"] == 9
    assert 0 < during["overallProgress"] < 1 and during["running"] in ([1], [2])
    assert during["elapsed"] > 0 and during["framesDone"] == 3 * during["chunksDone"]
    assert seen[0]["chunksDone"] == 0 and seen[0]["done"] is False
    assert runner.wait(60) == 0
    final = json.loads(path.read_text())
    assert final["done"] is True and final["chunksDone"] == 3


def test_retry_and_failure_reach_the_file_the_console_and_the_summary(make_job):
    job = make_job(chunks=3)
    (job.folder / "fail-2").touch()
    result, final = run_with_progress(job, "--continue", "retries=1", "retry_delay=0.05")
    assert result.returncode == 2  # plain doit under --continue: the merge could not run
    assert final["errors"] == [
        {"chunkId": 2, "attempt": 1, "willRetry": True, "message": "exit code 3"},
        {"chunkId": 2, "attempt": 2, "willRetry": False, "message": "exit code 3"},
    ]
    assert final["fatalErrorEncountered"] is True and final["done"] is True and final["chunksDone"] == 2
    out = result.stdout
    assert "\x1b[" not in out  # not a terminal: plain lines only
    assert ".  chunk:0\n" in out and "ok chunk:0 in " in out
    assert "R  chunk:2 attempt 1 failed: exit code 3; retrying in " in out
    assert "F  chunk:2 failed after 2 attempts: exit code 3\n" in out
    summary = out[out.index("helios-doit: 1 chunk failed; rerun to retry what is not done:\n"):]
    log = job.state / "logs" / "chunk-2.log"
    assert f"  chunk 2 failed after 2 attempts: exit code 3; log: {log}\n" \
           "    | chunk 2: renderer crashed at frame 16\n" in summary


def in_terminal(argv: list[str]) -> tuple[int, str]:
    """`argv` run in a terminal (a pty): its exit code, and everything the terminal got."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, cwd=REPO, stdin=subprocess.DEVNULL,
                            stdout=slave, stderr=slave, env=_env({"TERM": "xterm", "COLUMNS": "120"}))
    os.close(slave)
    data = b""
    deadline = time.monotonic() + 60
    quiet_since = None
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the terminal closed: the run is over
                break
            if not chunk:
                break
            data += chunk
            quiet_since = None
        elif proc.poll() is not None:  # ended: drain what is still buffered, then stop
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since > 1.0:
                break
    os.close(master)
    return proc.wait(10), data.decode(errors="replace")


def test_terminal_gets_a_live_display_and_whole_command_lines(make_job):
    job = make_job(chunks=3)
    code, text = in_terminal([*DOIT, "-n", "3", f"job={job.file}"])
    assert code == 0
    assert "3/3 chunks, 24/24 frames  100%  merge done" in text  # the display's last drawing
    for cid in range(3):  # each command line arrives whole, at the start of a line
        line = f"[chunk {cid}] chunk {cid}: wrote frames {cid * 8}-{cid * 8 + 7}\r\n"
        assert line in text
        before = text[text.index(line) - 4: text.index(line)]
        assert before.endswith("\x1b[2K") or before.endswith("\r\n")
    assert text.rstrip().endswith("\x1b[?25h") or "\x1b[?25h" in text[-200:]  # the cursor is back
    assert job.merged.read_text() == job.expected_merge()


def test_the_live_display_keeps_up_with_the_lines_and_says_when_it_merges(make_job):
    job = make_job(chunks=3)
    job.data["mergeCommand"] = "sleep 1; " + job.data["mergeCommand"]
    job.save()
    code, text = in_terminal([*DOIT, "-n", "2", f"job={job.file}"])
    assert code == 0
    lines = text.split("\r\n")
    drawn_after = {line: lines[i + 1] for i, line in enumerate(lines[:-1])}  # the display drawn under a line
    merging = [line for line in drawn_after if line.endswith(".  merge")]
    assert merging and "merging" in drawn_after[merging[0]], drawn_after[merging[0]]
    finished = [line for line in drawn_after if "ok chunk:" in line]  # `ok chunk:2 in 0.01s [2/3 chunks, 16/24 frames]`
    assert len(finished) == 3
    for line in finished:
        done = line.split("[")[-1].split()[0]
        assert f" {done} chunks, " in drawn_after[line], (line, drawn_after[line])  # never behind the line above it
    assert "merge pending" not in text and "helios-doit: done in " in text


def test_frames_still_rendering_are_not_said_to_be_done():
    """Helios says `Rendered 30 / 30 frames` before its file is finished: those frames are shown
    apart from the frames of finished chunks."""
    progress = Progress({0: 30, 1: 30, 2: 30, 3: 30}, merge=True, clock=Clock())
    for cid in range(4):
        progress.apply(ev("task-start", 1000, task=f"chunk-{cid}", chunkId=cid, attempt=1, attempts=1))
    for cid in (1, 2, 3):
        progress.apply(ev("task-progress", 1004, task=f"chunk-{cid}", chunkId=cid, attempt=1, frames=30))
    progress.apply(ev("task-done", 1005, task="chunk-0", chunkId=0, attempt=1, duration=5.0, frames=30))
    assert progress.done_line("chunk-0") == "ok chunk:0 in 5.00s [1/4 chunks, 30/120 frames, 90 rendering]"
    assert progress.display_lines(1005)[0] == "1/4 chunks, 30/120 frames, 90 rendering  99%  then the merge"
    assert progress.progress_line(1005).startswith(".. 1/4 chunks, 30/120 frames, 90 rendering; running 1, 2, 3")
    snap = progress.snapshot(1005)
    assert (snap["framesDone"], snap["framesFinished"], snap["framesRendering"]) == (120, 30, 90)


def test_the_eta_shrinks_as_chunks_that_start_slowly_then_burst_go_on():
    """Each chunk's renderer takes 4 s to start, then makes its 30 frames at once (Helios: a
    browser, then every frame); two render at a time. The ETA comes from the finished chunks'
    time, not from a rate of frames that drops while the next ones start up."""
    clock = Clock(1000)
    progress = Progress({i: 30 for i in range(4)}, clock=clock)
    etas = []
    for pair, start in ((0, 1000), (2, 1004.5)):
        for cid in (pair, pair + 1):
            progress.apply(ev("task-start", start, task=f"chunk-{cid}", chunkId=cid, attempt=1, attempts=1))
        if pair == 2:
            for clock.now in (1005.5, 1006.5, 1007.5):  # chunks 2 and 3 starting up: no frame yet
                etas.append(progress.snapshot()["timeToFinish"])
            break
        for cid in (pair, pair + 1):
            progress.apply(ev("task-progress", start + 4, task=f"chunk-{cid}", chunkId=cid, attempt=1, frames=30))
            progress.apply(ev("task-done", start + 4.5, task=f"chunk-{cid}", chunkId=cid, attempt=1, duration=4.5,
                              frames=30))
    assert etas == [3.5, 2.5, 1.5]  # 4.5 s a chunk, two at a time
