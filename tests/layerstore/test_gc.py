"""Garbage collection, fsck, snapshots."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from kbuild.errors import DigestMismatch
from kbuild.layerstore import Store, TarEntry, pack_layer


def image(store: Store, content: bytes) -> tuple[str, list[str]]:
    layer = pack_layer(store, [TarEntry("f", "file", data=content)])
    desc = store.write_image({"os": "linux", "architecture": "amd64"}, [layer])
    manifest = store.read_manifest(desc)
    return desc.digest, [desc.digest, manifest["config"]["digest"], layer.digest]


def age(path: Path, seconds: float) -> None:
    t = time.time() - seconds
    os.utime(path, (t, t))


def test_gc_keeps_referenced_removes_the_rest(store: Store) -> None:
    tagged, tagged_blobs = image(store, b"tagged")
    _, dropped_blobs = image(store, b"dropped")
    recorded = store.put_bytes(b"cache layer")
    store.tag("app:v1", store.resolve(tagged))
    store.put_record("build", "step-1", {"blobs": [recorded]})
    pulled = store.put_bytes(b"kept by a registry record")
    store.put_record("registry-index", "app", {"blobs": [pulled]})
    for p in store.blob_dir.iterdir():
        age(p, 120)
    report = store.gc()
    assert sorted(report.blobs_removed) == sorted(dropped_blobs)
    assert report.bytes_freed > 0
    for d in [*tagged_blobs, recorded, pulled]:
        assert store.has_blob(d)
    # prune --all drops the records first, then what only they kept alive
    report = store.gc(records=True)
    assert report.records_removed == 1
    assert report.blobs_removed == [recorded]
    assert all(store.has_blob(d) for d in [*tagged_blobs, pulled])
    assert store.get_record("registry-index", "app") is not None
    # once the name goes, so do the blobs
    store.untag("app:v1")
    assert sorted(store.gc().blobs_removed) == sorted(tagged_blobs)
    assert [p.name for p in store.blob_dir.iterdir()] == [pulled[7:]]


def test_gc_grace_periods(store: Store) -> None:
    fresh = store.put_bytes(b"just written by a running build")
    old_tmp = store.tmp_dir / "blob-old"
    old_tmp.write_bytes(b"left by a crash")
    age(old_tmp, 7200)
    new_tmp = store.tmp_dir / "blob-new"
    new_tmp.write_bytes(b"being downloaded")
    report = store.gc()
    assert store.has_blob(fresh) and report.blobs_removed == []
    assert not old_tmp.exists() and new_tmp.exists()
    assert report.temp_removed == 1
    assert store.gc(blob_grace=0).blobs_removed == [fresh]


def test_fsck_finds_corruption_and_missing_blobs(store: Store) -> None:
    digest, blobs = image(store, b"content")
    store.tag("app", store.resolve(digest))
    store.put_record("build", "k", {"blobs": ["sha256:" + "0" * 64]})
    problems = store.fsck()
    assert problems == ["build record 'k': blob sha256:" + "0" * 64 + " is missing"]
    store.delete_records("build")
    assert store.fsck() == []
    layer = store.blob_path(blobs[2])
    os.chmod(layer, 0o644)
    layer.write_bytes(b"bit rot")
    problems = store.fsck()
    assert len(problems) == 1 and f"blob {blobs[2]} is corrupt" in problems[0]
    layer.unlink()
    assert store.fsck() == [f"image app:latest: blob {blobs[2]} is missing"]


def test_snapshot_unpacks_once_atomically(store: Store) -> None:
    layer = pack_layer(store, [TarEntry("d", "dir", 0o755), TarEntry("d/f", "file", data=b"x"),
                               TarEntry("d/gone", "whiteout")])
    path = store.snapshot(layer.diff_id, layer.digest)
    assert path == store.snapshots_dir / layer.diff_id[7:]
    assert (path / "d" / "f").read_bytes() == b"x"
    st = os.lstat(path / "d" / "gone")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0  # overlay whiteout
    marker = path / "d" / "f"
    mtime = marker.stat().st_mtime_ns
    assert store.snapshot(layer.diff_id, layer.digest) == path  # not unpacked again
    assert marker.stat().st_mtime_ns == mtime
    assert [p.name for p in store.snapshots_dir.iterdir() if p.name.startswith(".tmp")] == []
    # a wrong diffID is refused and leaves nothing behind
    other = pack_layer(store, [TarEntry("g", "file", data=b"y")])
    with pytest.raises(DigestMismatch):
        store.snapshot("sha256:" + "0" * 64, other.digest)
    assert sorted(p.name for p in store.snapshots_dir.iterdir()) == sorted(
        [layer.diff_id[7:], layer.diff_id[7:] + ".blob"])
    # GC drops the snapshot together with its blob
    age(store.snapshots_dir / (layer.diff_id[7:] + ".blob"), 120)
    for p in store.blob_dir.iterdir():
        age(p, 120)
    report = store.gc()
    assert report.snapshots_removed == 1 and not path.exists()
