"""`helios-doit export k8s|slurm JOB`: the array-job pattern for batch schedulers.

Each array task runs `helios-doit worker JOB` with its index in the scheduler's variable; a
merge step runs `helios-doit job run JOB` afterwards, which finds every chunk done and only
merges. Slurm: the job folder must be on storage that every node mounts at the same path.
Kubernetes: `--claim PVC` is a claim whose root holds the job's folder; pods mount it at the
job folder's path here (or at `--mount PATH`, and the job's path in the pods is rewritten to
match), so every path in the job means the same in a pod as here. A job in a bucket needs no
volume and no shared disk: each pod renders in its own scratch and publishes to the bucket.
"""
from __future__ import annotations

import argparse
from typing import Any
import os
import posixpath
import re
import shlex
import sys

import yaml

from ..spec.model import Job
from ..tasks.refuse import load_or_exit
from .cmd_worker import EXIT_BAD_INPUT, EXIT_FATAL, EXIT_RETRY
from ..core.usage import one_line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", choices=["k8s", "slurm"], help="what to print")
    parser.add_argument("file", metavar="JOB", help="job file, at the path the nodes see it")
    parser.add_argument("--image", metavar="IMAGE", help="k8s: container image with helios-doit installed")
    parser.add_argument("--parallelism", type=int, metavar="N", help="chunks at once (default: all)")
    parser.add_argument("--retries", type=int, default=3, metavar="N", help="attempts after the first, per chunk (default 3)")
    parser.add_argument("--secret", metavar="NAME", help="k8s, job in a bucket: a Secret whose keys become the pods' "
                        "environment (AWS_ACCESS_KEY_ID ...)")
    parser.add_argument("--claim", metavar="PVC", help="k8s: PersistentVolumeClaim whose root holds the job's folder")
    parser.add_argument("--mount", metavar="PATH", help="k8s: where pods mount the claim (default: the job folder's "
                        "path here, so paths stay as they are); the job's path in the pods follows it")
    parser.add_argument("--name", metavar="NAME", help="name of the scheduler jobs (default: from the job file)")


def run(args: argparse.Namespace) -> int:
    if refused := _flags_refused(args):  # before the job is read: a flag is wrong whatever the job
        return one_line("helios-doit export", refused)
    job = load_or_exit(args.file)
    count = len(job.spec.chunks)
    parallelism = min(args.parallelism or count, count)
    name = _dns_name(args.name or job.spec.id or job.job_dir.name)
    where = str(job.job_file) if job.job_file is not None else args.file  # absolute: pods and nodes start elsewhere
    if args.target == "k8s":
        if job.remote is not None:  # in a bucket: no volume at all, each pod renders in its own scratch
            if args.claim:
                return one_line("helios-doit export", f"--claim {args.claim}: the job is in a bucket; pods need no volume")
            sys.stdout.write(k8s_manifests(args.file, name, count, parallelism, args.retries, args.image, None, "",
                                           _store_env(args.secret)))
            return 0
        if args.secret:
            return one_line("helios-doit export", f"--secret {args.secret}: for a job in a bucket (its credentials); this "
                            "job's pods read the claim, not a bucket (leave it out)")
        if not args.claim:  # pods see none of this machine's folders: they would find no job
            return one_line("helios-doit export", f"{args.file}: pods cannot see this machine's {job.job_dir}; give --claim "
                            "PVC, a PersistentVolumeClaim whose root holds the job's folder, or put the job in a bucket "
                            "(helios-doit export k8s s3://bucket/folder/job.json)")
        if outside := _outside(job):
            return one_line("helios-doit export", f"--claim {args.claim}: the claim holds the job's folder {job.job_dir}, "
                       f"but {outside} is outside it; emit the job into the folder that holds every output")
        mount = _normal(args.mount) if args.mount is not None else str(job.job_dir)
        path = f"{mount.rstrip('/')}/{job.job_file.name}" if job.job_file is not None else where
        sys.stdout.write(k8s_manifests(path, name, count, parallelism, args.retries, args.image, args.claim, mount))
    else:
        sys.stdout.write(slurm_script(where, name, count, parallelism, args.retries))
    return 0


#: Kubernetes' integer fields (parallelism, backoffLimitPerIndex) are int32: a larger number
#: makes a manifest the API server rejects.
INT32_MAX = 2**31 - 1
#: A Secret's or a PersistentVolumeClaim's name: a DNS-1123 subdomain, at most 253 characters.
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def _flags_refused(args: argparse.Namespace) -> str | None:
    """What is wrong with the flags, if anything: a given flag is never silently ignored (an empty
    `--secret ''` is given too), and what would make a manifest Kubernetes rejects is refused here."""
    return _numbers_refused(args) or _slurm_refused(args) or _k8s_refused(args)


def _numbers_refused(args: argparse.Namespace) -> str | None:
    for flag, value in (("parallelism", args.parallelism), ("retries", args.retries)):
        if value is not None and value > INT32_MAX:
            return f"--{flag} {value}: at most {INT32_MAX} (Kubernetes' limit for the field)"
    if args.parallelism is not None and args.parallelism < 1:
        return f"--parallelism {args.parallelism}: give how many chunks run at once, at least 1 (default: all of them)"
    if args.retries < 0:
        return f"--retries {args.retries}: give the attempts after the first, 0 or more"
    return None


def _slurm_refused(args: argparse.Namespace) -> str | None:
    given = next((f for f in ("image", "secret", "claim", "mount") if getattr(args, f) is not None), None)
    if args.target == "slurm" and given:
        return f"--{given}: for k8s only; Slurm nodes run the job where it is (leave it out)"
    return None


def _k8s_refused(args: argparse.Namespace) -> str | None:
    if args.target == "k8s" and not args.image:
        return "k8s needs --image IMAGE (an image with helios-doit installed)"
    for flag, kind, listed in (("claim", "PersistentVolumeClaim", "pvc"), ("secret", "Secret", "secrets")):
        name = getattr(args, flag)
        if name is not None and not (len(name) <= 253 and DNS_SUBDOMAIN.fullmatch(name)):
            return (f"--{flag} {_shown(name)}: not a {kind} name (lowercase letters, digits, '-' and '.', starting "
                    f"and ending with a letter or digit, at most 253); give one as kubectl get {listed} lists it")
    return _mount_refused(args.mount, args.claim)


def _mount_refused(mount: str | None, claim: str | None) -> str | None:
    """A mount the pods can use: a folder from their root, not the root itself (the claim would
    hide the image's own files, helios-doit with them)."""
    if mount is None:
        return None
    if claim is None:
        return f"--mount {_shown(mount)}: says where pods mount --claim PVC; give the claim too"
    if not mount.startswith("/"):
        return f"--mount {_shown(mount)}: a path in the pods, from their root (e.g. /work)"
    if _normal(mount) == "/":
        return (f"--mount {_shown(mount)}: the pods' root; the claim there would hide the image's own files "
                "(helios-doit too): give a folder (e.g. /work)")
    return None


def _normal(mount: str) -> str:
    """The mount as a plain absolute path (`/w/../x` is `/x`; POSIX keeps a leading `//`)."""
    return "/" + posixpath.normpath(mount).lstrip("/")


def _shown(text: str) -> str:
    """A flag's value as the user would type it, on one line whatever it holds ('' for empty)."""
    return shlex.quote(text) if text.isprintable() else repr(text)


def _outside(job: Job) -> str | None:
    """An output of the job outside its folder, if there is one."""
    folder = str(job.job_dir.resolve()).rstrip("/") + "/"
    paths = [*job.outputs.values(), *([str(job.merge_output)] if job.merge_output else [])]
    return next((path for path in paths if not path.startswith(folder)), None)


def _store_env(secret: str | None) -> dict[str, Any]:
    """What pods need to reach the bucket: the endpoint of an S3-compatible store, if one is set
    here, and credentials from a Secret by name (or the pod's service account), never inline."""
    env: dict[str, Any] = {}
    if os.environ.get("AWS_ENDPOINT_URL"):
        env["env"] = [{"name": "AWS_ENDPOINT_URL", "value": literal(os.environ["AWS_ENDPOINT_URL"])}]
    if secret:
        env["envFrom"] = [{"secretRef": {"name": secret}}]
    return env


def literal(text: str) -> str:
    """`text` as Kubernetes passes it on: it expands `$(VAR)` in a container's command and env values
    and reads `$$` as `$`, so every `$` is doubled (a path `a$(b)` stays `a$(b)` in the pod)."""
    return text.replace("$", "$$")


def _dns_name(text: str) -> str:
    """Kubernetes names: lowercase letters, digits and '-', at most 52 characters here (suffixes follow)."""
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:40] or "job"


def k8s_manifests(job_path: str, name: str, count: int, parallelism: int, retries: int, image: str,
                  claim: str | None, mount: str, env: dict[str, Any] | None = None) -> str:
    def pod(command: list[str]) -> dict[str, Any]:
        container: dict[str, Any] = {"name": "helios-doit", "image": image, "command": [literal(word) for word in command],
                                     **(env or {})}
        spec: dict[str, Any] = {"restartPolicy": "Never", "containers": [container]}
        if claim:
            container["volumeMounts"] = [{"name": "jobs", "mountPath": mount}]
            spec["volumes"] = [{"name": "jobs", "persistentVolumeClaim": {"claimName": claim}}]
        return {"spec": spec}

    chunks = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": f"{name}-chunks", "labels": {"app.kubernetes.io/name": "helios-doit"}},
        "spec": {
            "completionMode": "Indexed",
            "completions": count,
            "parallelism": parallelism,
            "backoffLimitPerIndex": retries,
            "podFailurePolicy": {"rules": [
                {"action": "FailIndex", "onExitCodes": {"containerName": "helios-doit", "operator": "In",
                                                        "values": [EXIT_BAD_INPUT, EXIT_FATAL]}},
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            ]},
            "template": pod(["helios-doit", "worker", job_path]),
        },
    }
    merge = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": f"{name}-merge", "labels": {"app.kubernetes.io/name": "helios-doit"}},
        "spec": {"backoffLimit": retries, "template": pod(["helios-doit", "job", "run", job_path])},
    }
    header = (
        f"# {count} chunks as an Indexed Job, then the merge. Exit {EXIT_RETRY} is retried (backoffLimitPerIndex);\n"
        f"# exits {EXIT_BAD_INPUT} and {EXIT_FATAL} fail the index at once. Apply the merge Job after the first completes:\n"
        f"#   kubectl wait --for=condition=complete --timeout=24h job/{name}-chunks\n"
    )
    return header + yaml.safe_dump_all([chunks, merge], sort_keys=False)


def slurm_script(job_path: str, name: str, count: int, parallelism: int, retries: int) -> str:
    job = shlex.quote(job_path)
    chunk = (f"for try in $(seq 0 {retries}); do helios-doit worker {job} && exit 0; code=$?; "
             f"[ $code -eq {EXIT_RETRY} ] || exit $code; done; exit {EXIT_RETRY}")
    return f"""#!/bin/bash
# Submit {count} chunks as a Slurm array, then the merge once every chunk succeeded.
# A chunk that exits {EXIT_RETRY} is tried again (up to {retries} more times); {EXIT_BAD_INPUT} and {EXIT_FATAL} are final.
set -euo pipefail
chunks=$(sbatch --parsable --job-name={name}-chunks --array=0-{count - 1}%{parallelism} --wrap {shlex.quote(chunk)})
sbatch --parsable --job-name={name}-merge --dependency=afterok:"$chunks" --wrap {shlex.quote(f"helios-doit job run {job}")}
"""
