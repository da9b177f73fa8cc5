"""The runtime's local layer scan: names of templates and whiteouts, read through layerstore."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from kbuild.errors import StoreError
from kbuild.layerstore import MediaType, Store, TarEntry, pack_layer
from kbuild.runtime.image import Layer
from kbuild.runtime.layers import final_templates, open_tar, scan_layer


def _layer(store: Store, entries: list[TarEntry], compression: str = "zstd") -> Layer:
    info = pack_layer(store, entries, compression=compression)
    return Layer(info.digest, info.diff_id, info.media_type, info.size)


def test_dot_files_and_root_whiteouts_keep_their_names(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    base = _layer(store, [
        TarEntry(".env.tmpl", "file", 0o644, data=b"A={{ a }}\n"),
        TarEntry("etc/..hidden.tmpl", "file", 0o644, data=b"h\n"),
        TarEntry("x.tmpl", "file", 0o644, data=b"x\n"),
        TarEntry(".d", "dir", 0o755),
        TarEntry(".d/y.tmpl", "file", 0o644, data=b"y\n"),
    ])
    scan = scan_layer(store, base)
    assert sorted(scan.templates) == [".d/y.tmpl", ".env.tmpl", "etc/..hidden.tmpl", "x.tmpl"]
    upper = scan_layer(store, _layer(store, [TarEntry("x.tmpl", "whiteout"),
                                             TarEntry(".d", "opaque")]))
    assert upper.deleted == ["x.tmpl"]
    assert upper.opaque == [".d"]
    assert sorted(final_templates([scan, upper])) == [".env.tmpl", "etc/..hidden.tmpl"]


@pytest.mark.parametrize("compression", ["zstd", "gzip", "none"])
def test_open_tar_decompresses_by_media_type(tmp_path: Path, compression: str) -> None:
    store = Store(tmp_path / "store")
    layer = _layer(store, [TarEntry("f", "file", 0o644, data=b"content")], compression)
    with open_tar(store, layer) as stream:
        data = stream.read()
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tf:
        member = tf.extractfile("f")
        assert member is not None and member.read() == b"content"


def test_open_tar_of_a_corrupt_blob_is_a_store_error(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    digest = store.put_bytes(b"\x28\xb5\x2f\xfd" + b"not zstd at all" * 10)
    layer = Layer(digest, "sha256:" + "0" * 64, MediaType.OCI_LAYER_ZSTD, 154)
    with pytest.raises(StoreError, match="layer stream is corrupt"), \
            open_tar(store, layer) as stream:
        stream.read()


def test_a_layer_of_only_registry_entries_is_marked_so(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    blob = "registry/docker/registry/v2/blobs/sha256/ab/" + "ab" * 32 + "/data"
    only = _layer(store, [TarEntry("registry", "dir", 0o755),
                          TarEntry(blob, "file", 0o644, data=b"blob")])
    mixed = _layer(store, [TarEntry(blob, "file", 0o644, data=b"blob"),
                           TarEntry("manifests/x.yaml", "file", 0o644, data=b"kind: X\n")])
    # a name that merely starts like it is another top-level entry
    lookalike = _layer(store, [TarEntry("registry2/x", "file", 0o644, data=b"x")])
    empty = _layer(store, [])
    assert [scan_layer(store, x).registry_only for x in (only, mixed, lookalike, empty)] == [
        True, False, False, False]
    # and so it reads back from the store's record
    again = Store(tmp_path / "store")
    assert scan_layer(again, only).registry_only is True
