"""Rendering compositions with real PyAV: chunks stand alone, lossless chunks match a direct
render frame for frame, audio chunks add up to a direct render sample for sample, and the job
emitter and the generic planner write jobs the runner accepts."""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import signal
import subprocess
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from harness import wait_for

from helios_doit.cli import cmd_plan, cmd_render
from helios_doit.spec.load import load_job
from helios_doit.video.composition import (
    CompositionError,
    format_number,
    load_composition,
    parse_number,
)
from helios_doit.video.plan import PlanError, emit_job, plan_job, split_frames
from helios_doit.video.render import render, sample_at

REPO = Path(__file__).resolve().parent.parent

COMP = '''
import time
import numpy as np
from PIL import ImageDraw
from helios_doit.video.composition import Composition

comp = Composition(width=160, height=90, fps={fps!r}, duration={duration!r}, sample_rate={sr})

@comp.frame
def draw(f):
    time.sleep({delay})
    rng = np.random.default_rng(f.index)  # detail that differs on every frame
    img = rng.integers(0, 256, (f.height, f.width, 3), dtype=np.uint8)
    x = int(f.progress * (f.width - 20))
    img[20:40, x:x + 20] = (255, 200, 0)
    return img
'''
AUDIO = '''
@comp.audio
def sound(block):
    t = block.times
    left = 0.4 * np.sin(2 * np.pi * (220 + 200 * t) * t)
    right = 0.3 * np.sin(2 * np.pi * 331 * t + 0.5)
    return np.stack([left, right])
'''


def make_comp(folder: Path, name: str = "comp.py", fps: Any = 24, duration: Any = 2.0, sr: int = 48000,
              audio: bool = True, delay: float = 0.0) -> Path:
    path = folder / name
    path.write_text(COMP.format(fps=fps, duration=duration, sr=sr, delay=delay) + (AUDIO if audio else ""))
    return path


def frame_hashes(path: Path) -> list[str]:
    with av.open(str(path)) as container:
        return [hashlib.sha1(_pixels(frame).tobytes()).hexdigest() for frame in container.decode(video=0)]


def _pixels(frame: av.VideoFrame) -> np.ndarray:
    return frame.to_ndarray(format="rgb24") if frame.format.name == "bgr0" else frame.to_ndarray()


def audio_samples(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return np.zeros((0, 2), np.int16)
        return np.concatenate([f.to_ndarray().reshape(-1, 2) for f in container.decode(audio=0)])


def cli(argv: list[str], add=cmd_render.add_arguments, run=cmd_render.run) -> int:
    parser = argparse.ArgumentParser(prog="helios-doit")
    add(parser)
    return run(parser.parse_args(argv))


# --- one chunk ----------------------------------------------------------------------------------

def test_a_chunk_starts_on_a_keyframe_at_time_zero(tmp_path: Path) -> None:
    comp = make_comp(tmp_path)
    stats = render(comp, tmp_path / "part.mov", start_frame=10, frame_count=12)
    assert (stats.frame_count, stats.total_frames, stats.audio_codec) == (12, 48, "pcm_s16le")
    with av.open(str(tmp_path / "part.mov")) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        assert (video.codec_context.width, video.codec_context.height) == (160, 90)
        assert audio.codec_context.name == "pcm_s16le"
        assert video.time_base == Fraction(1, 24)
        packets = [p for p in container.demux(video) if p.size]
    assert len(packets) == 12
    assert packets[0].is_keyframe
    assert [p.pts for p in packets] == list(range(12))
    assert [p.dts for p in packets] == list(range(12))  # no B-frames: stream copy can concatenate
    with av.open(str(tmp_path / "part.mov")) as container:
        first = next(p for p in container.demux(audio=0) if p.size)
    assert first.pts == 0
    assert len(audio_samples(tmp_path / "part.mov")) == sample_at(22, Fraction(24), 48000) - sample_at(10, Fraction(24), 48000)
    assert not list(tmp_path.glob(".*partial"))


def test_a_composition_without_audio_has_no_audio_stream(tmp_path: Path) -> None:
    stats = render(make_comp(tmp_path, audio=False), tmp_path / "out.mp4", frame_count=5)
    with av.open(str(tmp_path / "out.mp4")) as container:
        assert not container.streams.audio
    assert stats.audio_codec is None and stats.audio_samples == 0


def test_flags_override_the_composition_defaults(tmp_path: Path) -> None:
    stats = render(make_comp(tmp_path), tmp_path / "out.mkv", width=96, height=54, fps=10, duration=1.2,
                   video_codec="ffv1")
    assert (stats.width, stats.height, stats.total_frames, stats.frame_count) == (96, 54, 12, 12)
    assert len(frame_hashes(tmp_path / "out.mkv")) == 12


# --- chunks against a direct render -------------------------------------------------------------

@pytest.mark.parametrize(("codec", "ext", "quality"), [("ffv1", ".mkv", None), ("libx264", ".mov", 0)])
def test_lossless_chunks_decode_to_the_frames_of_a_direct_render(tmp_path: Path, codec: str, ext: str,
                                                                 quality: int | None) -> None:
    comp = make_comp(tmp_path)
    render(comp, tmp_path / f"direct{ext}", video_codec=codec, quality=quality)
    render(comp, tmp_path / f"a{ext}", frame_count=12, video_codec=codec, quality=quality)
    render(comp, tmp_path / f"b{ext}", start_frame=12, frame_count=12, video_codec=codec, quality=quality)
    direct = frame_hashes(tmp_path / f"direct{ext}")
    assert len(direct) == 48
    assert frame_hashes(tmp_path / f"a{ext}") + frame_hashes(tmp_path / f"b{ext}") == direct[:24]
    with av.open(str(tmp_path / f"a{ext}")) as container:
        expected = "bgr0" if codec == "ffv1" else "yuv444p"
        assert container.streams.video[0].codec_context.pix_fmt == expected


def test_ffv1_gives_back_the_drawn_pixels(tmp_path: Path) -> None:
    path = make_comp(tmp_path)
    render(path, tmp_path / "out.mkv", start_frame=30, frame_count=3, video_codec="ffv1")
    comp = load_composition(path)
    with av.open(str(tmp_path / "out.mkv")) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    for k, pixels in enumerate(decoded):
        assert np.array_equal(pixels, comp.draw(30 + k, width=160, height=90, fps=Fraction(24), total_frames=48))


@pytest.mark.parametrize("fps", [24, 30, 29.97])
@pytest.mark.parametrize("sr", [48000, 44100])
def test_audio_of_chunks_adds_up_to_a_direct_render(tmp_path: Path, fps: Any, sr: int) -> None:
    comp = make_comp(tmp_path, fps=fps, duration=1.5, sr=sr)
    direct = render(comp, tmp_path / "direct.mov")
    cuts = [0, 7, 19, 20, direct.total_frames]
    parts = []
    for i, (start, end) in enumerate(zip(cuts, cuts[1:])):
        stats = render(comp, tmp_path / f"part{i}.mov", start_frame=start, frame_count=end - start)
        parts.append(audio_samples(tmp_path / f"part{i}.mov"))
        assert len(parts[-1]) == stats.audio_samples
    whole = audio_samples(tmp_path / "direct.mov")
    assert len(whole) == direct.audio_samples == sample_at(direct.total_frames, parse_number(fps), sr)
    assert np.array_equal(np.concatenate(parts), whole)


def test_sample_boundaries_are_exact_rationals() -> None:
    fps = parse_number(29.97)
    assert fps == Fraction(2997, 100)
    assert [sample_at(i, fps, 48000) for i in range(4)] == [0, 1601, 3203, 4804]
    assert sample_at(2997, fps, 48000) == 100 * 48000  # 100 s, to the sample
    assert format_number(fps) == "29.97" and format_number(Fraction(30000, 1001)) == "30000/1001"


# --- emitting a job -----------------------------------------------------------------------------

def test_emit_job_splits_like_helios() -> None:
    job = emit_job("comp.py", "out.mp4", concurrency=4, fps=30, width=320, height=180, duration=Fraction(1, 3))
    assert [(c["startFrame"], c["frameCount"]) for c in job["chunks"]] == [(0, 3), (3, 3), (6, 3), (9, 1)]
    assert split_frames(0, 9, 4) == [(0, 3), (3, 3), (6, 3)]  # no empty chunk
    assert split_frames(5, 2, 4) == [(5, 1), (6, 1)]
    assert job["metadata"] == {"totalFrames": 10, "fps": 30, "width": 320, "height": 180, "duration": 0.3333333333333333}


def test_emitted_job_quotes_paths_and_loads(tmp_path: Path) -> None:
    make_comp(tmp_path, name="my comp.py")
    (tmp_path / "final renders").mkdir()
    code = cli([str(tmp_path / "my comp.py"), "-o", str(tmp_path / "final renders" / "cut 1.mp4"), "--fps", "29.97",
                "--quality", "18", "--audio-codec", "aac", "--emit-job", str(tmp_path / "job.json"), "--concurrency", "3"])
    assert code == 0
    job = json.loads((tmp_path / "job.json").read_text())
    parts = [f"final renders/cut 1.part{i}.mov" for i in range(3)]
    assert [c["outputFile"] for c in job["chunks"]] == parts
    assert [(c["startFrame"], c["frameCount"]) for c in job["chunks"]] == [(0, 20), (20, 20), (40, 20)]
    assert job["inputs"] == ["my comp.py"] and job["outputFile"] == "final renders/cut 1.mp4"
    assert shlex.split(job["mergeCommand"]) == ["helios-doit", "merge", "final renders/cut 1.mp4", *parts,
                                                "--audio-codec", "aac"]
    assert shlex.split(job["chunks"][1]["command"]) == [
        "helios-doit", "render", "my comp.py", "-o", parts[1], "--start-frame", "20", "--frame-count", "20",
        "--width", "160", "--height", "90", "--fps", "29.97", "--duration", "2", "--video-codec", "libx264",
        "--quality", "18", "--audio-codec", "pcm_s16le"]
    loaded = load_job(tmp_path / "job.json")
    assert loaded.merge_output == tmp_path / "final renders" / "cut 1.mp4"
    assert loaded.spec.metadata.total_frames == 60


def test_emitted_ffv1_chunks_go_in_mkv_and_a_range_is_kept(tmp_path: Path) -> None:
    make_comp(tmp_path)
    code = cli([str(tmp_path / "comp.py"), "-o", str(tmp_path / "out.mkv"), "--video-codec", "ffv1",
                "--start-frame", "8", "--frame-count", "10", "--emit-job", str(tmp_path / "job.json"), "--concurrency", "4"])
    assert code == 0
    job = load_job(tmp_path / "job.json").spec
    assert [(c.start_frame, c.frame_count, c.output_file) for c in job.chunks] == [
        (8, 3, "out.part0.mkv"), (11, 3, "out.part1.mkv"), (14, 3, "out.part2.mkv"), (17, 1, "out.part3.mkv")]
    assert job.metadata.total_frames == 10


@pytest.mark.parametrize("example", ["orbit", "beeps"])
def test_bundled_example_jobs_are_what_the_emitter_writes(example: str) -> None:
    folder = REPO / "examples" / example
    comp = load_composition(folder / "composition.py")
    output = {"orbit": "orbit.mp4", "beeps": "beeps.mov"}[example]
    expected = emit_job("composition.py", output, concurrency=4, fps=comp.fps, width=comp.width,
                        height=comp.height, duration=comp.duration)
    assert json.loads((folder / "job.json").read_text()) == expected
    assert load_job(folder / "job.json").spec.metadata.total_frames == 120
    assert comp.has_audio == (example == "beeps")


def test_examples_draw_at_any_size(tmp_path: Path) -> None:
    stats = render(REPO / "examples" / "beeps" / "composition.py", tmp_path / "b.mov", width=320, height=180,
                   start_frame=28, frame_count=4)
    assert (stats.width, stats.height, stats.audio_samples) == (320, 180, 4 * 1600)
    comp = load_composition(REPO / "examples" / "orbit" / "composition.py")
    assert comp.draw(5, width=200, height=300, fps=Fraction(30), total_frames=120).shape == (300, 200, 3)


# --- the generic planner ------------------------------------------------------------------------

def test_plan_fills_tokens() -> None:
    job = plan_job(10, 3, "blender -b scene.blend -s {start} -e {end} -o {output} -a # {id} {count} {{x}}",
                   "parts/shot {id:02d}.mkv", start=1, fps=24, width=320, height=180)
    assert [c["command"] for c in job["chunks"]] == [
        "blender -b scene.blend -s 1 -e 4 -o 'parts/shot 00.mkv' -a # 0 4 {x}",
        "blender -b scene.blend -s 5 -e 8 -o 'parts/shot 01.mkv' -a # 1 4 {x}",
        "blender -b scene.blend -s 9 -e 10 -o 'parts/shot 02.mkv' -a # 2 2 {x}"]
    assert job["outputFile"] == "output.mkv"
    assert job["mergeCommand"] == "helios-doit merge output.mkv 'parts/shot 00.mkv' 'parts/shot 01.mkv' 'parts/shot 02.mkv'"
    assert job["metadata"]["totalFrames"] == 10
    custom = plan_job(4, 2, "r {output}", "p{start}.mkv", merge_command="cat {outputs} > {output}", output_file="all.mkv")
    assert custom["mergeCommand"] == "cat p0.mkv p2.mkv > all.mkv"
    with pytest.raises(PlanError, match="uses {output}; name the merged file with --output-file"):
        plan_job(4, 2, "r {output}", "p{id}.mkv", merge_command="cat {outputs} > {output}")


def test_plan_cli_writes_a_job_the_runner_loads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "scene.blend").write_text("scene")
    args = ["--frames", "8", "--concurrency", "3", "--command-template", "render {start} {end} {output}",
            "--output-template", "parts/{id}.mkv", "--input", str(tmp_path / "scene.blend")]
    assert cli([*args, "-o", str(tmp_path / "job.json")], cmd_plan.add_arguments, cmd_plan.run) == 0
    job = load_job(tmp_path / "job.json")
    assert [c.frame_count for c in job.spec.chunks] == [3, 3, 2]
    assert cli(args, cmd_plan.add_arguments, cmd_plan.run) == 0
    assert json.loads(capsys.readouterr().out)["chunks"][2]["command"] == "render 6 7 parts/2.mkv"


@pytest.mark.parametrize(("change", "message"), [
    (["--command-template", "render {frame}"], "unknown token {frame}"),
    (["--command-template", "echo ${HOME}"], "unknown token {HOME}"),
    (["--command-template", "render } {output}"], "unmatched '}'"),
    (["--output-template", "part.mkv"], "include {id} or {start}"),
    (["--output-template", "part{output}.mkv"], "unknown token {output}"),
    (["--frames", "ten"], "--frames must be a whole number"),
    (["--concurrency", "0"], "--concurrency must be at least 1"),
])
def test_plan_errors_are_one_line(change: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    args = {"--frames": "8", "--concurrency": "2", "--command-template": "r {output}", "--output-template": "p{id}.mkv"}
    args[change[0]] = change[1]
    assert cli([x for pair in args.items() for x in pair], cmd_plan.add_arguments, cmd_plan.run) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("helios-doit: ") and message in err


# --- bad input ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("argv", "message"), [
    (["missing.py", "-o", "out.mp4"], "no such composition file"),
    (["comp.py", "-o", "out.mp4", "--video-codec", "h266"], "unknown video codec 'h266'"),
    (["comp.py", "-o", "out.mp4", "--audio-codec", "mp3"], "unknown audio codec"),
    (["comp.py", "-o", "out.mp4", "--start-frame", "40", "--frame-count", "9"], "frames 40-48 are outside the render's 48 frames"),
    (["comp.py", "-o", "out.mp4", "--start-frame", "48"], "outside the render's 48 frames"),
    (["comp.py", "-o", "out.mov", "--video-codec", "ffv1"], "ffv1 cannot go in .mov; use .mkv"),
    (["comp.py", "-o", "out.mkv", "--video-codec", "ffv1", "--quality", "0"], "--quality does not apply to ffv1"),
    (["comp.py", "-o", "out.mp4", "--quality", "60"], "CRF from 0 to 51"),
    (["comp.py", "-o", "out.mp4", "--fps", "fast"], "--fps must be a number"),
    (["comp.py", "-o", "out.mp4", "--width", "161"], "needs an even width and height"),
    (["comp.py", "-o", "out.avi"], "unknown container .avi"),
    (["comp.py", "-o", "out.mp4", "--concurrency", "2"], "--concurrency only applies with --emit-job"),
    (["comp.py", "-o", "/var/tmp/helios-doit-test/out.mp4", "--emit-job", "job.json"], "share no folder but /"),
    (["comp.py", "-o", "out.mp4", "--emit-job", "job.json", "--concurrency", "0"], "--concurrency must be at least 1"),
    (["nested.py", "-o", "out.mp4"], "defines 2 Compositions (a, b)"),
    (["empty.py", "-o", "out.mp4"], "defines no Composition"),
    (["broken.py", "-o", "out.mp4"], "broken.py:2: syntax error"),
    (["wrongsize.py", "-o", "out.mp4"], "frame 0: the frame function returned a 10x10 image"),
    (["sub", "-o", "out.mp4"], "is not a file"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str], argv: list[str],
                                                         message: str) -> None:
    work = tmp_path / "work"
    work.mkdir()
    make_comp(work)
    (work / "sub").mkdir()
    (work / "nested.py").write_text("from helios_doit.video.composition import Composition\na = Composition()\nb = Composition()\n")
    (work / "empty.py").write_text("x = 1\n")
    (work / "broken.py").write_text("x = 1\ndef (:\n")
    (work / "wrongsize.py").write_text("from PIL import Image\nfrom helios_doit.video.composition import Composition\n"
                                       "comp = Composition(width=32, height=32)\ncomp.frame(lambda f: Image.new('RGB', (10, 10)))\n")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    monkeypatch.chdir(work)
    assert cli(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("helios-doit: ") and message in err, err
    assert sorted(p.name for p in tmp_path.rglob("*") if "__pycache__" not in p.parts) == before


def test_a_failing_composition_exits_1_and_leaves_no_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "comp.py"
    path.write_text(COMP.format(fps=24, duration=1, sr=48000, delay=0).replace("time.sleep(0)", "assert f.index < 5, 'boom'"))
    assert cli([str(path), "-o", str(tmp_path / "out.mp4")]) == 1
    assert capsys.readouterr().err.splitlines()[-1] == f"helios-doit: {path}: render failed: AssertionError: boom"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "__pycache__") == ["comp.py"]


def test_threads_can_be_pinned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    comp = make_comp(tmp_path)
    monkeypatch.setenv("HELIOS_DOIT_THREADS", "1")
    assert render(comp, tmp_path / "one.mp4", frame_count=4).frame_count == 4
    monkeypatch.setenv("HELIOS_DOIT_THREADS", "many")
    assert cli([str(comp), "-o", str(tmp_path / "bad.mp4")]) == 2
    assert "HELIOS_DOIT_THREADS must be a whole number" in capsys.readouterr().err
    assert not (tmp_path / "bad.mp4").exists()


def open_files(pid: int) -> list[str]:
    """What the process' descriptors point at now (a file being written without a name shows as
    `<folder>/#<inode> (deleted)`)."""
    found = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            found.append(os.readlink(fd))
        except OSError:  # closed meanwhile
            continue
    return found


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_stopped_or_killed_render_leaves_nothing_behind(tmp_path: Path, sig: signal.Signals) -> None:
    """The file being written has no name until it is complete: whatever ends the render, the
    folder holds what it held before, and no name someone planted there is written through."""
    comp = make_comp(tmp_path, delay=0.05)
    (tmp_path / ".out.mov.partial").symlink_to(tmp_path / "precious.txt")  # a trap for a fixed temp name
    (tmp_path / "precious.txt").write_text("precious\n")
    before = sorted(p.name for p in tmp_path.iterdir())
    code = ("import sys, argparse; from helios_doit.cli.cmd_render import add_arguments, run; "
            "p = argparse.ArgumentParser(); add_arguments(p); sys.exit(run(p.parse_args(sys.argv[1:])))")
    proc = subprocess.Popen([sys.executable, "-c", code, str(comp), "-o", str(tmp_path / "out.mov")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: any(f"{tmp_path}/#" in target and target.endswith("(deleted)") for target in open_files(proc.pid)),
             what="the render to write its nameless file")
    proc.send_signal(sig)
    assert proc.wait(20) == (143 if sig == signal.SIGTERM else -signal.SIGKILL)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert (tmp_path / "precious.txt").read_text() == "precious\n"


def test_composition_errors_name_the_fix(tmp_path: Path) -> None:
    with pytest.raises(CompositionError, match="channels must be an integer from 1 to 8"):
        make = tmp_path / "c.py"
        make.write_text("from helios_doit.video.composition import Composition\nc = Composition(channels=9)\n")
        load_composition(make)
    nodraw = tmp_path / "nodraw.py"
    nodraw.write_text("from helios_doit.video.composition import Composition\nc = Composition()\n")
    with pytest.raises(CompositionError, match="no frame function; decorate one with @comp.frame"):
        load_composition(nodraw)


# --- Helios' own layout, and where a job file goes ---------------------------------------------

def test_helios_layout_is_emitted_and_runs_from_the_project_folder(tmp_path: Path) -> None:
    """`render -o renders/final.mp4 --emit-job jobs/job.json`: outputs as `../renders/...`, as Helios
    writes them; one line says where the job runs from."""
    project = tmp_path / "project"
    (project / "jobs").mkdir(parents=True)
    (project / "renders").mkdir()
    make_comp(project, duration=1.0)
    cli_ = [sys.executable, "-m", "helios_doit"]
    emitted = subprocess.run([*cli_, "render", "comp.py", "-o", "renders/final.mp4", "--emit-job", "jobs/job.json",
                              "--concurrency", "2"], cwd=project, capture_output=True, text=True, timeout=60)
    assert emitted.returncode == 0, emitted.stderr
    assert emitted.stdout.splitlines() == [
        f"wrote {project / 'jobs' / 'job.json'}: 2 chunks",
        f"the job's outputs are outside its folder {project / 'jobs'} (Helios' layout): run it from {project}, the folder "
        f"that holds both (cd {project} && helios-doit job run jobs/job.json), or give --output-root {project}"]
    job = json.loads((project / "jobs" / "job.json").read_text())
    assert job["outputFile"] == "../renders/final.mp4" and job["inputs"] == ["../comp.py"]
    assert [c["outputFile"] for c in job["chunks"]] == ["../renders/final.part0.mov", "../renders/final.part1.mov"]
    ran = subprocess.run([*cli_, "job", "run", "jobs/job.json", "--concurrency", "2"], cwd=project, capture_output=True,
                         text=True, timeout=120)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    with av.open(str(project / "renders" / "final.mp4")) as merged:
        assert sum(1 for p in merged.demux(merged.streams.video[0]) if p.size) == 24


def refused_job_place(folder: Path, flag: str, place: str) -> str:
    """The one line `plan -o PLACE` or `render --emit-job PLACE` says, with nothing printed or written."""
    make_comp(folder)
    argv = (["plan", "--frames", "8", "--concurrency", "2", "--command-template", "r {output}", "--output-template",
             "p{id}.mkv", "-o", place] if flag == "plan" else
            ["render", "comp.py", "-o", "out.mp4", "--emit-job", place])
    before = sorted(folder.rglob("*"))
    result = subprocess.run([sys.executable, "-m", "helios_doit", *argv], cwd=folder, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2 and result.stdout == ""
    assert sorted(folder.rglob("*")) == before  # no folder "s3:", no file in the folder named
    [line] = result.stderr.splitlines()
    return line


@pytest.mark.parametrize("flag", ["plan", "render"])
def test_a_job_file_is_written_here_never_to_a_url(tmp_path: Path, flag: str) -> None:
    line = refused_job_place(tmp_path, flag, "s3://renders/shot1/job.json")
    assert "s3://renders/shot1/job.json: " in line and "writes a local file" in line, line
    assert "then upload it (e.g. aws s3 cp job.json s3://renders/shot1/job.json)" in line, line


@pytest.mark.parametrize("flag", ["plan", "render"])
def test_a_job_file_named_as_a_folder_is_one_line_naming_the_file_to_give(tmp_path: Path, flag: str) -> None:
    (tmp_path / "jobs").mkdir()
    line = refused_job_place(tmp_path, flag, "jobs")
    assert "jobs: is a folder; name the job file in it" in line and "jobs/job.json" in line, line
