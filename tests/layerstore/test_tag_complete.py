"""A name only ever points at a complete tree: tag checks every blob under the store lock."""

from __future__ import annotations

import os
import threading
import time

import pytest

from kbuild.errors import BlobNotFound
from kbuild.layerstore import Store, TarEntry, pack_layer


def _image(store: Store) -> tuple[str, list[str]]:
    layer = pack_layer(store, [TarEntry("f", "file", data=b"data")])
    desc = store.write_image({"os": "linux", "architecture": "amd64"}, [layer])
    config = store.read_manifest(desc)["config"]["digest"]
    store.tag("app:1", desc)
    return desc.digest, [config, layer.digest]


def test_tag_and_add_untagged_refuse_a_tree_with_a_missing_blob(store: Store) -> None:
    digest, (config, layer) = _image(store)
    desc = store.resolve("app:1")
    store.untag("app:1")
    os.unlink(store.blob_path(layer))
    with pytest.raises(BlobNotFound, match=f"cannot tag app:2: blob {layer} is not in the store"):
        store.tag("app:2", desc)
    with pytest.raises(BlobNotFound, match=f"blob {layer}"):
        store.add_untagged(desc)
    assert store.entries() == []
    os.unlink(store.blob_path(config))
    assert sorted(store.missing_blobs(digest)) == sorted([config, layer])


def test_a_prune_waiting_for_the_lock_sees_the_tag(store: Store) -> None:
    """tag's check and write happen under the lock GC takes: GC runs before or after, whole."""
    _, blobs = _image(store)
    desc = store.resolve("app:1")
    store.untag("app:1")
    old = time.time() - 3600
    for blob in store.blob_dir.iterdir():
        os.utime(blob, (old, old))
    other = Store(store.root)  # another process's view: its own lock file descriptor
    holding, release = threading.Event(), threading.Event()

    def tag_while_holding_the_lock() -> None:
        with store.lock():
            holding.set()
            release.wait(10)
            store.tag("app:1", desc)

    tagger = threading.Thread(target=tag_while_holding_the_lock)
    tagger.start()
    assert holding.wait(10)
    removed: list[list[str]] = []
    pruner = threading.Thread(target=lambda: removed.append(other.gc(blob_grace=0).blobs_removed))
    pruner.start()
    time.sleep(0.2)
    assert not removed  # GC waits for the lock
    release.set()
    tagger.join(10)
    pruner.join(10)
    assert removed == [[]] and store.fsck() == []
    assert all(store.has_blob(b) for b in blobs)


def test_gc_and_fsck_survive_manifests_pointing_at_odd_digests(store: Store) -> None:
    import json

    from kbuild.layerstore import Descriptor, MediaType

    odd = json.dumps({"schemaVersion": 2, "manifests": [{"digest": "sha512:" + "a" * 128},
                                                         {"digest": ["x"]}]}).encode()
    store.put_record("build", "odd", {"blobs": [store.put_bytes(odd)]})
    store.add_untagged(Descriptor(MediaType.OCI_INDEX, store.put_bytes(odd), len(odd)))
    assert store.gc(blob_grace=0).blobs_removed == []
    assert store.fsck() == []
