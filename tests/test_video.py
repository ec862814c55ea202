"""Real video end to end: emit a job, render it with doit, stitch, and compare with a direct render."""
from __future__ import annotations

import json
import os
import shlex
import shutil
import stat
import sys
from pathlib import Path

import av
import pytest
from harness import CLI, DOIT, REPO, run
from harness import HELIOS_DOIT as HELIOS_DOIT_PATH
from media import duration, frame_hashes

HELIOS_DOIT = [HELIOS_DOIT_PATH]

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


def audio_samples(path: Path) -> int:
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return 0
        return sum(frame.samples for frame in container.decode(audio=0))


@pytest.fixture
def comp(tmp_path: Path) -> Path:
    path = tmp_path / "render dir" / "comp.py"  # a space, on purpose
    path.parent.mkdir()
    path.write_text(COMPOSITION)
    return path


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A job of 4 chunks (out.mov), rendered and merged once; tests change copies of it."""
    folder = tmp_path_factory.mktemp("rendered") / "render dir"
    folder.mkdir()
    (folder / "comp.py").write_text(COMPOSITION)
    job = emit(folder / "comp.py", "out.mov")
    result = run([*DOIT, "-n", "2", f"job={job}"], REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    return folder


@pytest.fixture(scope="module")
def lossless_chunks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A job of 4 lossless chunks (every frame decodes to what was drawn; merged file out.mkv),
    the chunks rendered but not merged, and a direct render of the same frames (direct.mkv)."""
    folder = tmp_path_factory.mktemp("lossless") / "render dir"
    folder.mkdir()
    (folder / "comp.py").write_text(COMPOSITION)
    job = emit(folder / "comp.py", "out.mkv", "--video-codec", "ffv1")
    direct = run([*HELIOS_DOIT, "render", "comp.py", "-o", "direct.mkv", "--video-codec", "ffv1"], folder)
    assert direct.returncode == 0, direct.stderr
    chunks = run([*CLI, "job", "run", str(job), "--no-merge", "--concurrency", "2"], REPO)
    assert chunks.returncode == 0, chunks.stdout + chunks.stderr
    return folder


def copy_of(folder: Path, tmp_path: Path) -> Path:
    """The job file of a copy of a rendered job's folder (records and outputs as they were)."""
    shutil.copytree(folder, tmp_path / "render dir")
    return tmp_path / "render dir" / "job.json"


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
    assert result.returncode == 2  # doit's code under --continue: the merge could not run
    assert "chunk 2 failed: the command exited 0 but its output is wrong" in result.stdout
    assert "expected 12 frames, found 10" in result.stdout
    assert not (comp.parent / spec["chunks"][2]["outputFile"]).exists()
    assert not (comp.parent / "out.mov").exists()


def test_a_chunk_with_a_frame_too_many_fails(comp):
    job = emit(comp, "out.mov")
    spec = json.loads(job.read_text())
    spec["chunks"][1]["command"] = spec["chunks"][1]["command"].replace("--frame-count 12", "--frame-count 13")
    job.write_text(json.dumps(spec))
    result = run([*CLI, "job", "run", str(job), "--chunk", "1"], REPO)
    assert result.returncode == 1
    assert "chunk 1 failed: the command exited 0 but its output is wrong: out.part1.mov: expected 12 frames, found 13" in result.stdout
    assert not (comp.parent / "out.part1.mov").exists() and not (comp.parent / ".helios-doit/job.json/records/chunk-1.json").exists()


def test_a_job_that_lists_its_chunks_out_of_frame_order_is_merged_in_frame_order(lossless_chunks, tmp_path):
    job = copy_of(lossless_chunks, tmp_path)
    spec = json.loads(job.read_text())
    spec["chunks"] = [spec["chunks"][i] for i in (2, 0, 3, 1)]
    del spec["mergeCommand"]  # the built-in merge of outputFile
    job.write_text(json.dumps(spec))
    result = run([*DOIT, "-n", "2", f"job={job}"], REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert frame_hashes(job.parent / "out.mkv") == frame_hashes(job.parent / "direct.mkv")


def test_a_helios_merge_command_that_lists_parts_out_of_frame_order_is_refused(comp):
    job = emit(comp, "out.mov")
    spec = json.loads(job.read_text())
    spec["mergeCommand"] = spec["mergeCommand"].replace("out.part0.mov out.part1.mov", "out.part1.mov out.part0.mov")
    job.write_text(json.dumps(spec))
    result = run([*CLI, "job", "run", str(job)], REPO)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"helios-doit: {job}: mergeCommand: lists chunk 1's output where chunk 0's belongs (its frames come first), "
        "so the merged video would be out of order; list the chunk outputs in frame order"]
    assert not (comp.parent / ".helios-doit").exists()


@pytest.mark.parametrize("how", ["stream copy", "encoded again"])
def test_a_merge_that_scrambles_the_chunks_is_caught_at_its_seams(lossless_chunks, tmp_path, how):
    job = copy_of(lossless_chunks, tmp_path)
    comp = job.parent / "comp.py"
    spec = json.loads(job.read_text())
    parts = [c["outputFile"] for c in spec["chunks"]]
    scrambled = [parts[i] for i in (0, 2, 1, 3)]  # the right frames, the wrong order
    if how == "stream copy":  # not a merge program helios-doit knows, so only its result can tell
        spec["mergeCommand"] = shlex.join([sys.executable, "-m", "helios_doit", "merge", "out.mkv", *scrambled])
    else:
        import imageio_ffmpeg

        listing = "".join(f"file '{p}'\n" for p in scrambled)
        (comp.parent / "list.txt").write_text(listing)
        spec["mergeCommand"] = shlex.join([imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-f", "concat", "-i",
                                           "list.txt", "-c:v", "libx264", "-crf", "18", "-an", "-y", "out.mkv"])
    job.write_text(json.dumps(spec))
    result = run([*CLI, "job", "run", str(job), "--concurrency", "2"], REPO)
    assert result.returncode == 1
    assert "merge failed: the command exited 0 but its output is wrong: out.mkv: the merged file's" in result.stdout
    expected = ("frames 12-23 are not chunk 1's" if how == "stream copy"
                else "frame 12 is not chunk 1's first frame")  # pictures compared, after a new encoding
    assert expected in result.stdout and "joined out of frame order" in result.stdout
    assert not (comp.parent / "out.mkv").exists()

    (comp.parent / "list.txt").write_text("".join(f"file '{p}'\n" for p in parts))
    spec["mergeCommand"] = spec["mergeCommand"].replace(" ".join(scrambled), " ".join(parts))
    job.write_text(json.dumps(spec))
    result = run([*CLI, "job", "run", str(job)], REPO)  # in frame order, the same merge passes
    assert result.returncode == 0, result.stdout + result.stderr
    merged = frame_hashes(comp.parent / "out.mkv")
    assert merged == frame_hashes(comp.parent / "direct.mkv") if how == "stream copy" else len(merged) == 48


def test_resume_after_deleting_one_chunk_renders_only_it(rendered, tmp_path):
    job = copy_of(rendered, tmp_path)
    comp = job.parent / "comp.py"
    spec = json.loads(job.read_text())
    (comp.parent / spec["chunks"][1]["outputFile"]).unlink()
    result = run([*DOIT, "-n", "2", f"job={job}"], REPO)
    assert result.returncode == 0, result.stderr
    ran = [line for line in result.stdout.splitlines() if line.startswith(".  ")]
    assert ran[0] == ".  chunk:1"
    assert set(ran) <= {".  chunk:1", ".  merge"}
    assert len(frame_hashes(comp.parent / "out.mov")) == 48


def test_seams_report_of_a_job(rendered, tmp_path):
    job = copy_of(rendered, tmp_path)
    comp = job.parent / "comp.py"
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
