"""kbuild.fsutil: atomic writes with exact modes and nothing left on failure."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from kbuild import fsutil


def test_atomic_write_replaces_whole_file_with_mode(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"old contents that are longer")
    old_umask = os.umask(0o077)
    try:
        fsutil.atomic_write(target, b"new", mode=0o644)
    finally:
        os.umask(old_umask)
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


def test_write_private_is_0600_in_a_0700_dir(tmp_path: Path) -> None:
    target = tmp_path / "state" / "secret"
    fsutil.write_private(target, b"pw")
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert stat.S_IMODE(target.parent.stat().st_mode) == 0o700


def test_failed_write_leaves_old_file_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"old")

    with pytest.raises(TypeError):
        fsutil.atomic_write(target, "not bytes", mode=0o644)  # type: ignore[arg-type]
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


def test_replacing_renames_on_success_and_removes_temp_on_error(tmp_path: Path) -> None:
    target = tmp_path / "blob"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), fsutil.replacing(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("cut")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blob"]
    with fsutil.replacing(target) as tmp:
        assert tmp.parent == tmp_path and tmp != target
        tmp.write_bytes(b"new")
        assert target.read_bytes() == b"old"
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blob"]
