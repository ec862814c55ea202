"""More than one machine: array-job workers and the manifests that start them."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from harness import CLI, REPO


def worker(job, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    full = {k: v for k, v in os.environ.items() if not k.endswith(("_INDEX", "TASK_ID"))}
    full.update(env or {})
    return subprocess.Popen([*CLI, "worker", str(job.file), *args], cwd=REPO, env=full, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_array_workers_render_their_chunks_then_job_run_only_merges(make_job):
    job = make_job(chunks=4)
    variables = ["JOB_COMPLETION_INDEX", "AWS_BATCH_JOB_ARRAY_INDEX", "SLURM_ARRAY_TASK_ID", "CLOUD_RUN_TASK_INDEX"]
    procs = [worker(job, env={name: str(index)}) for index, name in enumerate(variables)]
    assert [p.wait(60) for p in procs] == [0, 0, 0, 0], [p.stderr.read() for p in procs]
    assert sorted(job.runs()) == ["chunk 0", "chunk 1", "chunk 2", "chunk 3"]
    result = job.cli()
    assert result.returncode == 0, result.stderr
    assert job.runs() == ["merge"]
    assert job.merged.read_text() == job.expected_merge()


def test_a_worker_whose_chunk_is_done_exits_0_at_once(make_job):
    job = make_job(chunks=2)
    assert worker(job, "--index", "1").wait(60) == 0
    job.runs()
    assert worker(job, "--index", "1").wait(60) == 0
    assert job.runs() == []


def test_worker_exit_codes_tell_retryable_from_fatal(make_job):
    job = make_job(chunks=3)
    (job.folder / "fail-0").touch()
    assert worker(job, "--index", "0").wait(60) == 75  # a crash: try again
    job.data["chunks"][1]["command"] = "exit 64"
    job.data["chunks"][2]["command"] = "echo but no output"
    job.save()
    assert worker(job, "--index", "1", "--fatal-exit-codes", "64").wait(60) == 3
    assert worker(job, "--index", "2").wait(60) == 3  # exits 0 without its output: a retry cannot help
    bad = worker(job, "--index", "9")
    assert bad.wait(60) == 2 and "index 9 is out of range; the job has 3 chunks (0-2)" in bad.stderr.read()
    none = worker(job)
    assert none.wait(60) == 2 and "no chunk index: pass --index N or set one of $JOB_COMPLETION_INDEX" in none.stderr.read()


def test_export_k8s_is_an_indexed_job_and_a_merge_job(make_job):
    job = make_job(chunks=5)
    result = subprocess.run([*CLI, "export", "k8s", str(job.file), "--image", "registry/helios:1", "--parallelism", "2",
                             "--claim", "renders"], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    chunks, merge = list(yaml.safe_load_all(result.stdout))
    assert chunks["apiVersion"] == "batch/v1" and chunks["kind"] == "Job"
    spec = chunks["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == 5 and spec["parallelism"] == 2
    assert spec["backoffLimitPerIndex"] == 3
    assert spec["podFailurePolicy"]["rules"][0]["onExitCodes"]["values"] == [2, 3]
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["containers"][0]["command"] == ["helios-doit", "worker", str(job.file)]
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == "renders"
    assert merge["spec"]["template"]["spec"]["containers"][0]["command"] == ["helios-doit", "job", "run", str(job.file)]
    assert chunks["metadata"]["name"] == "job-chunks" and merge["metadata"]["name"] == "job-merge"
    # The claim is mounted where the job's folder is here: the job's path means the same in a pod.
    assert pod["containers"][0]["volumeMounts"] == [{"name": "jobs", "mountPath": str(job.folder)}]


@pytest.mark.parametrize("version", ["1.29.0", "1.33.0"])
def test_export_k8s_passes_strict_schema_validation(make_job, tmp_path, version):
    job = make_job(chunks=3)
    result = subprocess.run([*CLI, "export", "k8s", str(job.file), "--image", "registry/helios:1", "--claim", "renders"],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    manifest = tmp_path / "job.yaml"
    manifest.write_text(result.stdout)
    checked = subprocess.run([str(Path(sys.executable).parent / "kubernetes-validate"), "--strict", "-k", version,
                              str(manifest)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.count("passed for resource job/") == 2


def test_export_k8s_mount_elsewhere_rewrites_the_jobs_path_under_it(make_job):
    job = make_job(chunks=2)
    result = subprocess.run([*CLI, "export", "k8s", "job.json", "--image", "i:1", "--claim", "renders", "--mount", "/work"],
                            capture_output=True, text=True, cwd=job.folder)
    assert result.returncode == 0, result.stderr
    chunks, merge = list(yaml.safe_load_all(result.stdout))
    container = chunks["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["helios-doit", "worker", "/work/job.json"]
    assert container["volumeMounts"][0]["mountPath"] == "/work"
    assert merge["spec"]["template"]["spec"]["containers"][0]["command"][-1] == "/work/job.json"


def test_export_k8s_refuses_a_claim_that_would_not_hold_the_outputs(make_job):
    job = make_job(chunks=2)
    job.data["chunks"][1]["outputFile"] = "../renders/part_1.txt"  # Helios' layout, run from the project folder
    job.save()
    result = subprocess.run([*CLI, "export", "k8s", "job/job.json", "--image", "i:1", "--claim", "renders"],
                            capture_output=True, text=True, cwd=job.folder.parent)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "is outside it" in result.stderr and result.stdout == ""


def test_export_slurm_submits_an_array_then_a_dependent_merge(make_job, tmp_path):
    job = make_job(chunks=5, folder="my renders")
    result = subprocess.run([*CLI, "export", "slurm", str(job.file), "--parallelism", "2"], capture_output=True,
                            text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    script = tmp_path / "submit.sh"
    script.write_text(result.stdout)
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    assert "--array=0-4%2" in result.stdout
    assert '--dependency=afterok:"$chunks"' in result.stdout
    # run it against stand-in sbatch commands that record their arguments and run --wrap
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text('#!/bin/bash\necho "$@" >> "$SBATCH_LOG"\necho 4242\n')
    (bin_dir / "sbatch").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SBATCH_LOG": str(tmp_path / "sbatch.log")}
    assert subprocess.run(["bash", str(script)], env=env).returncode == 0
    calls = (tmp_path / "sbatch.log").read_text().splitlines()
    assert "--array=0-4%2" in calls[0] and "helios-doit worker" in calls[0] and str(job.file) in calls[0]
    assert "--dependency=afterok:4242" in calls[1] and "helios-doit job run" in calls[1]
