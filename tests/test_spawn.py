"""Commands of plain words skip the shell; everything else still means what sh says it means."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from helios_doit.executors.spawn import SHELL, argv_for

SHOW_ARGV = f"{sys.executable} -c 'import json,sys; print(json.dumps(sys.argv[1:]))'"

NEEDS_THE_SHELL = [
    "printf 'frame_%04d.png'",
    'render "a b"',
    "render $OUT",
    "render ${OUT}",
    "render `date`",
    "render $(date)",
    "render *.mov",
    "render part_?.mov",
    "render [ab].mov",
    "render ~/out.mov",
    "render a\\ b",
    "render > log",
    "render < in",
    "render 2>&1",
    "render | tee log",
    "render; merge",
    "render && merge",
    "render || true",
    "render &",
    "(render)",
    "{ render; }",
    "render # comment",
    "render\nmerge",
    "FPS=30 render",
    "cd out",
    "chdir out",
    "pushd out",
    "exec render",
    "export A",
    "echo frame",
    "test -f part_0.mov",
    "if",
    "! render",
    "",
    "   ",
]


@pytest.mark.parametrize("command", NEEDS_THE_SHELL)
def test_shell_syntax_and_builtins_go_to_the_shell(command):
    assert argv_for(command) == [SHELL, "-c", command]


def test_exported_bash_functions_send_every_command_to_the_shell():
    assert argv_for("render -o out.mov", {"PATH": "/bin"}) == ["render", "-o", "out.mov"]
    assert argv_for("render -o out.mov", {"BASH_FUNC_render%%": "() { echo; }"})[0] == SHELL


@pytest.mark.parametrize("words", [
    "-o part_0.mov --start-frame 0 --frame-count 38",
    "out=part_0.mov scale=0.5 --crf=18",
    "100% 50%% %d %s",
    "a\tb   c",
    "comp.html:main @2x +x ,y",
])
def test_plain_words_reach_the_program_exactly_as_sh_would_pass_them(tmp_path, words):
    script = tmp_path / "show_argv.py"
    script.write_text("import json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    command = f"{sys.executable} {script} {words}"
    direct = argv_for(command)
    assert direct[0] == sys.executable  # no shell in between
    via_sh = subprocess.run([SHELL, "-c", command], capture_output=True, text=True, check=True).stdout
    exec_d = subprocess.run(direct, capture_output=True, text=True, check=True).stdout
    assert json.loads(exec_d) == json.loads(via_sh)


def test_a_missing_program_fails_the_chunk_with_127_like_sh(make_job):
    job = make_job(chunks=2)
    job.data["chunks"][1]["command"] = "no-such-renderer-3f9 -o part_1.txt"
    job.save()
    result = job.doit("-n", "2", "--continue")
    assert result.returncode == 2  # doit: the merge's dependency failed
    assert "chunk 1 failed: exit code 127" in result.stdout
    assert "no-such-renderer-3f9: not found" in result.stdout
    assert "no-such-renderer-3f9: not found" in (job.state / "logs" / "chunk-1.log").read_text()
    assert job.output(0).exists() and not job.output(1).exists()


def test_a_file_that_is_not_executable_fails_the_chunk_with_126_like_sh(make_job):
    job = make_job(chunks=1)
    (job.folder / "render.sh").write_text("#!/bin/sh\ntouch part_0.txt\n")  # no x bit
    job.data["chunks"][0]["command"] = "./render.sh"
    job.save()
    result = job.doit()
    assert result.returncode == 1
    assert "chunk 0 failed: exit code 126" in result.stdout
    (job.folder / "render.sh").chmod(0o755)
    assert job.doit().returncode == 0
    assert job.output(0).exists()


def test_a_script_without_a_shebang_is_run_by_the_shell_as_sh_would(make_job):
    job = make_job(chunks=1)
    script = job.folder / "render-part"
    script.write_text("touch part_0.txt\n")  # no #! line: exec fails with ENOEXEC, sh runs it
    script.chmod(0o755)
    job.data["chunks"][0]["command"] = "./render-part"
    job.save()
    result = job.doit()
    assert result.returncode == 0, result.stdout + result.stderr
    assert job.output(0).exists()


def test_plain_commands_find_programs_on_the_path_and_run_in_the_job_folder(make_job, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "fake-renderer"
    tool.write_text(f"#!{sys.executable}\nimport os, sys\nopen(sys.argv[1], 'w').write(os.getcwd())\n")
    tool.chmod(0o755)
    job = make_job(chunks=1)
    job.data["chunks"][0]["command"] = "fake-renderer part_0.txt"
    job.save()
    job.env["PATH"] = f"{bin_dir}:{subprocess.os.environ['PATH']}"
    result = job.doit()
    assert result.returncode == 0, result.stdout + result.stderr
    assert job.output(0).read_text() == str(job.folder)
