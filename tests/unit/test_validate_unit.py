"""spec/checks.py (README "Validation comes first"): a job with any fault is refused as a whole,
one line per fault naming the chunk and field; every output must resolve inside the job's
folder (or an allowed output root), belong to one chunk, and not be the job file, an input,
the merged output, an existing folder or inside the state folder; chunks tile the frames."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from helios_doit.spec.checks import _check_frames, check_job, merge_inputs_of, merge_output_of
from helios_doit.spec.errors import JobError
from helios_doit.spec.load import load_job
from helios_doit.spec.model import JobSpec


def write_job(folder: Path, chunks: list[tuple[int, int, int, str]] | None = None, total: int | None = None,
              merge: str | None = "default", name: str = "job.json", **extra) -> Path:
    """chunks: (id, startFrame, frameCount, outputFile)."""
    folder.mkdir(parents=True, exist_ok=True)
    chunks = chunks if chunks is not None else [(0, 0, 8, "part_0.mov"), (1, 8, 8, "part_1.mov")]
    data = {
        "metadata": {"totalFrames": total if total is not None else sum(c[2] for c in chunks), "fps": 24,
                     "width": 64, "height": 48, "duration": 1},
        "chunks": [{"id": i, "startFrame": s, "frameCount": n, "outputFile": out, "command": f"render {out}"}
                   for i, s, n, out in chunks],
        **extra,
    }
    if merge == "default":
        merge = "helios merge out.mp4 " + " ".join(c[3] for c in sorted(chunks, key=lambda c: c[1]))
    if merge is not None:
        data["mergeCommand"] = merge
    path = folder / name
    path.write_text(json.dumps(data))
    return path


HOW = ("keep outputs inside the job's folder, run from a folder that holds them (Helios' layout: the "
       "project folder), or allow another folder with output_root=PATH (CLI: --output-root)")


def faults(path: Path, **kwargs) -> list[str]:
    with pytest.raises(JobError) as caught:
        load_job(str(path), cwd=path.parent, **kwargs)
    prefix = f"{path}: "
    assert all(line.startswith(prefix) for line in caught.value.lines)
    return [line[len(prefix):] for line in caught.value.lines]


@pytest.fixture
def job(tmp_path: Path) -> Path:
    return tmp_path / "job"


# -- a good job --------------------------------------------------------------------------------

def test_a_good_job_loads_with_every_path_resolved(job: Path) -> None:
    (job / "assets").mkdir(parents=True)
    (job / "assets" / "logo.png").write_bytes(b"png")
    loaded = load_job(str(write_job(job, inputs=["assets/logo.png"])), cwd=job)
    real = job.resolve()
    assert loaded.outputs == {0: str(real / "part_0.mov"), 1: str(real / "part_1.mov")}
    assert loaded.merge_output == real / "out.mp4"
    assert loaded.inputs == (real / "assets" / "logo.png",)


def test_outputs_in_subfolders_that_do_not_exist_yet_are_fine(job: Path) -> None:
    loaded = load_job(str(write_job(job, [(0, 0, 4, "renders/a/p0.mov"), (1, 4, 4, "renders/b/p1.mov")])), cwd=job)
    assert loaded.outputs[1] == str(job.resolve() / "renders" / "b" / "p1.mov")


def test_check_job_returns_no_faults_for_a_good_spec(job: Path) -> None:
    path = write_job(job)
    spec = JobSpec.model_validate(json.loads(path.read_text()))
    outputs, merge, inputs, found = check_job(spec, job, path, job / ".helios-doit" / "job", None)
    assert found == []
    assert outputs == {0: str(job / "part_0.mov"), 1: str(job / "part_1.mov")}
    assert merge == job / "out.mp4" and inputs == ()


# -- frames --------------------------------------------------------------------------------------

def test_overlapping_ranges_are_refused(job: Path) -> None:
    path = write_job(job, [(0, 0, 8, "a.mov"), (1, 5, 8, "b.mov")], total=13)
    assert faults(path) == ["chunk 1.startFrame: 5 overlaps chunk 0 (frames 0-7); chunk ranges must not overlap"]


def test_a_gap_between_ranges_is_refused(job: Path) -> None:
    path = write_job(job, [(0, 0, 8, "a.mov"), (1, 10, 6, "b.mov")], total=14)
    assert faults(path) == ["chunk 1.startFrame: 10 leaves frames 8-9 after chunk 0 unrendered; "
                            "chunk ranges must be contiguous"]
    path = write_job(job, [(0, 0, 8, "a.mov"), (1, 9, 7, "b.mov")], total=15)
    assert faults(path) == ["chunk 1.startFrame: 9 leaves frames 8-8 after chunk 0 unrendered; "
                            "chunk ranges must be contiguous"]


def test_ranges_that_touch_tile_the_frames_in_any_listed_order_and_may_start_past_0(job: Path) -> None:
    load_job(str(write_job(job, [(5, 100, 10, "c.mov"), (3, 90, 10, "b.mov"), (7, 80, 10, "a.mov")])), cwd=job)


def test_total_frames_must_match_the_chunks(job: Path) -> None:
    path = write_job(job, [(0, 0, 8, "a.mov"), (1, 8, 8, "b.mov")], total=17)
    assert faults(path) == ["metadata.totalFrames: 17, but the chunks' frameCount add up to 16; they must match"]
    path = write_job(job, [(0, 0, 8, "a.mov"), (1, 8, 8, "b.mov")], total=15)
    assert faults(path) == ["metadata.totalFrames: 15, but the chunks' frameCount add up to 16; they must match"]


def test_an_overlap_explains_a_total_mismatch_on_its_own(job: Path) -> None:
    path = write_job(job, [(0, 0, 8, "a.mov"), (1, 4, 8, "b.mov")], total=12)
    assert [f.split(":")[0] for f in faults(path)] == ["chunk 1.startFrame"]


def test_every_overlap_and_gap_is_reported(job: Path) -> None:
    path = write_job(job, [(0, 0, 4, "a.mov"), (1, 2, 4, "b.mov"), (2, 10, 2, "c.mov")], total=10)
    assert faults(path) == [
        "chunk 1.startFrame: 2 overlaps chunk 0 (frames 0-3); chunk ranges must not overlap",
        "chunk 2.startFrame: 10 leaves frames 6-9 after chunk 1 unrendered; chunk ranges must be contiguous",
    ]


def test_chunks_starting_on_the_same_frame_are_ordered_by_id(job: Path) -> None:
    path = write_job(job, [(2, 0, 4, "a.mov"), (1, 0, 4, "b.mov")], total=4)
    assert faults(path) == ["chunk 2.startFrame: 0 overlaps chunk 1 (frames 0-3); chunk ranges must not overlap"]


def test_duplicate_ids_are_reported_and_ranges_left_for_later(job: Path) -> None:
    path = write_job(job, [(0, 0, 8, "a.mov"), (0, 4, 8, "b.mov")], total=99)
    assert faults(path) == ["chunk 0 (chunks[1]).id: duplicate chunk id 0; every chunk needs its own id"]


def test_check_frames_directly(job: Path) -> None:
    spec = JobSpec.model_validate(json.loads(write_job(job, [(0, 0, 4, "a.mov"), (1, 4, 4, "b.mov")]).read_text()))
    assert _check_frames(spec) == []


# -- paths --------------------------------------------------------------------------------------

def test_an_output_outside_the_jobs_folder_is_refused(job: Path, tmp_path: Path) -> None:
    path = write_job(job, [(0, 0, 8, "../elsewhere/a.mov"), (1, 8, 8, "b.mov")])
    real = job.resolve()
    assert faults(path) == [f"chunk 0 (chunks[0]).outputFile: '../elsewhere/a.mov' resolves to "
                            f"{real.parent / 'elsewhere' / 'a.mov'}, outside {real}; {HOW}"]


def test_outputs_outside_are_said_in_one_line_counting_the_others(job: Path) -> None:
    chunks = [(0, 0, 4, "../x/a.mov"), (1, 4, 4, "b.mov"), (2, 8, 4, "../x/c.mov"), (3, 12, 4, "../x/d.mov")]
    path = write_job(job, chunks, merge="helios merge out.mp4 x")
    real = job.resolve()
    assert faults(path) == [f"chunk 0 (chunks[0]).outputFile: '../x/a.mov' resolves to {real.parent / 'x' / 'a.mov'}, "
                            f"outside {real} (and 2 more outputs); {HOW}"]
    two = write_job(job, chunks[:3], merge="helios merge out.mp4 x")
    assert faults(two)[0].endswith(f"outside {real} (and 1 more outputs); {HOW}")
    # the merged output counts among them, and comes first (it is checked first)
    merged = write_job(job, chunks[:3], merge="helios merge ../x/out.mp4 x")
    assert faults(merged) == [f"mergeCommand output: '../x/out.mp4' resolves to {real.parent / 'x' / 'out.mp4'}, "
                              f"outside {real} (and 2 more outputs); {HOW}"]


def test_outside_names_every_allowed_folder(job: Path, tmp_path: Path) -> None:
    (tmp_path / "renders").mkdir()
    path = write_job(job, [(0, 0, 8, "../x/a.mov"), (1, 8, 8, "b.mov")])
    real, renders = job.resolve(), (tmp_path / "renders").resolve()
    assert faults(path, output_root=str(renders)) == [
        f"chunk 0 (chunks[0]).outputFile: '../x/a.mov' resolves to {real.parent / 'x' / 'a.mov'}, "
        f"outside {real} and {renders}; {HOW}"]


def test_run_from_a_project_folder_outputs_may_be_anywhere_under_it(tmp_path: Path) -> None:
    # Helios' layout: `helios render -o renders/out.mp4 --emit-job jobs/job.json`, run from the project folder
    project = tmp_path / "project"
    path = write_job(project / "jobs", [(0, 0, 8, "../renders/p0.mov"), (1, 8, 8, "../renders/p1.mov")],
                     merge="helios merge ../renders/out.mp4 ../renders/p0.mov ../renders/p1.mov")
    real = project.resolve()
    loaded = load_job("jobs/job.json", cwd=project)
    assert loaded.outputs == {0: str(real / "renders" / "p0.mov"), 1: str(real / "renders" / "p1.mov")}
    assert loaded.merge_output == real / "renders" / "out.mp4"
    assert loaded.output_roots == (str(real / "jobs"), str(real))
    assert load_job(str(path), cwd=tmp_path).output_roots == (str(real / "jobs"), str(tmp_path.resolve()))
    # run from the job's own folder, or from a folder that does not hold it: only the job's folder
    with pytest.raises(JobError) as caught:
        load_job("job.json", cwd=project / "jobs")
    assert "outside" in caught.value.lines[0]
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(JobError):
        load_job(str(path), cwd=tmp_path / "elsewhere")
    # nor beyond the project folder
    path = write_job(project / "jobs", [(0, 0, 8, "../../p0.mov"), (1, 8, 8, "../renders/p1.mov")], merge="helios merge o.mp4 x")
    with pytest.raises(JobError) as caught:
        load_job("jobs/job.json", cwd=project)
    assert caught.value.lines == [f"jobs/job.json: chunk 0 (chunks[0]).outputFile: '../../p0.mov' resolves to "
                                  f"{tmp_path.resolve() / 'p0.mov'}, outside {real / 'jobs'} and {real}; {HOW}"]


def test_an_absolute_output_elsewhere_is_refused_unless_its_root_is_allowed(job: Path, tmp_path: Path) -> None:
    renders = tmp_path / "renders"
    renders.mkdir()
    out = str(renders / "a.mov")
    path = write_job(job, [(0, 0, 8, out), (1, 8, 8, "b.mov")])
    assert len(faults(path)) == 1 and "outside" in faults(path)[0]
    loaded = load_job(str(path), output_root=str(renders), cwd=job)
    assert loaded.outputs[0] == str(renders.resolve() / "a.mov")
    assert loaded.output_roots == (str(job.resolve()), str(renders.resolve()))


def test_a_sibling_folder_with_the_same_prefix_is_outside(job: Path, tmp_path: Path) -> None:
    (tmp_path / "job2").mkdir()
    path = write_job(job, [(0, 0, 8, "../job2/a.mov"), (1, 8, 8, "b.mov")])
    assert "outside" in faults(path)[0]


def test_a_symlinked_folder_leading_out_is_outside(job: Path, tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    job.mkdir()
    (job / "out").symlink_to(tmp_path / "elsewhere")
    path = write_job(job, [(0, 0, 8, "out/a.mov"), (1, 8, 8, "b.mov")])
    assert f"resolves to {(tmp_path / 'elsewhere' / 'a.mov').resolve()}, outside" in faults(path)[0]


def test_an_outputs_own_name_is_never_followed(job: Path, tmp_path: Path) -> None:
    (tmp_path / "precious.mov").write_bytes(b"x")
    job.mkdir()
    (job / "a.mov").symlink_to(tmp_path / "precious.mov")
    loaded = load_job(str(write_job(job, [(0, 0, 8, "a.mov"), (1, 8, 8, "b.mov")])), cwd=job)
    assert loaded.outputs[0] == str(job.resolve() / "a.mov")  # the place, not the target


def test_an_output_inside_the_state_folder_is_refused(job: Path) -> None:
    path = write_job(job, [(0, 0, 8, ".helios-doit/a.mov"), (1, 8, 8, "b.mov")])
    assert faults(path) == [f"chunk 0 (chunks[0]).outputFile: '.helios-doit/a.mov' is inside the state folder "
                            f"{job / '.helios-doit'}; choose another path"]
    path = write_job(job, [(0, 0, 8, ".helios-doit/job/records/chunk-0.json"), (1, 8, 8, "b.mov")])
    assert "is inside the state folder" in faults(path)[0]
    # a name that merely starts like the state folder is fine
    load_job(str(write_job(job, [(0, 0, 8, ".helios-doit2.mov"), (1, 8, 8, "b.mov")])), cwd=job)


def test_an_output_in_another_jobs_state_or_a_services_data_is_refused_even_from_the_project_folder(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "jobs").mkdir(parents=True)
    for output in (".helios-doit/other.json/records/a.mov", ".helios-doit-serve/a.mov", "shots/.helios-doit/x/a.mov",
                   "shots/.helios-doit"):  # where the folder of the outputs' locks in shots/ would be
        path = write_job(project / "jobs", [(0, 0, 8, f"../{output}"), (1, 8, 8, "b.mov")])
        with pytest.raises(JobError) as refused:
            load_job(str(path), cwd=project)  # run from the project folder: outputs anywhere under it, but not there
        [line] = refused.value.lines
        assert "a folder of helios-doit's own" in line and str(project) in line, line
    load_job(str(write_job(project / "jobs", [(0, 0, 8, "../renders/a.mov"), (1, 8, 8, "b.mov")])), cwd=project)


def test_a_job_whose_own_folder_is_inside_a_service_data_folder_writes_there(tmp_path: Path) -> None:
    """The render service keeps a web job's folder in its data folder (`<data>/web/<digest>`)."""
    folder = tmp_path / ".helios-doit-serve" / "web" / "abc"
    loaded = load_job(str(write_job(folder, [(0, 0, 8, "a.mov"), (1, 8, 8, "b.mov")])), cwd=folder)
    assert loaded.outputs[0] == str(folder / "a.mov")
    with pytest.raises(JobError) as refused:  # but not in a folder of helios-doit's own inside it
        load_job(str(write_job(folder, [(0, 0, 8, ".helios-doit-x/a.mov"), (1, 8, 8, "b.mov")])), cwd=folder)
    assert "a folder of helios-doit's own" in refused.value.lines[0]


def test_an_output_root_inside_another_jobs_state_allows_no_output_there(tmp_path: Path) -> None:
    other = tmp_path / "shot1" / ".helios-doit" / "job.json" / "records"
    other.mkdir(parents=True)
    for root in (other.parent.parent, other):
        path = write_job(tmp_path / "shot2", [(0, 0, 8, str(other / "chunk-0.json")), (1, 8, 8, "b.mov")])
        with pytest.raises(JobError) as refused:
            load_job(str(path), output_root=root, cwd=tmp_path)
        [line] = refused.value.lines
        assert "a folder of helios-doit's own" in line and str(tmp_path / "shot1" / ".helios-doit") in line, line


def test_an_existing_folder_is_not_an_output(job: Path) -> None:
    (job / "renders").mkdir(parents=True)
    path = write_job(job, [(0, 0, 8, "renders"), (1, 8, 8, "b.mov")], merge="helios merge out.mp4 x y")
    assert faults(path) == ["chunk 0 (chunks[0]).outputFile: 'renders' is an existing folder; an output must be a file path"]
    path = write_job(job, [(0, 0, 8, "renders/.."), (1, 8, 8, "b.mov")], merge="helios merge out.mp4 x y")
    assert faults(path) == ["chunk 0 (chunks[0]).outputFile: 'renders/..' is an existing folder; an output must be a file path"]


def test_an_output_may_not_be_the_job_file_or_an_input(job: Path) -> None:
    job.mkdir()
    (job / "logo.png").write_bytes(b"png")
    path = write_job(job, [(0, 0, 8, "job.json"), (1, 8, 8, "logo.png")], inputs=["logo.png"],
                     merge="helios merge out.mp4 x y")
    assert faults(path) == [
        "chunk 0 (chunks[0]).outputFile: 'job.json' is the job file itself; choose another output",
        "chunk 1 (chunks[1]).outputFile: 'logo.png' is also listed in inputs, and outputs are deleted; choose another output",
    ]


def test_the_merged_output_may_not_be_the_job_file_or_an_input(job: Path) -> None:
    job.mkdir()
    (job / "logo.png").write_bytes(b"png")
    path = write_job(job, merge="helios merge job.json part_0.mov part_1.mov")
    assert faults(path) == ["mergeCommand output: 'job.json' is the job file itself; choose another output"]
    path = write_job(job, merge=None, outputFile="logo.png", inputs=["logo.png"])
    assert faults(path) == ["outputFile: 'logo.png' is also listed in inputs, and outputs are deleted; choose another output"]


def test_two_chunks_may_not_share_an_output(job: Path) -> None:
    path = write_job(job, [(0, 0, 4, "a.mov"), (1, 4, 4, "b.mov"), (2, 8, 4, "sub/../a.mov")],
                     merge="helios merge out.mp4 x")
    assert faults(path) == ["chunk 2 (chunks[2]).outputFile: 'sub/../a.mov' is also the output of chunk 0; "
                            "give each chunk its own file"]


def test_a_chunk_may_not_write_the_merged_output(job: Path) -> None:
    path = write_job(job, [(0, 0, 8, "out.mp4"), (1, 8, 8, "b.mov")], merge="helios merge out.mp4 out.mp4 b.mov")
    assert faults(path) == ["chunk 0 (chunks[0]).outputFile: 'out.mp4' is also the merged output; give the chunk its own file"]


def test_a_merged_output_outside_is_refused_by_its_field(job: Path) -> None:
    path = write_job(job, merge=None, outputFile="../out.mp4")
    assert faults(path)[0].startswith("outputFile: '../out.mp4' resolves to ")
    path = write_job(job, merge="helios merge ../out.mp4 part_0.mov part_1.mov")
    assert faults(path)[0].startswith("mergeCommand output: '../out.mp4' resolves to ")


def test_an_output_file_takes_precedence_over_the_merge_commands(job: Path) -> None:
    loaded = load_job(str(write_job(job, outputFile="final.mov")), cwd=job)
    assert loaded.merge_output == job.resolve() / "final.mov"


def test_a_job_needs_a_merge(job: Path) -> None:
    path = write_job(job, merge=None)
    assert faults(path) == ["mergeCommand: required field is missing; add a mergeCommand, or an outputFile to merge "
                            "with the built-in stitcher"]
    load_job(str(write_job(job, merge=None, outputFile="out.mov")), cwd=job)


def test_a_merge_command_we_do_not_know_has_no_known_output(job: Path) -> None:
    loaded = load_job(str(write_job(job, merge="ffmpeg -f concat -i list.txt out.mp4")), cwd=job)
    assert loaded.merge_output is None


def test_missing_and_non_file_inputs_are_refused(job: Path, tmp_path: Path) -> None:
    (job / "assets").mkdir(parents=True)
    (job / "dangling").symlink_to(tmp_path / "gone.png")
    path = write_job(job, inputs=["missing.png", "assets", "dangling"])
    real = job.resolve()
    assert faults(path) == [
        f"inputs[0]: 'missing.png' is not a file (looked at {real / 'missing.png'}); fix the path or remove it",
        f"inputs[1]: 'assets' is not a file (looked at {real / 'assets'}); fix the path or remove it",
        f"inputs[2]: 'dangling' is not a file (looked at {tmp_path.resolve() / 'gone.png'}); fix the path or remove it",
    ]


def test_an_input_symlink_is_followed(job: Path, tmp_path: Path) -> None:
    (tmp_path / "shared.png").write_bytes(b"png")
    job.mkdir()
    (job / "logo.png").symlink_to(tmp_path / "shared.png")
    loaded = load_job(str(write_job(job, inputs=["logo.png"])), cwd=job)
    assert loaded.inputs == (tmp_path.resolve() / "shared.png",)


def test_an_output_that_is_an_input_through_a_symlink_is_refused(job: Path) -> None:
    # the input resolves to its target; the output place is the target itself
    job.mkdir()
    (job / "real.png").write_bytes(b"png")
    (job / "logo.png").symlink_to(job / "real.png")
    path = write_job(job, [(0, 0, 8, "real.png"), (1, 8, 8, "b.mov")], inputs=["logo.png"], merge="helios merge o.mp4 x")
    assert faults(path) == ["chunk 0 (chunks[0]).outputFile: 'real.png' is also listed in inputs, and outputs are "
                            "deleted; choose another output"]


def test_an_unusable_path_is_a_fault_not_a_traceback(job: Path) -> None:
    path = write_job(job, [(0, 0, 8, "a\x00.mov"), (1, 8, 8, "b.mov")], merge="helios merge out.mp4 x y")
    [line] = faults(path)  # the chunk's command names the output too: refused as it loads
    assert line.startswith("chunk 0 (chunks[0].command): value error, holds a NUL byte")
    path = write_job(job, [(0, 0, 8, "x" * 300 + ".mov"), (1, 8, 8, "b.mov")], merge="helios merge out.mp4 x y")
    [line] = faults(path)
    assert "is not a usable path (File name too long); fix it" in line


def test_faults_are_all_reported_at_once(job: Path) -> None:
    path = write_job(job, [(0, 0, 8, "../a.mov"), (1, 9, 8, "job.json")], total=3, inputs=["nope"])
    found = faults(path)
    # outputs outside come first, in their one line
    assert [f.split(":")[0] for f in found] == ["chunk 0 (chunks[0]).outputFile", "inputs[0]",
                                                "chunk 1 (chunks[1]).outputFile", "chunk 1.startFrame"]


# -- the merge command's order -----------------------------------------------------------------

def test_a_merge_listing_chunks_out_of_frame_order_is_refused(job: Path) -> None:
    chunks = [(0, 0, 4, "p0.mov"), (1, 4, 4, "p1.mov"), (2, 8, 4, "p2.mov")]
    path = write_job(job, chunks, merge="helios merge out.mp4 p0.mov p2.mov p1.mov")
    assert faults(path) == ["mergeCommand: lists chunk 2's output where chunk 1's belongs (its frames come first), so "
                            "the merged video would be out of order; list the chunk outputs in frame order"]
    load_job(str(write_job(job, chunks, merge="helios merge out.mp4 ./p0.mov p1.mov sub/../p2.mov")), cwd=job)


def test_merge_order_follows_frames_not_the_order_chunks_are_listed(job: Path) -> None:
    chunks = [(0, 8, 4, "p0.mov"), (1, 0, 4, "p1.mov"), (2, 4, 4, "p2.mov")]
    load_job(str(write_job(job, chunks, merge="helios merge out.mp4 p1.mov p2.mov p0.mov")), cwd=job)
    path = write_job(job, chunks, merge="helios merge out.mp4 p0.mov p1.mov p2.mov")
    assert faults(path)[0].startswith("mergeCommand: lists chunk 0's output where chunk 1's belongs")


def test_a_merge_of_other_files_is_not_judged_by_order(job: Path) -> None:
    chunks = [(0, 0, 4, "p0.mov"), (1, 4, 4, "p1.mov")]
    load_job(str(write_job(job, chunks, merge="helios merge out.mp4 p1.mov")), cwd=job)  # fewer
    load_job(str(write_job(job, chunks, merge="helios merge out.mp4 p1.mov p0.mov intro.mov")), cwd=job)  # more
    load_job(str(write_job(job, chunks, merge="helios merge out.mp4 p1.mov p1.mov")), cwd=job)  # not the set
    load_job(str(write_job(job, chunks, merge="sh merge.sh out.mp4 p1.mov p0.mov")), cwd=job)  # not ours


def test_merge_order_is_judged_only_once_the_rest_is_right(job: Path) -> None:
    chunks = [(0, 0, 4, "p0.mov"), (1, 4, 4, "p1.mov")]
    path = write_job(job, chunks, total=9, merge="helios merge out.mp4 p1.mov p0.mov")
    assert [f.split(":")[0] for f in faults(path)] == ["metadata.totalFrames"]


def test_merge_inputs_of() -> None:
    assert merge_inputs_of("helios merge out.mp4 a.mov b.mov") == ["a.mov", "b.mov"]
    assert merge_inputs_of("/opt/bin/helios-doit merge out.mp4 a.mov") == ["a.mov"]
    assert merge_inputs_of("helios merge --audio-codec aac out.mp4 a.mov -v b.mov") == ["a.mov"]
    assert merge_inputs_of("helios merge --audio-codec=aac out.mp4 a.mov b.mov") == ["a.mov", "b.mov"]
    assert merge_inputs_of("helios merge out.mp4 -- -a.mov -- b.mov") == ["-a.mov", "--", "b.mov"]
    assert merge_inputs_of("helios merge 'my out.mp4' 'part 0.mov'") == ["part 0.mov"]
    assert merge_inputs_of("helios merge out.mp4") == []
    assert merge_inputs_of("helios merge") == []
    assert merge_inputs_of("helios render out.mp4 a.mov") == []
    assert merge_inputs_of("ffmpeg merge out.mp4 a.mov") == []
    assert merge_inputs_of("helios merge 'unbalanced") == []


def test_merge_output_of() -> None:
    assert merge_output_of("helios merge out.mp4 a.mov") == "out.mp4"
    assert merge_output_of("/usr/local/bin/helios-doit merge out.mp4 a.mov") == "out.mp4"
    assert merge_output_of("helios merge -- out.mp4 a.mov") == "out.mp4"
    assert merge_output_of("helios merge out.mp4") == "out.mp4"
    assert merge_output_of("helios merge --") is None
    assert merge_output_of("helios merge") is None
    assert merge_output_of("helios stitch out.mp4 a.mov") is None
    assert merge_output_of("cat a b > out.mp4") is None
    assert merge_output_of("helios merge 'unbalanced") is None


# -- more paths ------------------------------------------------------------------------------------

def test_one_file_named_two_ways_is_one_output(job: Path) -> None:
    for other in ("renders/", "renders/.", "renders/sub/..", "./renders"):
        path = write_job(job, [(0, 0, 4, "renders"), (1, 4, 4, other)], merge="helios merge out.mp4 x")
        assert faults(path) == [f"chunk 1 (chunks[1]).outputFile: {other!r} is also the output of chunk 0; "
                                "give each chunk its own file"], other


def test_an_output_named_with_a_dot_is_the_folder_it_names(job: Path) -> None:
    loaded = load_job(str(write_job(job, [(0, 0, 4, "renders/."), (1, 4, 4, "b.mov")], merge="helios merge o.mp4 x")),
                      cwd=job)
    assert loaded.outputs[0] == str(job.resolve() / "renders")
    path = write_job(job, [(0, 0, 4, "nope/.."), (1, 4, 4, "b.mov")], merge="helios merge o.mp4 x")
    assert faults(path) == ["chunk 0 (chunks[0]).outputFile: 'nope/..' is an existing folder; an output must be a file path"]


def test_an_unusable_input_path_is_named_by_its_field(job: Path) -> None:
    path = write_job(job, inputs=["a\x00.png", "missing.png"])
    assert faults(path) == [
        "inputs[0]: 'a\\x00.png' is not a usable path (embedded null byte); fix it",
        f"inputs[1]: 'missing.png' is not a file (looked at {job.resolve() / 'missing.png'}); fix the path or remove it",
    ]


def test_chunks_after_a_duplicate_id_are_still_checked(job: Path) -> None:
    path = write_job(job, [(0, 0, 4, "a.mov"), (0, 4, 4, "b.mov"), (1, 8, 4, "../c.mov")], merge="helios merge o.mp4 x")
    found = faults(path)
    assert [f.split(":")[0] for f in found] == ["chunk 1 (chunks[2]).outputFile", "chunk 0 (chunks[1]).id"]


def test_an_output_that_clashes_is_reported_once(job: Path) -> None:
    job.mkdir()
    (job / "logo.png").write_bytes(b"png")
    path = write_job(job, [(0, 0, 4, "logo.png"), (1, 4, 4, "logo.png")], inputs=["logo.png"], merge="helios merge o.mp4 x")
    assert faults(path) == [
        "chunk 0 (chunks[0]).outputFile: 'logo.png' is also listed in inputs, and outputs are deleted; choose another output",
        "chunk 1 (chunks[1]).outputFile: 'logo.png' is also listed in inputs, and outputs are deleted; choose another output",
    ]


def test_an_output_root_of_slash_allows_any_folder(job: Path, tmp_path: Path) -> None:
    (tmp_path / "renders").mkdir()
    out = str(tmp_path.resolve() / "renders" / "a.mov")
    loaded = load_job(str(write_job(job, [(0, 0, 8, out), (1, 8, 8, "b.mov")])), output_root="/", cwd=job)
    assert loaded.outputs[0] == out


def test_an_unusable_path_in_the_merge_command_is_a_fault(job: Path) -> None:
    name = "p" * 300 + ".mov"  # longer than a file name may be
    path = write_job(job, merge=f"helios merge out.mp4 part_0.mov {name}")
    assert faults(path) == [f"mergeCommand: {name!r} is not a usable path (File name too long); fix it"]


def test_a_nul_byte_in_a_command_is_refused_when_the_job_loads(job: Path) -> None:
    path = write_job(job, merge="helios merge out.mp4 part_0.mov 'part\x00.mov'")
    (line,) = faults(path)
    assert line.startswith("mergeCommand: value error, holds a NUL byte, which no program can be given; remove it")


def test_merge_parts_that_are_symlinks_are_not_taken_for_chunk_outputs(job: Path) -> None:
    # the order check compares places, as the chunks' outputs are places: links to them are other files
    job.mkdir()
    (job / "l0.mov").symlink_to("p0.mov")
    (job / "l1.mov").symlink_to("p1.mov")
    chunks = [(0, 0, 4, "p0.mov"), (1, 4, 4, "p1.mov")]
    load_job(str(write_job(job, chunks, merge="helios merge out.mp4 l1.mov l0.mov")), cwd=job)


def test_merge_output_of_skips_options_as_merge_inputs_of_does() -> None:
    # the bug of notes/mutation.md: merge_output_of took `--audio-codec` for the merged output
    command = "helios merge --audio-codec aac out.mp4 part_0.mov part_1.mov"  # `helios-doit merge` accepts this
    assert merge_inputs_of(command) == ["part_0.mov", "part_1.mov"]
    assert merge_output_of(command) == "out.mp4"  # today: "--audio-codec"
