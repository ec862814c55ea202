"""`helios-doit render` / `merge` chunks run in a forked runner: same bytes, same stops, same failures.

Each chunk gets a new process, forked from a runner that never runs a chunk itself.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pty
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from harness import DOIT, HELIOS_DOIT, REPO, alive, wait_for

COMPOSITION = '''
import os, random, subprocess, sys, threading, time
import numpy as np
from helios_doit.video.composition import Composition

# Which program this render runs in, as the kernel sees it: a fresh Python, or a forked runner.
cmdline = open("/proc/self/cmdline", "rb").read().replace(bytes(1), b" ").decode()
with open("procs.log", "a") as log:
    log.write(" ".join([str(os.getpid()), str(np.random.random()), str(random.random()), *sys.argv, cmdline]) + chr(10))
if os.path.exists("helper.py"):  # a module next to the composition: imported afresh for each chunk
    import helper
if os.path.exists("leave-behind"):  # what a careless composition may leave running
    left = open("leave-behind").read()
    if left == "thread":
        threading.Thread(target=time.sleep, args=(300,), daemon=True).start()
    else:
        stray = os.fork()  # holds everything its render process holds
        if stray == 0:
            time.sleep(300)
            os._exit(0)
        with open("strays.log", "a") as log:
            log.write(str(stray) + chr(10))
        if left == "vanish":
            os._exit(0)  # and the render process ends without a word
# A new process' state: an error here if a chunk before, in the same process, left its own.
import builtins
assert not hasattr(builtins, "left_by_a_chunk") and sys.unraisablehook is sys.__unraisablehook__
np.float64(1.0) / np.float64(0.0)  # only a warning
np.seterr(all="raise")
builtins.left_by_a_chunk = True
sys.unraisablehook = lambda *args: None
os.close(0)
np.ones((300, 300)) @ np.ones((300, 300))  # OpenBLAS starts its threads, once

comp = Composition(width=160, height=90, fps=24, duration=2)

@comp.frame
def draw(f):
    time.sleep({delay})
    img = np.zeros((f.height, f.width, 3), np.uint8)
    img[..., 0] = (f.index * 5) % 256
    img[:, : f.index % f.width + 1, 1] = 200
    return img
'''


def make_job(folder: Path, delay: float = 0.0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "comp.py").write_text(COMPOSITION.format(delay=delay))
    emitted = subprocess.run([HELIOS_DOIT, "render", "comp.py", "-o", "out.mov", "--emit-job", "job.json",
                              "--concurrency", "4"], cwd=folder, capture_output=True, text=True)
    assert emitted.returncode == 0, emitted.stderr
    (folder / "procs.log").unlink(missing_ok=True)
    return folder / "job.json"


def doit(job: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*DOIT, *args, f"job={job}"], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HELIOS_DOIT_THREADS": "1", **env})


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("out*.mov"))}


def renders(folder: Path) -> list[str]:
    return (folder / "procs.log").read_text().splitlines()


def test_forked_renders_write_the_same_bytes_as_fresh_processes(tmp_path):
    job = make_job(tmp_path / "job")
    folder = job.parent
    (folder / "helper.py").write_text("open('helper.log', 'a').write('imported' + chr(10))")
    fresh = doit(job, "-n", "2", "chunk:0", "chunk:3", HELIOS_DOIT_FORK="0")
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    assert all("bin/helios-doit render" in line for line in renders(folder))  # exec'd: its own command line
    expected = digests(folder)
    assert len(expected) == 2  # the first chunk and the last

    doit(job, "clean")
    (folder / "procs.log").unlink()
    forked = doit(job)  # a serial run: its progress ticker and watchdog threads never stop it forking
    assert forked.returncode == 0, forked.stdout + forked.stderr
    lines = renders(folder)
    assert len(lines) == 4 and all("-m doit" in line for line in lines)  # forked from the runner
    assert {name: digest for name, digest in digests(folder).items() if name in expected} == expected
    assert (folder / "out.mov").stat().st_size > 0
    assert len({line.split()[0] for line in lines}) == 4  # a process of its own for each chunk
    assert len((folder / "helper.log").read_text().splitlines()) == 6  # imported for each chunk
    assert len({line.split()[1] for line in lines}) == 4  # numpy's global generator: fresh for each chunk
    assert len({line.split()[2] for line in lines}) == 4  # and Python's


def pids(folder: Path) -> list[int]:
    return [int(line.split()[0]) for line in renders(folder)]


@pytest.mark.parametrize("left", ["process", "vanish"])
def test_what_a_chunk_leaves_running_is_killed_and_the_next_chunk_starts_in_a_new_process(tmp_path, left):
    job = make_job(tmp_path / "job")
    folder = job.parent
    (folder / "leave-behind").write_text(left)
    result = doit(job)
    if left == "vanish":  # the render exited 0 with no output: the chunk fails at once
        assert result.returncode == 1 and "chunk 0 failed" in result.stdout, result.stdout + result.stderr
        assert len(pids(folder)) == 1  # the run stopped there
    else:
        assert result.returncode == 0, result.stdout + result.stderr
        assert len(set(pids(folder))) == 4
    assert not any(alive(pid) for pid in pids(folder))
    assert not any(alive(int(pid)) for pid in (folder / "strays.log").read_text().split())


def test_stopping_the_run_stops_forked_renders_and_removes_their_output(tmp_path):
    job = make_job(tmp_path / "job", delay=0.1)  # 12 frames a chunk: 1.2 s
    folder = job.parent
    runner = subprocess.Popen([*DOIT, "-n", "2", f"job={job}"], cwd=REPO, text=True, start_new_session=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    running = folder / ".helios-doit" / "job.json" / "running"
    # The second round: each worker on its second chunk.
    wait_for(lambda: (folder / "procs.log").exists() and len(renders(folder)) == 4
             and len(list(running.glob("*.json"))) == 2, 30, what="the second two renders")
    markers = [json.loads(p.read_text()) for p in running.glob("*.json")]
    pids = [int(line.split()[0]) for line in renders(folder)[2:]]
    assert sorted(pids) == sorted(m["pgid"] for m in markers)  # each render leads its own process group
    os.kill(runner.pid, signal.SIGTERM)
    assert runner.wait(30) == -signal.SIGTERM  # it ends by the signal, like any stopped command
    assert not any(alive(pid) for pid in pids)
    assert not list(running.glob("*.json"))
    assert sorted(p.name for p in folder.glob("out.part*.mov")) == ["out.part0.mov", "out.part1.mov"]  # done before


def test_a_forked_render_that_fails_reports_its_exit_code_and_message(tmp_path):
    job = make_job(tmp_path / "job")
    spec = json.loads(job.read_text())
    spec["chunks"][1]["command"] = spec["chunks"][1]["command"].replace("--start-frame 12", "--start-frame 99")
    job.write_text(json.dumps(spec))
    result = doit(job, "-n", "2", "--continue")
    assert result.returncode == 2  # doit's code for a merge skipped under --continue
    assert "chunk 1 failed: exit code 2" in result.stdout
    assert "outside the render" in (job.parent / ".helios-doit" / "job.json" / "logs" / "chunk-1.log").read_text()
    assert len(set(pids(job.parent))) == 4  # a process of its own for each chunk


@pytest.mark.parametrize("command", [
    "helios-doit render comp.py -o out.part0.mov > render.log",  # shell syntax: sh runs it
    f"{sys.executable} -m helios_doit render comp.py -o out.part0.mov",  # not the helios-doit program
])
def test_only_plain_helios_doit_commands_are_forked(tmp_path, command):
    job = make_job(tmp_path / "job")
    spec = json.loads(job.read_text())
    spec["chunks"] = spec["chunks"][:1]
    spec["chunks"][0].update(command=command + " --frame-count 12", frameCount=12)
    spec["metadata"]["totalFrames"] = 12
    job.write_text(json.dumps(spec))
    result = doit(job, "-n", "2", "chunk")
    assert result.returncode == 0, result.stdout + result.stderr
    [line] = renders(job.parent)
    assert "-m doit" not in line


def test_sigkill_of_the_runner_alone_stops_its_forked_renders_before_a_rerun(tmp_path):
    job = make_job(tmp_path / "job", delay=0.1)  # 12 frames a chunk: 1.2 s
    folder = job.parent
    runner = subprocess.Popen([*DOIT, "-n", "2", f"job={job}"], cwd=REPO, text=True, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: (folder / "procs.log").exists() and len(renders(folder)) == 2, what="two forked renders")
    pids = [int(line.split()[0]) for line in renders(folder)]
    os.kill(runner.pid, signal.SIGKILL)  # the main process alone: the workers and renders must follow it
    runner.wait()
    wait_for(lambda: not any(alive(pid) for pid in pids), 10, "the forked renders to die with their runner")
    again = doit(job, "-n", "2")
    assert again.returncode == 0, again.stdout + again.stderr
    assert len(digests(folder)) == 5


def test_a_serial_run_on_a_terminal_forks_its_renders_under_the_live_display(tmp_path):
    job = make_job(tmp_path / "job")
    master, slave = pty.openpty()
    runner = subprocess.Popen([*DOIT, f"job={job}"], cwd=REPO, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave,
                              env={**os.environ, "HELIOS_DOIT_THREADS": "1", "TERM": "xterm", "COLUMNS": "120"})
    os.close(slave)
    shown = b""
    with contextlib.suppress(OSError):  # the terminal closes when the run is over
        while chunk := os.read(master, 65536):
            shown += chunk
    os.close(master)
    assert runner.wait(60) == 0, shown.decode(errors="replace")
    assert b"merge done" in shown  # the live display drew
    lines = renders(job.parent)  # its drawing is no thread that makes the runner exec renders
    assert len(lines) == 4 and all("-m doit" in line for line in lines) and len(set(pids(job.parent))) == 4
