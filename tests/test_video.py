"""Real video end to end: emit a job, render it with doit, stitch, and compare with a direct render."""
from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import av
import pytest

from conftest import REPO

BIN = Path(sys.executable).parent
HELIOS_DOIT = [str(BIN / "helios-doit")]
DOIT = [sys.executable, "-m", "doit", "-f", str(REPO / "dodo.py")]

COMPOSITION = '''
import numpy as np
from helios_doit.video.composition import Composition

comp = Composition(width=160, height=90, fps=24, duration=2)

@comp.frame
def draw(f):
    img = np.zeros((f.height, f.width, 3), np.uint8)
    img[..., 0] = (f.index * 5) % 256
    img[:, : f.index % f.width + 1, 1] = 200
    img[f.index % f.height, :, 2] = 255
    return img

@comp.audio
def sound(block):
    tone = 0.3 * np.sin(2 * np.pi * 440 * block.times)
    return np.stack([tone] * block.channels).astype(np.float32)
'''


def run(argv: list[str], cwd: Path, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=300, **kw)


def frame_hashes(path: Path) -> list[str]:
    with av.open(str(path)) as container:
        return [hashlib.sha256(f.to_ndarray(format="rgb24").tobytes()).hexdigest() for f in container.decode(video=0)]


def audio_samples(path: Path) -> int:
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return 0
        return sum(frame.samples for frame in container.decode(audio=0))


def duration(path: Path) -> float:
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        frames = sum(1 for p in container.demux(video) if p.size)
        return frames / float(video.average_rate)


@pytest.fixture
def comp(tmp_path: Path) -> Path:
    path = tmp_path / "render dir" / "comp.py"  # a space, on purpose
    path.parent.mkdir()
    path.write_text(COMPOSITION)
    return path


def emit(comp: Path, output: str, *flags: str, concurrency: int = 4) -> Path:
    job = comp.parent / "job.json"
    result = run([*HELIOS_DOIT, "render", comp.name, "-o", output, *flags, "--emit-job", job.name,
                  "--concurrency", str(concurrency)], comp.parent)
    assert result.returncode == 0, result.stderr
    return job


def test_emit_render_merge_gives_every_frame_and_the_right_duration(comp):
    job = emit(comp, "final cut.mp4")
    spec = json.loads(job.read_text())
    assert [c["frameCount"] for c in spec["chunks"]] == [12, 12, 12, 12]
    result = run([*DOIT, "-n", "4", f"job={job}"], REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    final = comp.parent / "final cut.mp4"
    assert len(frame_hashes(final)) == 48
    assert duration(final) == pytest.approx(2.0)
    with av.open(str(final)) as container:
        assert container.streams.audio[0].codec_context.name == "aac"


@pytest.mark.parametrize("codec,ext,quality", [("ffv1", "mkv", []), ("libx264", "mov", ["--quality", "0"])])
def test_lossless_chunks_stitch_to_exactly_a_direct_render(comp, codec, ext, quality):
    flags = ["--video-codec", codec, *quality]
    job = emit(comp, f"stitched.{ext}", *flags, concurrency=3)
    assert run([*DOIT, "-n", "2", f"job={job}"], REPO).returncode == 0
    direct = run([*HELIOS_DOIT, "render", comp.name, "-o", f"direct.{ext}", *flags], comp.parent)
    assert direct.returncode == 0, direct.stderr
    stitched, single = comp.parent / f"stitched.{ext}", comp.parent / f"direct.{ext}"
    assert frame_hashes(stitched) == frame_hashes(single)
    assert audio_samples(stitched) == audio_samples(single) == 2 * 48000


def test_a_chunk_that_exits_0_with_too_few_frames_fails_and_nothing_is_merged(comp):
    job = emit(comp, "out.mov")
    spec = json.loads(job.read_text())
    spec["chunks"][2]["command"] = spec["chunks"][2]["command"].replace("--frame-count 12", "--frame-count 10")
    job.write_text(json.dumps(spec))
    result = run([*DOIT, "-n", "2", "--continue", f"job={job}"], REPO)
    assert result.returncode != 0
    assert "chunk 2 failed: the command exited 0 but its output is wrong" in result.stdout
    assert "expected 12 frames, found 10" in result.stdout
    assert not (comp.parent / spec["chunks"][2]["outputFile"]).exists()
    assert not (comp.parent / "out.mov").exists()


def test_resume_after_deleting_one_chunk_renders_only_it(comp):
    job = emit(comp, "out.mov")
    assert run([*DOIT, "-n", "2", f"job={job}"], REPO).returncode == 0
    spec = json.loads(job.read_text())
    (comp.parent / spec["chunks"][1]["outputFile"]).unlink()
    result = run([*DOIT, "-n", "2", f"job={job}"], REPO)
    assert result.returncode == 0, result.stderr
    ran = [line for line in result.stdout.splitlines() if line.startswith(".  ")]
    assert ran[0] == ".  chunk:1"
    assert set(ran) <= {".  chunk:1", ".  merge"}
    assert len(frame_hashes(comp.parent / "out.mov")) == 48


def test_seams_report_of_a_job(comp):
    job = emit(comp, "out.mov")
    assert run([*DOIT, "-n", "2", f"job={job}"], REPO).returncode == 0
    result = run([*HELIOS_DOIT, "seams", str(job), "-o", "seams.png"], comp.parent)
    assert result.returncode == 0, result.stderr
    from PIL import Image

    with Image.open(comp.parent / "seams.png") as image:
        assert image.format == "PNG"
        three_seams = image.size
    job2 = emit(comp, "out2.mov", concurrency=2)
    assert run([*DOIT, f"job={job2}"], REPO).returncode == 0
    assert run([*HELIOS_DOIT, "seams", str(job2), "-o", "one.png"], comp.parent).returncode == 0
    with Image.open(comp.parent / "one.png") as image:
        assert image.size[0] == three_seams[0]
        assert image.size[1] < three_seams[1]  # a row per seam


STAND_IN_HELIOS = '''#!/bin/sh
# A stand-in for the Helios CLI: `helios render INPUT -o OUT ...` renders our composition instead.
echo "helios $*" >> helios-calls.log
[ "$1" = render ] || { echo "helios stand-in: only render" >&2; exit 9; }
shift; shift
keep=""
while [ $# -gt 0 ]; do
  case "$1" in --mode) shift 2;; *) keep="$keep $1"; shift;; esac
done
exec helios-doit render "$HELIOS_STANDIN_COMPOSITION" $keep
'''


def test_a_helios_job_runs_resumes_and_merges_through_helios_doit_merge(comp, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    helios = bin_dir / "helios"
    helios.write_text(STAND_IN_HELIOS)
    helios.chmod(helios.stat().st_mode | stat.S_IEXEC)
    folder = comp.parent
    chunks = [
        {"id": i, "startFrame": i * 16, "frameCount": 16, "outputFile": f"temp_1700000000000_ab12_part_{i}.mov",
         "command": f"helios render comp.html -o temp_1700000000000_ab12_part_{i}.mov --start-frame {i * 16} "
                    f"--frame-count 16 --width 160 --height 90 --fps 24 --mode canvas --audio-codec pcm_s16le"}
        for i in range(3)
    ]
    spec = {"metadata": {"totalFrames": 48, "fps": 24, "width": 160, "height": 90, "duration": 2},
            "chunks": chunks,
            "mergeCommand": "helios merge output.mp4 " + " ".join(c["outputFile"] for c in chunks)}
    job = folder / "helios-job.json"
    job.write_text(json.dumps(spec))
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "HELIOS_STANDIN_COMPOSITION": str(comp)}

    first = run([*DOIT, "-n", "3", f"job={job}", "merge=builtin"], REPO, env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert len(frame_hashes(folder / "output.mp4")) == 48
    calls = (folder / "helios-calls.log").read_text().splitlines()
    assert len(calls) == 3 and all(c.startswith("helios render comp.html") for c in calls)

    (folder / chunks[0]["outputFile"]).unlink()
    again = run([*DOIT, "-n", "3", f"job={job}", "merge=builtin"], REPO, env=env)
    assert again.returncode == 0, again.stderr
    assert len((folder / "helios-calls.log").read_text().splitlines()) == 4
    assert len(frame_hashes(folder / "output.mp4")) == 48
