"""A job, a command, what a user sees: runs, reruns and resumes."""
from __future__ import annotations

import os

import json
import subprocess
import sys
from pathlib import Path

from harness import REPO, chunk_command


def test_fresh_run_renders_every_chunk_then_merges(make_job):
    job = make_job(chunks=4)
    result = job.doit("-n", "4")
    assert result.returncode == 0, result.stderr
    runs = job.runs()
    assert sorted(runs[:-1]) == ["chunk 0", "chunk 1", "chunk 2", "chunk 3"]
    assert runs[-1] == "merge"
    assert job.merged.read_text() == job.expected_merge()
    assert job.merged.read_text().count("frame") == 32


def test_noop_rerun_runs_nothing(make_job):
    job = make_job()
    assert job.doit().returncode == 0
    job.runs()
    result = job.doit()
    assert result.returncode == 0
    assert job.runs() == []
    assert result.stdout.count("-- chunk:") == 4 and "-- merge" in result.stdout


def test_deleted_output_reruns_only_that_chunk(make_job):
    job = make_job()
    job.doit()
    job.runs()
    job.output(2).unlink()
    assert job.doit().returncode == 0
    # the re-rendered chunk has the same content, so the merged file stays valid as it is
    assert job.runs() == ["chunk 2"]
    assert job.merged.read_text() == job.expected_merge()


def test_changed_command_reruns_that_chunk_and_merge(make_job):
    job = make_job()
    job.doit()
    job.runs()
    job.data["chunks"][1]["command"] = chunk_command(1, 8, 8, "--quality 10")
    job.save()
    assert job.doit().returncode == 0
    assert job.runs() == ["chunk 1", "merge"]
    assert "--quality 10" in job.merged.read_text()


def test_changed_input_reruns_all_chunks(make_job):
    job = make_job()
    job.doit()
    job.runs()
    (job.folder / "render.sh").write_text((job.folder / "render.sh").read_text() + "\n# edited\n")
    assert job.doit("-n", "2").returncode == 0
    # every chunk renders again; their content did not change, so the merge stands
    assert sorted(job.runs()) == ["chunk 0", "chunk 1", "chunk 2", "chunk 3"]


def test_touched_input_with_same_content_reruns_nothing(make_job):
    job = make_job()
    job.doit()
    job.runs()
    (job.folder / "render.sh").write_text((job.folder / "render.sh").read_text())
    assert job.doit().returncode == 0
    assert job.runs() == []


def test_doit_chunk_n_runs_one_chunk_only(make_job):
    job = make_job()
    result = job.doit("chunk:3")
    assert result.returncode == 0, result.stderr
    assert job.runs() == ["chunk 3"]
    assert not job.merged.exists()
    # then the whole job: chunk 3 is done already
    job.doit()
    assert sorted(job.runs()) == ["chunk 0", "chunk 1", "chunk 2", "merge"]


def test_doit_merge_pulls_in_every_chunk(make_job):
    job = make_job(chunks=2)
    assert job.doit("merge").returncode == 0
    assert job.runs() == ["chunk 0", "chunk 1", "merge"]


def test_cli_chunk_no_merge_and_concurrency(make_job):
    job = make_job()
    result = job.cli("--chunk", "1")
    assert result.returncode == 0, result.stderr
    assert job.runs() == ["chunk 1"]

    result = job.cli("--no-merge", "--concurrency", "3")
    assert result.returncode == 0, result.stderr
    assert sorted(job.runs()) == ["chunk 0", "chunk 2", "chunk 3"]
    assert not job.merged.exists()

    result = job.cli("--concurrency", "4")
    assert result.returncode == 0
    assert job.runs() == ["merge"]
    assert job.merged.read_text() == job.expected_merge()


def test_cli_unknown_chunk_is_bad_input(make_job):
    job = make_job()
    result = job.cli("--chunk", "7")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"helios-doit: {job.file}: no chunk with id 7; the job has chunks 0, 1, 2, 3"
    ]
    assert job.runs() == [] and not (job.state / "records").exists()


def test_cli_chunk_is_repeatable_and_each_id_is_checked(make_job):
    job = make_job()
    result = job.cli("--chunk", "1", "--chunk", "2", "--concurrency", "2")
    assert result.returncode == 0, result.stderr
    assert sorted(job.runs()) == ["chunk 1", "chunk 2"]
    assert job.recorded() == {"chunk 1", "chunk 2"} and not job.merged.exists()
    result = job.cli("--chunk", "0", "--chunk", "7", "--chunk", "9")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"helios-doit: {job.file}: no chunks with ids 7, 9; the job has chunks 0, 1, 2, 3"]
    assert job.runs() == []


def test_cli_passes_other_options_to_doit(make_job):
    job = make_job(chunks=2)
    job.cli()
    job.runs()
    result = job.cli("--always-execute")
    assert result.returncode == 0
    assert job.runs() == ["chunk 0", "chunk 1", "merge"]


def test_percent_dollar_and_quotes_reach_the_shell_verbatim(make_job):
    job = make_job(chunks=1)
    job.data["chunks"][0]["command"] = chunk_command(0, 0, 8, "frame_%04d.png ${GREETING} '$NOT_EXPANDED' \"a b\"")
    job.save()
    job.env["GREETING"] = "hi"
    result = job.doit()
    assert result.returncode == 0, result.stderr
    assert "frame 0 frame_%04d.png hi $NOT_EXPANDED a b" in job.output(0).read_text()


def test_failed_chunk_names_it_and_removes_its_partial_output(make_job):
    job = make_job()
    (job.folder / "fail-2").touch()
    result = job.doit("--continue")
    assert result.returncode == 2  # plain doit under --continue: the merge could not run (the CLI says 1)
    assert not job.output(2).exists()  # it had written one frame before crashing
    assert "chunk 2 failed: exit code 3; log:" in result.stdout
    assert "renderer crashed at frame 16" in result.stdout
    assert "[chunk 2] chunk 2: renderer crashed at frame 16" in result.stderr
    assert not job.merged.exists()
    assert sorted(job.runs()) == ["chunk 0", "chunk 1", "chunk 2", "chunk 3"]
    log = (job.state / "logs" / "chunk-2.log").read_text()
    assert "renderer crashed at frame 16" in log and "exit code 3" in log

    (job.folder / "fail-2").unlink()
    assert job.doit().returncode == 0
    assert job.runs() == ["chunk 2", "merge"]


def test_cli_exit_code_1_on_failure(make_job):
    job = make_job(chunks=2)
    (job.folder / "fail-1").touch()
    result = job.cli("--continue")
    assert result.returncode == 1
    assert "chunk 1 failed: exit code 3" in result.stdout
    assert str(job.state / "logs" / "chunk-1.log") in result.stdout


def test_failed_merge_exits_1_and_removes_the_half_written_output(make_job):
    job = make_job(chunks=2)
    (job.folder / "fail-merge").touch()
    result = job.cli()
    assert result.returncode == 1
    assert "merge failed: exit code 4" in result.stdout
    assert not job.merged.exists()
    (job.folder / "fail-merge").unlink()
    assert job.cli().returncode == 0
    assert job.runs() == ["chunk 0", "chunk 1", "merge", "merge"]


def test_half_written_merged_output_is_merged_again(make_job):
    job = make_job(chunks=2)
    job.doit()
    job.runs()
    with job.merged.open("r+") as handle:
        handle.truncate(10)
    assert job.doit().returncode == 0
    assert job.runs() == ["merge"]
    assert job.merged.read_text() == job.expected_merge()


def test_truncated_chunk_output_is_rendered_again(make_job):
    job = make_job(chunks=2)
    job.doit()
    job.runs()
    with job.output(1).open("r+") as handle:
        handle.truncate(5)
    assert job.doit().returncode == 0
    assert job.runs() == ["chunk 1"]
    assert job.output(1).read_text().count("frame") == 8


def test_command_that_exits_0_without_output_fails(make_job):
    job = make_job(chunks=1)
    job.data["chunks"][0]["command"] = "echo nothing to see"
    job.save()
    result = job.doit()
    assert result.returncode == 1
    assert "the command exited 0 but did not write" in result.stdout


def test_live_output_is_prefixed_and_logged_per_chunk(make_job):
    job = make_job(chunks=2)
    result = job.doit("-n", "2")
    assert "[chunk 0] chunk 0: wrote frames 0-7" in result.stdout
    assert "[chunk 1] chunk 1: wrote frames 8-15" in result.stdout
    assert "chunk 1: wrote frames 8-15" in (job.state / "logs" / "chunk-1.log").read_text()


def test_state_lives_next_to_the_job_never_in_the_current_directory(make_job, tmp_path):
    job = make_job(chunks=2)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = job.doit(cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    assert list(elsewhere.iterdir()) == []
    assert not (REPO / ".doit.db").exists()
    assert sorted(p.name for p in job.state.iterdir()) == ["failures", "inputs.json", "locks", "logs", "records", "running", "runs"]
    record = json.loads((job.state / "records" / "chunk-0.json").read_text())
    assert record["output"][0] == job.output(0).stat().st_size


def test_doit_list_info_clean_forget(make_job):
    job = make_job(chunks=2)
    listed = job.doit("list", "--all")
    assert listed.returncode == 0
    assert "chunk:0" in listed.stdout and "merge" in listed.stdout
    job.doit()
    job.runs()
    info = job.doit("info", "chunk:1")
    assert info.returncode == 0 and "up-to-date" in info.stdout
    assert job.doit("forget").returncode == 0
    assert job.doit().returncode == 0
    assert job.runs() == []  # completion lives in our records, not in doit's dep file
    assert job.doit("clean", "chunk:1").returncode == 0
    assert not job.output(1).exists()
    assert job.doit().returncode == 0
    assert job.runs() == ["chunk 1"]


def test_yaml_job(make_job):
    job = make_job(chunks=2, name="job.yaml")
    import yaml

    job.file.write_text(yaml.safe_dump(job.data))
    assert job.cli().returncode == 0
    assert job.runs() == ["chunk 0", "chunk 1", "merge"]


def test_console_script_runs_the_job(make_job):
    job = make_job(chunks=1)
    script = Path(sys.executable).parent / "helios-doit"
    result = subprocess.run([str(script), "job", "run", str(job.file)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert job.runs() == ["chunk 0", "merge"]


def test_parallel_chunk_output_never_mixes_within_a_line(make_job):
    job = make_job(chunks=3, frames=1)
    for chunk in job.data["chunks"]:
        cid = chunk["id"]
        chunk["command"] = (
            f"{sys.executable} -c \"import sys\nfor i in range(400): print('{cid}' * 300, flush=i % 3 == 0)\""
            f" && echo ok > part_{cid}.txt"
        )
    job.save()
    result = job.doit("-n", "3")
    assert result.returncode == 0, result.stderr
    shown = [line for line in result.stdout.splitlines() if line.startswith("[chunk")]
    assert len(shown) == 1200
    for line in shown:
        cid = line[len("[chunk ")]
        assert line == f"[chunk {cid}] " + cid * 300


def test_relative_job_path_is_taken_from_where_the_user_started(make_job, tmp_path):
    job = make_job(chunks=2)
    argv = [sys.executable, "-m", "doit", "-f", str(REPO / "dodo.py"), "job=job/job.json"]
    result = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert job.runs() == ["chunk 0", "chunk 1", "merge"]


def test_unknown_merge_mode_is_bad_input(make_job):
    job = make_job(chunks=2)
    result = job.doit("merge=ffmpeg-please")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "helios-doit: merge=ffmpeg-please: unknown merge mode; use merge=builtin or merge=command"
    ]
    assert not job.state.exists() and job.runs() == []


def test_renders_side_by_side_share_the_cores_unless_the_user_chose(make_job):
    job = make_job(chunks=2, frames=1)
    for chunk in job.data["chunks"]:
        chunk["command"] = f'echo "${{HELIOS_DOIT_THREADS:-unset}}" > {chunk["outputFile"]}'
    job.data["mergeCommand"] = "cat part_0.txt part_1.txt > out.txt"
    job.save()
    cores = len(os.sched_getaffinity(0))
    assert job.doit("-n", "2").returncode == 0
    assert job.output(0).read_text() == f"{max(1, cores // 2)}\n"
    assert job.doit("-a").returncode == 0  # one at a time: the encoder decides
    assert job.output(0).read_text() == "unset\n"
    job.env["HELIOS_DOIT_THREADS"] = "3"
    assert job.cli("--concurrency", "2", "--always-execute").returncode == 0
    assert job.output(1).read_text() == "3\n"
