"""A persistent stat cache: a file's content hash is recomputed only when its stat changed.

The key is xxh3-128 over (device, inode, size, mtime_ns, ctime_ns, mode);
the value is the ``sha256:`` of the content. A file modified within
``RACY_NS`` of the check is hashed but not cached, so a write that lands in
the same timestamp tick as the check cannot leave a stale entry behind.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import struct
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

import xxhash

from kbuild.errors import StoreError

RACY_NS = 50_000_000
_CHUNK = 1 << 20
_PACK = struct.Struct("<QQQqqQ")


def _open_for_hash(path: Path) -> BinaryIO:
    return open(path, "rb", buffering=0)


def hash_file(path: Path) -> str:
    """``sha256:`` of a file's content (always reads it)."""
    h = hashlib.sha256()
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    with _open_for_hash(path) as f:
        while True:
            n = f.readinto(view)  # type: ignore[attr-defined]
            if not n:
                break
            h.update(view[:n])
    return "sha256:" + h.hexdigest()


def stat_key(st: os.stat_result) -> bytes:
    """The cache key of a stat signature."""
    return xxhash.xxh3_128_digest(
        _PACK.pack(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode)
    )


class StatCache:
    """Content digests of files, keyed by their stat signature, persisted in sqlite."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        try:
            self._db = sqlite3.connect(self.path, timeout=30, check_same_thread=False,
                                       isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=OFF")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS stat (key BLOB PRIMARY KEY, digest TEXT NOT NULL)"
            )
        except sqlite3.Error as exc:
            raise StoreError(f"stat cache {self.path}: {exc}") from None

    def lookup(self, st: os.stat_result) -> str | None:
        """The cached digest for this stat signature, if any."""
        with self._lock:
            row = self._db.execute("SELECT digest FROM stat WHERE key=?",
                                   (stat_key(st),)).fetchone()
        return str(row[0]) if row else None

    def file_digest(self, path: Path | str, st: os.stat_result | None = None) -> str:
        """``sha256:`` of the file's content, read only when its stat signature is new."""
        path = Path(path)
        if st is None:
            st = os.stat(path)
        cached = self.lookup(st)
        if cached is not None:
            self.hits += 1
            return cached
        self.misses += 1
        digest = hash_file(path)
        after = os.stat(path)
        if stat_key(after) != stat_key(st):
            return hash_file(path)  # changed while hashing: do not cache
        newest = max(st.st_mtime_ns, st.st_ctime_ns)
        if time.time_ns() - newest >= RACY_NS:
            with self._lock:
                self._db.execute("INSERT OR REPLACE INTO stat (key, digest) VALUES (?, ?)",
                                 (stat_key(st), digest))
        return digest

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> StatCache:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
