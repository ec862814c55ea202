"""The command line's own errors: one line naming the subcommand, exit 2, a suggestion for a typo,
no prefix matching, and Helios' `--adapter` understood. Run in process: nothing here starts a run."""
from __future__ import annotations

import pytest
from harness import CLI, DOIT, new_job, run

from helios_doit.cli.main import main


def cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str], str]:
    try:
        code = main(argv)
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.err.splitlines(), captured.out


@pytest.mark.parametrize("argv, starts, hint", [
    (["job", "run", "j.json", "--concurency", "4"], "helios-doit job run: unknown option --concurency", "did you mean --concurrency?"),
    (["job", "run", "j.json", "--no-merg"], "helios-doit job run: unknown option --no-merg", "did you mean --no-merge?"),
    (["job", "run", "j.json", "--retrys", "2"], "helios-doit job run: unknown option --retrys", "did you mean --retries?"),
    (["job", "run", "j.json", "--concurrency", "99999999999999999999"], "helios-doit: --concurrency 99999999999999999999:",
     "from 1 to 1024"),
    (["job", "run", "j.json", "--concurrency", "0"], "helios-doit: --concurrency 0:", "from 1 to 1024"),
    (["job", "run", "j.json", "-n"], "helios-doit job run: option -n needs a value", "job run --help"),
    (["job", "run", "j.json", "chunk:3"], "helios-doit job run: unexpected argument 'chunk:3'", "job run --help"),
    (["render", "comp.py", "--fsp", "30"], "helios-doit render: unknown option --fsp", "did you mean --fps?"),
    (["merge", "out.mp4", "a.mov", "--stitch", "ffmpeg"], "helios-doit merge: unknown option --stitch", "did you mean --stitcher?"),
    (["status", "j.json", "--jsn"], "helios-doit status: unknown option --jsn", "did you mean --json?"),
    (["rendr", "comp.py"], "helios-doit: unknown command 'rendr'", "did you mean render?"),
    (["job", "run"], "helios-doit job run: the following arguments are required: FILE", "job run --help"),
    (["job", "run", "j.json", "--adapter", "aws"], "helios-doit: --adapter aws: helios-doit runs chunks locally",
     "helios-doit export"),
    (["job", "run", "j.json", "--adapter", "lambda"], "helios-doit: --adapter lambda:", "helios-doit worker"),
])
def test_a_usage_error_is_one_line_and_exit_2(argv, starts, hint, capsys):
    code, err, out = cli(argv, capsys)
    assert code == 2 and out == ""
    assert len(err) == 1 and err[0].startswith(starts) and hint in err[0], err


def test_doits_own_run_options_pass_through_and_adapter_local_is_helios_default(tmp_path):
    job = new_job(tmp_path, chunks=2, frames=1)
    result = run([*CLI, "job", "run", str(job.file), "--adapter", "local", "-v", "2", "-n2", "--continue"])
    assert result.returncode == 0, result.stderr
    assert job.merged.read_text() == job.expected_merge()


def test_version(capsys):
    code, err, out = cli(["--version"], capsys)
    assert code == 0 and out.startswith("helios-doit ") and out.split()[1][0].isdigit()


@pytest.mark.parametrize("name", ["../job.json", 'a"b.json', "x\ny.json", ".hidden.json"])
def test_init_refuses_a_job_name_that_would_not_be_a_file_here(name, tmp_path, capsys):
    code, err, out = cli(["init", str(tmp_path), "--job", name], capsys)
    assert code == 2 and len(err) == 1 and "give a file name in the folder" in err[0]
    assert not (tmp_path / "dodo.py").exists()


@pytest.mark.parametrize("option", [["--reporter", "json"], ["-rjson"], ["--db-file", "x.db"], ["--backend=json"]])
def test_plain_doit_refuses_options_that_would_undo_the_run_in_one_line(tmp_path, option):
    job = new_job(tmp_path, chunks=2, frames=1)
    result = run([*DOIT, *option, f"job={job.file}"])
    name = option[0].split("=")[0][:2] if option[0].startswith("-r") else option[0].split("=")[0]
    assert result.returncode == 2 and result.stdout == "", result.stdout
    [line] = result.stderr.splitlines()
    assert line.startswith(f"helios-doit: {name}: not with helios-doit (") and line.endswith("; leave it out")
    assert not job.state.exists() and job.runs() == []  # nothing ran, nothing was written


@pytest.mark.parametrize("option, name", [(["-r", "json"], "-r"), (["-rjson"], "-r"), (["--db-file=x.db"], "--db-file"),
                                          (["--reporter", "json"], "--reporter"), (["--reporter=json"], "--reporter"),
                                          (["--backend", "json"], "--backend")])
def test_job_run_refuses_options_that_would_undo_the_run_as_plain_doit_does(tmp_path, option, name, capsys):
    job = new_job(tmp_path, chunks=2, frames=1)
    code, err, out = cli(["job", "run", str(job.file), *option], capsys)
    assert code == 2 and out == ""
    [line] = err
    assert line.startswith(f"helios-doit: {name}: not with helios-doit (") and line.endswith("; leave it out"), line
    assert not job.state.exists() and job.runs() == []  # nothing ran, nothing was written


@pytest.mark.parametrize("delay", ["-1", "nan", "inf", "-0.5", "soon"])
def test_a_retry_delay_that_is_no_wait_is_refused(tmp_path, delay, capsys):
    job = new_job(tmp_path, chunks=1, frames=1)
    code, err, out = cli(["job", "run", str(job.file), "--retry-delay", delay], capsys)
    assert code == 2 and out == ""
    assert err == [f"helios-doit: --retry-delay {delay}: not valid; give seconds, 0 or more, e.g. --retry-delay 1.5"]
    assert not job.state.exists()
