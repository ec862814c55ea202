"""Jobs written the way the real Helios CLI writes them (a stand-in `helios` that renders real
video with PyAV, with its job format, unquoted paths, progress lines and its 25 fps bug)."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import av
import pytest
from harness import CLI, DOIT, fake_helios, wait_for


def helios_project(root: Path, **env: str) -> tuple[Path, dict[str, str]]:
    """`helios render comp.html -o renders/final.mp4 --emit-job jobs/job.json --concurrency 3`, as a
    Helios user lays out a project: the job's outputs are `../renders/...`."""
    project = root / "project"
    (project / "jobs").mkdir(parents=True)
    (project / "renders").mkdir()
    (project / "comp.html").write_text("<canvas></canvas>")
    environ = fake_helios(root, **env)
    emitted = subprocess.run(["helios", "render", "comp.html", "-o", "renders/final.mp4", "--emit-job", "jobs/job.json",
                              "--concurrency", "3", "--width", "64", "--height", "48", "--fps", "30", "--duration", "1"],
                             cwd=project, env=environ, capture_output=True, text=True, timeout=60)
    assert emitted.returncode == 0, emitted.stderr
    return project, environ


def frames_and_rate(path: Path) -> tuple[int, float]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return sum(1 for p in container.demux(stream) if p.size), float(stream.average_rate)


def seconds(path: Path) -> float:
    """How long the video lasts, as a player sees it: from its first frame to the end of its last."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        packets = [p for p in container.demux(stream) if p.size]
        return float((max(p.pts + p.duration for p in packets) - min(p.pts for p in packets)) * stream.time_base)


def test_a_helios_job_runs_from_the_project_folder_unchanged_and_resumes(tmp_path):
    project, env = helios_project(tmp_path)
    job = json.loads((project / "jobs" / "job.json").read_text())
    assert job["chunks"][0]["outputFile"].startswith("../renders/temp_")  # as Helios writes it
    assert "outputFile" not in job
    result = subprocess.run([*CLI, "job", "run", "jobs/job.json", "--concurrency", "2"], cwd=project, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert frames_and_rate(project / "renders" / "final.mp4") == (30, 30.0)
    again = subprocess.run([*DOIT, "job=jobs/job.json"], cwd=project, env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    assert "-- chunk:0" in again.stdout and "chunk:0\n" not in again.stdout.replace("-- chunk:0", "")


def test_run_from_elsewhere_the_outputs_outside_the_job_folder_are_one_line(tmp_path):
    project, env = helios_project(tmp_path)
    elsewhere = tmp_path / "elsewhere"  # not a folder that holds the project
    elsewhere.mkdir()
    result = subprocess.run([*CLI, "job", "run", str(project / "jobs" / "job.json")], cwd=elsewhere, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    assert "(and 3 more outputs)" in lines[0] and "project folder" in lines[0] and "--output-root" in lines[0]
    assert not (project / "jobs" / ".helios-doit").exists()  # nothing was run or written


@pytest.mark.parametrize("runner", ["cli", "doit"])
def test_chunks_at_the_wrong_frame_rate_stop_the_run_at_the_first_one(tmp_path, runner):
    project, env = helios_project(tmp_path, HELIOS_FAKE_25FPS="1")  # Helios' canvas path: always 25 fps
    argv = [*CLI, "job", "run", "jobs/job.json"] if runner == "cli" else [*DOIT, "job=jobs/job.json"]
    result = subprocess.run(argv, cwd=project, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    out = result.stdout + result.stderr
    assert ("25 fps, expected 30: the renderer ignored the job's frame rate; --retime (retime=1) remuxes such chunks "
            "to 30 fps without re-encoding") in out, out
    assert "Traceback" not in out
    state = project / "jobs" / ".helios-doit" / "job.json"
    assert not list((state / "records").iterdir())  # never recorded done
    # The first wrong chunk stopped the run: the others were never rendered the same wrong way.
    assert not list((project / "renders").glob("*part_1.mov")) and not list((project / "renders").glob("*part_2.mov"))
    assert not (project / "renders" / "final.mp4").exists()
    # Its output is kept aside as the evidence, not deleted and not merged.
    (evidence,) = (state / "aside").iterdir()
    assert evidence.name.endswith("_part_0.mov") and frames_and_rate(evidence) == (10, 25.0)
    status = subprocess.run([*CLI, "status", "jobs/job.json", "--json"], cwd=project, env=env, capture_output=True,
                            text=True, timeout=60)
    report = json.loads(status.stdout)
    assert report["chunks"][0]["state"] == "failed" and "25 fps" in report["chunks"][0]["message"]
    assert [c["state"] for c in report["chunks"][1:]] == ["pending", "pending"]
    # Fixed renderer: the rerun renders everything, at 30 fps.
    fixed = {**env, "HELIOS_FAKE_25FPS": "0"}
    rerun = subprocess.run([*CLI, "job", "run", "jobs/job.json"], cwd=project, env=fixed, capture_output=True, text=True,
                           timeout=120)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert frames_and_rate(project / "renders" / "final.mp4") == (30, 30.0)


@pytest.mark.parametrize("runner", ["cli", "doit"])
def test_retime_remuxes_chunks_at_the_wrong_frame_rate_into_a_correct_30_fps_video(tmp_path, runner):
    project, env = helios_project(tmp_path, HELIOS_FAKE_25FPS="1")  # Helios' canvas path: always 25 fps
    argv = ([*CLI, "job", "run", "jobs/job.json", "--concurrency", "2", "--retime"] if runner == "cli"
            else [*DOIT, "-n", "2", "job=jobs/job.json", "retime=1"])
    result = subprocess.run(argv, cwd=project, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout + result.stderr
    assert out.count("retimed from 25 fps to 30 fps (timestamps rewritten, not re-encoded)") == 3, out
    final = project / "renders" / "final.mp4"
    assert frames_and_rate(final) == (30, 30.0) and seconds(final) == pytest.approx(1.0, abs=1e-3)
    for part in (project / "renders").glob("*_part_*.mov"):  # the chunks themselves, in place: 10 frames in 1/3 s
        assert frames_and_rate(part) == (10, 30.0) and seconds(part) == pytest.approx(1 / 3, abs=1e-3)
    state = project / "jobs" / ".helios-doit" / "job.json"
    assert not (state / "aside").exists()
    record = json.loads((state / "records" / "chunk-0.json").read_text())
    assert record["retimed"].startswith("retimed from 25 fps to 30 fps")
    assert "retimed from 25 fps to 30 fps" in (state / "logs" / "chunk-0.log").read_text()
    report = json.loads(subprocess.run([*CLI, "status", "jobs/job.json", "--json"], cwd=project, env=env,
                                       capture_output=True, text=True, timeout=60).stdout)
    assert [c["state"] for c in report["chunks"]] == ["done"] * 3 and report["merge"]["state"] == "done"
    assert all(c["retimed"].startswith("retimed from 25 fps") for c in report["chunks"])
    table = subprocess.run([*CLI, "status", "jobs/job.json"], cwd=project, env=env, capture_output=True, text=True,
                           timeout=60).stdout
    assert table.count("retimed from 25 fps to 30 fps") == 3, table
    # Retimed chunks are done like any other: a rerun, with or without the flag, renders nothing.
    again = subprocess.run([*CLI, "job", "run", "jobs/job.json"], cwd=project, env=env, capture_output=True, text=True,
                           timeout=60)
    assert again.returncode == 0 and "Progress: Rendered" not in again.stdout + again.stderr, again.stdout + again.stderr


def test_frames_of_a_running_chunk_show_in_the_progress_file_and_in_status(tmp_path):
    hold = tmp_path / "hold"
    hold.touch()  # the renderer waits after saying "Rendered 5 / 10 frames"
    project, env = helios_project(tmp_path, HELIOS_FAKE_HOLD=str(hold))
    progress = project / "progress.json"
    runner = subprocess.Popen([*CLI, "job", "run", "jobs/job.json", "--chunk", "0", "--progress-json", str(progress)],
                              cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def partial() -> dict | None:
            try:
                snap = json.loads(progress.read_text())
            except (OSError, ValueError):
                return None
            return snap if snap["framesDone"] == 5 else None

        wait_for(lambda: partial() is not None, what="the progress file to show 5 frames")
        assert partial()["runningChunks"] == [{"chunkId": 0, "framesDone": 5, "frames": 10}]
        report = json.loads(subprocess.run([*CLI, "status", "jobs/job.json", "--json"], cwd=project, env=env,
                                           capture_output=True, text=True, timeout=60).stdout)
        chunk = report["chunks"][0]
        assert chunk["state"] == "running" and chunk["framesDone"] == 5 and chunk["note"].startswith("5/10 frames, for")
    finally:
        hold.unlink()
        out, err = runner.communicate(timeout=60)
    assert runner.returncode == 0, out + err
    assert json.loads(progress.read_text())["framesDone"] == 10
