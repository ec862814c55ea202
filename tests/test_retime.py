"""`--retime`: chunks whose frame rate is all that is wrong (Helios' canvas path writes 25 fps
whatever the job says) remuxed to the job's rate without re-encoding; anything else still refused.
Real jobs whose chunk commands write real video (and PCM audio) with PyAV."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from harness import CLI, DOIT

#: A chunk renderer with Helios' bug on request: `clip.py OUT START COUNT RATE AUDIO_SECONDS`
#: writes COUNT frames at RATE fps and AUDIO_SECONDS of a tone (0: no audio stream).
CLIP = r'''
import sys
from fractions import Fraction
import av, numpy as np
out, start, count, rate, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), Fraction(sys.argv[4]), float(sys.argv[5])
with av.open(out, "w", format="mov") as container:
    video = container.add_stream("libx264", rate=rate)
    video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
    video.options = {"preset": "ultrafast", "bf": "0"}
    sound = container.add_stream("pcm_s16le", rate=48000, layout="stereo") if seconds else None
    for k in range(count):
        picture = np.full((48, 64, 3), (start + k) * 9 % 256, dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
        frame.pts = k
        container.mux(video.encode(frame))
    container.mux(video.encode(None))
    if sound is not None:
        samples = round(seconds * 48000)
        tone = (np.sin(np.arange(samples) * 0.05) * 8000).astype(np.int16)
        block = av.AudioFrame.from_ndarray(np.repeat(tone[:, None], 2, axis=1).reshape(1, -1), format="s16", layout="stereo")
        block.sample_rate, block.pts = 48000, 0
        container.mux(sound.encode(block))
        container.mux(sound.encode(None))
'''

FRAMES = 10  # per chunk; the job is 30 fps


def make_job(folder: Path, rate: str = "25", audio: str = "job", counts: tuple[int, int] = (FRAMES, FRAMES)) -> Path:
    """Two chunks of 10 frames written at `rate`, with audio lasting as long as the job's frames
    (`job`), as the renderer's own frames (`own`), or none; merged by the built-in stitcher."""
    folder.mkdir()
    (folder / "clip.py").write_text(CLIP)
    chunks = []
    for i, count in enumerate(counts):
        seconds = {"job": FRAMES / 30, "own": count / float(rate), "none": 0}[audio]
        chunks.append({"id": i, "startFrame": i * FRAMES, "frameCount": FRAMES, "outputFile": f"part{i}.mov",
                       "command": f"{sys.executable} clip.py part{i}.mov {i * FRAMES} {count} {rate} {seconds}"})
    job = {"metadata": {"totalFrames": 2 * FRAMES, "fps": 30, "width": 64, "height": 48, "duration": 2 * FRAMES / 30},
           "chunks": chunks, "outputFile": "out.mov"}
    (folder / "job.json").write_text(json.dumps(job))
    return folder / "job.json"


def run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120)


def timing(path: Path) -> tuple[int, float, float, list[int]]:
    """Video frames, frame rate, seconds the video lasts, and audio samples per stream."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        packets = [p for p in container.demux(stream) if p.size]
        span = float((max(p.pts + p.duration for p in packets) - min(p.pts for p in packets)) * stream.time_base)
        rate = float(stream.average_rate)
    with av.open(str(path)) as container:
        samples = [sum(frame.samples for frame in container.decode(audio=k)) for k in range(len(container.streams.audio))]
    return len(packets), rate, span, samples


def audio_of(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.concatenate([frame.to_ndarray().reshape(-1) for frame in container.decode(audio=0)])


@pytest.mark.parametrize("entry", ["cli", "doit"])
def test_chunks_with_audio_of_the_jobs_length_are_retimed_and_their_audio_kept_sample_for_sample(tmp_path, entry):
    job = make_job(tmp_path / "job")
    argv = ([*CLI, "job", "run", str(job), "--retime"] if entry == "cli" else [*DOIT, f"job={job}", "retime=1"])
    result = run(argv, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr.count("retimed from 25 fps to 30 fps") == 2, result.stderr
    for i in range(2):
        frames, rate, span, samples = timing(job.parent / f"part{i}.mov")
        assert (frames, rate, samples) == (FRAMES, 30.0, [16000]) and span == pytest.approx(FRAMES / 30, abs=1e-3)
    frames, rate, span, samples = timing(job.parent / "out.mov")
    assert (frames, rate, samples) == (20, 30.0, [32000]) and span == pytest.approx(20 / 30, abs=1e-3)
    # Stream copies both: the audio is the renderer's, sample for sample, in frame order.
    written = run([sys.executable, "clip.py", "again.mov", "0", str(FRAMES), "25", str(FRAMES / 30)], job.parent)
    assert written.returncode == 0, written.stderr
    assert np.array_equal(audio_of(job.parent / "part0.mov"), audio_of(job.parent / "again.mov"))


def test_audio_that_followed_the_wrong_clock_is_refused_with_or_without_retime(tmp_path):
    job = make_job(tmp_path / "job", audio="own")  # 10 frames and 0.4 s of audio, for a job of 10 frames in 1/3 s
    for flag in ([], ["--retime"]):
        result = run([*CLI, "job", "run", str(job), *flag], tmp_path)
        assert result.returncode == 1
        out = result.stdout + result.stderr
        assert "part0.mov: 25 fps, expected 30: the renderer ignored the job's frame rate" in out, out
        assert ("--retime cannot fix it: its audio lasts 0.400 s, not the 0.333 s of 10 frames at 30 fps" in out) == bool(flag), out
        assert "remuxes such chunks" not in out and "retimed from" not in out
    (evidence, *_) = sorted((job.parent / ".helios-doit" / "job.json" / "aside").iterdir())
    assert timing(evidence)[:2] == (FRAMES, 25.0)  # kept as the renderer wrote it


def test_anything_else_wrong_is_still_refused_and_the_chunk_kept_as_written(tmp_path):
    job = make_job(tmp_path / "job", audio="none", counts=(FRAMES + 1, FRAMES))  # chunk 0: one frame too many
    result = run([*CLI, "job", "run", str(job), "--retime"], tmp_path)
    assert result.returncode == 1
    out = result.stdout + result.stderr
    assert "part0.mov: expected 10 frames, found 11" in out and "retimed" not in out, out
    (evidence,) = (job.parent / ".helios-doit" / "job.json" / "aside").iterdir()
    assert timing(evidence)[:2] == (FRAMES + 1, 25.0)


def test_a_chunk_that_is_right_is_never_touched_by_retime(tmp_path):
    job = make_job(tmp_path / "job", rate="30", audio="job")
    spec = json.loads(job.read_text())
    for chunk in spec["chunks"]:  # each command also keeps a copy of the chunk as it wrote it (mtime too)
        chunk["command"] += f" && cp -p {chunk['outputFile']} written-{chunk['outputFile']}"
    job.write_text(json.dumps(spec))
    result = run([*CLI, "job", "run", str(job), "--retime"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "retimed" not in result.stdout + result.stderr
    record = json.loads((job.parent / ".helios-doit" / "job.json" / "records" / "chunk-0.json").read_text())
    assert "retimed" not in record
    for chunk in spec["chunks"]:  # the chunk is the file its command wrote: same bytes, never rewritten
        output, written = job.parent / chunk["outputFile"], job.parent / f"written-{chunk['outputFile']}"
        assert output.read_bytes() == written.read_bytes()
        assert (output.stat().st_size, output.stat().st_mtime_ns) == (written.stat().st_size, written.stat().st_mtime_ns)
