"""helios-doit as a pip user has it: a wheel installed into a fresh virtualenv, a job folder
outside the repository, `helios-doit init`, then plain doit."""
from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from harness import REPO, new_job


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A venv with only the wheel of this tree; its dependencies are this environment's, as a
    plain path entry (so this tree's editable install is not what runs)."""
    root = tmp_path_factory.mktemp("install")
    tools = {k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_")}  # pip is not what is measured
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(root / "dist"), str(REPO)],
                           capture_output=True, text=True, timeout=300, env=tools)
    assert built.returncode == 0, built.stderr
    (wheel,) = (root / "dist").glob("helios_doit-*.whl")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = Path(subprocess.check_output([str(venv / "bin" / "python"), "-c",
                                         "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True).strip())
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    pip = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
                          "--no-deps", str(wheel)], capture_output=True, text=True, timeout=300, env=tools)
    assert pip.returncode == 0, pip.stderr
    doit = venv / "bin" / "doit"  # what pip installs with doit itself; here doit comes by the path entry
    doit.write_text(f'#!/bin/sh\nexec "{venv / "bin" / "python"}" -m doit "$@"\n')
    doit.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return {**env, "PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"}


def test_init_then_plain_doit_renders_a_job_outside_the_repository(installed, tmp_path):
    job = new_job(tmp_path / "shot", chunks=3, frames=2)
    folder = job.folder

    def sh(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(list(argv), cwd=folder, env=installed, capture_output=True, text=True, timeout=120)

    where = sh("python", "-c", "import helios_doit; print(helios_doit.__file__)")
    assert str(REPO) not in where.stdout and "site-packages" in where.stdout  # the wheel, not this tree
    first = sh("helios-doit", "init")
    assert first.returncode == 0 and (folder / "dodo.py").is_file(), first.stderr
    assert sh("helios-doit", "init").returncode == 0  # the same file: fine
    one = sh("doit", "chunk:0")
    assert one.returncode == 0, one.stdout + one.stderr
    assert job.runs() == ["chunk 0"]
    rest = sh("doit", "-n", "2")  # the folder's job.json
    assert rest.returncode == 0, rest.stdout + rest.stderr
    assert sorted(job.runs()) == ["chunk 1", "chunk 2", "merge"]
    assert job.merged.read_text() == job.expected_merge()
    listed = sh("doit", "list")
    assert listed.returncode == 0 and [line.split()[0] for line in listed.stdout.splitlines()] == ["chunk", "merge"]
    dumped = sh("doit", "dumpdb")  # doit's own traces back: helios-doit keeps no database to dump
    assert dumped.returncode == 2 and dumped.stderr == ("helios-doit: doit dumpdb: helios-doit keeps doit's database in "
                                                        "memory, there is none to dump; to see where tasks stand: "
                                                        "helios-doit status JOB\n"), dumped.stderr


def test_doit_dumpdb_of_a_doit_project_that_is_not_a_job_dumps_its_database_as_before(installed, tmp_path):
    (tmp_path / "dodo.py").write_text('def task_hello():\n    return {"actions": ["echo hello > hello.txt"], '
                                      '"targets": ["hello.txt"]}\n')

    def sh(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(list(argv), cwd=tmp_path, env=installed, capture_output=True, text=True, timeout=120)

    assert sh("doit").returncode == 0 and (tmp_path / "hello.txt").read_text() == "hello\n"
    dumped = sh("doit", "dumpdb")
    assert dumped.returncode == 0 and "b'hello' -> {" in dumped.stdout and "helios-doit" not in dumped.stdout + dumped.stderr


def test_init_never_overwrites_a_dodo_it_did_not_write(installed, tmp_path):
    (tmp_path / "dodo.py").write_text("# someone's own tasks\n")
    result = subprocess.run(["helios-doit", "init", str(tmp_path)], env=installed, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "exists and is not ours" in result.stderr
    assert (tmp_path / "dodo.py").read_text() == "# someone's own tasks\n"
