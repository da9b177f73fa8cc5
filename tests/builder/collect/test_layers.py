"""Reading layers for the collection: the files wanted, and the registry blobs layers hold."""

from __future__ import annotations

from pathlib import Path

from kbuild.builder.collect.layers import extract_matching, prefix_filter, registry_blobs
from kbuild.builder.state import BaseLayer
from kbuild.layerstore import Store, TarEntry, pack_layer

A, B, C = ("sha256:" + c * 64 for c in "abc")


def _data(digest: str) -> str:
    hexd = digest[7:]
    return f"registry/docker/registry/v2/blobs/sha256/{hexd[:2]}/{hexd}/data"


def _layer(store: Store, entries: list[TarEntry]) -> BaseLayer:
    info = pack_layer(store, entries, compression="zstd", level=1)
    return BaseLayer(info.digest, info.diff_id, info.size, info.uncompressed_size,
                     info.media_type)


def _file(path: str, data: bytes = b"x") -> TarEntry:
    return TarEntry(path, "file", 0o644, data=data, size=len(data))


def test_registry_blobs_follow_whiteouts_and_are_remembered(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    one = _layer(store, [_file(_data(A)), _file(_data(B)), _file("bin/tool")])
    two = _layer(store, [TarEntry(_data(A).rsplit("/", 1)[0], "whiteout", 0),
                         _file(_data(C))])
    assert registry_blobs(store, [one]) == {A, B}
    assert registry_blobs(store, [one, two]) == {B, C}
    three = _layer(store, [TarEntry("registry", "opaque", 0), _file(_data(A))])
    assert registry_blobs(store, [one, two, three]) == {A}
    # read once: the answer is in a record, the blob is no longer needed
    store.blob_path(one.digest).unlink()
    assert registry_blobs(store, [one]) == {A, B}


def test_extract_matching_applies_whiteouts_and_hard_links(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    first = _layer(store, [_file("manifests/a.yaml", b"a"), _file("manifests/old.yaml"),
                           _file("application/apps/web/w.yaml", b"w"), _file("bin/big")])
    second = _layer(store, [
        TarEntry("manifests/old.yaml", "whiteout", 0),
        TarEntry("application/apps/web", "opaque", 0),
        _file("application/apps/web/new.yaml", b"n"),
        _file("etc/named.yaml", b"e"),
        TarEntry("manifests/link.yaml", "hardlink", 0o644, linkname="etc/named.yaml"),
    ])
    out = tmp_path / "out"
    extract_matching(store, [first, second], out,
                     prefix_filter(["manifests", "application/apps"], {"etc/named.yaml"}))
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == ["application/apps/web/new.yaml", "etc/named.yaml", "manifests/a.yaml",
                     "manifests/link.yaml"]
    assert (out / "manifests/link.yaml").read_bytes() == b"e"
