"""A corpus of bad jobs, each run through both entry points as a user would.

A bad job must be refused before anything happens: exit 2, one `helios-doit:` line per
fault on stderr naming the field (and chunk), nothing on stdout, and the job's folder
exactly as it was: no state folder, no command run (each would append to `ran.log`), and
no output deleted (`part_0.txt` and `out.txt` exist before every run).
"""
from __future__ import annotations

import http.server
import json
import os
import shlex
import socket
import subprocess
import threading
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from harness import CLI, DOIT, REPO

FRAMES = 8
CHUNKS = 4


def base_job() -> dict[str, Any]:
    """A valid job: 4 chunks of 8 frames whose commands leave a trace in `ran.log`."""
    chunks = [
        {"id": i, "startFrame": i * FRAMES, "frameCount": FRAMES, "outputFile": f"part_{i}.txt",
         "command": f"echo chunk {i} >> ran.log && echo frames {i} > part_{i}.txt"}
        for i in range(CHUNKS)
    ]
    parts = " ".join(c["outputFile"] for c in chunks)
    return {
        "id": "bad-jobs",
        "metadata": {"totalFrames": CHUNKS * FRAMES, "fps": 24, "width": 320, "height": 180,
                     "duration": CHUNKS * FRAMES / 24},
        "chunks": chunks,
        "mergeCommand": f"echo merge >> ran.log && cat {parts} > out.txt",
        "outputFile": "out.txt",
        "inputs": ["scene.txt"],
    }


@dataclass
class Setup:
    """A job folder inside `root`; `outside` is a sibling folder that is not the job's."""

    root: Path
    folder: Path
    outside: Path
    data: dict[str, Any]

    @property
    def file(self) -> Path:
        return self.folder / "job.json"

    def write(self, name: str = "job.json", text: str | None = None) -> Path:
        path = self.folder / name
        path.write_text(json.dumps(self.data, indent=2) if text is None else text)
        return path


def make_setup(root: Path) -> Setup:
    folder, outside = root / "job", root / "outside"
    folder.mkdir()
    outside.mkdir()
    (folder / "scene.txt").write_text("the scene\n")
    # Outputs of an earlier run: a refused job must not delete them.
    (folder / "part_0.txt").write_text("old render of chunk 0\n")
    (folder / "out.txt").write_text("old merged output\n")
    return Setup(root, folder, outside, base_job())


def snapshot(root: Path) -> dict[str, tuple[Any, ...]]:
    """Every path under root with its kind, size and mtime (symlinks not followed)."""
    found: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            if path.is_symlink():
                found[str(path.relative_to(root))] = ("link", os.readlink(path))
            else:
                found[str(path.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns)
    top = root.lstat()
    found["."] = (top.st_mode, top.st_mtime_ns)
    return found


def run(argv: list[str], cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, text=True, capture_output=True, timeout=60)


def run_doit(job: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return run([*DOIT, *extra, f"job={job}"])


def run_cli(job: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return run([*CLI, "job", "run", job, *extra])


ENTRY_POINTS = {"doit": run_doit, "cli": run_cli}


# -- the corpus: each case changes the valid job (or its file) and returns the job's path --

def chunk(index: int, **changes: Any) -> Callable[[Setup], Path]:
    def change(s: Setup) -> Path:
        s.data["chunks"][index].update(changes)
        return s.write()
    return change


def drop(*keys: Any) -> Callable[[Setup], Path]:
    """drop("metadata") or drop("chunks", 1, "command")."""
    def change(s: Setup) -> Path:
        target = s.data
        for key in keys[:-1]:
            target = target[key]
        del target[keys[-1]]
        return s.write()
    return change


def meta(**changes: Any) -> Callable[[Setup], Path]:
    def change(s: Setup) -> Path:
        s.data["metadata"].update(changes)
        return s.write()
    return change


def top(**changes: Any) -> Callable[[Setup], Path]:
    def change(s: Setup) -> Path:
        s.data.update(changes)
        return s.write()
    return change


def edit(mutate: Callable[[dict[str, Any]], Any]) -> Callable[[Setup], Path]:
    """Any other change to the job's data."""
    def change(s: Setup) -> Path:
        mutate(s.data)
        return s.write()
    return change


def no_merge(data: dict[str, Any]) -> None:
    """Without a mergeCommand the built-in stitcher needs an outputFile: with neither, nothing can merge."""
    del data["mergeCommand"]
    del data["outputFile"]


def merge_into_job_file(data: dict[str, Any]) -> None:
    del data["outputFile"]
    data["mergeCommand"] = "helios merge job.json part_0.txt part_1.txt part_2.txt part_3.txt"


def several_check_faults(data: dict[str, Any]) -> None:
    data["chunks"][1]["outputFile"] = "../x.txt"
    data["chunks"][3]["outputFile"] = "part_2.txt"
    data["inputs"] = ["missing.blend"]
    data["metadata"]["totalFrames"] = 30


def several_schema_faults(data: dict[str, Any]) -> None:  # and no other fault: nothing more is said
    del data["chunks"][1]["command"]
    data["chunks"][2]["frameCount"] = "8"
    data["metadata"]["fps"] = 0


def schema_and_check_faults(data: dict[str, Any]) -> None:
    """Faults of both kinds: the schema's (a chunk, metadata) and the checks' (paths, the merge order)."""
    del data["chunks"][1]["command"]  # chunk 1 does not validate: frames 8-19 may be its own, so no gap is said
    data["chunks"][2]["startFrame"] = 20  # 20-27 overlaps chunk 3 (24-31): said all the same
    data["chunks"][3]["outputFile"] = "../x.txt"  # outside the job's folder
    data["metadata"]["fps"] = "fast"
    data["inputs"] = ["missing.blend"]
    data["outputFile"] = "part_2.txt"  # also chunk 2's output


def text(name: str, content: str | bytes) -> Callable[[Setup], Path]:
    def change(s: Setup) -> Path:
        path = s.folder / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return path
    return change


def missing_file(s: Setup) -> Path:
    return s.folder / "nope.json"


def a_folder(s: Setup) -> Path:
    (s.folder / "jobs").mkdir()
    return s.folder / "jobs"


def absolute_outside(s: Setup) -> Path:
    s.data["chunks"][1]["outputFile"] = str(s.outside / "part_1.txt")
    return s.write()


def through_symlink(s: Setup) -> Path:
    (s.folder / "renders").symlink_to(s.outside, target_is_directory=True)
    s.data["chunks"][1]["outputFile"] = "renders/part_1.txt"
    return s.write()


def existing_folder(s: Setup) -> Path:
    (s.folder / "part_2.txt").mkdir()
    return s.write()


def ranges(*spans: tuple[int, int], total: int = CHUNKS * FRAMES) -> Callable[[Setup], Path]:
    """Set (startFrame, frameCount) of each chunk in order."""
    def change(s: Setup) -> Path:
        for c, (start, count) in zip(s.data["chunks"], spans):
            c.update(startFrame=start, frameCount=count)
        s.data["metadata"]["totalFrames"] = total
        return s.write()
    return change


MALFORMED_JSON = '{\n  "metadata": {\n    "totalFrames": 32,,\n    "fps": 24\n  }\n}\n'
MALFORMED_YAML = "metadata:\n  totalFrames: 32\n  fps: [24, 25\nchunks: []\n"

#: id -> (make the job, what its one line must contain)
BAD: dict[str, tuple[Callable[[Setup], Path], list[str]]] = {
    # the file itself
    "file-missing": (missing_file, ["nope.json", "no such job file"]),
    "path-is-folder": (a_folder, ["jobs", "is a folder"]),
    "empty-file": (text("job.json", ""), ["malformed JSON at line 1, column 1"]),
    "not-utf8": (text("job.json", b'{"id": "\xff\xfe"}'), ["not a text file"]),
    "malformed-json": (text("job.json", MALFORMED_JSON), ["malformed JSON at line 3, column 23"]),
    "malformed-yaml": (text("job.yaml", MALFORMED_YAML), ["job.yaml", "malformed YAML at line 4, column 7"]),
    "top-level-list": (text("job.json", "[1, 2]"), ["must be an object", "got list"]),
    "yaml-top-level-scalar": (text("job.yml", "just a string\n"), ["job.yml", "must be an object", "got str"]),
    # the schema
    "metadata-missing": (drop("metadata"), ["metadata: required field is missing"]),
    "chunk-command-missing": (drop("chunks", 1, "command"), ["chunk 1 ", "chunks[1].command", "missing"]),
    "nothing-to-merge-with": (edit(no_merge), ["mergeCommand: required field is missing", "outputFile"]),
    "frameCount-string": (chunk(2, frameCount="8"), ["chunk 2 ", "frameCount", "valid integer", '"8"']),
    "id-float": (chunk(1, id=1.5), ["chunks[1].id", "valid integer", "1.5"]),
    "frameCount-zero": (chunk(2, frameCount=0), ["chunk 2 ", "frameCount", "greater than 0"]),
    "startFrame-negative": (chunk(3, startFrame=-8), ["chunk 3 ", "startFrame", "greater than or equal to 0"]),
    "totalFrames-negative": (meta(totalFrames=-1), ["metadata.totalFrames", "greater than 0", "-1"]),
    "fps-zero": (meta(fps=0), ["metadata.fps", "greater than 0"]),
    "width-zero": (meta(width=0), ["metadata.width", "greater than 0"]),
    "chunks-empty": (top(chunks=[]), ["chunks:", "at least 1 item"]),
    "chunk-not-object": (edit(lambda d: d["chunks"].__setitem__(2, "part_2")), ["chunks[2]", "valid dictionary"]),
    "command-empty": (chunk(3, command=""), ["chunk 3 ", "command", "at least 1 character"]),
    "outputFile-empty": (top(outputFile=""), ["outputFile", "at least 1 character"]),
    "inputs-not-list": (top(inputs="scene.txt"), ["inputs", "valid list"]),
    # ids and outputs
    "duplicate-id": (chunk(1, id=0), ["chunks[1]", "duplicate chunk id 0"]),
    "same-output": (chunk(3, outputFile="part_1.txt"), ["chunk 3 ", "outputFile", "'part_1.txt'", "chunk 1"]),
    "output-is-job-file": (chunk(2, outputFile="./job.json"), ["chunk 2 ", "outputFile", "job file itself"]),
    "output-is-merged-output": (chunk(2, outputFile="out.txt"), ["chunk 2 ", "outputFile", "merged output"]),
    "output-is-an-input": (chunk(1, outputFile="scene.txt"), ["chunk 1 ", "outputFile", "inputs"]),
    "merged-output-is-job-file": (top(outputFile="job.json"), ["outputFile", "job file itself"]),
    "merge-command-output-is-job-file": (edit(merge_into_job_file), ["mergeCommand output", "job file itself"]),
    "output-in-state-folder": (chunk(1, outputFile=".helios-doit/part_1.txt"), ["chunk 1 ", "outputFile", "state folder"]),
    "output-is-state-folder": (chunk(1, outputFile=".helios-doit"), ["chunk 1 ", "outputFile", "state folder"]),
    "output-absolute-outside": (absolute_outside, ["chunk 1 ", "outputFile", "outside", "output_root"]),
    "output-dotdot": (chunk(1, outputFile="../x.txt"), ["chunk 1 ", "outputFile", "'../x.txt'", "outside"]),
    "output-through-symlink": (through_symlink, ["chunk 1 ", "renders/part_1.txt", "outside"]),
    "merged-output-outside": (top(outputFile="../merged.txt"), ["outputFile", "outside"]),
    "output-existing-folder": (existing_folder, ["chunk 2 ", "outputFile", "existing folder"]),
    "output-nul-byte": (chunk(1, outputFile="part\x001.txt"), ["chunk 1 ", "outputFile", "not a usable path"]),
    "output-name-too-long": (chunk(1, outputFile="p" * 300 + ".txt"), ["chunk 1 ", "outputFile", "not a usable path"]),
    "output-newline": (chunk(1, outputFile="../a\nb.txt"), ["chunk 1 ", "outputFile", "a\\nb.txt", "outside"]),
    "input-missing": (top(inputs=["scene.txt", "missing.blend"]), ["inputs[1]", "'missing.blend'", "not a file"]),
    # frame ranges
    "overlap": (ranges((0, 10), (8, 8), (16, 8), (24, 8)), ["chunk 1.startFrame", "overlaps chunk 0", "0-9"]),
    "overlap-one-frame": (ranges((0, 9), (8, 8), (16, 8), (24, 8), total=33),
                          ["chunk 1.startFrame: 8 overlaps chunk 0 (frames 0-8); chunk ranges must not overlap"]),
    "gap-shifted": (ranges((0, 8), (8, 8), (18, 8), (26, 8)), ["chunk 2.startFrame", "16-17", "contiguous"]),
    "gap-short-chunk": (ranges((0, 8), (8, 6), (16, 8), (24, 8)), ["chunk 2.startFrame", "14-15", "contiguous"]),
    "frames-dont-add-up": (meta(totalFrames=30), ["metadata.totalFrames", "30", "add up to 32"]),
}


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    return make_setup(tmp_path)


def assert_refused(result: subprocess.CompletedProcess[str], lines: int | None = 1) -> list[str]:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stdout.strip() == "", result.stdout
    got = result.stderr.splitlines()
    assert all(line.startswith("helios-doit: ") and line.strip() != "helios-doit:" for line in got), got
    if lines is not None:
        assert len(got) == lines, got
    return got


def assert_untouched(s: Setup, before: dict[str, tuple[Any, ...]]) -> None:
    assert snapshot(s.root) == before
    assert not (s.folder / ".helios-doit").exists()
    assert not (s.folder / "ran.log").exists()
    assert (s.folder / "part_0.txt").read_text() == "old render of chunk 0\n"
    assert (s.folder / "out.txt").read_text() == "old merged output\n"


def run_in_process(job: str, capsys: pytest.CaptureFixture[str]) -> subprocess.CompletedProcess[str]:
    """`helios-doit job run JOB` in this process: what the command says and returns, without
    the start-up of a new Python (the corpus is big; a few cases also run end to end below)."""
    from helios_doit.cli.main import main

    try:
        code = main(["job", "run", job])
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(["helios-doit", "job", "run", job], code, out, err)


@pytest.mark.parametrize("case", BAD)
def test_bad_job_is_refused_whole(setup: Setup, case: str, capsys: pytest.CaptureFixture[str]) -> None:
    make, expected = BAD[case]
    job = make(setup)
    before = snapshot(setup.root)
    [line] = assert_refused(run_in_process(str(job), capsys))
    assert f"helios-doit: {job}: " in line, line
    for part in expected:
        assert part in line, (part, line)
    assert_untouched(setup, before)


#: Cases run end to end through each entry point: the file, the schema, the checks, the frames.
END_TO_END = ["malformed-json", "frameCount-string", "output-through-symlink", "overlap-one-frame"]


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("case", END_TO_END)
def test_bad_job_is_refused_whole_by_each_entry_point(setup: Setup, case: str, entry: str) -> None:
    make, expected = BAD[case]
    job = make(setup)
    before = snapshot(setup.root)
    [line] = assert_refused(ENTRY_POINTS[entry](str(job)))
    assert f"helios-doit: {job}: " in line and all(part in line for part in expected), line
    assert_untouched(setup, before)


def test_chunks_listed_out_of_frame_order_are_a_valid_job(setup: Setup) -> None:
    setup.data["chunks"].reverse()
    job = setup.write()
    result = run_cli(str(job))
    assert result.returncode == 0, result.stderr
    assert (setup.folder / "out.txt").read_text() == "".join(f"frames {i}\n" for i in range(CHUNKS))


@pytest.mark.parametrize("command", ["clean", "forget", "list", "-n 4"])
def test_every_doit_command_refuses_before_touching_anything(setup: Setup, command: str) -> None:
    """`doit clean` deletes outputs: with a bad job it must stop at loading like `run` does."""
    job = chunk(1, outputFile="scene.txt")(setup)  # `clean` would delete the input
    before = snapshot(setup.root)
    [line] = assert_refused(run_doit(str(job), *command.split()))
    assert "chunk 1 " in line and "inputs" in line
    assert_untouched(setup, before)
    assert (setup.folder / "scene.txt").read_text() == "the scene\n"


def test_corpus_starts_from_a_job_that_runs(setup: Setup) -> None:
    """The control: unchanged, the base job runs every command, so `ran.log` proves nothing ran above."""
    job = setup.write()
    result = run_cli(str(job))
    assert result.returncode == 0, result.stderr
    assert (setup.folder / "ran.log").read_text().split("\n")[:-1] == [
        "chunk 0", "chunk 1", "chunk 2", "chunk 3", "merge"]
    assert (setup.folder / ".helios-doit" / "job.json").is_dir()


# -- several faults: one line each --

#: Every fault in one report: schema faults, then the checks across fields on what did validate
#: (a check that needs a part that did not, such as the frame total, is skipped).
MULTI = {
    "checks": (edit(several_check_faults), ["chunk 1 ", "chunk 3 ", "inputs[0]", "metadata.totalFrames"]),
    "schema": (edit(several_schema_faults), ["chunk 1 ", "chunk 2 ", "metadata.fps"]),
    "both": (edit(schema_and_check_faults), ["chunk 1 (chunks[1].command): required field is missing",
                                             "metadata.fps: input should be a valid number",
                                             "inputs[0]: 'missing.blend' is not a file",
                                             "chunk 2 (chunks[2]).outputFile: 'part_2.txt' is also the merged output",
                                             "chunk 3 (chunks[3]).outputFile: '../x.txt' resolves to",
                                             "chunk 3.startFrame: 24 overlaps chunk 2 (frames 20-27)"]),
}


@pytest.mark.parametrize("case", MULTI)
def test_several_faults_one_line_each(setup: Setup, case: str, capsys: pytest.CaptureFixture[str]) -> None:
    make, expected = MULTI[case]
    job = make(setup)
    before = snapshot(setup.root)
    got = assert_refused(run_in_process(str(job), capsys), lines=len(expected))
    for part in expected:
        assert len([line for line in got if part in line]) == 1, (part, got)
    assert_untouched(setup, before)


# -- jobs that look unusual but are fine --

def test_range_starting_past_zero_is_accepted(setup: Setup) -> None:
    for i, c in enumerate(setup.data["chunks"]):
        c["startFrame"] = 100 + i * FRAMES
    job = setup.write()
    assert run_doit(str(job), "list").returncode == 0
    result = run_cli(str(job), "--no-merge")
    assert result.returncode == 0, result.stderr
    assert sorted((setup.folder / "ran.log").read_text().splitlines()) == [f"chunk {i}" for i in range(CHUNKS)]


def test_output_outside_is_accepted_under_an_allowed_root(setup: Setup) -> None:
    out = setup.outside / "part_1.txt"
    setup.data["chunks"][1].update(outputFile=str(out), command=f"echo chunk 1 >> ran.log && echo frames 1 > {shlex.quote(str(out))}")
    setup.data["mergeCommand"] = setup.data["mergeCommand"].replace("part_1.txt", shlex.quote(str(out)))
    job = str(setup.write())

    listed = run_doit(job, "list", f"output_root={setup.outside}")
    assert listed.returncode == 0, listed.stderr
    assert "chunk" in listed.stdout and "merge" in listed.stdout

    # Another allowed folder does not allow this one.
    other = setup.root / "other"
    other.mkdir()
    assert_refused(run_doit(job, "list", f"output_root={other}"))
    assert_refused(run_cli(job, "--output-root", str(other)))

    result = run_cli(job, "--output-root", str(setup.outside))
    assert result.returncode == 0, result.stderr
    assert out.read_text() == "frames 1\n"
    assert (setup.folder / "out.txt").read_text() == "".join(f"frames {i}\n" for i in range(CHUNKS))


def test_valid_yaml_job_loads(setup: Setup) -> None:
    import yaml

    job = setup.write("job.yaml", yaml.safe_dump(setup.data, sort_keys=False))
    result = run_doit(str(job), "list")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["chunk", "render", "all", "4", "chunks", "merge", "stitch", "the", "chunks", "into", "out.txt"]
    assert not (setup.folder / ".helios-doit").exists()  # listing only reads


# -- jobs from a URL --

@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An http server on 127.0.0.1 for a folder holding a valid job; yields (base URL, folder)."""
    folder = tmp_path / "served"
    folder.mkdir()
    (folder / "job.json").write_text(json.dumps({**base_job(), "inputs": []}))
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", folder
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_job_from_url_runs_in_the_current_folder(served: tuple[str, Path], tmp_path: Path) -> None:
    base, _ = served
    here = tmp_path / "here"
    here.mkdir()
    url = f"{base}/job.json"
    # doit chdirs to the dodo file's folder before importing it unless -d/--dir says otherwise,
    # and a URL job's folder is the current folder: without -d its state would land in the repo.
    result = run([*DOIT, "-d", str(here), "chunk:0", f"job={url}"], cwd=here)
    assert result.returncode == 0, result.stderr
    [state] = [p for p in (here / ".helios-doit").iterdir() if p.name != ".outputs"]  # .outputs: the outputs' locks
    assert state.name.startswith("job.json-")

    # The CLI does not chdir: the current folder is the job's folder; its commands run there.
    result = run([*CLI, "job", "run", url], cwd=here)
    assert result.returncode == 0, result.stderr
    assert (here / "ran.log").read_text().splitlines() == ["chunk 0", "chunk 1", "chunk 2", "chunk 3", "merge"]
    assert (here / "out.txt").is_file()
    assert sorted(p.name for p in (here / ".helios-doit").iterdir()) == [".outputs", state.name]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("entry", ["doit", "cli"])
@pytest.mark.parametrize("what", ["closed-port", "not-found", "malformed"])
def test_url_that_fails_is_refused(served: tuple[str, Path], tmp_path: Path, what: str, entry: str) -> None:
    base, folder = served
    (folder / "bad.json").write_text('{"metadata": ')
    url = {
        "closed-port": f"http://127.0.0.1:{closed_port()}/job.json",
        "not-found": f"{base}/missing.json",
        "malformed": f"{base}/bad.json",
    }[what]
    here = tmp_path / "here"
    here.mkdir()
    before = snapshot(tmp_path)
    if entry == "doit":
        result = run([*DOIT, "-d", str(here), f"job={url}"], cwd=here)
    else:
        result = run([*CLI, "job", "run", url], cwd=here)
    [line] = assert_refused(result)
    assert line.startswith(f"helios-doit: {url}: ")
    assert {"closed-port": "cannot fetch", "not-found": "404", "malformed": "malformed JSON at line 1"}[what] in line
    assert snapshot(tmp_path) == before
