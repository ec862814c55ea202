"""Probing, stitching and seam reports on real (small) clips encoded with PyAV."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from argparse import ArgumentParser, Namespace
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from media import (
    audio_pcm,
    drop_first_packets,
    encode_chunks,
    encode_clip,
    frame_hashes,
)
from PIL import Image

from helios_doit.cli.cmd_merge import run as run_merge
from helios_doit.cli.cmd_seams import run as run_seams
from helios_doit.video import is_video_path
from helios_doit.video.probe import ProbeError, probe
from helios_doit.video.seams import report_size, seams_report
from helios_doit.video.stitch import (
    FfmpegConcatStitcher,
    PyAVStitcher,
    StitchError,
    get_stitcher,
)
from helios_doit.video.verify import check_merged, judge_chunk, verify_merged

COUNTS = [10, 13, 7]  # 30 frames, 1.25 s at 24 fps; uneven on purpose
MERGE = ("import sys, argparse; from helios_doit.cli.cmd_merge import add_arguments, run; "
         "p = argparse.ArgumentParser(prog='helios-doit merge'); add_arguments(p); "
         "sys.exit(run(p.parse_args(sys.argv[1:])))")


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def packet_times(path: Path, kind: str) -> list[tuple[Fraction, Fraction]]:
    """(pts, dts) in seconds of every packet of the first stream of a kind."""
    with av.open(str(path)) as container:
        stream = getattr(container.streams, kind)[0]
        tb = Fraction(stream.time_base)
        return [(p.pts * tb, p.dts * tb) for p in container.demux(stream) if p.size]


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Chunks and direct renders of one 30-frame render, in several codecs."""
    root = tmp_path_factory.mktemp("clips")
    for name, suffix, codec, audio in (("h264", ".mov", "libx264", "pcm_s16le"), ("ffv1", ".mkv", "ffv1", "pcm_s16le"),
                                       ("aac", ".mov", "libx264", "aac"), ("prores", ".mov", "prores_ks", "pcm_s16le")):
        (root / name).mkdir()
        encode_chunks(root / name, COUNTS, suffix=suffix, codec=codec, audio=audio)
        encode_clip(root / name / f"direct{suffix}", frames=sum(COUNTS), codec=codec, audio=audio)
    return root


def parts(clips: Path, name: str) -> list[Path]:
    return sorted((clips / name).glob("part_*"))


def test_lossless_chunks_stitch_to_exactly_the_direct_render(clips: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.mkv"
    result = PyAVStitcher().stitch(parts(clips, "ffv1"), out)
    assert (result.frames, result.duration, result.audio_samples) == (30, 1.25, (60000,))
    assert (result.video_codec, result.audio_codecs) == ("ffv1", ("pcm_s16le",))
    assert frame_hashes(out) == frame_hashes(clips / "ffv1" / "direct.mkv")
    assert np.array_equal(audio_pcm(out), audio_pcm(clips / "ffv1" / "direct.mkv"))
    assert sum(probe(p).audio[0].samples for p in parts(clips, "ffv1")) == probe(out).audio[0].samples == 60000
    assert verify_merged(out, 30, 24) is None
    assert [p.name for p in tmp_path.iterdir()] == ["out.mkv"]


@pytest.mark.parametrize("name", ["h264", "prores"])
def test_mov_chunks_stream_copy_with_continuous_timestamps(clips: Path, tmp_path: Path, name: str) -> None:
    out = tmp_path / "out.mov"
    result = PyAVStitcher().stitch(parts(clips, name), out)
    assert result.frames == 30 and result.audio_codecs == ("pcm_s16le",)
    # Stream copy: the decoded frames are the chunks' own, in order.
    assert frame_hashes(out) == [h for part in parts(clips, name) for h in frame_hashes(part)]
    video = packet_times(out, "video")
    assert [pts for pts, _ in video] == [Fraction(i, 24) for i in range(30)]
    assert all(a[1] < b[1] for a, b in zip(video, video[1:]))
    audio = packet_times(out, "audio")
    assert all(a[1] < b[1] for a, b in zip(audio, audio[1:]))
    assert np.array_equal(audio_pcm(out), audio_pcm(clips / name / "direct.mov"))


def test_mov_chunks_to_mp4_copy_video_and_encode_pcm_to_aac(clips: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    result = PyAVStitcher().stitch(parts(clips, "h264"), out)
    info = probe(out)
    assert info.format_name.startswith("mov,mp4")
    assert (info.video.codec, [a.codec for a in info.audio]) == ("h264", ["aac"])
    assert result.audio_samples == (60000,) and info.audio[0].samples == 60000
    assert frame_hashes(out) == [h for part in parts(clips, "h264") for h in frame_hashes(part)]
    assert verify_merged(out, 30, 24) is None
    kept = PyAVStitcher().stitch(parts(clips, "h264"), tmp_path / "pcm.mp4", audio_codec="pcm_s16le")
    assert kept.audio_codecs == ("pcm_s16le",)  # this libav's mp4 muxer takes PCM when asked explicitly


def test_aac_chunks_are_decoded_and_encoded_once_without_gaps(clips: Path, tmp_path: Path) -> None:
    chunks = parts(clips, "aac")
    assert [probe(p).audio[0].samples for p in chunks] == [20000, 26000, 14000]
    out = tmp_path / "out.mov"
    result = PyAVStitcher().stitch(chunks, out)
    assert result.audio_codecs == ("aac",) and result.audio_samples == (60000,)
    assert probe(out).audio[0].samples == 60000
    left = audio_pcm(out).reshape(-1, 2)[:60000, 0]  # float samples from the AAC decoder
    direct = audio_pcm(clips / "aac" / "direct.mov").reshape(-1, 2)[:60000, 0]
    # Copied AAC packets would carry each chunk's priming into the middle: a dip, then a shift.
    rms = np.sqrt((left.reshape(-1, 480) ** 2).mean(axis=1))[:-1]  # AAC's own last block fades, seams or not
    assert rms.min() > 0.8 * np.median(rms)
    assert np.corrcoef(left, direct)[0, 1] > 0.99
    with pytest.raises(StitchError, match="cannot be stream-copied across seams") as refused:
        PyAVStitcher().stitch(chunks, tmp_path / "copy.mov", audio_codec="copy")
    assert refused.value.exit_code == 2


@pytest.mark.parametrize("kind, kwargs, message", [
    ("size", {"width": 320, "height": 180}, "part_2.mov: video is 320x180, but part_0.mov is 160x90; render every chunk"),
    ("codec", {"codec": "mpeg4"}, "part_2.mov: video codec is mpeg4, but part_0.mov is h264"),
    ("fps", {"fps": 25}, "part_2.mov: frame rate is 25, but part_0.mov is 24"),
    # another pixel format is another codec configuration, so that chunk's first frame is decoded
    ("pixels", {"pix_fmt": "yuv444p"}, "part_2.mov: pixel format is yuv444p, but part_0.mov is yuv420p"),
    ("audio", {"audio": None}, "part_2.mov: streams are video, but part_0.mov has video, audio"),
])
def test_refuses_incompatible_chunks_naming_the_file(tmp_path: Path, kind: str, kwargs: dict, message: str) -> None:
    chunks = encode_chunks(tmp_path, [4, 4])
    chunks.append(encode_clip(tmp_path / "part_2.mov", start=8, frames=4, **kwargs))
    with pytest.raises(StitchError) as refused:
        PyAVStitcher().stitch(chunks, tmp_path / "out.mp4")
    assert str(refused.value).startswith(message)
    assert refused.value.exit_code == 2 and "\n" not in str(refused.value)
    assert not (tmp_path / "out.mp4").exists() and leftovers(tmp_path) == []


def test_refuses_a_chunk_that_does_not_start_on_a_keyframe(tmp_path: Path) -> None:
    chunks = encode_chunks(tmp_path, [6, 6])
    drop_first_packets(encode_clip(tmp_path / "whole.mov", start=12, frames=6), tmp_path / "part_2.mov")
    assert probe(tmp_path / "part_2.mov").video.first_is_keyframe is False
    with pytest.raises(StitchError, match=r"^part_2\.mov: does not start on a keyframe"):
        PyAVStitcher().stitch([*chunks, tmp_path / "part_2.mov"], tmp_path / "out.mov")
    assert not (tmp_path / "out.mov").exists() and leftovers(tmp_path) == []
    assert "keyframe" in judge_chunk(tmp_path / "part_2.mov", 5, 160, 90).problem


def test_a_failed_write_or_check_leaves_nothing_under_the_output_name(clips: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    chunks = parts(clips, "h264")
    with pytest.raises(StitchError, match="the job has 31") as refused:
        PyAVStitcher().stitch(chunks, tmp_path / "a.mov", expected_frames=31)
    assert refused.value.exit_code == 2
    with pytest.raises(StitchError, match=r"^b\.mov: lasts 1\.250 s, expected 1\.200 s") as refused:
        # written, then found not to match the job
        PyAVStitcher().stitch(chunks, tmp_path / "b.mov", verify=lambda merged: check_merged(merged, 30, 25))
    assert refused.value.exit_code == 1

    class Lossy(PyAVStitcher):
        """A writer that loses the last chunk's packets: the count after writing must catch it."""

        def _write(self, infos, plans, tmp, fmt):  # type: ignore[no-untyped-def]
            return super()._write(infos[:-1], plans, tmp, fmt)

    with pytest.raises(StitchError, match=r"^l\.mov: the merged file holds 23 frames, the chunks 30$") as refused:
        Lossy().stitch(chunks, tmp_path / "l.mov")
    assert refused.value.exit_code == 1

    import helios_doit.video.stitch as stitch

    def broken(*args: object) -> int:
        raise av.error.InvalidDataError(1094995529, "Invalid data found when processing input")

    monkeypatch.setattr(stitch, "_copy", broken)
    with pytest.raises(StitchError, match=r"^c\.mov: writing failed") as refused:
        PyAVStitcher().stitch(chunks, tmp_path / "c.mov")
    assert refused.value.exit_code == 1
    assert list(tmp_path.iterdir()) == []


def test_probe_reads_cheaply_what_a_chunk_holds(clips: Path) -> None:
    info = probe(clips / "h264" / "part_1.mov")
    video = info.video
    assert (video.codec, video.width, video.height, video.pix_fmt) == ("h264", 160, 90, "yuv420p")
    assert (video.frame_rate, video.frames, video.first_is_keyframe) == (24, 13, True)
    assert video.duration == pytest.approx(13 / 24) and video.span == pytest.approx(13 / 24)
    assert info.layout == ("video", "audio")
    audio = info.audio[0]
    assert (audio.codec, audio.sample_rate, audio.channels, audio.layout, audio.samples) == ("pcm_s16le", 48000, 2, "stereo", 26000)
    mkv = probe(clips / "ffv1" / "part_0.mkv")
    assert mkv.format_name.startswith("matroska") and mkv.video.frames == 10 and mkv.audio[0].samples == 20000
    assert is_video_path("a/B.MOV") and is_video_path("x.mxf") and not is_video_path("out.txt")


def test_probe_refuses_garbage_and_truncated_files(clips: Path, tmp_path: Path) -> None:
    bad = {"garbage.mov": os.urandom(4000), "empty.mkv": b"", "text.mp4": b"frame 1\nframe 2\n"}
    for source in (clips / "h264" / "direct.mov", clips / "ffv1" / "direct.mkv"):
        data = source.read_bytes()
        bad[f"cut{source.suffix}"] = data[: len(data) * 6 // 10]
    for name, data in bad.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ProbeError) as failed:
            probe(tmp_path / name)
        assert str(failed.value).startswith(f"{name}: ") and "\n" not in str(failed.value)
    with pytest.raises(ProbeError, match="^missing.mov: no such file"):
        probe(tmp_path / "missing.mov")


def test_judge_chunk_says_what_is_wrong_in_one_line(clips: Path, tmp_path: Path) -> None:
    chunk = clips / "h264" / "part_1.mov"
    assert judge_chunk(chunk, 13, 160, 90).problem is None
    assert judge_chunk(chunk, 38, 160, 90).problem == "expected 38 frames, found 13"
    assert judge_chunk(chunk, 13, 1280, 720).problem == "expected 1280x720, found 160x90"
    (tmp_path / "bad.mov").write_bytes(b"\0" * 100)
    assert judge_chunk(tmp_path / "bad.mov", 13, 160, 90).problem.startswith("does not decode: ")
    assert judge_chunk(tmp_path / "none.mov", 13, 160, 90).problem == "was not written"


def test_merge_command_line(clips: Path, tmp_path: Path) -> None:
    def merge(*args: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", MERGE, *map(str, args)], capture_output=True, text=True, timeout=60)

    done = merge(tmp_path / "out.mp4", *parts(clips, "h264"), "--audio-codec", "aac")
    assert done.returncode == 0, done.stderr
    assert probe(tmp_path / "out.mp4").video.frames == 30 and "30 frames" in done.stdout
    mixed = merge(tmp_path / "mixed.mov", *parts(clips, "h264"), *parts(clips, "ffv1"))
    assert mixed.returncode == 2
    assert mixed.stderr.startswith("helios-doit: part_0.mkv: video codec is ffv1, but part_0.mov is h264")
    assert mixed.stderr.count("\n") == 1 and not (tmp_path / "mixed.mov").exists()
    missing = merge(tmp_path / "gone.mov", tmp_path / "nope.mov")
    assert (missing.returncode, missing.stderr) == (2, "helios-doit: nope.mov: no such file\n")
    assert leftovers(tmp_path) == []


def ffmpeg_binary() -> str | None:
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):
        return shutil.which("ffmpeg")


def test_ffmpeg_stitcher(clips: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(StitchError, match="needs an ffmpeg binary on PATH") as missing:
        get_stitcher("ffmpeg")
    assert missing.value.exit_code == 2
    binary = ffmpeg_binary()
    assert binary is not None, "no ffmpeg binary: install the test extra (imageio-ffmpeg)"
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "ffmpeg").symlink_to(binary)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    stitcher = get_stitcher("ffmpeg")
    assert isinstance(stitcher, FfmpegConcatStitcher)
    out = tmp_path / "out.mp4"
    result = stitcher.stitch(parts(clips, "h264"), out)
    assert (result.frames, result.video_codec, result.audio_codecs) == (30, "h264", ("aac",))
    assert frame_hashes(out) == [h for part in parts(clips, "h264") for h in frame_hashes(part)]
    lossless = stitcher.stitch(parts(clips, "ffv1"), tmp_path / "out.mkv")
    assert lossless.audio_samples == (60000,)
    assert frame_hashes(tmp_path / "out.mkv") == frame_hashes(clips / "ffv1" / "direct.mkv")
    with pytest.raises(StitchError, match="part_2.mov: video is 320x180"):
        odd = encode_chunks(tmp_path, [4, 4]) + [encode_clip(tmp_path / "part_2.mov", start=8, frames=4, width=320, height=180)]
        stitcher.stitch(odd, tmp_path / "odd.mov")
    assert not (tmp_path / "odd.mov").exists() and leftovers(tmp_path) == []


def test_seams_report_of_parts_and_of_a_merged_video(tmp_path: Path) -> None:
    counts = [10, 13, 7, 12]
    chunks = encode_chunks(tmp_path, counts, width=320, height=180)
    # A chunk that starts one frame late: the seam at 23 skips a frame, the kind of glitch to see.
    encode_clip(tmp_path / "part_2.mov", frames=7, width=320, height=180, pictures=[24 + i for i in range(7)])
    report = seams_report(chunks, tmp_path / "parts.png")
    assert report.size == report_size(320, 180, 3) == (1048, 676)
    assert [s.frame for s in report.seams] == [10, 23, 30]
    assert (report.seams[0].before, report.seams[0].after) == ("part 0", "part 1")
    glitch = report.seams[1]
    assert glitch.step > 1.5 * glitch.neighbours and report.seams[0].step < 1.5 * report.seams[0].neighbours
    with Image.open(tmp_path / "parts.png") as image:
        assert (image.format, image.size) == ("PNG", (1048, 676))
        image.verify()

    PyAVStitcher().stitch(chunks, tmp_path / "out.mp4")
    args = Namespace(source=str(tmp_path / "out.mp4"), output=str(tmp_path / "one.png"), at="23", context=4, output_root=None)
    assert run_seams(args) == 0
    with Image.open(tmp_path / "one.png") as image:
        assert image.size == report_size(320, 180, 1)
    assert run_seams(Namespace(**{**vars(args), "at": None})) == 2
    assert run_seams(Namespace(**{**vars(args), "at": "42"})) == 2


def test_seams_of_a_job_come_from_its_chunks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    encode_chunks(tmp_path, [8, 8, 8])
    chunks = [{"id": i, "startFrame": 100 + 8 * i, "frameCount": 8, "outputFile": f"part_{i}.mov", "command": "true"} for i in range(3)]
    job = {"metadata": {"totalFrames": 24, "fps": 24, "width": 160, "height": 90, "duration": 1},
           "chunks": chunks, "mergeCommand": "helios-doit merge out.mp4 part_0.mov part_1.mov part_2.mov"}
    (tmp_path / "job.json").write_text(json.dumps(job))
    args = Namespace(source=str(tmp_path / "job.json"), output=str(tmp_path / "seams.png"), at=None, context=6, output_root=None)
    assert run_seams(args) == 0, capsys.readouterr().err
    with Image.open(tmp_path / "seams.png") as image:
        assert image.size == report_size(160, 90, 2)
    (tmp_path / "part_1.mov").unlink()
    assert run_seams(args) == 2
    assert "chunk 1 (part_1.mov) not rendered yet" in capsys.readouterr().err


def test_merge_arguments_follow_helios_order() -> None:
    from helios_doit.cli.cmd_merge import add_arguments as add_merge_arguments

    parser = ArgumentParser()
    add_merge_arguments(parser)
    args = parser.parse_args(["out.mp4", "a.mov", "b.mov", "--stitcher", "ffmpeg", "--audio-codec", "copy"])
    assert (args.output, args.inputs, args.stitcher, args.audio_codec) == ("out.mp4", ["a.mov", "b.mov"], "ffmpeg", "copy")
    assert callable(run_merge)


def test_merge_never_writes_over_an_existing_output_without_y(clips: Path, tmp_path: Path) -> None:
    """`merge out.part0.mov out.part1.mov`, the output forgotten: chunk 0 is not overwritten."""
    def merge(*args: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "helios_doit", "merge", *map(str, args)], cwd=tmp_path,
                              capture_output=True, text=True, timeout=60)

    for k, part in enumerate(parts(clips, "h264")):
        shutil.copy(part, tmp_path / f"out.part{k}.mov")
    chunk = (tmp_path / "out.part0.mov").read_bytes()
    forgot = merge("out.part0.mov", "out.part1.mov", "out.part2.mov")
    assert (forgot.returncode, forgot.stdout) == (2, "")
    assert forgot.stderr == ("helios-doit: out.part0.mov exists (a chunk? the merged file comes first: merge OUTPUT "
                             "INPUT...); give -y to replace it\n")
    assert (tmp_path / "out.part0.mov").read_bytes() == chunk
    done = merge("out.mp4", "out.part0.mov", "out.part1.mov", "out.part2.mov")
    assert done.returncode == 0, done.stderr
    again = merge("out.mp4", "out.part0.mov", "out.part1.mov", "out.part2.mov")
    assert again.returncode == 2 and again.stderr == "helios-doit: out.mp4 exists; give -y to replace it\n"
    for flag in ("-y", "--overwrite"):
        replaced = merge(flag, "out.mp4", "out.part0.mov", "out.part1.mov", "out.part2.mov")
        assert replaced.returncode == 0 and "merged 3 chunks into out.mp4: 30 frames" in replaced.stdout, replaced.stderr
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("merge", ["command", "builtin"])
def test_a_jobs_own_merge_runs_again_over_its_earlier_output(tmp_path: Path, merge: str) -> None:
    """The runner clears the merged file's place before a merge runs: `-a` (and a changed chunk) merge again
    through the job's `helios-doit merge OUT ...` or the built-in stitcher, without -y."""
    comp = Path(__file__).resolve().parent.parent / "examples" / "orbit" / "composition.py"
    helios_doit = [sys.executable, "-m", "helios_doit"]
    emitted = subprocess.run([*helios_doit, "render", str(comp), "-o", "out.mp4", "--emit-job", "job.json",
                              "--concurrency", "2", "--duration", "0.5", "--width", "64", "--height", "36"],
                             cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert emitted.returncode == 0, emitted.stderr
    for _ in range(2):
        ran = subprocess.run([*helios_doit, "job", "run", "job.json", "--merge", merge, "-a"], cwd=tmp_path,
                             capture_output=True, text=True, timeout=120)
        assert ran.returncode == 0, ran.stdout + ran.stderr
        assert probe(tmp_path / "out.mp4").video.frames == 15
