"""The stat cache: unchanged files are not read again, changed ones are."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import BinaryIO

import pytest

from kbuild.layerstore import StatCache, _statcache


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every file the stat cache opens to hash."""
    opened: list[Path] = []
    real = _statcache._open_for_hash

    def counting(path: Path) -> BinaryIO:
        opened.append(Path(path))
        return real(path)

    monkeypatch.setattr(_statcache, "_open_for_hash", counting)
    return opened


def settle() -> None:
    time.sleep(_statcache.RACY_NS / 1e9 + 0.02)


def test_unchanged_file_is_not_read_again(tmp_path: Path, reads: list[Path]) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"a" * 5000)
    settle()
    db = tmp_path / "cache" / "stat.db"
    with StatCache(db) as cache:
        first = cache.file_digest(f)
        assert first == "sha256:" + hashlib.sha256(b"a" * 5000).hexdigest()
        assert cache.file_digest(f) == first
        assert reads == [f]
        assert (cache.hits, cache.misses) == (1, 1)
    with StatCache(db) as cache:  # persisted across processes/objects
        assert cache.file_digest(f, os.stat(f)) == first
        assert reads == [f]
        # same size, new content: the stat signature (mtime/ctime) changed → re-hashed
        f.write_bytes(b"b" * 5000)
        settle()
        second = cache.file_digest(f)
        assert second == "sha256:" + hashlib.sha256(b"b" * 5000).hexdigest()
        assert reads == [f, f]
        # chmod changes mode and ctime: re-hashed, same digest
        os.chmod(f, 0o600)
        settle()
        assert cache.file_digest(f) == second
        assert len(reads) == 3


def test_file_changed_in_the_same_tick_is_not_cached(tmp_path: Path, reads: list[Path]) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"racy")
    with StatCache(tmp_path / "stat.db") as cache:
        cache.file_digest(f)  # modified just now: hashed, not cached
        cache.file_digest(f)
        assert len(reads) == 2
        settle()
        cache.file_digest(f)
        cache.file_digest(f)
        assert len(reads) == 3


def test_same_stat_returns_cached_value(tmp_path: Path, reads: list[Path]) -> None:
    # The key is the stat signature alone: a lookup with an identical stat result
    # returns the cached digest even though the bytes on disk were swapped.
    f = tmp_path / "f"
    f.write_bytes(b"old!")
    settle()
    with StatCache(tmp_path / "stat.db") as cache:
        st = os.stat(f)
        old = cache.file_digest(f, st)
        f.write_bytes(b"new!")
        assert cache.file_digest(f, st) == old
        assert cache.file_digest(f) != old
