"""Progress inside a chunk, read from the renderer's own words, however its output is cut up."""
from __future__ import annotations

import pytest

from helios_doit.progress.frames import FrameMeter
from helios_doit.progress.model import Progress


@pytest.mark.parametrize("pieces, first, count, said", [
    ([b"Progress: Rendered 5 / 30 fr", b"ames\nProgress: Rend", b"ered 12 / 30 frames\n"], 0, 30, [None, 5, 12]),
    ([b"Fra:100 Mem:1M\n", b"Fra:112 Mem:2M | Time:00:01\n", b"Fra:112 Mem:3M\n"], 100, 30, [0, 12, None]),
    ([b"frame=   12 fps=3.0 q=28.0 size=1kB\r", b"frame=   20 fps=4\r"], 0, 50, [12, 20]),
    ([b"Fra:900\n"], 100, 30, [30]),  # never past the chunk's own frames
    ([b"rendering...\n", b"keyframe=3 is not a frame count\n"], 0, 10, [None, None]),
])
def test_a_renderers_progress_lines_say_how_many_frames_are_done(pieces, first, count, said):
    meter = FrameMeter(first, count)
    assert [meter.feed(piece) for piece in pieces] == said


def test_running_chunks_frames_count_in_the_run_and_restart_with_a_new_attempt():
    progress = Progress({0: 30, 1: 30}, merge=True, run_id="r")
    progress.apply({"event": "task-start", "task": "chunk-0", "chunkId": 0, "attempt": 1})
    progress.apply({"event": "task-progress", "task": "chunk-0", "chunkId": 0, "attempt": 1, "frames": 12})
    snap = progress.snapshot()
    assert snap["framesDone"] == 12 and snap["chunksDone"] == 0
    assert snap["runningChunks"] == [{"chunkId": 0, "framesDone": 12, "frames": 30}]
    assert progress.progress_line().startswith(".. 12/60 frames, 0/2 chunks; rendering 0")
    progress.apply({"event": "task-progress", "task": "chunk-0", "chunkId": 0, "attempt": 0, "frames": 29})  # stale
    assert progress.snapshot()["framesDone"] == 12
    progress.apply({"event": "task-retry", "task": "chunk-0", "chunkId": 0, "attempt": 1, "message": "x"})
    assert progress.snapshot()["framesDone"] == 0  # the next attempt starts over
    progress.apply({"event": "task-start", "task": "chunk-0", "chunkId": 0, "attempt": 2})
    progress.apply({"event": "task-done", "task": "chunk-0", "chunkId": 0, "attempt": 2, "frames": 30})
    assert progress.snapshot()["framesDone"] == 30 and progress.snapshot()["runningChunks"] == []
