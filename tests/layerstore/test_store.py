"""The store: blobs, images in index.json, records."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from kbuild.errors import BlobNotFound, DigestMismatch, ImageNotFound, StoreError, UsageError
from kbuild.layerstore import (
    Descriptor,
    MediaType,
    Reference,
    Store,
    TarEntry,
    default_root,
    pack_layer,
)


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_layout_files(store: Store) -> None:
    assert json.loads((store.root / "oci" / "oci-layout").read_text()) == {
        "imageLayoutVersion": "1.0.0"}
    index = json.loads((store.root / "oci" / "index.json").read_text())
    assert index["schemaVersion"] == 2 and index["manifests"] == []


def test_default_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KBUILD_ROOT", str(tmp_path / "r"))
    assert default_root() == tmp_path / "r"
    monkeypatch.delenv("KBUILD_ROOT")
    if os.geteuid() == 0:
        assert default_root() == Path("/var/lib/kbuild")


def test_blob_writer_verifies_and_renames(store: Store) -> None:
    data = b"hello world"
    with store.blob_writer(sha(data)) as w:
        w.write(data[:5])
        assert w.offset == 5
        assert not store.has_blob(sha(data))  # nothing visible before commit
        w.write(data[5:])
    assert w.digest == sha(data)
    assert store.blob_path(sha(data)).read_bytes() == data
    assert store.blob_size(sha(data)) == len(data)
    with pytest.raises(DigestMismatch), store.blob_writer(sha(b"other")) as w:
        w.write(data)
    assert not store.has_blob(sha(b"other"))
    assert list(store.tmp_dir.iterdir()) == []


def test_blob_writer_exception_leaves_nothing(store: Store) -> None:
    with pytest.raises(RuntimeError), store.blob_writer() as w:
        w.write(b"partial")
        raise RuntimeError("boom")
    assert list(store.tmp_dir.iterdir()) == []
    assert list(store.blob_dir.iterdir()) == []


def test_blob_writer_resume(store: Store) -> None:
    data = os.urandom(100000)
    digest = sha(data)
    with pytest.raises(ConnectionError), store.blob_writer(digest, resume=True) as w:
        w.write(data[:30000])
        raise ConnectionError("link dropped")
    assert not store.has_blob(digest)
    with store.blob_writer(digest, resume=True) as w:
        assert w.offset == 30000
        w.write(data[w.offset:])
    assert store.blob_path(digest).read_bytes() == data
    assert list(store.tmp_dir.iterdir()) == []


def test_missing_blob(store: Store) -> None:
    with pytest.raises(BlobNotFound):
        store.open_blob(sha(b"nope"))
    with pytest.raises(StoreError):
        store.blob_path("md5:abc")


def make_image(store: Store, content: bytes = b"x") -> Descriptor:
    layer = pack_layer(store, [TarEntry("f", "file", data=content)])
    config = {"architecture": "amd64", "os": "linux", "config": {"Labels": {"a": "b"}}}
    return store.write_image(config, [layer], annotations={"x": "y"})


def test_write_image(store: Store) -> None:
    desc = make_image(store)
    manifest = store.read_manifest(desc)
    assert manifest["mediaType"] == MediaType.OCI_MANIFEST
    assert manifest["annotations"] == {"x": "y"}
    config = store.read_config(manifest)
    assert config["rootfs"]["diff_ids"][0].startswith("sha256:")
    assert desc.platform == {"architecture": "amd64", "os": "linux"}
    assert desc.size == store.blob_size(desc.digest)
    index = store.write_index([desc])
    assert store.read_manifest(index)["manifests"][0]["digest"] == desc.digest


def test_tag_resolve_untag(store: Store) -> None:
    one, two = make_image(store, b"1"), make_image(store, b"2")
    store.tag("app:v1", one)
    store.tag(Reference.parse("localhost:5000/app"), two)
    index = json.loads(store.index_path.read_text())
    names = [m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]]
    assert names == ["docker.io/library/app:v1", "localhost:5000/app:latest"]
    assert store.resolve("app:v1").digest == one.digest
    assert store.resolve("docker.io/library/app:v1").digest == one.digest
    assert store.resolve(one.digest[7:19]).digest == one.digest
    assert store.resolve(one.digest).digest == one.digest
    assert store.resolve(f"app@{two.digest}").digest == two.digest
    assert [str(r) for r, _ in store.images()] == [
        "docker.io/library/app:v1", "localhost:5000/app:latest"]
    store.tag("app:v1", two)  # re-pointing a name replaces the entry
    assert store.resolve("app:v1").digest == two.digest
    assert len(store.images()) == 2
    store.untag("app:v1")
    with pytest.raises(ImageNotFound, match="app:v1"):
        store.resolve("app:v1")
    with pytest.raises(ImageNotFound):
        store.untag("app:v1")


def colliding_blobs() -> tuple[bytes, bytes]:
    """Two JSON manifests whose digests share their first 4 hex digits."""
    seen: dict[str, bytes] = {}
    for i in range(100000):
        data = json.dumps({"schemaVersion": 2, "mediaType": MediaType.OCI_MANIFEST,
                           "n": i}).encode()
        prefix = sha(data)[7:11]
        if prefix in seen:
            return seen[prefix], data
        seen[prefix] = data
    raise AssertionError("no collision found")


def test_id_prefixes(store: Store) -> None:
    a, b = colliding_blobs()
    for data in (a, b):
        store.add_untagged(Descriptor(MediaType.OCI_MANIFEST, store.put_bytes(data), len(data)))
    prefix = sha(a)[7:11]
    assert store.match_id(prefix) == sorted([sha(a), sha(b)])
    assert store.match_id(sha(a)[7:20]) == [sha(a)]
    assert store.match_id("sha256:" + sha(b)[7:30]) == [sha(b)]
    assert store.match_id("abc") == []  # fewer than 4 digits never match
    assert store.resolve(sha(a)[7:19]).digest == sha(a)
    assert [r for r, _ in store.entries()] == [None, None]
    assert store.images() == []


def test_records(store: Store) -> None:
    assert store.get_record("build", "k") is None
    store.put_record("build", "k", {"blobs": [sha(b"a")], "n": 1})
    assert store.get_record("build", "k") == {"blobs": [sha(b"a")], "n": 1}
    assert [k for _, k, _ in store.records("build")] == ["k"]
    assert store.delete_records("build") == 1
    assert store.get_record("build", "k") is None
    with pytest.raises(StoreError):
        store.put_record("../x", "k", {})
    with pytest.raises(StoreError):
        store.put_record("build", "k", {"blobs": ["nope"]})


def test_resolve_bad_name(store: Store) -> None:
    with pytest.raises(UsageError):
        store.resolve("Bad Name")
