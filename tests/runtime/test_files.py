"""Executor.put_files / put_file / read_file: the one way kbuild writes files on
hosts, run for real on this machine (the same commands go over SSH)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from kbuild.errors import HostError, UsageError
from kbuild.runtime.executor import FileSpec
from kbuild.runtime.local import LocalConnection


@pytest.fixture
def conn() -> LocalConnection:
    return LocalConnection("local")


def test_only_what_differs_is_written(conn: LocalConnection, tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    root.mkdir()
    files = {"etc/a.conf": b"a=1\n", "etc/kbuild/b.bin": FileSpec(bytes(range(256)), 0o600)}
    assert conn.put_files(files, root=str(root)) == ["etc/a.conf", "etc/kbuild/b.bin"]
    assert (root / "etc/kbuild/b.bin").read_bytes() == bytes(range(256))
    assert stat.S_IMODE((root / "etc/kbuild/b.bin").stat().st_mode) == 0o600
    assert stat.S_IMODE((root / "etc").stat().st_mode) == 0o755
    inode = (root / "etc/a.conf").stat().st_ino
    assert conn.put_files(files, root=str(root)) == []  # unchanged: nothing sent
    assert (root / "etc/a.conf").stat().st_ino == inode
    # a mode or a byte of difference is written again, by rename (a new inode)
    assert conn.put_files({"etc/a.conf": FileSpec(b"a=1\n", 0o640)}, root=str(root)) == [
        "etc/a.conf"
    ]
    assert (root / "etc/a.conf").stat().st_ino != inode
    assert conn.read_file("etc/kbuild/b.bin", root=str(root)) == bytes(range(256))
    assert conn.read_file("etc/none", root=str(root)) is None
    assert not [p for p in (root / "etc").iterdir() if ".kbuild." in p.name]


def test_no_write_or_read_through_a_symlink_of_the_rootfs(
    conn: LocalConnection, tmp_path: Path
) -> None:
    """An image's ``etc -> /somewhere`` cannot redirect kbuild's writes or reads."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("keep")
    root = tmp_path / "rootfs"
    root.mkdir()
    (root / "etc").symlink_to(outside)
    with pytest.raises(HostError, match="etc is a symlink"):
        conn.put_files({"etc/secret": b"overwritten"}, root=str(root))
    with pytest.raises(HostError, match="etc is a symlink"):
        conn.read_file("etc/secret", root=str(root))
    assert (outside / "secret").read_text() == "keep"
    assert sorted(os.listdir(outside)) == ["secret"]
    # the final name may be a symlink: it is replaced, not followed
    (root / "x").symlink_to(outside / "secret")
    conn.put_files({"x": b"mine"}, root=str(root))
    assert (root / "x").read_bytes() == b"mine" and not (root / "x").is_symlink()
    assert (outside / "secret").read_text() == "keep"


def test_absolute_files_and_bad_paths(conn: LocalConnection, tmp_path: Path) -> None:
    target = tmp_path / "base" / "pki" / "key"
    assert conn.put_file(str(target), b"k", 0o600)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert not conn.put_file(str(target), b"k", 0o600)
    for path, root in (("../x", str(tmp_path)), ("a/../../x", str(tmp_path)), ("rel", None),
                       ("/abs", str(tmp_path)), ("a\nb", str(tmp_path))):  # fmt: skip
        with pytest.raises(UsageError):
            conn.put_files({path: b""}, root=root)
