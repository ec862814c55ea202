"""state/files.py, state/folder.py, state/content.py: the state folder, completion records and content states (README "What complete
means" and "the state folder is damaged")."""
from __future__ import annotations

import hashlib
import subprocess
import sys
import os
from pathlib import Path

import pytest

from helios_doit.state.content import (
    content_changed, content_state, fingerprint, inputs_digest, inputs_states, save_inputs_cache,
)
from helios_doit.state.files import MAX_STATE_BYTES, read_json, remove, stamp, write_json_atomic
from helios_doit.state.folder import StateDir, record_file
from helios_doit.state.locks import try_lock
from helios_doit.state.names import TaskName


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def set_mtime(path: Path, ns: int) -> None:
    os.utime(path, ns=(ns, ns))


# -- the state folder's layout -------------------------------------------------------------

def test_state_folder_layout(tmp_path: Path) -> None:
    sd = StateDir(tmp_path / "s")
    assert sd.record("chunk-3") == tmp_path / "s" / "records" / "chunk-3.json"
    assert sd.log("chunk-3") == tmp_path / "s" / "logs" / "chunk-3.log"
    assert sd.failure("merge") == tmp_path / "s" / "failures" / "merge.json"
    assert sd.lock("chunk-0") == tmp_path / "s" / "locks" / "chunk-0.lock"
    assert sd.cancel_flag("run1") == tmp_path / "s" / "runs" / "run1.cancel"
    assert sd.marker("chunk-1") == tmp_path / "s" / "running" / "chunk-1.json"
    assert sd.aside == tmp_path / "s" / "aside"
    assert record_file(str(tmp_path), "merge") == os.path.join(str(tmp_path), "records", "merge.json")
    assert sd.record(TaskName.chunk(7).key) == tmp_path / "s" / "records" / "chunk-7.json"


def test_markers_are_the_running_markers_by_task_key(tmp_path: Path) -> None:
    sd = StateDir(tmp_path / "s")
    assert sd.markers() == []  # no state folder yet
    sd.create()
    assert sd.markers() == []
    sd.marker("chunk-3").write_text("{}")
    sd.marker("merge").write_text("{}")
    (sd.root / "running" / "notes.txt").write_text("not a marker")
    assert sorted(sd.markers()) == [("chunk-3", sd.marker("chunk-3")), ("merge", sd.marker("merge"))]
    other = StateDir(tmp_path / "t")
    other.root.mkdir()
    (other.root / "running").write_text("a file where the folder belongs")
    assert other.markers() == []


def test_create_makes_every_folder_and_reports_nothing_on_a_healthy_state(tmp_path: Path) -> None:
    sd = StateDir(tmp_path / "job" / ".helios-doit" / "job")
    assert sd.create() == []
    for sub in ("records", "logs", "running", "failures", "locks", "runs"):
        assert (sd.root / sub).is_dir(), sub
    assert sd.create() == []  # again: nothing to repair
    assert not sd.aside.exists()


def test_a_file_where_a_state_folder_belongs_is_moved_aside_not_deleted(tmp_path: Path) -> None:
    sd = StateDir(tmp_path / "s")
    sd.root.mkdir()
    (sd.root / "records").write_text("someone's notes")
    notes = sd.create()
    assert len(notes) == 1
    moved = list(sd.aside.iterdir())
    assert len(moved) == 1 and moved[0].name.endswith("-records")
    assert moved[0].read_text() == "someone's notes"
    assert notes[0] == f"{sd.root / 'records'} was not a folder; moved it to {moved[0]}"
    assert (sd.root / "records").is_dir()


def test_a_dangling_symlink_where_a_state_folder_belongs_is_moved_aside(tmp_path: Path) -> None:
    sd = StateDir(tmp_path / "s")
    sd.root.mkdir()
    (sd.root / "logs").symlink_to(tmp_path / "gone")
    notes = sd.create()
    assert len(notes) == 1 and "logs was not a folder" in notes[0]
    assert (sd.root / "logs").is_dir() and not (sd.root / "logs").is_symlink()
    assert [p.is_symlink() for p in sd.aside.iterdir()] == [True]


def test_set_aside_moves_a_folder_with_its_content(tmp_path: Path) -> None:
    sd = StateDir(tmp_path / "s")
    sd.root.mkdir()
    damaged = sd.root / "chunk-1.json"
    damaged.mkdir()
    (damaged / "keep").write_text("x")
    moved = sd.set_aside(damaged)
    assert moved.parent == sd.aside and moved.name.endswith("-chunk-1.json")
    assert (moved / "keep").read_text() == "x"
    assert not damaged.exists()
    again = sd.root / "chunk-1.json"
    again.write_text("y")
    assert sd.set_aside(again).read_text() == "y"  # aside/ already there: fine


# -- locks ---------------------------------------------------------------------------------

def test_a_hard_link_to_a_held_lock_keeps_the_second_runner_out(tmp_path: Path) -> None:
    """A snapshot of the state folder (`cp -al`, rsync --link-dest) links the lock files: a held
    lock is still held, never moved aside from under its holder."""
    lock = StateDir(tmp_path / "s").lock("chunk-0")
    lock.parent.mkdir(parents=True)
    with try_lock(lock) as first:
        os.link(lock, tmp_path / "snapshot.lock")
        with try_lock(lock) as second:
            assert (first, second) == (True, False)
    assert not lock.exists() and (tmp_path / "snapshot.lock").exists()  # our name let go, the other kept


# -- records -------------------------------------------------------------------------------

def test_a_record_is_written_compact_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    write_json_atomic(path, {"task": "chunk-1", "output": [3, 4]})
    assert path.read_bytes() == b'{"task":"chunk-1","output":[3,4]}'
    assert read_json(path) == {"task": "chunk-1", "output": [3, 4]}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temp file left
    write_json_atomic(str(path), {"task": "chunk-2"})
    assert read_json(str(path)) == {"task": "chunk-2"}


@pytest.mark.parametrize("content", [b"", b"{", b"garbage", b"[1, 2]", b'"text"', b"\xff\xfe", b"null"])
def test_garbage_or_truncated_records_read_as_no_record(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "r.json"
    path.write_bytes(content)
    assert read_json(path) is None


def test_missing_record_reads_as_none(tmp_path: Path) -> None:
    assert read_json(tmp_path / "nope.json") is None
    assert read_json(tmp_path / "nofolder" / "nope.json") is None


def test_deeply_nested_record_reads_as_none_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    path.write_text("[" * 200_000 + "]" * 200_000)
    assert read_json(path) is None


def test_a_symlink_to_a_good_record_is_not_believed(tmp_path: Path) -> None:
    real = tmp_path / "real.json"
    write_json_atomic(real, {"a": 1})
    link = tmp_path / "link.json"
    link.symlink_to(real)
    assert read_json(real) == {"a": 1}
    assert read_json(link) is None


def test_a_fifo_or_folder_in_a_records_place_is_not_waited_on(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    assert read_json(fifo) is None  # O_NONBLOCK: returns at once
    (tmp_path / "dir.json").mkdir()
    assert read_json(tmp_path / "dir.json") is None


def test_a_big_record_is_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    data = {"inputs": {f"file{i}": [i, i, "x" * 40] for i in range(4000)}}  # ~250 KB: many read blocks
    write_json_atomic(path, data)
    assert path.stat().st_size > 200_000
    assert read_json(path) == data


def test_the_size_limit_is_16_mib(tmp_path: Path) -> None:
    at_limit = tmp_path / "at.json"
    at_limit.write_bytes(b"{}" + b" " * (16 * 1024 * 1024 - 2))
    assert at_limit.stat().st_size == MAX_STATE_BYTES
    assert read_json(at_limit) == {}
    over = tmp_path / "over.json"
    over.write_bytes(b"{}" + b" " * (16 * 1024 * 1024 - 1))
    assert read_json(over) is None


def test_remove_is_quiet_when_the_file_is_already_gone(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    path.write_text("{}")
    remove(path)
    assert not path.exists()
    remove(path)  # no error


# -- stamps: what a record pins an output to ----------------------------------------------

def test_stamp_is_size_and_mtime_of_a_regular_file(tmp_path: Path) -> None:
    path = tmp_path / "out.mov"
    path.write_bytes(b"12345")
    set_mtime(path, 1_700_000_000_123_456_789)
    assert stamp(path) == [5, 1_700_000_000_123_456_789]
    assert stamp(str(path)) == [5, 1_700_000_000_123_456_789]


def test_stamp_of_a_symlink_folder_or_missing_file_is_none(tmp_path: Path) -> None:
    target = tmp_path / "t"
    target.write_bytes(b"x")
    (tmp_path / "link").symlink_to(target)
    (tmp_path / "dir").mkdir()
    assert stamp(tmp_path / "link") is None
    assert stamp(tmp_path / "dir") is None
    assert stamp(tmp_path / "missing") is None
    assert stamp(tmp_path / "t" / "under-a-file") is None


# -- fingerprints ---------------------------------------------------------------------------

def test_fingerprint_is_stable_across_versions() -> None:
    # Records written by earlier runs hold this digest: changing how it is computed reruns every job.
    assert fingerprint("helios render -o a.mov", 0, 24, "a.mov") == \
        hashlib.sha256(b'["helios render -o a.mov",0,24,"a.mov"]').hexdigest()
    assert fingerprint({"b": 1, "a": 2}) == hashlib.sha256(b'[{"a":2,"b":1}]').hexdigest()


def test_fingerprint_changes_with_any_part_and_not_with_key_order() -> None:
    base = fingerprint("cmd", 0, 8, "out.mov")
    assert fingerprint("cmd", 0, 8, "out.mov") == base
    assert fingerprint("cmd", 0, 9, "out.mov") != base
    assert fingerprint("cmd2", 0, 8, "out.mov") != base
    assert fingerprint("cmd", 8, 0, "out.mov") != base
    assert fingerprint({"x": 1, "y": 2}) == fingerprint({"y": 2, "x": 1})
    assert fingerprint(Path("/a/b")) == fingerprint("/a/b")  # anything else as its str


# -- content states (doit's MD5 rule) -------------------------------------------------------

def test_content_state_is_mtime_size_md5(tmp_path: Path) -> None:
    path = tmp_path / "in.txt"
    path.write_bytes(b"hello")
    set_mtime(path, 1_000_000_000)
    assert content_state(path) == [1_000_000_000, 5, md5(b"hello")]


def test_content_state_reuses_the_previous_state_when_stat_is_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "in.txt"
    path.write_bytes(b"hello")
    set_mtime(path, 1_000_000_000)
    cached = [1_000_000_000, 5, "md5-from-the-cache"]
    assert content_state(path, cached) is cached
    # same mtime, other size: hashed again
    assert content_state(path, [1_000_000_000, 6, "stale"]) == [1_000_000_000, 5, md5(b"hello")]
    # same size, other mtime: hashed again
    assert content_state(path, [999, 5, "stale"]) == [1_000_000_000, 5, md5(b"hello")]
    assert content_state(path, []) == [1_000_000_000, 5, md5(b"hello")]


def test_content_changed_follows_doits_rule(tmp_path: Path) -> None:
    path = tmp_path / "in.txt"
    path.write_bytes(b"hello")
    set_mtime(path, 1_000_000_000)
    state = content_state(path)
    assert content_changed(path, state) is False
    assert content_changed(path, None) is True
    assert content_changed(path, []) is True
    # same mtime means unchanged, whatever the content (doit's rule)
    path.write_bytes(b"HELLO")
    set_mtime(path, 1_000_000_000)
    assert content_changed(path, state) is False
    # touched, same bytes: unchanged (md5 compared)
    path.write_bytes(b"hello")
    set_mtime(path, 2_000_000_000)
    assert content_changed(path, state) is False
    # touched, same size, other bytes: changed
    path.write_bytes(b"jello")
    set_mtime(path, 2_000_000_000)
    assert content_changed(path, state) is True
    # other size: changed without hashing
    assert content_changed(path, [1, 99, md5(b"jello")]) is True
    path.unlink()
    assert content_changed(path, state) is True


def test_inputs_states_use_the_cache_and_relative_keys(tmp_path: Path) -> None:
    job = tmp_path / "job"
    (job / "assets").mkdir(parents=True)
    a, b = job / "assets" / "a.png", job / "b.txt"
    a.write_bytes(b"aaaa")
    b.write_bytes(b"bb")
    set_mtime(a, 1_000)
    set_mtime(b, 2_000)
    sd = StateDir(job / ".helios-doit" / "job")
    sd.root.mkdir(parents=True)
    assert inputs_states(sd, (), job) == {}
    states = inputs_states(sd, (a, b), job)
    assert states == {"assets/a.png": [1_000, 4, md5(b"aaaa")], "b.txt": [2_000, 2, md5(b"bb")]}
    # a cache entry whose stat still matches is believed (the file is not hashed again)
    write_json_atomic(sd.root / "inputs.json", {"assets/a.png": [1_000, 4, "cached"], "b.txt": [1, 2, "stale"]})
    assert inputs_states(sd, (a, b), job) == {"assets/a.png": [1_000, 4, "cached"], "b.txt": [2_000, 2, md5(b"bb")]}


def test_inputs_digest_depends_on_names_and_content_only() -> None:
    assert inputs_digest({}) == ""
    one = inputs_digest({"a": [1, 4, "m1"], "b": [2, 2, "m2"]})
    assert one == inputs_digest({"b": [9, 9, "m2"], "a": [8, 8, "m1"]})  # mtime, size, order: irrelevant
    assert one != inputs_digest({"a": [1, 4, "m1"], "b": [2, 2, "m3"]})
    assert one != inputs_digest({"a": [1, 4, "m1"], "c": [2, 2, "m2"]})
    assert one == fingerprint([("a", "m1"), ("b", "m2")])


def test_inputs_cache_is_written_only_when_it_changed(tmp_path: Path) -> None:
    sd = StateDir(tmp_path / "s")
    sd.root.mkdir()
    cache = sd.root / "inputs.json"
    save_inputs_cache(sd, {})
    assert not cache.exists()
    states = {"a": [1, 2, "m"]}
    save_inputs_cache(sd, states)
    assert read_json(cache) == states
    set_mtime(cache, 5)
    save_inputs_cache(sd, {"a": [1, 2, "m"]})
    assert cache.stat().st_mtime_ns == 5  # unchanged: not rewritten
    save_inputs_cache(sd, {"a": [1, 2, "n"]})
    assert read_json(cache) == {"a": [1, 2, "n"]}


def test_inputs_cache_failing_to_write_does_not_fail_the_run(tmp_path: Path) -> None:
    sd = StateDir(tmp_path / "missing-state-folder")
    save_inputs_cache(sd, {"a": [1, 2, "m"]})  # OSError swallowed
    assert not sd.root.exists()


# -- event logs ----------------------------------------------------------------------------

def test_an_old_runs_log_is_pruned_unless_a_live_process_still_writes_it(tmp_path: Path) -> None:
    from helios_doit.state import events

    live, gone = "20200101-000000-aaaaaa", "20200101-000001-bbbbbb"
    writer = subprocess.Popen(
        [sys.executable, "-c", f"from helios_doit.state import events; events.emit({str(tmp_path)!r}, 'task-wait'); "
         "print('written', flush=True); input()"],
        env={**os.environ, events.RUN_ID_ENV: live}, text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert writer.stdout is not None and writer.stdout.readline() == "written\n"  # a run quiet for hours, say
        events.log_path(tmp_path, gone).write_text("{}\n")
        assert events.prune(tmp_path, keep=0, recent=0) == 1
        assert events.log_path(tmp_path, live).exists() and not events.log_path(tmp_path, gone).exists()
    finally:
        writer.communicate("\n", timeout=30)
    assert events.prune(tmp_path, keep=0, recent=0) == 1  # its process has ended: pruned like any old run
