"""`helios-doit export k8s`: what it refuses (one line, exit 2, nothing printed) and how paths reach
a pod's command as they are, Kubernetes' own `$(VAR)` expansion notwithstanding."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from harness import CLI, REPO


def export(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "export", *args], capture_output=True, text=True, cwd=cwd, timeout=60)


def kubernetes_expands(text: str, env: dict[str, str]) -> str:
    """What Kubernetes makes of a container's command word (its expansion rules: `$(NAME)` is a
    variable it knows, `$$` is `$`, anything else stays)."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "$" and i + 1 < len(text):
            if text[i + 1] == "$":
                out.append("$")
                i += 2
                continue
            if text[i + 1] == "(" and (end := text.find(")", i)) != -1:
                name = text[i + 2:end]
                out.append(env.get(name, text[i:end + 1]))
                i = end + 1
                continue
        out.append(text[i])
        i += 1
    return "".join(out)


@pytest.mark.parametrize("args, says", [
    (["--parallelism", "0", "--claim", "renders"], "--parallelism 0: give how many chunks run at once, at least 1"),
    (["--parallelism", "-3", "--claim", "renders"], "--parallelism -3: give how many chunks run at once, at least 1"),
    (["--retries", "-1", "--claim", "renders"], "--retries -1: give the attempts after the first, 0 or more"),
    ([], "pods cannot see this machine's"),
    (["--mount", "/work"], "--mount /work: says where pods mount --claim PVC; give the claim too"),
    (["--claim", "renders", "--mount", "work"], "--mount work: a path in the pods, from their root"),
    (["--claim", "renders", "--secret", "s3-creds"], "--secret s3-creds: for a job in a bucket"),
    (["--claim", "renders", "--mount", "/"], "--mount /: the pods' root; the claim there would hide the image's"),
    (["--claim", "renders", "--mount", "/w/../.."], "--mount /w/../..: the pods' root"),
    (["--claim", "renders", "--mount", ""], "--mount '': a path in the pods, from their root"),
    (["--claim", "renders", "--secret", ""], "--secret '': not a Secret name (lowercase letters, digits, '-' and '.'"),
    (["--claim", "renders", "--secret", "a b"], "--secret 'a b': not a Secret name"),
    (["--claim", "bad claim"], "--claim 'bad claim': not a PersistentVolumeClaim name"),
    (["--claim", "a" * 254], "not a PersistentVolumeClaim name"),
    (["--claim", "renders", "--parallelism", "2147483648"], "--parallelism 2147483648: at most 2147483647"),
    (["--claim", "renders", "--retries", "2147483648"], "--retries 2147483648: at most 2147483647"),
])
def test_what_cannot_work_is_one_line_and_prints_no_manifest(make_job, args, says):
    job = make_job(chunks=3)
    result = export("k8s", str(job.file), "--image", "registry/helios:1", *args)
    assert result.returncode == 2 and result.stdout == "", result.stdout
    [line] = result.stderr.splitlines()
    assert says in line, line
    if not args:  # what to do instead
        assert "--claim PVC" in line and "holds the job's folder" in line and "in a bucket" in line


def test_slurm_refuses_the_same_numbers(make_job):
    job = make_job(chunks=3)
    for args in (["--parallelism", "0"], ["--retries", "-2"], ["--claim", "renders"], ["--image", "registry/helios:1"],
                 ["--parallelism", "2147483648"], ["--secret", ""], ["--mount", "/work"]):
        result = export("slurm", str(job.file), *args)
        assert result.returncode == 2 and result.stdout == "" and len(result.stderr.splitlines()) == 1, result.stderr


def test_a_dollar_in_a_path_reaches_the_pod_as_it_is(make_job):
    job = make_job(chunks=2, folder="shot $(whoami) $$ $HOME")
    result = export("k8s", str(job.file), "--image", "i:1", "--claim", "renders")
    assert result.returncode == 0, result.stderr
    chunks, merge = yaml.safe_load_all(result.stdout)
    worker = chunks["spec"]["template"]["spec"]["containers"][0]["command"]
    run = merge["spec"]["template"]["spec"]["containers"][0]["command"]
    pod_env = {"whoami": "root", "HOME": "/root"}
    assert [kubernetes_expands(word, pod_env) for word in worker] == ["helios-doit", "worker", str(job.file)]
    assert [kubernetes_expands(word, pod_env) for word in run] == ["helios-doit", "job", "run", str(job.file)]
    assert "$$(whoami)" in worker[-1]
    mounted = chunks["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][0]["mountPath"]
    assert mounted == str(job.folder)  # not a command: Kubernetes does not expand it
    checked = subprocess.run([str(Path(sys.executable).parent / "kubernetes-validate"), "--strict", "-"],
                             input=result.stdout, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_mount_is_taken_as_the_plain_path_it_names(make_job):
    job = make_job(chunks=2)
    result = export("k8s", str(job.file), "--image", "i:1", "--claim", "renders", "--mount", "/w/../work/",
                    "--retries", "2147483647")
    assert result.returncode == 0, result.stderr
    chunks, _ = yaml.safe_load_all(result.stdout)
    pod = chunks["spec"]["template"]["spec"]["containers"][0]
    assert pod["volumeMounts"][0]["mountPath"] == "/work"
    assert pod["command"] == ["helios-doit", "worker", "/work/job.json"]
    assert chunks["spec"]["backoffLimitPerIndex"] == 2147483647  # the largest Kubernetes takes
    checked = subprocess.run([str(Path(sys.executable).parent / "kubernetes-validate"), "--strict", "-"],
                             input=result.stdout, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
