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
    assert progress.progress_line().startswith(".. 0/2 chunks, 0/60 frames, 12 rendering; running 0")
    progress.apply({"event": "task-progress", "task": "chunk-0", "chunkId": 0, "attempt": 0, "frames": 29})  # stale
    assert progress.snapshot()["framesDone"] == 12
    progress.apply({"event": "task-retry", "task": "chunk-0", "chunkId": 0, "attempt": 1, "message": "x"})
    assert progress.snapshot()["framesDone"] == 0  # the next attempt starts over
    progress.apply({"event": "task-start", "task": "chunk-0", "chunkId": 0, "attempt": 2})
    progress.apply({"event": "task-done", "task": "chunk-0", "chunkId": 0, "attempt": 2, "frames": 30})
    assert progress.snapshot()["framesDone"] == 30 and progress.snapshot()["runningChunks"] == []


@pytest.mark.parametrize("steps, words, stands_out", [
    ({9: 1.0, 10: 1.1, 11: 9.0, 12: 1.0, 13: 0.9}, "stands out (x9.0)", True),
    ({9: 1.0, 10: 1.1, 11: 2.5, 12: 1.0, 13: 0.9}, "the largest change here (x2.5 the typical), but no jump", False),
    ({9: 4.0, 10: 4.1, 11: 2.0, 12: 4.0, 13: 3.9}, "smaller than its neighbours (x0.5), but no freeze", False),
    ({9: 4.0, 10: 4.1, 11: 0.2, 12: 4.0, 13: 3.9}, "stands out (x0.1)", True),
    ({9: 1.0, 10: 1.1, 11: 1.05, 12: 1.0, 13: 0.9}, "in line with its neighbours", False),
])
def test_the_seam_chart_says_what_its_bars_show(steps, words, stands_out):
    from helios_doit.video.seams import Seam

    seam = Seam(11, tuple(steps.items()))
    assert seam.verdict == (words, stands_out)
    tallest = max(steps, key=steps.get) == 11
    assert not (tallest and seam.verdict[0] == "in line with its neighbours")


def test_a_stop_in_a_held_block_waits_for_its_end_even_when_another_thread_is_there():
    """The kernel gives a signal that the main thread blocks to another thread, and Python still
    runs its handler on the main thread: holding stops back is done in Python, by the handler."""
    import os
    import signal
    import threading
    import time

    from helios_doit.executors import stops as base

    got: list[int] = []

    def handler(signum: int, frame: object) -> None:
        if not base.held_back(signum):
            got.append(signum)

    previous = signal.signal(signal.SIGUSR1, handler)
    other = threading.Thread(target=time.sleep, args=(0.3,))  # as doit's workers have their queue feeder
    other.start()
    try:
        base.hold_stops()
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(0.05)  # the handler has run by now: it held the stop back
        assert got == []
        base.release_stops()
        assert got == [signal.SIGUSR1]
    finally:
        signal.signal(signal.SIGUSR1, previous)
        other.join()
