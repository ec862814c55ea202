"""The storage layer in process, against real fsspec stores (file:// and memory://): where a bucket
job's files are, when a record in a bucket vouches for an object, and what a lease allows."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from helios_doit.storage.lease import Lease
from helios_doit.storage.records import done_key, found, records_of, vouched
from helios_doit.storage.store import Exists, Identity, StorageError, Store
from helios_doit.storage.url import Remote, is_store_url, remote_for, storage_for


def test_a_job_url_names_its_bucket_its_folder_and_a_local_mirror(tmp_path):
    remote = remote_for("s3://renders/shows/shot1/job.json", tmp_path)
    assert (remote.root, remote.folder, remote.name) == ("s3://renders", "shows/shot1", "job.json")
    assert remote.job_dir == Path(remote.mirror, "shows", "shot1")
    assert remote.key_of(remote.job_dir / "part_0.mov") == "shows/shot1/part_0.mov"
    assert remote.key_of(remote.job_dir / ".." / "renders" / "out.mp4") == "shows/renders/out.mp4"  # Helios' ../renders
    assert remote.key_of(Path(remote.mirror).parent / "elsewhere") is None  # outside the bucket: no key
    assert remote.local_of("shows/shot1/part_0.mov") == str(remote.job_dir / "part_0.mov")
    assert remote.state_prefix("job.json") == "shows/shot1/.helios-doit/job.json"
    assert remote_for("s3://other/shot1/job.json", tmp_path).mirror != remote.mirror  # a mirror per bucket


def test_a_local_job_with_storage_maps_its_folder_onto_the_buckets_folder(tmp_path):
    remote = storage_for("s3://renders/out/shot1/", tmp_path, tmp_path / "job.json")
    assert remote.key_of(tmp_path / "part_0.mov") == "out/shot1/part_0.mov"
    assert remote.key_of(tmp_path.parent / "part_0.mov") is None
    assert remote.state_prefix("job.json") == "out/shot1/.helios-doit/job.json"
    assert remote.job_key == "out/shot1/job.json"  # the folder's one job, published there


@pytest.mark.parametrize("text,store", [("s3://b/j.json", True), ("gs://b/j.json", True), ("memory://x/j.json", True),
                                        ("https://h/j.json", False), ("job.json", False), ("s3:/b", False)])
def test_which_job_sources_are_stores(text, store):
    assert is_store_url(text) is store


def test_a_record_vouches_only_for_the_exact_object_it_names():
    state, fp = "shot1/.helios-doit/job.json", "f" * 64
    ident = Identity(120, '"abc"'.strip('"'))
    listing = {"shot1/part_0.mov": ident, done_key(state, "chunk-0", fp, ident): Identity(2, "r")}
    assert found(listing, state, "chunk-0", fp, "shot1/part_0.mov") == ident
    assert found(listing, state, "chunk-0", "e" * 64, "shot1/part_0.mov") is None  # another command
    assert found(listing, state, "chunk-1", fp, "shot1/part_0.mov") is None  # another task
    replaced = {**listing, "shot1/part_0.mov": Identity(120, "def")}  # same size, other bytes
    assert found(replaced, state, "chunk-0", fp, "shot1/part_0.mov") is None
    gone = {k: v for k, v in listing.items() if k != "shot1/part_0.mov"}
    assert found(gone, state, "chunk-0", fp, "shot1/part_0.mov") is None
    assert vouched(listing, state, "chunk-0", ident) and not vouched(replaced, state, "chunk-0", Identity(120, "def"))
    assert records_of(listing, state, "chunk-0") == [done_key(state, "chunk-0", fp, ident)]
    assert records_of(listing, state, "chunk-1") == []


def test_a_file_store_creates_once_uploads_once_and_lists_identities(tmp_path):
    store = Store(f"file://{tmp_path}/bucket")
    store.create("a/lease.json", b"1")
    with pytest.raises(Exists):
        store.create("a/lease.json", b"2")
    local = tmp_path / "part.bin"
    local.write_bytes(b"x" * 1000)
    ident = store.upload(str(local), "a/part.bin")
    assert ident.size == 1000
    with pytest.raises(Exists):  # one writer: an output is never written over
        store.upload(str(local), "a/part.bin")
    assert store.listing("a") == {"a/lease.json": store.info("a/lease.json"), "a/part.bin": ident}
    store.download("a/part.bin", str(tmp_path / "back" / "part.bin"))
    assert (tmp_path / "back" / "part.bin").read_bytes() == b"x" * 1000
    assert store.read("nothing") is None and store.info("nothing") is None


def test_a_state_object_bigger_than_its_cap_is_refused_not_read(tmp_path):
    store = Store(f"file://{tmp_path}/bucket")
    store.put("job.json", b"{" * 2048)
    with pytest.raises(StorageError, match="more than 1024 bytes"):
        store.read("job.json", cap=1024)


def test_a_lease_is_held_while_its_holder_renews_it_and_taken_over_a_ttl_after_it_stops(tmp_path):
    store = Store(f"file://{tmp_path}/bucket")
    first = Lease(store, "leases/chunk-0.json", {"tag": "a"}, ttl=0.5)
    assert first.holder() is None  # taken
    second = Lease(store, "leases/chunk-0.json", {"tag": "b"}, ttl=0.5)
    assert second.holder()["tag"] == "a"  # live: wait
    time.sleep(0.35)
    assert first.confirm()  # renewed: a new version
    time.sleep(0.35)
    assert second.holder()["tag"] == "a"  # 0.7 s since it first looked, but renewed meanwhile: still held
    time.sleep(0.6)
    assert second.holder() is None  # the same version for a whole ttl, by its own clock: taken over
    assert not first.confirm() and first.lost  # the first runner learns it at its next write
    first.release()  # the lease is no longer first's: its release leaves it alone
    assert store.info("leases/chunk-0.json") is not None
    second.release()
    assert store.info("leases/chunk-0.json") is None


def test_a_lease_of_a_holder_known_dead_or_damaged_is_taken_at_once_and_no_clock_in_it_counts(tmp_path):
    store = Store(f"file://{tmp_path}/bucket")
    first = Lease(store, "leases/chunk-0.json", {"tag": "a"}, ttl=60)
    assert first.holder() is None
    dead = Lease(store, "leases/chunk-0.json", {"tag": "c"}, ttl=60, dead=lambda holder: holder.get("tag") == "a")
    assert dead.holder() is None  # its holder died on this machine: taken over at once
    store.put("leases/chunk-1.json", b"{not json")
    assert Lease(store, "leases/chunk-1.json", ttl=60).holder() is None  # damage never blocks a task
    # A lease written by a clock an hour ahead (an old form, with its holder's "expires") is not
    # believed for an hour: only renewals count.
    store.put("leases/chunk-2.json", json.dumps({"host": "h", "ttl": 0.3, "expires": time.time() + 3600}).encode())
    waiter = Lease(store, "leases/chunk-2.json", ttl=60)
    assert waiter.holder() is not None
    time.sleep(0.4)
    assert waiter.holder() is None


def test_a_dask_worker_never_makes_or_runs_anything_through_a_symlink_out_of_its_mirror(tmp_path, monkeypatch):
    from helios_doit.storage.staging import Stage, on_worker
    from helios_doit.storage.url import SCRATCH_ENV, mirror_for

    bucket = tmp_path / "bucket"
    (bucket / "shot1").mkdir(parents=True)
    (bucket / "shot1" / "render.sh").write_text("echo")
    root = f"file://{bucket}"
    remote = Remote(root, "shot1", str(mirror_for(root, tmp_path / "runner")), "job.json", inputs=("shot1/render.sh",))
    stage = Stage(remote, "this machine", "shot1", "renders/part_0.mov", "shot1/.helios-doit/job.json/staging/chunk-0/")
    monkeypatch.setenv(SCRATCH_ENV, str(tmp_path / "worker"))
    mirror = mirror_for(remote.root)
    victim = tmp_path / "victim"
    victim.mkdir()
    mirror.mkdir(parents=True)
    (mirror / "renders").symlink_to(victim)
    with pytest.raises(StorageError, match="symlink"):
        on_worker(stage, "another machine")
    assert list(victim.iterdir()) == []
    (mirror / "renders").unlink()
    cwd, output, staged = on_worker(stage, "another machine")  # the same, without the trap
    assert staged and cwd == str(mirror / "shot1") and output == str(mirror / "renders" / "part_0.mov")
    assert (mirror / "shot1" / "render.sh").read_text() == "echo" and (mirror / "renders").is_dir()


def test_copying_an_object_aside_takes_its_key_literally_never_as_a_glob(tmp_path):
    store = Store(f"file://{tmp_path}/bucket")
    store.put("shot1/part[1].txt", b"the one")
    store.put("shot1/part1.txt", b"another")
    store.copy("shot1/part[1].txt", "aside/part[1].txt.1")
    assert store.read("aside/part[1].txt.1") == b"the one"
    assert sorted(store.listing("aside")) == ["aside/part[1].txt.1"]
