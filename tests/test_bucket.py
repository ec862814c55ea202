"""Jobs in a bucket: no shared disk. Every test talks to a real S3 HTTP server on loopback (moto's
server mode); runners are real processes that reach it through AWS_ENDPOINT_URL, each "machine"
an empty working folder and a scratch folder of its own."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import av
import pytest
import yaml
from buckets import Bucket, bucket, copy_finished, endpoint, finished, job_run, paused_run  # noqa: F401 (fixtures)
from harness import CLI, DOIT, new_job, run, wait_for



def test_a_job_in_a_bucket_runs_from_an_empty_folder_and_a_rerun_uploads_nothing(bucket):
    url = bucket.upload_job()
    result = job_run(bucket, "a", url, "--concurrency", "2")
    assert result.returncode == 0, result.stderr
    assert list((bucket.root / "a" / "cwd").iterdir()) == []  # nothing where the user stood
    keys = bucket.keys()
    assert {"shot1/part_0.txt", "shot1/part_1.txt", "shot1/part_2.txt", "shot1/out.txt"} <= set(keys)
    merged = bucket.fs.cat(f"{bucket.name}/shot1/out.txt").decode()
    assert merged.splitlines() == [f"frame {i} " for i in range(9)]
    assert bucket.runs("a") == ["chunk 0", "chunk 1", "chunk 2", "merge"]

    again = job_run(bucket, "a", url, "--concurrency", "2")
    assert again.returncode == 0, again.stderr
    assert bucket.keys() == keys  # not one object written again
    *skipped, summary = again.stdout.splitlines()
    assert sorted(skipped) == ["-- chunk:0", "-- chunk:1", "-- chunk:2", "-- merge"]
    assert summary == f"helios-doit: nothing to do: 3 chunks and the merge were done already ({url.rsplit('/', 1)[0]}/out.txt)"


def test_a_deleted_chunk_object_reruns_that_chunk_only_and_doit_clean_works_from_any_machine(bucket, finished):
    url = copy_finished(bucket, finished)
    bucket.fs.rm_file(f"{bucket.name}/shot1/part_1.txt")
    result = job_run(bucket, "b", url)  # a machine with an empty scratch: it renders what is missing
    assert result.returncode == 0, result.stderr
    # The same bytes again (same ETag): the merged file made of them still holds.
    assert bucket.runs("b") == ["chunk 1"]
    assert "-- merge" in result.stdout
    assert "part_1.txt" in bucket.fs.cat(f"{bucket.name}/shot1/.helios-doit/job.json/logs/chunk-1.log").decode()

    cwd, env = bucket.machine("c")  # `doit clean` on a third machine: nothing of the job on its disk
    cleaned = run([*DOIT, "clean", "chunk:0", f"job={url}"], cwd=cwd, env=env)
    assert cleaned.returncode == 0, cleaned.stderr
    keys = bucket.keys()
    assert "shot1/part_0.txt" not in keys and not [k for k in keys if "/done/chunk-0/" in k]
    assert "shot1/part_1.txt" in keys and [k for k in keys if "/done/chunk-1/" in k]
    again = job_run(bucket, "c", url)
    assert again.returncode == 0, again.stderr
    assert bucket.runs("c") == ["chunk 0"]

    records = {k for k in bucket.keys() if "/done/" in k}
    forced = job_run(bucket, "c", url, "-a")  # doit's --always-execute: this run chose to redo everything
    assert forced.returncode == 0, forced.stderr
    assert bucket.runs("c") == ["chunk 0", "chunk 0", "chunk 1", "merge"]  # chunk 0 again, though this machine has it
    assert "done by another runner" not in forced.stdout
    assert {k for k in bucket.keys() if "/done/" in k} == records  # the same bytes, recorded anew


def test_array_workers_in_separate_empty_folders_then_job_run_only_merges(bucket):
    url = bucket.upload_job(chunks=2)
    procs = []
    for index in range(2):
        cwd, env = bucket.machine(f"w{index}")
        procs.append(subprocess.Popen([*CLI, "worker", url, "--index", str(index)], cwd=cwd, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    assert [p.wait(60) for p in procs] == [0, 0], [p.stderr.read() for p in procs]
    assert [bucket.runs(f"w{i}") for i in range(2)] == [["chunk 0"], ["chunk 1"]]
    result = job_run(bucket, "m", url)
    assert result.returncode == 0, result.stderr
    assert bucket.runs("m") == ["merge"]
    assert bucket.fs.cat(f"{bucket.name}/shot1/out.txt").decode().count("frame") == 6
    status = run([*CLI, "status", url, "--json"], cwd=bucket.root, env=bucket.machine("s")[1])
    assert json.loads(status.stdout)["totals"]["complete"] is True, status.stderr


def test_two_runners_on_one_bucket_never_render_a_chunk_at_once(bucket):
    url = bucket.upload_job(chunks=1, slow="0.4")  # 1.2 s of rendering: the two runs overlap
    procs = []
    for name in ("a", "b"):
        cwd, env = bucket.machine(name)
        procs.append(subprocess.Popen([*DOIT, f"job={url}", "chunk:0"], cwd=cwd, env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    assert [p.wait(60) for p in procs] == [0, 0], [p.stderr.read() for p in procs]
    assert bucket.runs("a") + bucket.runs("b") == ["chunk 0"]  # one render; the other waited, then found it done


def test_a_real_video_job_in_a_bucket_is_rendered_stitched_and_verified(bucket, tmp_path):
    repo = Path(__file__).resolve().parent.parent
    job = json.loads((repo / "examples" / "orbit" / "job.json").read_text())
    job["chunks"] = job["chunks"][:2]
    for chunk in job["chunks"]:  # a quarter of the pixels: the same path, less encoding
        chunk["command"] = chunk["command"].replace("--width 640 --height 360", "--width 320 --height 180")
    job["metadata"].update(totalFrames=60, duration=2, width=320, height=180)
    job["inputs"] = ["composition.py"]
    job.pop("mergeCommand")
    bucket.fs.pipe_file(f"{bucket.name}/orbit/job.json", json.dumps(job).encode())
    bucket.fs.put_file(str(repo / "examples" / "orbit" / "composition.py"), f"{bucket.name}/orbit/composition.py")
    result = job_run(bucket, "a", bucket.url("orbit/job.json"), "--concurrency", "2")
    assert result.returncode == 0, result.stderr
    local = tmp_path / "orbit.mp4"
    bucket.fs.get_file(f"{bucket.name}/orbit/orbit.mp4", str(local))
    with av.open(str(local)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 60


@pytest.mark.parametrize("case", ["no bucket", "no job", "no server", "no credentials"])
def test_a_bucket_job_that_cannot_be_read_is_one_line_and_exit_2(bucket, case):
    cwd, env = bucket.machine("a")
    url = {"no bucket": "s3://no-such-bucket-here/job.json", "no job": bucket.url("nothing/job.json"),
           "no server": bucket.url("shot1/job.json"), "no credentials": bucket.url("shot1/job.json")}[case]
    if case == "no server":
        env["AWS_ENDPOINT_URL"] = "http://127.0.0.1:9"
    if case == "no credentials":
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
            env.pop(name, None)
        env.update(AWS_CONFIG_FILE="/dev/null", AWS_SHARED_CREDENTIALS_FILE="/dev/null")
    result = run([*CLI, "job", "run", url], cwd=cwd, env=env, timeout=60)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert {"no bucket": "bucket does not exist", "no job": "no such job", "no server": "cannot reach",
            "no credentials": "no credentials"}[case] in lines[0]
    assert not (bucket.root / "a" / "scratch").exists()  # nothing written


def test_a_local_job_sends_its_outputs_and_records_to_a_bucket_with_storage(bucket, make_job):
    job = make_job(chunks=2)
    result = run([*CLI, "job", "run", str(job.file), "--storage", bucket.url("renders/shot1")],
                 env={**os.environ, **bucket.env}, timeout=120)
    assert result.returncode == 0, result.stderr
    keys = bucket.keys()
    assert {"renders/shot1/part_0.txt", "renders/shot1/part_1.txt", "renders/shot1/out.txt"} <= set(keys)
    assert [k for k in keys if k.startswith("renders/shot1/.helios-doit/job.json/done/merge/")]


def test_export_k8s_of_a_bucket_job_needs_no_volume_and_passes_strict_validation(bucket, tmp_path):
    url = bucket.upload_job()
    cwd, env = bucket.machine("a")
    result = run([*CLI, "export", "k8s", url, "--image", "registry/helios:1", "--secret", "bucket-keys"],
                 cwd=cwd, env=env)
    assert result.returncode == 0, result.stderr
    chunks, merge = yaml.safe_load_all(result.stdout)
    pod = chunks["spec"]["template"]["spec"]
    assert "volumes" not in pod and "volumeMounts" not in pod["containers"][0]
    assert pod["containers"][0]["command"] == ["helios-doit", "worker", url]
    assert pod["containers"][0]["envFrom"] == [{"secretRef": {"name": "bucket-keys"}}]
    assert "testing" not in result.stdout  # credentials are never written into a manifest
    manifest = tmp_path / "job.yaml"
    manifest.write_text(result.stdout)
    checked = run([str(Path(sys.executable).parent / "kubernetes-validate"), "--strict", "-k", "1.33.0", str(manifest)])
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_runner_paused_past_its_lease_never_writes_over_the_chunk_another_runner_published(bucket):
    url = bucket.upload_job(chunks=1)
    paused, flag = paused_run(bucket, url, "before-record:chunk-0", HELIOS_DOIT_LEASE_TTL="2")
    frozen = int(flag.read_text())
    os.kill(frozen, signal.SIGSTOP)  # a stopped VM: its lease is no longer renewed
    try:
        taken = job_run(bucket, "b", url)  # waits out a's lease, then takes the chunk over
        assert taken.returncode == 0, taken.stderr
        published = bucket.keys()
        assert bucket.runs("b") == ["chunk 0", "merge"]
        flag.unlink()
    finally:
        os.kill(frozen, signal.SIGCONT)
    out, err = paused.communicate(timeout=60)
    assert bucket.keys() == published  # b's chunk, its record and its merge: not one object written over
    assert "took over its lease" in out + err


def test_damaged_leases_never_block_and_a_foreign_object_in_an_outputs_place_is_moved_aside(bucket):
    url = bucket.upload_job(chunks=3)
    state = f"{bucket.name}/shot1/.helios-doit/job.json/leases"
    bucket.fs.pipe_file(f"{state}/chunk-0.json", b"")
    bucket.fs.pipe_file(f"{state}/chunk-1.json", b'{"expires": "abc"}')
    bucket.fs.pipe_file(f"{state}/chunk-2.json", b'{"expires": 1e300, "host": "liar"}')
    bucket.fs.pipe_file(f"{bucket.name}/shot1/part_0.txt", b"someone's file")
    result = job_run(bucket, "a", url)
    assert result.returncode == 0, result.stderr
    assert bucket.runs("a") == ["chunk 0", "chunk 1", "chunk 2", "merge"]
    aside = [k for k in bucket.keys() if "/aside/part_0.txt." in k]
    assert len(aside) == 1 and bucket.fs.cat(f"{bucket.name}/{aside[0]}") == b"someone's file"
    assert "no record of ours vouches for" in result.stdout + result.stderr


@pytest.mark.parametrize("case", ["version in the URL", "output is the job", "bad ttl"])
def test_bucket_input_that_would_destroy_bytes_is_refused_before_anything_runs(bucket, make_job, case):
    url = bucket.upload_job()
    cwd, env = bucket.machine("a")
    before = bucket.keys()
    if case == "version in the URL":
        argv = [*CLI, "job", "run", url + "?versionId=x"]
    elif case == "output is the job":
        data = json.loads(bucket.fs.cat(f"{bucket.name}/shot1/job.json"))
        data["chunks"][0]["outputFile"] = "job.json"
        bucket.fs.pipe_file(f"{bucket.name}/shot2/job.json", json.dumps(data).encode())
        before = bucket.keys()
        argv = [*CLI, "job", "run", bucket.url("shot2/job.json")]
    else:
        env["HELIOS_DOIT_LEASE_TTL"] = "inf"
        argv = [*CLI, "job", "run", url]
    result = run(argv, cwd=cwd, env=env, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr, result.stderr
    assert bucket.keys() == before


@pytest.mark.parametrize("output", ["../shot1/part_0.txt", "s3://other-bucket/x.txt", "../../elsewhere.txt"])
def test_a_bucket_job_writes_only_in_its_own_folder_there(bucket, finished, output):
    copy_finished(bucket, finished)  # shot1: another job, finished
    data = json.loads(bucket.fs.cat(f"{bucket.name}/shot1/job.json"))
    data["chunks"][0]["command"] = data["chunks"][0]["command"].replace("part_0.txt", output)
    data["chunks"][0]["outputFile"] = output
    for name in ("job.json", "render.sh", "merge.sh"):
        bucket.fs.pipe_file(f"{bucket.name}/shot2/{name}", json.dumps(data).encode() if name == "job.json"
                            else bucket.fs.cat(f"{bucket.name}/shot1/{name}"))
    before = bucket.keys()
    result = job_run(bucket, "a", bucket.url("shot2/job.json"))
    assert result.returncode == 2, result.stdout + result.stderr
    [line] = result.stderr.splitlines()
    assert ("is a URL" if "://" in output else ", outside ") in line and "Traceback" not in line
    assert bucket.keys() == before  # shot1's finished output untouched; nothing written at all
    assert bucket.runs("a") == []


def helios_layout(bucket):
    """A 2-chunk job at proj/jobs/job.json whose outputs are ../renders/..., as Helios writes them."""
    url = bucket.upload_job(folder="proj/jobs", chunks=2)
    data = json.loads(bucket.fs.cat(f"{bucket.name}/proj/jobs/job.json"))
    for chunk in data["chunks"]:
        chunk["command"] = chunk["command"].replace(chunk["outputFile"], f"../renders/{chunk['outputFile']}")
        chunk["outputFile"] = f"../renders/{chunk['outputFile']}"
    data["mergeCommand"] = "sh merge.sh out.txt " + " ".join(c["outputFile"] for c in data["chunks"])
    bucket.fs.pipe_file(f"{bucket.name}/proj/jobs/job.json", json.dumps(data).encode())
    return url


def test_an_output_root_in_the_bucket_lets_a_job_write_next_to_its_folder_and_nowhere_else(bucket):
    url = helios_layout(bucket)
    refused = job_run(bucket, "a", url)
    assert refused.returncode == 2 and "outside" in refused.stderr and len(refused.stderr.splitlines()) == 1
    for root, why in (("/tmp", "give a folder of that bucket"), ("s3://another-bucket/proj", "not in the job's bucket")):
        wrong = job_run(bucket, "a", url, "--output-root", root)
        assert wrong.returncode == 2 and why in wrong.stderr and len(wrong.stderr.splitlines()) == 1, wrong.stderr
    result = job_run(bucket, "a", url, "--output-root", bucket.url("proj"))
    assert result.returncode == 0, result.stderr
    assert {"proj/renders/part_0.txt", "proj/renders/part_1.txt", "proj/jobs/out.txt"} <= set(bucket.keys())


def test_a_symlink_in_the_scratch_folder_is_not_followed_out_of_it(bucket, tmp_path):
    url = bucket.upload_job()
    cwd, env = bucket.machine("a")
    from helios_doit.storage.url import remote_for

    mirror = Path(remote_for(url, bucket.root / "a" / "scratch").mirror)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "render.sh").write_text("PRECIOUS")
    mirror.mkdir(parents=True)
    (mirror / "shot1").symlink_to(victim)
    result = run([*CLI, "job", "run", url], cwd=cwd, env=env, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "symlink" in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert (victim / "render.sh").read_text() == "PRECIOUS" and sorted(os.listdir(victim)) == ["render.sh"]


def test_dask_workers_that_share_no_disk_with_the_runner_fetch_and_return_through_the_bucket(bucket, tmp_path):
    pytest.importorskip("distributed")
    url = helios_layout(bucket)
    dask = str(Path(sys.executable).parent / "dask")
    info = tmp_path / "scheduler.json"
    _, worker_env = bucket.machine("w")  # the worker's own scratch: nothing of the runner's
    procs = [subprocess.Popen([dask, "scheduler", "--scheduler-file", str(info), "--port", "0", "--no-dashboard"],
                              env=worker_env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        wait_for(lambda: info.exists() and info.read_text().strip().endswith("}"), 60, "the Dask scheduler")
        procs.append(subprocess.Popen([dask, "worker", "--scheduler-file", str(info), "--nthreads", "2", "--no-nanny",
                                       "--no-dashboard"], env=worker_env, cwd=tmp_path,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        address = json.loads(info.read_text())["address"]
        cwd, env = bucket.machine("runner")
        result = run([*CLI, "job", "run", url, "--concurrency", "2", "-P", "thread", "--executor", "dask",
                      "--scheduler", address, "--output-root", bucket.url("proj")], cwd=cwd, env=env, timeout=180)
    finally:
        for proc in reversed(procs):
            proc.terminate()
            proc.wait(30)
    assert result.returncode == 0, result.stderr
    assert bucket.runs("w") == ["chunk 0", "chunk 1"]  # rendered in the worker's own mirror
    assert bucket.runs("runner") == ["merge"]  # the runner only verified, published and merged
    keys = bucket.keys()
    assert {"proj/renders/part_0.txt", "proj/renders/part_1.txt"} <= set(keys)
    assert bucket.fs.cat(f"{bucket.name}/proj/jobs/out.txt").decode().count("frame") == 6
    assert not [k for k in keys if "/staging/" in k]  # what came back through the bucket is gone


def test_helios_asset_bundle_in_a_bucket_is_fetched_into_the_jobs_folder_and_counts_as_input(bucket):
    url = bucket.upload_job(chunks=2)
    data = json.loads(bucket.fs.cat(f"{bucket.name}/shot1/job.json"))
    data["inputs"] = []
    data["id"] = "shot1"
    data["assetsUrl"] = bucket.url("bundles/shot1")  # as Helios' uploadAssetBundle leaves it: a folder of files
    for name in ("render.sh", "merge.sh"):
        bucket.fs.pipe_file(f"{bucket.name}/bundles/shot1/{name}", bucket.fs.cat(f"{bucket.name}/shot1/{name}"))
        bucket.fs.rm_file(f"{bucket.name}/shot1/{name}")
    bucket.fs.pipe_file(f"{bucket.name}/shot1/job.json", json.dumps(data).encode())
    result = job_run(bucket, "a", url)
    assert result.returncode == 0, result.stderr
    assert bucket.runs("a") == ["chunk 0", "chunk 1", "merge"]
    # A changed asset is a changed input: every chunk runs again (the same frames again: the merge holds).
    script = bucket.fs.cat(f"{bucket.name}/bundles/shot1/render.sh").decode()
    bucket.fs.pipe_file(f"{bucket.name}/bundles/shot1/render.sh", (script + "\n# v2\n").encode())
    again = job_run(bucket, "b", url)
    assert again.returncode == 0, again.stderr
    assert bucket.runs("b") == ["chunk 0", "chunk 1"]


@pytest.mark.parametrize("name", ["job.json", "other.json"])
def test_a_storage_folder_that_holds_another_job_is_refused(bucket, finished, make_job, name):
    copy_finished(bucket, finished)
    before = bucket.keys()
    local = make_job(chunks=2, name=name)  # the same file name as the job there, or another
    result = run([*CLI, "job", "run", str(local.file), "--storage", bucket.url("shot1")],
                 env={**os.environ, **bucket.env}, timeout=60)
    assert result.returncode == 2 and "another job" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert bucket.keys() == before


def killed_between_upload_and_record(bucket) -> str:
    """A one-chunk job whose runner on machine a was SIGKILLed after its upload, before its record."""
    url = bucket.upload_job(chunks=1)
    proc, _ = paused_run(bucket, url, "before-publish-record:chunk-0")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    return url


def test_sigkill_between_upload_and_record_leaves_no_record_and_the_rerun_publishes_that_upload(bucket):
    url = killed_between_upload_and_record(bucket)
    keys = bucket.keys()
    uploaded = keys["shot1/part_0.txt"]  # uploaded whole ...
    assert not [k for k in keys if "/done/chunk-0/" in k]  # ... and no record names it
    result = job_run(bucket, "a", url)
    assert result.returncode == 0, result.stderr
    keys = bucket.keys()
    assert keys["shot1/part_0.txt"] == uploaded and not [k for k in keys if "/aside/" in k]  # ours: recorded as is
    assert "no record of ours vouches for" not in result.stdout + result.stderr
    assert "-- chunk:0 (made here earlier; published now)" in result.stdout, result.stdout  # not rendered again
    assert "0 chunks rendered, 1 already done" in result.stdout, result.stdout


def test_doit_clean_takes_over_the_lease_a_runner_killed_on_this_machine_left(bucket):
    url = killed_between_upload_and_record(bucket)
    assert [k for k in bucket.keys() if k.endswith("/leases/chunk-0.json")]  # never released: its runner died
    cwd, env = bucket.machine("a")
    cleaned = run([*DOIT, "clean", "chunk:0", f"job={url}"], cwd=cwd, env=env)
    assert cleaned.returncode == 0, cleaned.stderr
    keys = bucket.keys()
    assert "shot1/part_0.txt" not in keys and not [k for k in keys if "/leases/" in k]
    assert [k for k in keys if "/aside/part_0.txt." in k]  # no record named the upload: copied aside, then removed


def held_by_another_machine(bucket, task: str) -> None:
    """A live lease on `task`, as a runner on machine `vm` holds it while it renders there."""
    body = {"host": "vm", "pid": 4242, "machine": "another-boot:1", "tag": "another-boot:1:4242:1", "ttl": 120}
    bucket.fs.pipe(f"{bucket.name}/shot1/.helios-doit/job.json/leases/{task}.json", json.dumps(body).encode())


def test_doit_clean_leaves_a_chunk_a_runner_on_another_machine_holds_alone_in_one_line(bucket, finished):
    url = copy_finished(bucket, finished)
    held_by_another_machine(bucket, "chunk-1")
    cwd, env = bucket.machine("c")
    cleaned = run([*DOIT, "clean", "chunk:1", f"job={url}"], cwd=cwd, env=env)
    assert cleaned.returncode == 1
    assert cleaned.stderr.splitlines() == [
        "helios-doit: chunk 1: a runner on vm holds it in the bucket; not cleaned (stop that run first; one that "
        "died on another machine gives it up 120 s after its last renewal)"]
    keys = bucket.keys()
    assert "shot1/part_1.txt" in keys and [k for k in keys if "/done/chunk-1/" in k]  # left as it was


def test_an_object_replaced_while_it_is_read_is_read_again_never_a_failure(bucket, monkeypatch):
    """A lease is replaced every few seconds by its holder; a runner that waits reads it meanwhile."""
    from helios_doit.storage.store import Store

    for name, value in bucket.env.items():
        monkeypatch.setenv(name, value)
    store = Store(bucket.url(""))
    key = "shot1/.helios-doit/job.json/leases/chunk-0.json"
    bucket.fs.pipe(f"{bucket.name}/{key}", b'{"n": 0}')
    done = threading.Event()

    def renew() -> None:
        n = 0
        while not done.is_set():
            n += 1
            bucket.fs.pipe(f"{bucket.name}/{key}", json.dumps({"n": n}).encode())
            done.wait(0.02)  # a holder renews every few seconds: here 100 times as often

    renewer = threading.Thread(target=renew)
    renewer.start()
    try:
        seen = [json.loads(store.read(key) or b"null")["n"] for _ in range(150)]
    finally:
        done.set()
        renewer.join(10)
    assert seen == sorted(seen) and seen[-1] > seen[0]  # every read whole, each a newer version
