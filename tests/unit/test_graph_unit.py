"""The pure parts of a run, in process: options from doit variables and flags, the task graph a
job becomes, and task names. No doit run, no processes: each takes milliseconds."""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import pytest

from harness import new_job
from helios_doit.cli.flags import add_option_flags, options_from_flags
from helios_doit.spec.errors import JobError
from helios_doit.spec.load import load_job
from helios_doit.state.names import TaskName
from helios_doit.tasks.graph import build, chunk_tasks, merge_command, merge_task
from helios_doit.tasks.options import RunOptions, from_vars
from helios_doit.tasks.session import namespace


# -- options ---------------------------------------------------------------------------------

def test_doit_variables_become_run_options():
    given = {"retries": "2", "retry_delay": "0.5", "fatal_exit_codes": "64, 2,2", "chunk_timeout": "600",
             "keep_going": "yes", "executor": "local", "merge_executor": "local", "progress": "p.json"}
    options = from_vars(given.get)
    assert options == RunOptions(retries=2, retry_delay=0.5, fatal_exit_codes=(2, 64), chunk_timeout=600.0,
                                 keep_going=True, progress_json="p.json")
    assert options.attempts == 3


def test_doits_continue_flag_means_keep_going():
    assert from_vars({}.get, ["doit", "-c"]).keep_going
    assert from_vars({}.get, ["doit", "--continue"]).keep_going
    assert not from_vars({}.get, ["doit", "-n", "2"]).keep_going


@pytest.mark.parametrize("name, text", [
    ("retries", "-1"), ("retries", "two"), ("retry_delay", "-0.5"), ("retry_delay", "nan"), ("retry_delay", "inf"), ("chunk_timeout", "-5"),
    ("chunk_timeout", "nan"), ("keep_going", "maybe"), ("executor", "slurm"), ("merge_executor", "k8s"),
    ("fatal_exit_codes", "2,x"),
])
def test_a_bad_variable_is_one_line_naming_it_and_a_valid_example(name, text):
    with pytest.raises(JobError) as err:
        from_vars({name: text}.get)
    (line,) = err.value.lines
    assert line.startswith(f"{name}={text}: not valid; give ") and f"e.g. {name}=" in line


def test_cli_flags_are_the_same_options_and_name_the_flag_when_bad():
    parser = argparse.ArgumentParser()
    add_option_flags(parser)
    args = parser.parse_args(["--retries", "1", "--keep-going", "--chunk-timeout", "9", "--progress-json", "x.json"])
    assert options_from_flags(args, []) == RunOptions(retries=1, keep_going=True, chunk_timeout=9.0, progress_json="x.json")
    with pytest.raises(JobError) as err:
        options_from_flags(parser.parse_args(["--retry-delay", "-1"]), [])
    assert err.value.lines == ["--retry-delay -1: not valid; give seconds, 0 or more, e.g. --retry-delay 1.5"]


# -- task names ------------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["chunk:12", "chunk-12", "chunk 12"])
def test_a_chunk_name_in_any_spelling_is_one_task(text):
    name = TaskName.parse(text)
    assert name == TaskName(12)
    assert (name.doit, name.key, name.label) == ("chunk:12", "chunk-12", "chunk 12")


@pytest.mark.parametrize("text", ["chunk", "chunk:", "chunk:-1", "chunk:1x", "chunk:\u00b2", "chunks-1", "_clean", ""])
def test_other_task_names_are_not_ours(text):
    assert TaskName.parse(text) is None


def test_the_merge_is_one_name_everywhere():
    merge = TaskName.parse("merge")
    assert merge == TaskName.merge() and merge.is_merge
    assert {merge.doit, merge.key, merge.label, str(merge)} == {"merge"}


# -- the graph -------------------------------------------------------------------------------

def test_a_job_becomes_one_task_per_chunk_and_a_merge_after_them(tmp_path):
    job = load_job(new_job(tmp_path, chunks=3).file)
    graph = build(job, RunOptions(retries=1))
    dicts = list(chunk_tasks(graph))
    assert dicts[0]["name"] is None and "actions" not in dicts[0]  # the group task `chunk`
    assert [d["name"] for d in dicts[1:]] == ["0", "1", "2"]
    assert [d["targets"] for d in dicts[1:]] == [[str(tmp_path / f"part_{i}.txt")] for i in range(3)]
    work = dicts[1]["actions"][0][1][0]
    assert work is graph.chunks[0] and work.task == TaskName(0) and work.options.retries == 1
    merge = merge_task(graph)
    assert merge["task_dep"] == ["chunk"] and merge["targets"] == [str(tmp_path / "out.txt")]
    assert graph.merge.sources == (TaskName(0), TaskName(1), TaskName(2))
    assert graph.merge.inputs == tuple(str(tmp_path / f"part_{i}.txt") for i in range(3))


def test_building_the_graph_writes_nothing(tmp_path):
    job_file = new_job(tmp_path, chunks=2).file
    before = sorted(os.listdir(tmp_path))
    namespace(load_job(job_file))  # what dodo.py does for `doit list` as for a run
    assert sorted(os.listdir(tmp_path)) == before
    assert not (tmp_path / ".helios-doit").exists()


def test_a_chunks_fingerprint_follows_its_entry_and_nothing_else(tmp_path):
    job_file = new_job(tmp_path, chunks=2).file
    first = build(load_job(job_file))
    spec = json.loads(job_file.read_text())
    spec["chunks"][1]["command"] += " --again"
    job_file.write_text(json.dumps(spec))
    second = build(load_job(job_file))
    assert first.chunks[0].fingerprint == second.chunks[0].fingerprint
    assert first.chunks[1].fingerprint != second.chunks[1].fingerprint


def test_an_input_change_changes_every_chunks_fingerprint(tmp_path):
    job_file = new_job(tmp_path, chunks=2).file  # the renderer script is the job's input
    first = build(load_job(job_file))
    with open(tmp_path / "render.sh", "a") as script:
        script.write("# changed\n")
    second = build(load_job(job_file))
    assert all(a.fingerprint != b.fingerprint for a, b in zip(first.chunks, second.chunks))


def test_the_builtin_merge_joins_chunks_in_frame_order_and_never_reads_a_name_as_an_option(tmp_path):
    job_file = new_job(tmp_path, chunks=3).file
    spec = json.loads(job_file.read_text())
    spec["chunks"].reverse()  # listed last frame first
    spec["chunks"][0]["outputFile"] = "-x.txt"
    job_file.write_text(json.dumps(spec))
    command, _ = merge_command(load_job(job_file), "builtin")
    assert command == "helios-doit merge -- out.txt part_0.txt part_1.txt -x.txt"


@pytest.mark.parametrize("mode, line", [
    ("sideways", "merge=sideways: unknown merge mode; use merge=builtin or merge=command"),
])
def test_a_bad_merge_mode_is_one_line(tmp_path, mode, line):
    with pytest.raises(JobError) as err:
        build(load_job(new_job(tmp_path).file), merge=mode)
    assert err.value.lines == [line]


@pytest.mark.parametrize("frames, width, height, cores, chunks", [
    (240, 640, 360, 2, 1),      # the bundled example: ~1 s of rendering, one chunk renders it soonest
    (300, 1280, 720, 2, 2),     # 10 s of 720p on 2 cores: one chunk per core
    (300, 1280, 720, 8, 2),     # ... but not chunks of less than ~2 s of rendering
    (1800, 1920, 1080, 8, 8),   # a minute of 1080p: every core
    (1, 64, 48, 16, 1),
])
def test_emit_job_picks_a_chunk_count_for_the_renders_size_and_the_machine(frames, width, height, cores, chunks):
    from helios_doit.video.plan import auto_chunks

    assert auto_chunks(frames, width, height, cores) == chunks


def test_helios_layout_is_never_taken_from_the_root_folder(tmp_path):
    from helios_doit.spec.load import load_job

    job = new_job(tmp_path / "project" / "jobs", chunks=1)
    job.data["chunks"][0]["outputFile"] = "../renders/part_0.txt"
    job.save()
    (tmp_path / "project" / "renders").mkdir()
    assert load_job(job.file, cwd=tmp_path / "project").outputs[0] == str(tmp_path / "project" / "renders" / "part_0.txt")
    with pytest.raises(JobError) as err:
        load_job(job.file, cwd=Path("/"))  # a job from anywhere must not get the run of the disk
    assert "outside" in err.value.lines[0]
