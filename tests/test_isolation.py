"""A chunked render equals a direct one, whatever a composition does to its own process.

Each case is a composition that changes its process for good as it loads: a seeded generator
in an installed library (and a numpy function patched after use), a `_thread` thread that
watches `sys.argv`, the C environment's TZ, the CPU affinity. Rendered in 4 chunks (one at a
time, and two at a time under `doit -n 2`), losslessly (ffv1), the merged video must hold
exactly the frames of one direct render: no chunk may start in a process another chunk used.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sysconfig
from pathlib import Path

import av
import numpy as np
import pytest
from harness import CLI, DOIT, HELIOS_DOIT

COMPOSITION = '''
import _thread, os, sys, time
import numpy as np
from helios_doit.video.composition import Composition

CASE = {case!r}
shade = 0
if CASE == "library":  # an installed brand library: its generator is seeded once, at its import
    import {library} as brand
    STARS = brand.stars(12)
    BASE = np.clip(np.arange(3) * 120, 0, 255)
    np.clip = lambda a, *args, **kwargs: np.zeros_like(a)  # and numpy patched for good, after use
    shade = int(BASE[2])
elif CASE == "thread":  # a raw thread that outlives the frames it was started for
    def note(argv):
        with open("spy.log", "a") as log:
            log.write(f"{{os.getpid()}} {{' '.join(argv)}}" + chr(10))
    def spy(seen):  # notes each new command line it sees (holding no file in between)
        while True:
            if sys.argv != seen:
                seen = list(sys.argv)
                note(seen)
            time.sleep(0.002)
    note(sys.argv)
    _thread.start_new_thread(spy, (list(sys.argv),))
    shade = 40
elif CASE == "tz":  # the C environment, which os.environ does not see
    shade = 10 * time.localtime(0).tm_hour
    os.putenv("TZ", "Asia/Kolkata")
    time.tzset()
elif CASE == "affinity":  # fewer cores for this process, and for anything it starts
    shade = 50 * len(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {{min(os.sched_getaffinity(0))}})

comp = Composition(width=64, height=36, fps=12, duration=2)

@comp.frame
def draw(f):
    img = np.zeros((f.height, f.width, 3), np.uint8)
    img[..., 0] = shade
    img[:, : f.index * 2 + 1, 1] = 200
    if CASE == "library":
        img.reshape(-1, 3)[STARS] = 255
    return img
'''

LIBRARY = '''
import numpy as np
_rng = np.random.default_rng(42)

def stars(n):
    return _rng.integers(0, 64 * 36, n)
'''


@pytest.fixture
def library():
    """A helper module installed in this Python's site-packages, as a brand library would be."""
    name = f"hd_brand_{os.getpid()}_{os.urandom(3).hex()}"
    path = Path(sysconfig.get_paths()["purelib"]) / f"{name}.py"
    path.write_text(LIBRARY)
    try:
        yield name
    finally:
        path.unlink(missing_ok=True)


def frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    # No TZ in the environment (the system's zone): a TZ put in the C environment alone, as a
    # chunk may, is then what a process that rendered that chunk would keep.
    env = {key: value for key, value in os.environ.items() if key != "TZ"}
    env["HELIOS_DOIT_THREADS"] = "1"
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.mark.parametrize("case", ["library", "thread", "tz", "affinity"])
def test_a_chunked_render_holds_the_frames_of_a_direct_one_whatever_a_chunk_does_to_its_process(
        tmp_path, library, case):
    source = tmp_path / "source"
    source.mkdir()
    (source / "comp.py").write_text(COMPOSITION.format(case=case, library=library))
    run([HELIOS_DOIT, "render", "comp.py", "-o", "direct.mkv", "--video-codec", "ffv1"], source)
    direct = frames(source / "direct.mkv")
    assert len(direct) == 24 and len({frame.tobytes() for frame in direct}) == 24
    run([HELIOS_DOIT, "render", "comp.py", "-o", "out.mkv", "--video-codec", "ffv1", "--emit-job", "job.json",
         "--concurrency", "4"], source)
    (source / "spy.log").unlink(missing_ok=True)  # the direct render's own

    for how, argv in (("serial", [*CLI, "job", "run", "job.json", "--concurrency", "1"]),
                      ("two at a time", [*DOIT, "-n", "2", "job=job.json"])):
        folder = tmp_path / how.replace(" ", "-")
        shutil.copytree(source, folder)
        run(argv, folder)
        chunked = frames(folder / "out.mkv")
        assert len(chunked) == len(direct), how
        differ = [n for n, (a, b) in enumerate(zip(chunked, direct)) if not np.array_equal(a, b)]
        assert differ == [], f"{how}: frames {differ} differ from the direct render"
        if case == "thread":  # each spy saw its own chunk only, and none outlived its chunk
            seen: dict[str, set[str]] = {}
            for line in (folder / "spy.log").read_text().splitlines():
                pid, _, argv_seen = line.partition(" ")
                seen.setdefault(pid, set()).add(argv_seen)
            assert len(seen) == 4 and all(len(argvs) == 1 for argvs in seen.values()), seen
            assert len({next(iter(argvs)) for argvs in seen.values()}) == 4
