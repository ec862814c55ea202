"""video/verify.py: a chunk must decode, hold exactly its frames at the job's size (and, given the
job's fps, its frame rate and duration) and start on a keyframe; a merge must hold the job's frames and duration, and its seams must be the chunks'
in frame order (checked by packet digests for a stream copy, by pictures for a re-encode)."""
from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest

import av

from helios_doit.video.probe import probe, signature
from fractions import Fraction

from helios_doit.video.verify import (
    SAME_PICTURE, ChunkFacts, Verdict, _seam_packets, check_merged, check_seams, check_timing, judge_chunk,
    signature_distance, verify_merged,
)

from .conftest import FPS, H, W


def judged(path, *expected) -> tuple[str | None, ChunkFacts | None]:
    """What the runner acts on in `judge_chunk`'s verdict: the problem, and the facts a record keeps."""
    verdict = judge_chunk(path, *expected)
    return verdict.problem, verdict.facts


def facts_of(clips) -> list[ChunkFacts]:
    return [judged(p, 4, W, H)[1] for p in clips.parts]


# -- chunks ------------------------------------------------------------------------------------

def test_a_good_chunk_passes_and_yields_its_facts(clips) -> None:
    problem, facts = judged(clips.parts[0], 4, W, H)
    assert problem is None
    info = probe(clips.parts[0])
    assert facts == ChunkFacts(4, 4, info.video.first_packet, info.video.last_packet, info.video.signature)
    assert len(facts.first) == 16 and facts.first != facts.last
    assert len(facts.signature) == 128
    assert judge_chunk(str(clips.parts[0]), 4, W, H).problem is None


def test_each_chunk_has_facts_of_its_own(clips) -> None:
    a, b, c = facts_of(clips)
    assert len({a.first, b.first, c.first}) == 3
    assert len({a.last, b.last, c.last}) == 3


def test_a_chunk_with_other_frames_or_size_fails(clips) -> None:
    assert judged(clips.parts[0], 5, W, H) == ("expected 5 frames, found 4", None)
    assert judged(clips.parts[0], 3, W, H) == ("expected 3 frames, found 4", None)
    assert judged(clips.small, 4, W, H) == (f"expected {W}x{H}, found 32x24", None)
    assert judge_chunk(clips.small, 4, 32, 24).problem is None
    assert judged(clips.parts[0], 4, W, 24) == (f"expected {W}x24, found {W}x{H}", None)
    assert judged(clips.parts[0], 4, 32, H) == (f"expected 32x{H}, found {W}x{H}", None)


def test_a_chunk_at_the_jobs_frame_rate_passes(clips) -> None:
    problem, facts = judged(clips.parts[0], 4, W, H, FPS)
    assert problem is None and facts == judged(clips.parts[0], 4, W, H)[1]
    assert judged(clips.parts[0], 4, W, H, 24.0)[0] is None
    assert judge_chunk(clips.parts[0], 4, W, H, FPS).problem is None


def test_a_chunk_at_another_frame_rate_fails(clips) -> None:
    # All else right: the frame rate is the fault, and a remux can fix it (`--retime`): its rate is said.
    assert judged(clips.parts[0], 4, W, H, 30) == ("24 fps, expected 30: the renderer ignored the job's frame rate", None)
    assert judge_chunk(clips.parts[0], 4, W, H, 30) == Verdict(
        "24 fps, expected 30: the renderer ignored the job's frame rate", None, Fraction(24))
    assert judge_chunk(clips.parts[0], 4, W, H, 30).problem.startswith("24 fps, expected 30: ")
    assert judged(clips.parts[0], 4, W, H) == judged(clips.parts[0], 4, W, H, None)  # no fps: not checked
    # the frame count is said first; the rate before the keyframe
    assert judged(clips.parts[0], 5, W, H, 30) == ("expected 5 frames, found 4", None)
    assert judge_chunk(clips.parts[0], 5, W, H, 30).rate is None
    late = judge_chunk(clips.no_keyframe, 4, W, H, 30)  # no keyframe first: new timestamps cannot make it right
    assert late == Verdict("24 fps, expected 30: the renderer ignored the job's frame rate (4 frames last 0.167 s "
                           "instead of 0.133 s)", None, None, "it does not start on a keyframe")


def test_a_chunk_whose_audio_followed_the_wrong_rate_cannot_be_retimed(tmp_path) -> None:
    from media import encode_clip

    wrong = encode_clip(tmp_path / "wrong.mov", frames=4, width=W, height=H, fps=24)  # 4/24 s of audio
    verdict = judge_chunk(wrong, 4, W, H, 30)
    assert verdict.rate is None and verdict.problem.startswith("24 fps, expected 30: ")
    assert verdict.not_retimable == ("its audio lasts 0.167 s, not the 0.133 s of 4 frames at 30 fps, and audio cannot "
                                     "be retimed without re-encoding")
    assert judge_chunk(wrong, 4, W, H, 24) == Verdict(None, judged(wrong, 4, W, H)[1])


def test_check_timing_rate_to_a_thousandth() -> None:
    assert check_timing(Fraction(24), 4 / 24, 4, 24) is None
    assert check_timing(Fraction(30000, 1001), 4 * 1001 / 30000, 4, 29.97) is None  # 29.97 in a job, NTSC in the file
    assert check_timing(Fraction(2002), 0.5, 1000, 2000.0) is None  # off by exactly fps / 1000
    assert check_timing(Fraction(1998), 0.5, 1000, 2000.0) is None
    assert check_timing(Fraction(4005, 2), 0.5, 1000, 2000.0) == (
        "2002.5 fps, expected 2000: the renderer ignored the job's frame rate (1000 frames last 0.499 s instead of 0.500 s)")
    assert check_timing(Fraction(3995, 2), 0.5, 1000, 2000.0).startswith("1997.5 fps, expected 2000: ")
    assert check_timing(Fraction(25), 4 / 25, 4, 24) == (
        "25 fps, expected 24: the renderer ignored the job's frame rate (4 frames last 0.160 s instead of 0.167 s)")


def test_check_timing_duration_to_half_a_frame() -> None:
    # 12 frames at 4 fps last 3 s; half a frame is 0.125 s (exact in binary)
    assert check_timing(Fraction(4), 3.0, 12, 4) is None
    assert check_timing(Fraction(4), 3.125, 12, 4) is None
    assert check_timing(Fraction(4), 2.875, 12, 4) is None
    assert check_timing(Fraction(4), 3.126, 12, 4) == "lasts 3.126 s, expected 3.000 s (12 frames at 4 fps)"
    assert check_timing(Fraction(4), 2.874, 12, 4) == "lasts 2.874 s, expected 3.000 s (12 frames at 4 fps)"
    assert check_timing(Fraction(4), 3.5, 12, 4.0) == "lasts 3.500 s, expected 3.000 s (12 frames at 4 fps)"


def test_a_chunk_not_starting_on_a_keyframe_fails(clips) -> None:
    assert judged(clips.no_keyframe, 4, W, H) == (
        "does not start on a keyframe, so it cannot be stitched without re-encoding", None)


def test_a_missing_chunk_was_not_written(tmp_path: Path) -> None:
    assert judged(tmp_path / "part_0.mov", 4, W, H) == ("was not written", None)


def test_a_chunk_without_video_fails(clips) -> None:
    assert judged(clips.audio_only, 4, W, H) == ("has no video stream", None)


def test_a_garbage_or_cut_chunk_does_not_decode(tmp_path: Path, clips) -> None:
    junk = tmp_path / "part_0.mov"
    junk.write_bytes(b"not a video at all" * 100)
    problem, facts = judged(junk, 4, W, H)
    assert facts is None
    assert problem.startswith("does not decode: not a readable media file (")
    assert "part_0.mov" not in problem  # the file's name is said once, by the caller
    folder = tmp_path / "f.mov"
    folder.mkdir()
    assert judged(folder, 4, W, H) == ("does not decode: is a folder, not a media file", None)


def test_a_chunk_whose_first_frame_does_not_decode_says_so_once(clips) -> None:
    assert judged(clips.undecodable, 4, W, H) == ("does not decode: Invalid data found when processing input", None)


def test_a_merge_that_does_not_decode_says_why_without_its_name(clips, tmp_path: Path) -> None:
    merged = tmp_path / "my merged.mov"  # a name with a space and no ": "
    shutil.copy(clips.undecodable, merged)
    assert verify_merged(merged, 4, FPS) == "does not decode: Invalid data found when processing input"


def test_chunk_facts_round_trip_through_a_record(clips) -> None:
    facts = facts_of(clips)[0]
    record = facts.as_record()
    assert record == {"frames": 4, "packets": 4, "first": facts.first, "last": facts.last, "signature": facts.signature}
    assert ChunkFacts.from_record(record) == facts
    assert ChunkFacts.from_record({**record, "frames": "4", "packets": 4.0}) == facts


@pytest.mark.parametrize("data", [None, {}, [], "x", {"frames": 4, "packets": 4, "first": "a", "last": "b"},
                                  {"frames": "four", "packets": 4, "first": "a", "last": "b", "signature": None},
                                  {"frames": 4, "packets": None, "first": "a", "last": "b", "signature": None}])
def test_a_record_without_usable_facts_gives_none(data) -> None:
    assert ChunkFacts.from_record(data) is None


# -- the merge ---------------------------------------------------------------------------------

def test_a_good_stream_copied_merge_passes(clips) -> None:
    assert verify_merged(clips.merged, 12, FPS, facts_of(clips), ["chunk 0", "chunk 1", "chunk 2"]) is None
    assert verify_merged(str(clips.merged), 12, FPS) is None  # without facts: frames and duration only


def test_a_merge_with_other_frames_fails(clips) -> None:
    assert verify_merged(clips.merged, 13, FPS, facts_of(clips)) == "expected 13 frames, found 12"
    assert verify_merged(clips.merged, 11, FPS) == "expected 11 frames, found 12"


def test_a_merge_at_another_frame_rate_fails(clips) -> None:
    assert verify_merged(clips.merged, 12, 12) == "lasts 0.500 s, expected 1.000 s (12 frames at 12 fps)"
    assert verify_merged(clips.merged, 12, 30) == "lasts 0.500 s, expected 0.400 s (12 frames at 30 fps)"


def test_the_duration_tolerance_is_half_a_frame(clips) -> None:
    info = probe(clips.merged)
    assert info.video.span == pytest.approx(0.5)
    # 12 frames that last 0.5 s pass at an fps while |0.5 * fps - 12| <= 0.5 (half a frame)
    assert check_merged(info, 12, 24.98) is None
    assert check_merged(info, 12, 23.02) is None
    assert check_merged(info, 12, 25.02) == "lasts 0.500 s, expected 0.480 s (12 frames at 25.02 fps)"
    assert check_merged(info, 12, 22.98) == "lasts 0.500 s, expected 0.522 s (12 frames at 22.98 fps)"


def test_a_merge_exactly_half_a_frame_off_passes(clips) -> None:
    info = probe(clips.merged)
    # 12 frames at 4 fps should last 3 s; half a frame is 0.125 s (both exact in binary)
    assert check_merged(replace(info, video=replace(info.video, span=3.125)), 12, 4) is None
    assert check_merged(replace(info, video=replace(info.video, span=2.875)), 12, 4) is None
    assert check_merged(replace(info, video=replace(info.video, span=3.126)), 12, 4) == \
        "lasts 3.126 s, expected 3.000 s (12 frames at 4 fps)"


def test_a_merge_without_video_or_file_fails(clips, tmp_path: Path) -> None:
    assert verify_merged(clips.audio_only, 12, FPS) == "has no video stream"
    assert verify_merged(tmp_path / "out.mov", 12, FPS) == "no such file"
    (tmp_path / "bad.mov").write_bytes(b"junk" * 50)
    assert verify_merged(tmp_path / "bad.mov", 12, FPS).startswith("not a readable media file (")


def test_a_merge_that_joined_chunks_out_of_order_fails_at_its_seam(clips) -> None:
    labels = ["chunk 0", "chunk 1", "chunk 2"]
    assert verify_merged(clips.swapped, 12, FPS, facts_of(clips), labels) == (
        "the merged file's frames 0-3 are not chunk 0's: the chunks were joined out of frame order, "
        "or a wrong file was taken")
    # the frame count and duration alone do not see it
    assert verify_merged(clips.swapped, 12, FPS) is None


def test_a_merge_that_took_a_wrong_file_for_a_later_chunk_fails(clips) -> None:
    a, b, c = facts_of(clips)
    assert verify_merged(clips.merged, 12, FPS, [a, b, replace(c, first="0" * 16)], ["c0", "c1", "c2"]) == (
        "the merged file's frames 8-11 are not c2's: the chunks were joined out of frame order, "
        "or a wrong file was taken")
    assert verify_merged(clips.merged, 12, FPS, [a, replace(b, last="0" * 16), c], ["c0", "c1", "c2"]).startswith(
        "the merged file's frames 4-7 are not c1's")


def test_seams_are_named_chunk_k_without_labels(clips) -> None:
    info = probe(clips.swapped, packets_at=frozenset(_seam_packets(facts_of(clips))))
    assert check_seams(info, facts_of(clips)).startswith("the merged file's frames 0-3 are not chunk 0's")


def test_seam_packets_are_each_chunks_first_and_last() -> None:
    chunks = [ChunkFacts(4, 4, "a", "b", None), ChunkFacts(3, 3, "c", "d", None), ChunkFacts(1, 1, "e", "e", None)]
    assert _seam_packets(chunks) == {0: (0, "first"), 3: (0, "last"), 4: (1, "first"), 6: (1, "last"), 7: (2, "last")}
    assert _seam_packets([]) == {}


def test_a_reencoded_merge_in_order_passes_by_its_pictures(clips) -> None:
    assert verify_merged(clips.reencoded, 12, FPS, facts_of(clips), ["chunk 0", "chunk 1", "chunk 2"]) is None


def test_a_reencoded_merge_out_of_order_fails_by_its_pictures(clips) -> None:
    problem = verify_merged(clips.reencoded_swapped, 12, FPS, facts_of(clips), ["chunk 0", "chunk 1", "chunk 2"])
    assert problem is not None
    assert problem.startswith("the merged file's frame 0 is not chunk 0's first frame (they differ by ")
    assert problem.endswith(" grey levels): the chunks were joined out of frame order, or a wrong file was taken")


def test_a_reencoded_merge_is_compared_at_every_seam(clips) -> None:
    a, b, c = facts_of(clips)
    # chunk 2's picture swapped with chunk 0's: only the last seam is wrong
    problem = verify_merged(clips.reencoded, 12, FPS, [a, b, replace(c, signature=a.signature)], ["x", "y", "z"])
    assert problem is not None and problem.startswith("the merged file's frame 8 is not z's first frame")
    # a chunk without a picture is skipped; the others are still compared
    assert verify_merged(clips.reencoded, 12, FPS, [a, replace(b, signature=None), c]) is None
    problem = verify_merged(clips.reencoded, 12, FPS, [replace(a, signature=None), replace(b, signature=c.signature), c])
    assert problem is not None and problem.startswith("the merged file's frame 4 is not chunk 1's first frame")
    # no pictures at all: nothing to compare, passes on frames and duration
    assert verify_merged(clips.reencoded_swapped, 12, FPS, [replace(f, signature=None) for f in (a, b, c)]) is None


def shifted(sig: str, by: int) -> str:
    """A signature every byte of which is `by` grey levels away from `sig`'s."""
    return bytes(v + by if v + by <= 255 else v - by for v in bytes.fromhex(sig)).hex()


def test_pictures_within_the_threshold_count_as_the_same_frame(clips) -> None:
    a, b, c = facts_of(clips)
    first = probe(clips.reencoded).video.signature  # the merged file's frame 0, as decoded
    assert SAME_PICTURE == 12.0
    at = replace(a, signature=shifted(first, 12))
    assert signature_distance(first, at.signature) == 12.0
    assert verify_merged(clips.reencoded, 12, FPS, [at, replace(b, signature=None), replace(c, signature=None)]) is None
    over = replace(a, signature=shifted(first, 13))
    problem = verify_merged(clips.reencoded, 12, FPS, [over, replace(b, signature=None), replace(c, signature=None)])
    assert problem == ("the merged file's frame 0 is not chunk 0's first frame (they differ by 13 grey levels): "
                       "the chunks were joined out of frame order, or a wrong file was taken")


def test_a_reencoded_merge_shorter_than_its_seams_says_so(clips) -> None:
    a, b, c = facts_of(clips)
    info = probe(clips.reencoded)
    # facts that put the last seam at frame 12, past the merged file's 12 frames (0-11)
    facts = [a, replace(b, frames=8, packets=8, first="x", last="y"), c]
    assert check_seams(info, facts, ["a", "b", "c"]) == "the merged file ends before frame 12"


def test_a_last_chunk_of_one_frame_is_checked_at_the_merges_last_frame(clips) -> None:
    info = probe(clips.reencoded)
    with av.open(str(clips.reencoded)) as container:
        pictures = [signature(frame) for frame in container.decode(video=0)]
    assert len(pictures) == 12
    facts = [ChunkFacts(4, 4, "a", "b", pictures[0]), ChunkFacts(7, 7, "c", "d", pictures[4]),
             ChunkFacts(1, 1, "e", "e", pictures[11])]
    assert check_seams(info, facts) is None
    facts[2] = ChunkFacts(1, 1, "e", "e", pictures[0])
    assert check_seams(info, facts) is not None


def test_a_partly_copied_merge_names_the_first_wrong_chunk(clips) -> None:
    a, b, c = facts_of(clips)
    info = probe(clips.merged, packets_at=frozenset(_seam_packets([a, b, c])))
    assert check_seams(info, [a, b, c]) is None
    assert check_seams(info, [a, replace(b, first="f" * 16), replace(c, last="f" * 16)], ["p", "q", "r"]).startswith(
        "the merged file's frames 4-7 are not q's")


def test_signature_distance() -> None:
    assert signature_distance("00ff10", "00ff10") == 0.0
    assert signature_distance("0000", "ff00") == 127.5
    assert signature_distance("0a00", "000a") == 10.0
    assert signature_distance("00", "0000") == 255.0
    assert signature_distance("", "") == 255.0
