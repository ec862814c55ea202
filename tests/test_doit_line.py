"""doit's own command line over a job: its variables, its commands that mean nothing here, and
what `info` and `clean` tell a user."""
from __future__ import annotations

import sys

import pytest
from harness import CLI, run


def refused(result) -> str:
    """The one line of a refusal: exit 2, nothing on stdout, no traceback."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert result.stdout == "" and "Traceback" not in result.stderr, (result.stdout, result.stderr)
    [line] = result.stderr.splitlines()
    return line


def test_a_misspelt_variable_is_refused_naming_the_one_meant_instead_of_rendering_the_default_job(make_job):
    job = make_job(chunks=2)
    other = make_job(chunks=2, folder="other")
    assert run([*CLI, "init", str(job.folder)]).returncode == 0  # its dodo.py renders job.json by default
    result = run([sys.executable, "-m", "doit", "-n", "4", f"jobb={other.file}"], cwd=job.folder)
    assert refused(result) == f"helios-doit: jobb={other.file}: unknown variable; did you mean job=?"
    assert job.runs() == [] and other.runs() == [] and not job.state.exists() and not other.state.exists()


@pytest.mark.parametrize("word, meant", [("retires=2", "retries"), ("Retry_Delay=0.5", "retry_delay"),
                                         ("keepgoing=1", "keep_going"), ("outputroot=/tmp", "output_root")])
def test_a_variable_with_a_typo_is_refused_before_anything_runs(make_job, word, meant):
    job = make_job(chunks=1)
    assert refused(job.doit(word)) == f"helios-doit: {word}: unknown variable; did you mean {meant}=?"
    assert job.runs() == [] and not job.state.exists()


def test_a_variable_nothing_resembles_lists_the_known_ones(make_job):
    job = make_job(chunks=1)
    line = refused(job.doit("list", "colour=red"))
    assert line.startswith("helios-doit: colour=red: unknown variable; known: job=, output_root=, storage=, merge=, retries=")


@pytest.mark.parametrize("command", [["dumpdb"], ["ignore", "chunk:1"], ["-k", "ignore", "chunk:1"], ["reset-dep"]])
def test_doits_database_commands_say_what_to_use_instead(make_job, command):
    job = make_job(chunks=2)
    assert job.doit().returncode == 0
    job.runs()
    runs = sorted((job.state / "runs").iterdir())
    line = refused(job.doit(*command))
    if "dumpdb" in command:
        assert line == ("helios-doit: doit dumpdb: helios-doit keeps doit's database in memory, there is none to "
                        f"dump; to see where tasks stand: helios-doit status {job.file}")
    elif "reset-dep" in command:
        assert line.startswith("helios-doit: doit reset-dep: helios-doit keeps doit's database in memory")
        assert line.endswith("to render a chunk again: doit clean chunk:3 (or -a to render everything again)")
    else:
        assert line == ("helios-doit: doit ignore: helios-doit keeps doit's database in memory, the next run would "
                        "render the task anyway; to render some chunks only, name them: doit chunk:0 chunk:2 "
                        "(helios-doit job run JOB --chunk 0 --chunk 2)")
    assert sorted((job.state / "runs").iterdir()) == runs  # no run started
    assert job.doit().returncode == 0 and job.runs() == []


def test_doit_info_reads_well(make_job):
    job = make_job(chunks=2)
    info = job.doit("info", "chunk:1")
    assert info.returncode == 1  # doit's code for a task that would run
    assert "chunk 1: sh render.sh part_1.txt 1 8 8 -> part_1.txt" in info.stdout
    assert "Work(" not in info.stdout and "state_root" not in info.stdout and "RunOptions" not in info.stdout


def test_doit_clean_says_what_it_removed_and_what_it_moved_aside(make_job):
    job = make_job(chunks=3)
    assert job.doit("chunk").returncode == 0
    job.output(1).write_text("edited by hand\n")
    job.output(2).unlink()
    result = job.doit("clean", "chunk:0", "chunk:1", "chunk:2", "merge")
    assert result.returncode == 0, result.stderr
    [moved] = (job.state / "aside").iterdir()
    assert sorted(result.stderr.splitlines()) == [
        "helios-doit: chunk 0: removed part_0.txt and its record",
        f"helios-doit: chunk 1: moved the file in its output's place {job.output(1)} to {moved} "
        "(no record of ours vouches for it); removed its record",
        "helios-doit: chunk 2: removed its record (part_2.txt was not there)",
        "helios-doit: merge: nothing to clean (no out.txt, no record)",
    ]


def test_doit_clean_dry_run_removes_nothing(make_job):
    job = make_job(chunks=2)
    assert job.doit().returncode == 0
    result = job.doit("clean", "-n", "chunk:0")  # doit clean's -n is its dry run, not a number of workers
    assert result.returncode == 0, result.stderr
    assert job.output(0).exists() and "chunk 0" in job.recorded()


def test_always_execute_from_doits_configuration_renders_everything_again(make_job):
    job = make_job(chunks=2)
    assert job.doit().returncode == 0 and len(job.runs()) == 3
    (job.folder / "doit.cfg").write_text("[run]\nalways = True\n")
    result = job.doit(cwd=job.folder)
    assert result.returncode == 0, result.stderr
    assert sorted(run for run in job.runs() if run != "merge") == ["chunk 0", "chunk 1"], result.stderr
