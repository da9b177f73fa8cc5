"""Unpacking layers: whiteouts, round trips and hostile tars."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from kbuild.errors import StoreError, UnsafeLayerError
from kbuild.layerstore import MediaType, Store, TarEntry, check_layer, pack_layer, unpack_layer


def tar_of(*members: tuple[str, str, str | bytes]) -> bytes:
    """A plain tar: (name, type, data-or-linkname); type in f d s h c."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, kind, payload in members:
            ti = tarfile.TarInfo(name)
            if kind == "f":
                data = payload if isinstance(payload, bytes) else payload.encode()
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
                continue
            ti.type = {"d": tarfile.DIRTYPE, "s": tarfile.SYMTYPE, "h": tarfile.LNKTYPE,
                       "c": tarfile.CHRTYPE}[kind]
            if kind in "sh":
                ti.linkname = str(payload)
            if kind == "d":
                ti.mode = 0o755
            tf.addfile(ti)
    return buf.getvalue()


HOSTILE = [
    ("absolute path", [("/etc/evil", "f", "x")], "absolute", "/etc/evil"),
    ("dot-dot", [("a/../../evil", "f", "x")], "'..'", "a/../../evil"),
    ("symlink out", [("up", "s", "../../..")], "leads outside", "up"),
    ("symlink out from a subdir", [("a", "d", ""), ("a/l", "s", "../.."), ("a/l/evil", "f", "x")],
     "leads outside", "a/l"),
    ("write through symlinks that together lead out",
     [("a", "d", ""), ("a/m", "s", "."), ("a/l", "s", "m/../.."), ("a/l/evil", "f", "x")],
     "leads outside", "a/l"),  # the link itself is refused: its chain leads out
    ("write through absolute symlink",
     [("l", "s", "/tmp"), ("l/evil", "f", "x")], "points outside", "l/evil"),
    ("hard link out", [("h", "h", "../../etc/passwd")], "'..'", "h"),
    ("hard link absolute", [("h", "h", "/etc/passwd")], "absolute", "h"),
    ("hard link through symlink",
     [("l", "s", "/etc"), ("h", "h", "l/passwd")], "points outside", "h"),
    ("device", [("dev/null", "c", "")], "device", "dev/null"),
    ("whiteout of parent", [("a/.wh...", "f", "")], "invalid whiteout", "a/.wh..."),
    ("whiteout through symlink", [("l", "s", "/etc"), ("l/.wh.passwd", "f", "")],
     "points outside", "l/.wh.passwd"),
    ("opaque dir through symlink", [("l", "s", "/etc"), ("l/.wh..wh..opq", "f", "")],
     "points outside", "l/.wh..wh..opq"),
    ("symlink loop", [("a", "s", "b"), ("b", "s", "a"), ("a/x", "f", "x")],
     "too many levels", "a/x"),
    ("symlink chain out", [("s", "s", "."), ("t", "s", "s/..")], "leads outside", "t"),
    ("symlink chain out, the link it goes through comes later",
     [("t", "s", "s/.."), ("s", "s", ".")], "leads outside", "t"),
    ("symlink chain out from a subdir",
     [("a", "d", ""), ("a/s", "s", ".."), ("a/t", "s", "s/..")], "leads outside", "a/t"),
    ("symlink chain out through a directory link",
     [("a", "d", ""), ("a/b", "d", ""), ("up", "s", "a/b/../.."), ("a/b", "s", "..")],
     "leads outside", "up"),
    ("symlink loop, nothing written through it", [("a", "s", "b"), ("b", "s", "a")],
     "too many levels", "a"),
]


@pytest.mark.parametrize(("why", "members", "message", "entry"), HOSTILE,
                         ids=[h[0] for h in HOSTILE])
def test_hostile_tars_are_refused(
    tmp_path: Path, why: str, members: list[tuple[str, str, str]], message: str, entry: str
) -> None:
    data = tar_of(*members)
    target = tmp_path / "root" / "a" / "b"
    with pytest.raises(UnsafeLayerError) as info:
        unpack_layer(io.BytesIO(data), target, media_type=MediaType.OCI_LAYER)
    assert message in str(info.value)
    assert f"layer entry {entry!r}" in str(info.value)
    root = tmp_path / "root"
    for outside in (tmp_path / "evil", root / "evil", root / "a" / "evil"):
        assert not outside.exists()
    with pytest.raises(UnsafeLayerError) as info:
        check_layer(io.BytesIO(data), MediaType.OCI_LAYER)
    assert f"layer entry {entry!r}" in str(info.value)


def test_symlink_from_an_earlier_layer_is_not_written_through(tmp_path: Path) -> None:
    target = tmp_path / "t"
    outside = tmp_path / "outside"
    outside.mkdir()
    target.mkdir()
    os.symlink(outside, target / "etc")
    with pytest.raises(UnsafeLayerError, match="'etc/passwd'"):
        unpack_layer(io.BytesIO(tar_of(("etc/passwd", "f", "x"))), target,
                     media_type=MediaType.OCI_LAYER)
    assert list(outside.iterdir()) == []


def test_symlink_chain_through_an_earlier_layer_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "root" / "t"
    unpack_layer(io.BytesIO(tar_of(("d", "d", ""), ("up", "s", "d/.."))), target,
                 media_type=MediaType.OCI_LAYER)
    with pytest.raises(UnsafeLayerError, match=r"layer entry 'up' is a symlink to 'd/\.\.'"):
        unpack_layer(io.BytesIO(tar_of(("d", "s", "."))), target,
                     media_type=MediaType.OCI_LAYER)


def test_symlink_chains_that_stay_inside_are_kept(tmp_path: Path) -> None:
    data = tar_of(("a", "d", ""), ("a/b", "d", ""), ("a/s", "s", "b"), ("a/t", "s", "s/../.."),
                  ("u", "s", "a/s/../s"), ("abs", "s", "/x/../.."), ("a/via-abs", "s", "../abs/y"),
                  ("dangling", "s", "nowhere/.."))
    target = tmp_path / "t"
    unpack_layer(io.BytesIO(data), target, media_type=MediaType.OCI_LAYER)
    assert os.readlink(target / "a" / "t") == "s/../.."
    assert os.path.realpath(target / "u") == str((target / "a" / "b").resolve())
    check_layer(io.BytesIO(data), MediaType.OCI_LAYER)


def test_safe_links_inside_are_followed(tmp_path: Path) -> None:
    # merged-/usr style: lib -> usr/lib, a later entry is written through it
    data = tar_of(("usr", "d", ""), ("usr/lib", "d", ""), ("lib", "s", "usr/lib"),
                  ("lib/libx.so", "f", "so"), ("abs", "s", "/usr/lib/libx.so"),
                  ("h", "h", "lib/libx.so"))
    target = tmp_path / "t"
    unpack_layer(io.BytesIO(data), target, media_type=None)
    assert (target / "usr" / "lib" / "libx.so").read_text() == "so"
    assert os.readlink(target / "abs") == "/usr/lib/libx.so"
    assert os.stat(target / "h").st_ino == os.stat(target / "usr" / "lib" / "libx.so").st_ino
    check_layer(io.BytesIO(data), MediaType.OCI_LAYER)


def test_devices_when_allowed(tmp_path: Path) -> None:
    data = tar_of(("dev", "d", ""), ("dev/null", "c", ""))
    unpack_layer(io.BytesIO(data), tmp_path / "t", media_type=MediaType.OCI_LAYER,
                 allow_devices=True)
    assert stat.S_ISCHR(os.lstat(tmp_path / "t" / "dev" / "null").st_mode)


def test_replacing_a_symlink_does_not_write_through_it(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep")
    target = tmp_path / "t"
    target.mkdir()
    os.symlink(victim, target / "f")  # left by an earlier layer
    unpack_layer(io.BytesIO(tar_of(("f", "f", "new"))), target, media_type=MediaType.OCI_LAYER)
    assert victim.read_text() == "keep"
    assert (target / "f").read_text() == "new" and not (target / "f").is_symlink()


def test_whiteouts_applied(store: Store, tmp_path: Path) -> None:
    target = tmp_path / "t"
    (target / "etc" / "opq").mkdir(parents=True)
    (target / "etc" / "opq" / "old").write_text("old")
    (target / "etc" / "gone").write_text("g")
    (target / "etc" / "kept").write_text("k")
    layer = pack_layer(store, [
        TarEntry("etc", "dir", 0o755),
        TarEntry("etc/gone", "whiteout"),
        TarEntry("etc/opq", "dir", 0o700),
        TarEntry("etc/opq", "opaque"),
        TarEntry("etc/opq/-early", "file", data=b"e"),  # sorts before .wh..wh..opq
        TarEntry("etc/opq/new", "file", data=b"n"),
    ])
    with store.open_blob(layer.digest) as f:
        diff_id = unpack_layer(f, target, media_type=layer.media_type)
    assert diff_id == layer.diff_id
    assert sorted(p.name for p in (target / "etc").iterdir()) == ["kept", "opq"]
    assert sorted(p.name for p in (target / "etc" / "opq").iterdir()) == ["-early", "new"]
    assert stat.S_IMODE(os.stat(target / "etc" / "opq").st_mode) == 0o700


def test_whiteouts_overlay_form(store: Store, tmp_path: Path) -> None:
    layer = pack_layer(store, [TarEntry("d", "dir", 0o755), TarEntry("d/x", "whiteout"),
                               TarEntry("d", "opaque")])
    target = tmp_path / "t"
    with store.open_blob(layer.digest) as f:
        unpack_layer(f, target, media_type=layer.media_type, whiteouts="overlay")
    st = os.lstat(target / "d" / "x")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert os.getxattr(target / "d", "trusted.overlay.opaque") == b"y"


def test_round_trip_keeps_modes_owners_and_times(store: Store, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"data" * 100000)
    layer = pack_layer(store, [
        TarEntry("bin", "dir", 0o755, mtime=1000),
        TarEntry("bin/tool", "file", 0o4755, source=src / "f", mtime=2000),
        TarEntry("bin/t2", "hardlink", 0o4755, linkname="bin/tool"),
        TarEntry("fifo", "fifo", 0o644),
    ])
    target = tmp_path / "t"
    with store.open_blob(layer.digest) as f:
        unpack_layer(f, target, media_type=layer.media_type)
    st = os.stat(target / "bin" / "tool")
    assert stat.S_IMODE(st.st_mode) == 0o4755
    assert st.st_mtime == 2000 and os.stat(target / "bin").st_mtime == 1000
    assert (st.st_uid, st.st_gid) == (0, 0)
    assert (target / "bin" / "tool").read_bytes() == (src / "f").read_bytes()
    assert stat.S_ISFIFO(os.lstat(target / "fifo").st_mode)


def test_corrupt_stream(tmp_path: Path) -> None:
    data = tar_of(("a", "f", "x" * 5000))
    with pytest.raises(StoreError):
        unpack_layer(io.BytesIO(b"\x28\xb5\x2f\xfd" + data[:3000]), tmp_path / "t",
                     media_type=None)


def test_file_capabilities_round_trip(store: Store, tmp_path: Path) -> None:
    # VFS_CAP_REVISION_2 + effective, all low capabilities permitted: non-UTF-8 bytes
    cap = bytes.fromhex("01000002" "ffffffff" "00000000" "ff010000" "00000000")
    layer = pack_layer(store, [TarEntry("ping", "file", 0o755, data=b"\x7fELF",
                                        xattrs={"security.capability": cap})])
    with store.open_blob(layer.digest) as f:
        unpack_layer(f, tmp_path / "t", media_type=layer.media_type)
    assert os.getxattr(tmp_path / "t" / "ping", "security.capability") == cap


@pytest.mark.parametrize("compression", ["zstd", "gzip", "none"])
@pytest.mark.parametrize("sniff", [False, True])
def test_every_compression_unpacks(store: Store, tmp_path: Path, compression: str,
                                   sniff: bool) -> None:
    layer = pack_layer(store, [TarEntry("d", "dir", 0o755),
                               TarEntry("d/f", "file", data=b"payload" * 1000)],
                       compression=compression)
    with store.open_blob(layer.digest) as f:
        diff_id = unpack_layer(f, tmp_path / "t",
                               media_type=None if sniff else layer.media_type)
    assert diff_id == layer.diff_id
    assert (tmp_path / "t" / "d" / "f").read_bytes() == b"payload" * 1000
    with store.open_blob(layer.digest) as f:
        assert check_layer(f, None if sniff else layer.media_type) == layer.diff_id
