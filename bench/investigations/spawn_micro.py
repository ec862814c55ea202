"""What one trivial chunk command costs to start, by the way it is started.

    python bench/spawn_micro.py [COUNT] [--inflate MB]

Runs `touch <file>` COUNT times, one after another, each way below, and prints the wall
time and the CPU time (this process plus its children) per command. `--inflate MB` first
grows this process by MB of touched memory: fork() copies page tables, so its cost grows
with the parent's size, while vfork()/posix_spawn() do not; if a way gets slower with
--inflate, it forks.

  posix_spawn touch            os.posix_spawn of /usr/bin/touch: roughly what make does
  Popen [touch]                subprocess, no shell, no pipes
  Popen [sh -c touch]          subprocess through /bin/sh (dash forks once more for touch)
  Popen sh, session+cwd+env    plus start_new_session, cwd and a copied environment
  LocalAdapter.execute         helios_doit's worker: the above plus two pipes, a selector
                               loop, killpg of the group, and a sink
"""
from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time


def cpu() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def measure(name: str, count: int, run) -> tuple[str, float, float]:
    for i in range(min(20, count)):  # warm up
        run(i)
    c0, t0 = cpu(), time.perf_counter()
    for i in range(count):
        run(i)
    return name, (time.perf_counter() - t0) / count * 1000, (cpu() - c0) / count * 1000


def main() -> int:
    args = sys.argv[1:]
    inflate = 0
    if "--inflate" in args:
        k = args.index("--inflate")
        inflate = int(args[k + 1])
        del args[k : k + 2]
    count = int(args[0]) if args else 1000
    ballast = bytearray(inflate * 1024 * 1024)
    for i in range(0, len(ballast), 4096):
        ballast[i] = 1  # touch every page, so it is resident and fork has to copy its page tables
    folder = tempfile.mkdtemp(prefix="helios-spawn-")
    env = dict(os.environ)
    touch = "/usr/bin/touch"
    results = []

    results.append(measure("posix_spawn touch", count, lambda i: os.waitpid(
        os.posix_spawn(touch, [touch, f"{folder}/a{i}"], env), 0)))
    results.append(measure("Popen [touch]", count, lambda i: subprocess.Popen([touch, f"{folder}/b{i}"]).wait()))
    results.append(measure("Popen [sh -c touch]", count,
                           lambda i: subprocess.Popen(["/bin/sh", "-c", f"touch {folder}/c{i}"]).wait()))
    results.append(measure("Popen sh, session+cwd+env", count, lambda i: subprocess.Popen(
        ["/bin/sh", "-c", f"touch d{i}"], cwd=folder, env=dict(os.environ), start_new_session=True,
        stdin=subprocess.DEVNULL).wait()))
    try:
        from helios_doit.executors.base import CommandRequest; from helios_doit.executors.local import LocalAdapter

        adapter = LocalAdapter()
        results.append(measure("LocalAdapter.execute", count, lambda i: adapter.execute(
            CommandRequest(f"touch e{i}", folder), lambda stream, data: None)))
    except ImportError as exc:
        print(f"(helios_doit not importable: {exc})")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"spawn micro-benchmark: {count} commands each, parent RSS {rss:.0f} MB, Python {sys.version.split()[0]}")
    for name, wall, cpu_ms in results:
        print(f"  {name:<28} {wall:6.3f} ms wall  {cpu_ms:6.3f} ms CPU per command")
    subprocess.run(["rm", "-rf", folder])
    return 0


if __name__ == "__main__":
    sys.exit(main())
