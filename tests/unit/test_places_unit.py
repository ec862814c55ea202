"""state/places.py: the only code that deletes or moves outputs (README "What helios-doit deletes").

A run deletes only the file its own record vouches for (regular file, same size and mtime) or
the partial output of its own failed attempt; anything else is moved into aside/ with a line.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest

from helios_doit.state.places import Place, PlaceError, aside_name, clear, discard, folder_of, set_aside, stamp_of


@pytest.fixture
def job(tmp_path: Path) -> Path:
    folder = tmp_path / "job"
    folder.mkdir()
    return folder


def place(job: Path, rel: str = "part_0.mov", roots: tuple[str, ...] | None = None) -> Place:
    return Place(str(job / rel), roots or (str(job),), str(job / ".helios-doit" / "job" / "aside"))


def vouch(path: Path) -> list[int]:
    st = os.lstat(path)
    return [st.st_size, st.st_mtime_ns]


def aside_files(p: Place) -> list[Path]:
    return sorted(Path(p.aside).iterdir()) if os.path.isdir(p.aside) else []


# -- clear: before an attempt ----------------------------------------------------------------

def test_clear_an_empty_place_does_nothing(job: Path) -> None:
    p = place(job)
    assert clear(p, None, "chunk 0") is None
    assert clear(p, [1, 2], "chunk 0") is None
    assert not os.path.exists(p.aside)


def test_clear_deletes_the_file_our_record_vouches_for(job: Path) -> None:
    out = job / "part_0.mov"
    out.write_bytes(b"rendered by us")
    p = place(job)
    assert clear(p, vouch(out), "chunk 0") is None
    assert not out.exists()
    assert aside_files(p) == []


def test_clear_moves_aside_a_file_no_record_vouches_for(job: Path) -> None:
    out = job / "part_0.mov"
    out.write_bytes(b"someone's file")
    p = place(job)
    line = clear(p, None, "chunk 0")
    assert not out.exists()
    [moved] = aside_files(p)
    assert moved.read_bytes() == b"someone's file"
    assert re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{6}-chunk-0-part_0\.mov", moved.name)
    assert line == (f"chunk 0: moved the file in its output's place {out} to {moved} "
                    "(no record of ours vouches for it)")


def test_clear_moves_aside_an_output_changed_since_its_record(job: Path) -> None:
    out = job / "part_0.mov"
    out.write_bytes(b"v1")
    recorded = vouch(out)
    out.write_bytes(b"v2 edited by hand")  # other size
    p = place(job)
    line = clear(p, recorded, "chunk 0", why="it changed since its record")
    assert line is not None and line.endswith("(it changed since its record)")
    [moved] = aside_files(p)
    assert moved.read_bytes() == b"v2 edited by hand"
    # same size, other mtime: not the file we recorded either
    out.write_bytes(b"ab")
    recorded = vouch(out)
    os.utime(out, ns=(recorded[1] + 1, recorded[1] + 1))
    assert clear(p, recorded, "chunk 0") is not None
    assert not out.exists() and len(aside_files(p)) == 2


def test_clear_moves_a_symlink_aside_and_never_touches_its_target(job: Path, tmp_path: Path) -> None:
    target = tmp_path / "precious.mov"
    target.write_bytes(b"precious")
    out = job / "part_0.mov"
    out.symlink_to(target)
    p = place(job)
    line = clear(p, vouch(target), "chunk 0")  # even a stamp that matches the target: a symlink is never ours
    assert line is not None and "moved the symlink in its output's place" in line
    assert target.read_bytes() == b"precious"
    [moved] = aside_files(p)
    assert moved.is_symlink() and os.readlink(moved) == str(target)
    assert not os.path.lexists(out)


def test_clear_moves_a_folder_aside(job: Path) -> None:
    out = job / "part_0.mov"
    out.mkdir()
    (out / "inner").write_text("x")
    p = place(job)
    line = clear(p, None, "merge")
    assert line is not None and "moved the folder in its output's place" in line
    [moved] = aside_files(p)
    assert (moved / "inner").read_text() == "x"
    assert moved.name.endswith("-merge-part_0.mov")


def test_clear_makes_the_outputs_folder_only_when_asked(job: Path) -> None:
    p = place(job, "renders/a/part_0.mov")
    assert clear(p, None, "chunk 0") is None
    assert not (job / "renders").exists()
    assert clear(p, None, "chunk 0", create=True) is None
    assert (job / "renders" / "a").is_dir()
    mode = (job / "renders" / "a").stat().st_mode & 0o7777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o777 & ~umask
    assert clear(p, None, "chunk 0", create=True) is None  # already there: fine


def test_an_output_folder_that_became_a_symlink_is_refused(job: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "part_0.mov").write_bytes(b"not ours")
    (job / "sub").symlink_to(elsewhere)
    p = place(job, "sub/part_0.mov")
    with pytest.raises(PlaceError) as caught:
        clear(p, None, "chunk 0", create=True)
    assert str(caught.value) == (f"{job / 'sub'} is now a symlink (to {elsewhere}); "
                                 "outputs are never written or removed through one")
    assert (elsewhere / "part_0.mov").read_bytes() == b"not ours"
    with pytest.raises(PlaceError):
        discard(p, "chunk 0")
    with pytest.raises(PlaceError):
        set_aside(p, "chunk 0", "evidence")
    assert (elsewhere / "part_0.mov").exists()


def test_a_file_where_the_outputs_folder_belongs_is_refused(job: Path) -> None:
    (job / "sub").write_text("a file")
    p = place(job, "sub/deeper/part_0.mov")
    with pytest.raises(PlaceError) as caught:
        clear(p, None, "chunk 0", create=True)
    assert str(caught.value) == f"{job / 'sub'} is not a folder"


def test_an_output_outside_every_root_is_refused(job: Path, tmp_path: Path) -> None:
    p = Place(str(tmp_path / "other" / "x.mov"), (str(job),), str(job / "aside"))
    with pytest.raises(PlaceError) as caught:
        clear(p, None, "chunk 0")
    assert str(caught.value) == f"{tmp_path / 'other'} is outside every folder outputs may be in ({job})"
    # a sibling whose name starts like the root is outside too
    sibling = Path(str(job) + "2")
    sibling.mkdir()
    (sibling / "x.mov").write_text("keep")
    with pytest.raises(PlaceError):
        clear(Place(str(sibling / "x.mov"), (str(job),), str(job / "aside")), None, "chunk 0")
    assert (sibling / "x.mov").read_text() == "keep"


def test_an_output_root_of_its_own_is_used(job: Path, tmp_path: Path) -> None:
    root = tmp_path / "renders"
    (root / "deep").mkdir(parents=True)
    out = root / "deep" / "part_0.mov"
    out.write_bytes(b"x")
    p = Place(str(out), (str(job), str(root) + os.sep), str(job / "aside"))
    assert clear(p, vouch(out), "chunk 0") is None
    assert not out.exists()


def test_the_most_specific_root_is_walked_from(job: Path, tmp_path: Path) -> None:
    # An output root that is itself reached through a symlink inside the job's folder is trusted
    # as a root (the user allowed it); only folders below a root are walked without following.
    real = tmp_path / "disk2"
    real.mkdir()
    (job / "out").symlink_to(real)
    out = real / "a.mov"
    out.write_bytes(b"x")
    p = Place(str(job / "out" / "a.mov"), (str(job), str(job / "out")), str(job / "aside"))
    assert clear(p, vouch(out), "chunk 0") is None
    assert not out.exists()


def test_folder_of_yields_none_for_a_missing_folder(job: Path) -> None:
    with folder_of(place(job, "a/b/c.mov")) as fd:
        assert fd is None
    with folder_of(place(job, "c.mov")) as fd:
        assert fd is not None and os.path.samestat(os.fstat(fd), os.stat(job))
    (job / "a" / "b").mkdir(parents=True)
    with folder_of(place(job, "a/b/c.mov")) as fd:
        assert fd is not None and os.path.samestat(os.fstat(fd), os.stat(job / "a" / "b"))


# -- discard: after a failed attempt of ours ------------------------------------------------

def test_discard_removes_the_partial_output(job: Path) -> None:
    out = job / "part_0.mov"
    out.write_bytes(b"half")
    p = place(job)
    assert discard(p, "chunk 0") is None
    assert not out.exists()
    assert aside_files(p) == []
    assert discard(p, "chunk 0") is None  # nothing there


def test_discard_unlinks_a_symlink_but_not_its_target(job: Path, tmp_path: Path) -> None:
    target = tmp_path / "t.mov"
    target.write_bytes(b"keep")
    (job / "part_0.mov").symlink_to(target)
    assert discard(place(job), "chunk 0") is None
    assert not os.path.lexists(job / "part_0.mov")
    assert target.read_bytes() == b"keep"


def test_discard_moves_a_folder_aside(job: Path) -> None:
    (job / "part_0.mov").mkdir()
    (job / "part_0.mov" / "f").write_text("x")
    p = place(job)
    line = discard(p, "chunk 0")
    [moved] = aside_files(p)
    assert line == (f"chunk 0: moved the folder in its output's place {p.path} to {moved} "
                    "(the failed attempt left a folder there)")
    assert (moved / "f").read_text() == "x"


def test_discard_in_a_missing_folder_does_nothing(job: Path) -> None:
    assert discard(place(job, "nope/part_0.mov"), "chunk 0") is None
    assert not (job / "nope").exists()


# -- set_aside: evidence ------------------------------------------------------------------------

def test_set_aside_moves_whatever_is_there(job: Path) -> None:
    p = place(job)
    assert set_aside(p, "merge", "evidence") is None
    (job / "part_0.mov").write_bytes(b"evidence")
    line = set_aside(p, "merge", "the merge was wrong")
    [moved] = aside_files(p)
    assert line == f"merge: moved the file in its output's place {p.path} to {moved} (the merge was wrong)"
    assert moved.read_bytes() == b"evidence"


def test_aside_on_another_filesystem_goes_beside_the_output(job: Path) -> None:
    if os.stat(job).st_dev == os.stat("/dev/shm").st_dev:
        pytest.skip("/dev/shm is on the same filesystem here")
    state = Path(tempfile.mkdtemp(dir="/dev/shm"))
    try:
        out = job / "part_0.mov"
        out.write_bytes(b"stranger")
        p = Place(str(out), (str(job),), str(state / "aside"))
        line = clear(p, None, "chunk 0")
        [beside] = [f for f in job.iterdir() if f.name != "part_0.mov"]
        assert beside.read_bytes() == b"stranger"
        assert re.fullmatch(r"\.part_0\.mov\.aside-\d{8}-\d{6}-[0-9a-f]{6}", beside.name), beside.name
        assert line == (f"chunk 0: moved the file in its output's place {out} to {beside} "
                        "(no record of ours vouches for it)")
        assert list((state / "aside").iterdir()) == []
    finally:
        shutil.rmtree(state)


# -- names and stamps -----------------------------------------------------------------------

def test_aside_name_says_when_and_for_which_task() -> None:
    assert re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{6}-chunk-12-out\.mov", aside_name("out.mov", "chunk 12"))
    assert re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{6}-records", aside_name("records"))
    assert aside_name("x") != aside_name("x")  # random part: two moves in one second do not collide


def test_stamp_of_only_regular_files(job: Path) -> None:
    f = job / "f"
    f.write_bytes(b"abc")
    st = os.lstat(f)
    assert stamp_of(st) == [3, st.st_mtime_ns]
    assert stamp_of(os.lstat(job)) is None


def test_a_folder_that_cannot_be_opened_is_refused_with_the_reason(job: Path) -> None:
    p = place(job, "x" * 300 + "/part_0.mov")
    with pytest.raises(PlaceError) as caught:
        clear(p, None, "chunk 0", create=True)
    assert str(caught.value) == f"cannot open the folder {job / ('x' * 300)}: File name too long"


def test_outside_every_root_names_them_all(job: Path, tmp_path: Path) -> None:
    p = Place(str(tmp_path / "x.mov"), (str(job), str(job / "renders")), str(job / "aside"))
    with pytest.raises(PlaceError) as caught:
        clear(p, None, "chunk 0")
    assert str(caught.value) == f"{tmp_path} is outside every folder outputs may be in ({job}, {job / 'renders'})"
