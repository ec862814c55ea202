"""tasks/complete.py, tasks/attempt.py, tasks/clean.py: the completion check (README "What complete means"): a chunk is complete when its
record says it succeeded with the same fingerprint (command, frame range, output path, inputs)
and its output still has the size and mtime it had at that success; the merge also when its
inputs' content is unchanged (doit's MD5 rule). Also what makes an attempt's output count as
done (`_verify`) and the record a success writes (`_record`)."""
from __future__ import annotations

from types import SimpleNamespace

import os
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from helios_doit.executors.base import CommandResult
from helios_doit.state.content import content_state
from helios_doit.state.files import read_json, stamp, write_json_atomic
from helios_doit.state.folder import StateDir
from helios_doit.state.locks import try_lock
from helios_doit.state.names import TaskName
from helios_doit.tasks.action import _remove_entry
from helios_doit.tasks.attempt import _check_video, _record, _verify
from helios_doit.tasks.clean import clean_task
from helios_doit.tasks.complete import Complete, relative
from helios_doit.tasks.uptodate import task_done, seen
from helios_doit.tasks.work import Expect, Work
from helios_doit.video.verify import ChunkFacts

from .conftest import FPS, H, W

OK = CommandResult(exit_code=0, signal=None, duration=1.25)


def done(job: Work) -> bool:
    """doit's question, as doit asks it (its task object first)."""
    return task_done(SimpleNamespace(), job)


@pytest.fixture
def job_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "job"
    folder.mkdir()
    return folder


def chunk(job_dir: Path, *, output: str | None = "part_0.mov", fingerprint: str = "fp-1", inputs: tuple[str, ...] = (),
          expect: Expect | None = None, name: str = "chunk-0", sources: tuple[str, ...] = ()) -> Work:
    state = job_dir / ".helios-doit" / "job"
    StateDir(state).create()
    task = TaskName.parse(name)
    assert task is not None, name
    return Work(task=task, command="render", cwd=str(job_dir), output=str(job_dir / output) if output else None,
                   state_root=str(state), fingerprint=fingerprint, inputs=inputs, expect=expect,
                   roots=(str(job_dir),), sources=tuple(TaskName.parse(s) for s in sources))


def succeed(job: Work, content: bytes | None = b"frames", facts: dict | None = None) -> dict:
    """What a successful attempt leaves: its output, then its record (as `_attempt` writes it)."""
    if content is not None and job.output:
        Path(job.output).write_bytes(content)
    record = _record(job, OK, 1, stamp(job.output) if job.output else None, facts)
    write_json_atomic(StateDir(Path(job.state_root)).record(job.key), record)
    return record


def record_path(job: Work) -> Path:
    return StateDir(Path(job.state_root)).record(job.key)


def edit_record(job: Work, **changes) -> None:
    data = read_json(record_path(job))
    data.update(changes)
    write_json_atomic(record_path(job), data)


# -- chunks ------------------------------------------------------------------------------------

def test_a_chunk_without_a_record_is_not_complete(job_dir: Path) -> None:
    job = chunk(job_dir)
    Path(job.output).write_bytes(b"a file someone left")
    assert job.complete().check() is False
    assert done(job) is False


def test_a_chunk_with_its_record_and_untouched_output_is_complete(job_dir: Path) -> None:
    job = chunk(job_dir)
    succeed(job)
    assert job.complete().check() is True
    assert job.complete()() is True  # doit calls it
    assert done(job) is True


def test_a_changed_fingerprint_makes_the_chunk_run_again(job_dir: Path) -> None:
    job = chunk(job_dir, fingerprint="command A, frames 0-7")
    succeed(job)
    assert chunk(job_dir, fingerprint="command B, frames 0-7").complete().check() is False
    assert chunk(job_dir, fingerprint="command A, frames 0-7").complete().check() is True


def test_an_output_touched_edited_replaced_or_removed_is_not_complete(job_dir: Path, tmp_path: Path) -> None:
    job = chunk(job_dir)
    succeed(job, b"frames")
    out = Path(job.output)
    st = out.stat()
    os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns + 1))  # touched: other mtime
    assert done(job) is False
    os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert done(job) is True
    out.write_bytes(b"frameZ")  # same size, rewritten
    os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns + 10))
    assert done(job) is False
    out.unlink()
    assert done(job) is False
    # a symlink to a file with the recorded stamp: a record vouches only for the file in the place itself
    real = tmp_path / "real.mov"
    real.write_bytes(b"frames")
    os.utime(real, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert stamp(real) == read_json(record_path(job))["output"]
    out.symlink_to(real)
    assert done(job) is False


def test_a_record_of_an_output_that_was_never_written_is_not_believed(job_dir: Path) -> None:
    job = chunk(job_dir)
    succeed(job, content=b"x")
    edit_record(job, output=None)  # a record without a stamp, for a job that names an output
    assert done(job) is False


def test_the_record_says_what_a_run_did(job_dir: Path) -> None:
    job = chunk(job_dir, fingerprint="fp-9")
    before = time.time()
    record = succeed(job, b"12345", facts={"frames": 4})
    assert record["task"] == "chunk-0"
    assert record["fingerprint"] == "fp-9"
    assert record["output"] == stamp(job.output) == [5, Path(job.output).stat().st_mtime_ns]
    assert record["inputs"] == {}
    assert before <= record["finishedAt"] <= time.time()
    assert record["duration"] == 1.25
    assert record["host"] == os.uname().nodename
    assert record["attempts"] == 1
    assert record["video"] == {"frames": 4}
    assert "video" not in _record(job, CommandResult(0, None, 2.3456), 3, None, None)
    assert _record(job, CommandResult(0, None, 2.3456), 3, None, None)["duration"] == 2.346
    assert _record(job, CommandResult(0, None, 2.3456), 3, None, None)["attempts"] == 3


# -- "done by another runner": another record than the one this runner saw -------------------

def test_a_look_names_the_record_it_saw_and_a_new_record_has_another_name(job_dir: Path) -> None:
    job = chunk(job_dir)
    assert job.complete().look() == (False, None)  # nothing recorded
    succeed(job)
    done_now, first = job.complete().look()
    assert done_now and first and job.complete().look() == (True, first)  # the same record, the same name
    succeed(job)  # recorded again (another runner, or this one under -a)
    assert job.complete().look()[1] not in (None, first)
    edit_record(job, writeId=None)  # an older record without a nonce: named by what it holds
    a = job.complete().look()[1]
    assert a and a == job.complete().look()[1]
    edit_record(job, finishedAt=1.0)  # no clock counts, but another record is another record
    assert job.complete().look() == (True, job.complete().look()[1]) and job.complete().look()[1] != a


def test_doit_asking_about_a_task_it_will_run_leaves_what_it_saw_on_doits_task(job_dir: Path) -> None:
    job = chunk(job_dir)
    task = SimpleNamespace()
    assert task_done(task, job) is False and seen(task) is None  # nothing seen: any record found later is another's
    succeed(job)
    identity = job.complete().look()[1]
    task = SimpleNamespace()
    # done: doit skips it, unless under -a (a flag or its configuration): then it carries the record it chose to redo
    assert task_done(task, job) is True and seen(task) == identity


# -- damaged records read as "not done" --------------------------------------------------------

@pytest.mark.parametrize("damage", [
    {"inputs": ["a list"]},      # not a mapping
    {"inputs": "text"},          # not a mapping
    {"fingerprint": [1]},        # TypeError
    {"output": "12 34"},
    {"output": [1]},
])
def test_a_damaged_record_reads_as_not_done(job_dir: Path, damage: dict) -> None:
    job = chunk(job_dir)
    succeed(job)
    edit_record(job, **damage)
    assert job.complete().check() is False


@pytest.mark.parametrize("state", [
    [1],                         # IndexError: not a whole content state
    {"mtime": 1},                # KeyError: a mapping, not a content state
])
def test_a_merge_record_with_a_damaged_input_state_reads_as_not_done(job_dir: Path, state: object) -> None:
    parts = make_parts(job_dir)
    merge = merge_of(job_dir, parts)
    record = succeed(merge, b"merged")
    edit_record(merge, inputs={**record["inputs"], "parts/part_1.mov": state})
    assert merge.complete().check() is False


def test_a_record_that_is_garbage_or_not_a_file_reads_as_not_done(job_dir: Path) -> None:
    job = chunk(job_dir)
    succeed(job)
    record_path(job).write_text("{truncat")
    assert done(job) is False
    record_path(job).unlink()
    record_path(job).mkdir()
    assert done(job) is False


# -- the merge: its inputs' content ------------------------------------------------------------

def merge_of(job_dir: Path, parts: list[Path], output: str | None = "out.mp4") -> Work:
    return chunk(job_dir, name="merge", output=output, inputs=tuple(str(p) for p in parts), fingerprint="merge-fp")


def make_parts(job_dir: Path) -> list[Path]:
    (job_dir / "parts").mkdir()
    parts = [job_dir / "parts" / f"part_{i}.mov" for i in range(3)]
    for i, p in enumerate(parts):
        p.write_bytes(b"chunk %d" % i)
    return parts


def test_a_merge_is_complete_until_a_chunk_outputs_content_changes(job_dir: Path) -> None:
    parts = make_parts(job_dir)
    merge = merge_of(job_dir, parts)
    record = succeed(merge, b"merged")
    assert set(record["inputs"]) == {"parts/part_0.mov", "parts/part_1.mov", "parts/part_2.mov"}
    assert record["inputs"]["parts/part_1.mov"] == content_state(parts[1])
    assert merge.complete().check() is True
    # rendered again to the same bytes (new mtime): still complete
    os.utime(parts[1], ns=(1, 1_000_000_000))
    assert merge.complete().check() is True
    # other bytes, same size: rerun
    parts[1].write_bytes(b"chunk X")
    os.utime(parts[1], ns=(1, 2_000_000_000))
    assert merge.complete().check() is False


def test_a_merge_reruns_when_a_chunk_output_is_gone_or_the_list_changed(job_dir: Path) -> None:
    parts = make_parts(job_dir)
    succeed(merge_of(job_dir, parts))
    assert merge_of(job_dir, parts).complete().check() is True
    assert merge_of(job_dir, parts[:2]).complete().check() is False  # one input fewer
    extra = job_dir / "parts" / "part_3.mov"
    extra.write_bytes(b"chunk 3")
    assert merge_of(job_dir, [*parts, extra]).complete().check() is False  # one more
    assert merge_of(job_dir, [parts[0], parts[1], extra]).complete().check() is False  # another file
    parts[2].unlink()
    assert merge_of(job_dir, parts).complete().check() is False


def test_a_merge_whose_output_is_unknown_is_judged_by_its_inputs(job_dir: Path) -> None:
    parts = make_parts(job_dir)
    merge = merge_of(job_dir, parts, output=None)
    assert merge.place is None
    succeed(merge)
    assert read_json(record_path(merge))["output"] is None
    assert merge.complete().check() is True
    parts[0].write_bytes(b"something longer")
    assert merge.complete().check() is False


def test_inputs_are_keyed_relative_to_the_jobs_folder(job_dir: Path, tmp_path: Path) -> None:
    parts = make_parts(job_dir)
    outside = tmp_path / "shared.mov"
    outside.write_bytes(b"shared")
    merge = merge_of(job_dir, [parts[0], outside])
    record = succeed(merge)
    assert set(record["inputs"]) == {"parts/part_0.mov", "../shared.mov"}
    assert merge.complete().check() is True
    # a record keyed by other names does not vouch for these inputs
    edit_record(merge, inputs={"part_0.mov": record["inputs"]["parts/part_0.mov"], "../shared.mov": record["inputs"]["../shared.mov"]})
    assert merge.complete().check() is False


def testrelative() -> None:
    assert relative("/job/parts/a.mov", "/job") == "parts/a.mov"
    assert relative("/job/parts/a.mov", "/job/") == "parts/a.mov"
    assert relative("/job2/a.mov", "/job") == "../job2/a.mov"
    assert relative("/job/x/../a.mov", "/job") == "a.mov"
    assert relative("/elsewhere/a.mov", "/job") == "../elsewhere/a.mov"


def test_complete_looks_at_the_record_of_its_own_task(job_dir: Path) -> None:
    a, b = chunk(job_dir, name="chunk-1", output="a.mov"), chunk(job_dir, name="chunk-2", output="b.mov")
    succeed(a)
    Path(b.output).write_bytes(b"x")
    assert a.complete() == Complete(str(job_dir / ".helios-doit" / "job" / "records" / "chunk-1.json"), "fp-1",
                                    a.output, (), str(job_dir))
    assert done(a) is True
    assert done(b) is False


def test_a_task_job_is_named_by_its_task(job_dir: Path) -> None:
    job = chunk(job_dir, name="chunk-12")
    assert (job.task, job.key, job.label, job.chunk_id) == (TaskName.chunk(12), "chunk-12", "chunk 12", 12)
    merge = chunk(job_dir, name="merge", sources=("chunk-3", "chunk-1"))
    assert (merge.key, merge.label, merge.chunk_id) == ("merge", "merge", None)
    assert merge.sources == (TaskName.chunk(3), TaskName.chunk(1))
    assert merge.complete().record == str(job_dir / ".helios-doit" / "job" / "records" / "merge.json")


def test_task_labels_and_places(job_dir: Path) -> None:
    job = chunk(job_dir, name="chunk-12")
    assert job.label == "chunk 12"
    assert job.place.path == job.output
    assert job.place.roots == (str(job_dir),)
    assert job.place.aside == os.path.join(job.state_root, "aside")
    assert chunk(job_dir, name="merge").label == "merge"


# -- _verify: when an attempt's output counts as done ------------------------------------------

def test_a_failed_command_is_a_failure_whatever_it_wrote(job_dir: Path) -> None:
    job = chunk(job_dir)
    Path(job.output).write_bytes(b"x")
    assert _verify(job, CommandResult(3, None, 0.1)) == ("exit code 3", None, False, None)
    assert _verify(job, CommandResult(None, 9, 0.1)) == ("killed by SIGKILL", None, False, None)
    assert _verify(job, CommandResult(None, 15, 0.1, timed_out=True)) == ("timed out", None, False, None)


def test_exit_0_without_the_output_is_a_failure(job_dir: Path) -> None:
    job = chunk(job_dir)
    assert _verify(job, OK) == (f"the command exited 0 but did not write {job.output}", None, False, None)
    Path(job.output).mkdir()
    assert _verify(job, OK)[0] == f"the command exited 0 but did not write {job.output}"


def test_exit_0_with_a_non_video_output_or_no_expectation_is_done(job_dir: Path) -> None:
    txt = chunk(job_dir, output="part_0.txt", expect=Expect(frames=4, width=W, height=H))
    Path(txt.output).write_text("not probed")
    assert _verify(txt, OK) == (None, None, False, None)
    mov = chunk(job_dir, output="part_0.mov")
    Path(mov.output).write_text("not probed either: nothing expected")
    assert _verify(mov, OK) == (None, None, False, None)
    assert _verify(chunk(job_dir, name="merge", output=None), OK) == (None, None, False, None)


def test_a_video_chunk_is_verified_and_its_facts_kept(job_dir: Path, clips) -> None:
    job = chunk(job_dir, output="part_0.mov", expect=Expect(frames=4, width=W, height=H))
    shutil.copy(clips.parts[0], job.output)
    problem, facts, wrong, _ = _verify(job, OK)
    assert problem is None and wrong is False
    assert ChunkFacts.from_record(facts) is not None and facts["frames"] == 4 and facts["packets"] == 4
    wrong = chunk(job_dir, output="part_0.mov", expect=Expect(frames=5, width=W, height=H))
    assert _verify(wrong, OK) == ("the command exited 0 but its output is wrong: part_0.mov: expected 5 frames, found 4", None, True, None)
    # a suffix in capitals is a video too
    upper = chunk(job_dir, output="PART.MOV", expect=Expect(frames=5, width=W, height=H))
    shutil.copy(clips.parts[0], upper.output)
    assert _verify(upper, OK)[0] == "the command exited 0 but its output is wrong: PART.MOV: expected 5 frames, found 4"


def test_a_video_chunk_at_another_frame_rate_is_wrong(job_dir: Path, clips) -> None:
    job = chunk(job_dir, output="part_0.mov", expect=Expect(frames=4, width=W, height=H, fps=30))
    shutil.copy(clips.parts[0], job.output)
    assert _verify(job, OK) == ("the command exited 0 but its output is wrong: part_0.mov: 24 fps, expected 30: the "
                                "renderer ignored the job's frame rate; --retime (retime=1) remuxes such chunks to 30 fps "
                                "without re-encoding", None, True, None)
    right = chunk(job_dir, output="part_0.mov", expect=Expect(frames=4, width=W, height=H, fps=FPS))
    problem, facts, wrong, _ = _verify(right, OK)
    assert (problem, wrong) == (None, False) and facts["frames"] == 4


def test_a_chunk_expectation_without_size_checks_zero(job_dir: Path, clips) -> None:
    job = chunk(job_dir, output="part_0.mov", expect=Expect(frames=4))
    shutil.copy(clips.parts[0], job.output)
    assert _check_video(job) == (f"expected 0x0, found {W}x{H}", None, None)


def video_merge(job_dir: Path, clips, merged: Path, sources=("chunk-5", "chunk-6", "chunk-7")) -> Work:
    chunks = []
    for i, part in zip((5, 6, 7), clips.parts):
        c = chunk(job_dir, name=f"chunk-{i}", output=f"part_{i}.mov", expect=Expect(frames=4, width=W, height=H))
        shutil.copy(part, c.output)
        failure, facts, _, _ = _verify(c, OK)
        assert failure is None
        succeed(c, content=None, facts=facts)
        chunks.append(c)
    merge = chunk(job_dir, name="merge", output="out.mov", expect=Expect(frames=12, fps=FPS),
                  inputs=tuple(c.output for c in chunks), sources=tuple(sources))
    shutil.copy(merged, merge.output)
    return merge


def test_a_merge_is_verified_seam_by_seam_against_its_chunks_records(job_dir: Path, clips) -> None:
    assert _verify(video_merge(job_dir, clips, clips.merged), OK) == (None, None, False, None)


def test_a_merge_out_of_frame_order_is_a_failure(job_dir: Path, clips) -> None:
    merge = video_merge(job_dir, clips, clips.swapped)
    assert _verify(merge, OK) == (
        "the command exited 0 but its output is wrong: out.mov: the merged file's frames 0-3 are not chunk 5's: "
        "the chunks were joined out of frame order, or a wrong file was taken", None, True, None)


def test_seams_are_not_judged_when_a_chunk_record_has_no_facts(job_dir: Path, clips) -> None:
    merge = video_merge(job_dir, clips, clips.swapped)
    edit_record(chunk(job_dir, name="chunk-7", output="part_7.mov"), video=None)
    assert _verify(merge, OK) == (None, None, False, None)  # frames and duration are right; seams unknown
    merge = chunk(job_dir, name="merge", output="out.mov", expect=Expect(frames=13, fps=FPS), sources=("chunk-5",))
    assert _verify(merge, OK)[0] == "the command exited 0 but its output is wrong: out.mov: expected 13 frames, found 12"


# -- doit clean: the output and the record go together -----------------------------------------

def test_clean_deletes_the_vouched_output_and_its_record(job_dir: Path, capfd) -> None:
    job = chunk(job_dir)
    succeed(job)
    clean_task(job)
    assert not Path(job.output).exists()
    assert not record_path(job).exists()
    assert not Path(job.state_root, "aside").exists()
    assert capfd.readouterr().err == "helios-doit: chunk 0: removed part_0.mov and its record\n"
    assert done(job) is False


def test_clean_moves_aside_an_output_no_record_vouches_for(job_dir: Path, capfd) -> None:
    job = chunk(job_dir)
    succeed(job)
    Path(job.output).write_bytes(b"edited by hand, longer")
    clean_task(job)
    [moved] = Path(job.state_root, "aside").iterdir()
    assert moved.read_bytes() == b"edited by hand, longer"
    assert not record_path(job).exists()
    err = capfd.readouterr().err
    assert err == (f"helios-doit: chunk 0: moved the file in its output's place {job.output} to {moved} "
                   "(no record of ours vouches for it); removed its record\n")


def test_clean_of_a_damaged_record_moves_the_output_aside(job_dir: Path) -> None:
    job = chunk(job_dir)
    succeed(job)
    edit_record(job, output="not a stamp")
    clean_task(job)
    assert not Path(job.output).exists()
    assert [p.read_bytes() for p in Path(job.state_root, "aside").iterdir()] == [b"frames"]


def test_clean_without_a_state_folder_does_nothing(tmp_path: Path) -> None:
    out = tmp_path / "part_0.mov"
    out.write_bytes(b"x")
    job = Work(task=TaskName.chunk(0), command="c", cwd=str(tmp_path), output=str(out),
                  state_root=str(tmp_path / ".helios-doit" / "job"), fingerprint="f", roots=(str(tmp_path),))
    clean_task(job)
    assert out.read_bytes() == b"x"


def test_clean_leaves_a_task_another_runner_holds(job_dir: Path, capfd) -> None:
    job = chunk(job_dir)
    succeed(job)
    with try_lock(StateDir(Path(job.state_root)).lock(job.key)) as held:
        assert held
        with pytest.raises(SystemExit) as exited:
            clean_task(job)
    assert exited.value.code == 1
    assert capfd.readouterr().err == ("helios-doit: chunk 0: another runner is working on it; not cleaned "
                                      "(stop that run first)\n")
    assert Path(job.output).exists() and record_path(job).exists()


def test_clean_refuses_an_output_folder_that_became_a_symlink(job_dir: Path, tmp_path: Path, capfd) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "a.mov").write_bytes(b"not ours")
    (job_dir / "sub").symlink_to(elsewhere)
    job = chunk(job_dir, output="sub/a.mov")
    with pytest.raises(SystemExit) as exited:
        clean_task(job)
    assert exited.value.code == 1
    assert capfd.readouterr().err.startswith(f"helios-doit: chunk 0: {job_dir / 'sub'} is now a symlink")
    assert (elsewhere / "a.mov").read_bytes() == b"not ours"


def test_clean_of_a_merge_without_a_known_output_drops_its_record(job_dir: Path) -> None:
    merge = chunk(job_dir, name="merge", output=None)
    succeed(merge)
    clean_task(merge)
    assert not record_path(merge).exists()


def test_remove_entry_moves_a_folder_in_a_records_place_aside(job_dir: Path, capfd) -> None:
    job = chunk(job_dir)
    state = StateDir(Path(job.state_root))
    state.record(job.key).mkdir()
    (state.record(job.key) / "x").write_text("keep")
    _remove_entry(state, state.record(job.key))
    [moved] = state.aside.iterdir()
    assert (moved / "x").read_text() == "keep"
    assert capfd.readouterr().err == f"helios-doit: {state.record(job.key)} was a folder; moved it to {moved}\n"
    state.record(job.key).write_text("{}")
    _remove_entry(state, state.record(job.key))
    assert not state.record(job.key).exists()
    _remove_entry(state, state.record(job.key))  # gone already: fine


def test_clean_in_a_damaged_state_folder_says_what_failed_in_one_line(tmp_path: Path, capfd) -> None:
    state = tmp_path / ".helios-doit" / "job"
    state.mkdir(parents=True)
    (state / "locks").write_text("a file where the locks folder belongs")
    out = tmp_path / "part_0.mov"
    out.write_bytes(b"x")
    job = Work(task=TaskName.chunk(0), command="c", cwd=str(tmp_path), output=str(out), state_root=str(state),
                  fingerprint="f", roots=(str(tmp_path),))
    with pytest.raises(SystemExit) as exited:
        clean_task(job)
    assert exited.value.code == 1
    assert capfd.readouterr().err == f"helios-doit: chunk 0: cannot use {state / 'locks' / 'chunk-0.lock'}: Not a directory\n"
    assert out.read_bytes() == b"x"


def test_clean_says_a_line_even_for_a_file_name_that_is_not_utf8(job_dir: Path, capfdbinary) -> None:
    name = os.fsdecode(b"part_\xff.mov")
    job = chunk(job_dir, output=name)
    Path(job.output).write_bytes(b"stranger")
    clean_task(job)
    err = capfdbinary.readouterr().err
    assert err.startswith(b"helios-doit: chunk 0: moved the file in its output's place ")
    assert b"part_?.mov" in err and err.endswith(b"(no record of ours vouches for it)\n")
