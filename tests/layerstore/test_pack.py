"""Deterministic one-pass layer packing."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest
import zstandard

from kbuild.errors import StoreError
from kbuild.layerstore import MediaType, Store, TarEntry, pack_layer, pack_tree, tree_entries


def make_tree(root: Path, mtime: int) -> None:
    (root / "b" / "deep").mkdir(parents=True)
    (root / "a").mkdir()
    (root / "a" / "x.txt").write_bytes(b"x" * 1000)
    (root / "b" / "deep" / "y.bin").write_bytes(bytes(range(256)) * 4000)
    (root / "z").write_bytes(b"")
    os.symlink("a/x.txt", root / "link")
    os.link(root / "a" / "x.txt", root / "b" / "hard")
    (root / "exe").write_bytes(b"#!/bin/sh\n")
    os.chmod(root / "exe", 0o755)
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            os.utime(os.path.join(dirpath, n), (mtime, mtime), follow_symlinks=False)


def members(store: Store, digest: str) -> list[tarfile.TarInfo]:
    with store.open_blob(digest) as f:
        raw = zstandard.ZstdDecompressor().stream_reader(f).read()
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        return tf.getmembers()


def test_same_input_same_digest_on_other_machine(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    make_tree(one, 1800000000)  # newer than SOURCE_DATE_EPOCH: clamped
    make_tree(two, 1900000000)
    os.chown(two / "a" / "x.txt", 1234, 5678)  # owners are normalized
    a = pack_tree(store, one)
    b = pack_tree(store, two)
    assert a == b
    assert a.media_type == MediaType.OCI_LAYER_ZSTD
    names = [m.name for m in members(store, a.digest)]
    assert names == sorted(names, key=lambda n: n.encode())
    for m in members(store, a.digest):
        assert (m.uid, m.gid, m.uname, m.gname) == (0, 0, "", "")
        assert m.mtime == 1700000000
    # Without the clamp, the mtimes differ and so do the digests.
    monkeypatch.delenv("SOURCE_DATE_EPOCH")
    assert pack_tree(store, one).diff_id != pack_tree(store, two).diff_id


def test_digests_are_sha256_of_both_streams(store: Store, tmp_path: Path) -> None:
    (tmp_path / "t").mkdir()
    make_tree(tmp_path / "t", 1600000000)
    for compression, media, decompress in [
        ("zstd", MediaType.OCI_LAYER_ZSTD,
         lambda b: zstandard.ZstdDecompressor().stream_reader(io.BytesIO(b)).read()),
        ("gzip", MediaType.OCI_LAYER_GZIP, gzip.decompress),
        ("none", MediaType.OCI_LAYER, lambda b: b),
    ]:
        info = pack_tree(store, tmp_path / "t", compression=compression, level=3, threads=1)
        blob = store.blob_path(info.digest).read_bytes()
        assert info.media_type == media
        assert info.digest == "sha256:" + hashlib.sha256(blob).hexdigest()
        assert info.size == len(blob)
        tar = decompress(blob)
        assert info.diff_id == "sha256:" + hashlib.sha256(tar).hexdigest()
        assert info.uncompressed_size == len(tar)


def test_gnu_tar_reads_the_layer(store: Store, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    make_tree(src, 1600000000)
    info = pack_tree(store, src, compression="none")
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(["tar", "-xf", str(store.blob_path(info.digest)), "-C", str(out)], check=True)
    subprocess.run(["diff", "-r", "--no-dereference", str(src), str(out)], check=True)
    assert os.stat(out / "b" / "hard").st_ino == os.stat(out / "a" / "x.txt").st_ino
    assert os.stat(out / "exe").st_mode & 0o777 == 0o755


def test_pax_only_when_needed(store: Store) -> None:
    long_name = "d/" + "n" * 150 + "/" + "f" * 120
    entries = [
        TarEntry("short", "file", data=b"1"),
        TarEntry("split/" + "p" * 120 + "/file", "file", data=b"2"),  # fits ustar prefix
        TarEntry(long_name, "file", data=b"3"),
        TarEntry("ünicode", "file", data=b"4"),
        TarEntry("longlink", "symlink", linkname="t" * 150),
    ]
    info = pack_layer(store, entries, compression="none")
    raw = store.blob_path(info.digest).read_bytes()
    # Count PAX headers ('x' typeflag at offset 156 of a header block).
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        ms = {m.name: m for m in tf.getmembers()}
        assert ms["short"].pax_headers == {}
        assert ms["split/" + "p" * 120 + "/file"].pax_headers == {}
        assert ms[long_name].pax_headers == {"path": long_name}
        assert ms["ünicode"].pax_headers == {"path": "ünicode"}
        assert ms["longlink"].linkname == "t" * 150
        assert tf.extractfile(ms[long_name]).read() == b"3"  # type: ignore[union-attr]
    assert raw.count(b"././@PaxHeader") == 3


def test_hard_link_before_its_target_is_reordered(store: Store) -> None:
    info = pack_layer(store, [TarEntry("z", "file", 0o600, data=b"content"),
                              TarEntry("a", "hardlink", 0o600, linkname="z"),
                              TarEntry("m", "hardlink", 0o600, linkname="z")])
    ms = {m.name: m for m in members(store, info.digest)}
    assert ms["a"].isreg() and ms["a"].size == 7
    assert ms["m"].islnk() and ms["m"].linkname == "a"
    assert ms["z"].islnk() and ms["z"].linkname == "a"


def test_overlay_upper_whiteouts(store: Store, tmp_path: Path) -> None:
    upper = tmp_path / "upper"
    (upper / "etc" / "opaque").mkdir(parents=True)
    (upper / "etc" / "opaque" / "new").write_text("n")
    os.setxattr(upper / "etc" / "opaque", "trusted.overlay.opaque", b"y")
    os.mknod(upper / "etc" / "gone", 0o600 | 0o020000, os.makedev(0, 0))
    info = pack_tree(store, upper, overlay_upper=True)
    names = [m.name for m in members(store, info.digest)]
    assert names == ["etc", "etc/.wh.gone", "etc/opaque", "etc/opaque/.wh..wh..opq",
                     "etc/opaque/new"]
    kinds = {e.path: e.kind for e in tree_entries(upper)}
    assert kinds["etc/gone"] == "char"  # without overlay_upper it is a device


def test_bad_entries(store: Store) -> None:
    with pytest.raises(StoreError, match="duplicate"):
        pack_layer(store, [TarEntry("a", "file", data=b""), TarEntry("./a", "file", data=b"")])
    with pytest.raises(StoreError, match="invalid path"):
        pack_layer(store, [TarEntry("../a", "file", data=b"")])
    with pytest.raises(StoreError, match="hard link"):
        pack_layer(store, [TarEntry("a", "hardlink", linkname="b")])
    assert list(store.tmp_dir.iterdir()) == []  # failed packs leave no temp files


def test_file_shrinking_while_packing_fails(store: Store, tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.write_bytes(b"y" * (12 << 20))
    truncated = []

    def progress(_: object) -> None:  # fires after 8 MiB, in the middle of the file
        if not truncated:
            truncated.append(True)
            os.truncate(big, 1)

    with pytest.raises(StoreError, match="shrank"):
        pack_layer(store, [TarEntry("big", "file", source=big)], progress=progress)
    assert truncated
    assert list(store.tmp_dir.iterdir()) == []


def test_digest_does_not_depend_on_thread_count(store: Store, tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.write_bytes(bytes(range(256)) * 40000 + os.urandom(3 << 20))
    digests = {
        pack_layer(store, [TarEntry("big", "file", source=big)], threads=n).digest
        for n in (1, 2, 3)
    }
    assert len(digests) == 1


def test_write_failure_cleans_up(store: Store, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # A full disk cannot be produced on demand here; fail the blob write instead.
    import errno
    import threading

    from kbuild.layerstore import _blobs

    real = _blobs.BlobWriter.write
    calls = []

    def failing(self: _blobs.BlobWriter, data: bytes) -> int:
        calls.append(len(data))
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, data)

    monkeypatch.setattr(_blobs.BlobWriter, "write", failing)
    big = tmp_path / "big"
    big.write_bytes(os.urandom(12 << 20))
    with pytest.raises(StoreError, match=r"cannot write a layer into .*: No space left"):
        pack_layer(store, [TarEntry("big", "file", source=big)], threads=1)
    assert list(store.tmp_dir.iterdir()) == []
    assert list(store.blob_dir.iterdir()) == []
    assert not [t for t in threading.enumerate() if t.name.startswith("kbuild-")]
