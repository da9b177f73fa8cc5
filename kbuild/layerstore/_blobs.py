"""Writing blobs: temp file, streaming sha256, fsync, verify, rename."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import secrets
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

from kbuild.errors import DigestMismatch, StoreError
from kbuild.fsutil import fsync_dir

_DIGEST_RE = re.compile(r"^sha256:[a-f0-9]{64}$")
_CHUNK = 1 << 20


def check_digest(digest: str) -> str:
    """Return the hex part of a ``sha256:`` digest, or raise :class:`StoreError`."""
    if not isinstance(digest, str) or not _DIGEST_RE.match(digest):
        raise StoreError(f"not a sha256 digest: {digest!r}")
    return digest[7:]


def canonical_json(obj: Any) -> bytes:
    """The bytes kbuild stores for a JSON document (sorted keys, compact)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class BlobWriter:
    """Context manager that streams data into a blob of the store.

    Data goes to a temp file under ``root/tmp``; on a clean exit the file is
    fsynced, its sha256 compared with ``expected`` (if given) and renamed to
    ``blobs/sha256/<hex>``. On an exception nothing appears under a digest
    (with ``resume=True`` the partial file is kept for the next attempt).
    """

    def __init__(
        self, blob_dir: Path, tmp_dir: Path, expected: str | None = None, *, resume: bool = False
    ) -> None:
        if expected is not None:
            check_digest(expected)
        self.expected = expected
        self.resume = bool(resume and expected)
        self._blob_dir = blob_dir
        self._hash = hashlib.sha256()
        self.offset = 0
        self._digest: str | None = None
        self._closed = False
        tmp_dir.mkdir(parents=True, exist_ok=True)
        self._file: BinaryIO
        if self.resume and expected is not None:
            path = tmp_dir / f"partial-{expected[7:]}"
            f = open(path, "a+b")  # noqa: SIM115 - owned by the writer
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                # Another process resumes this digest: take a fresh temp file.
                f.close()
                self.resume = False
            else:
                f.seek(0)
                while True:
                    chunk = f.read(_CHUNK)
                    if not chunk:
                        break
                    self._hash.update(chunk)
                    self.offset += len(chunk)
                self._path = path
                self._file = f
                return
        self._path = tmp_dir / f"blob-{secrets.token_hex(12)}"
        self._file = open(self._path, "xb")  # noqa: SIM115 - owned by the writer

    @property
    def temp_path(self) -> Path:
        """Where the data is written until the blob is committed."""
        return self._path

    @property
    def digest(self) -> str:
        """The blob's digest (available after a clean close)."""
        if self._digest is None:
            raise StoreError("blob writer: digest is known only after close")
        return self._digest

    @property
    def size(self) -> int:
        """Bytes written so far (including resumed bytes)."""
        return self.offset

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Append ``data``; returns its length."""
        n = self._file.write(data)
        self._hash.update(data)
        self.offset += len(data)
        return n if n is not None else len(data)

    def commit(self) -> str:
        """fsync, verify, rename into place; returns the digest."""
        if self._closed:
            return self.digest
        self._closed = True
        f = self._file
        try:
            f.flush()
            os.fsync(f.fileno())
        finally:
            f.close()
        actual = "sha256:" + self._hash.hexdigest()
        if self.expected is not None and actual != self.expected:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path)
            raise DigestMismatch(self.expected, actual)
        final = self._blob_dir / actual[7:]
        if final.exists():
            os.unlink(self._path)
            with contextlib.suppress(OSError):
                os.utime(final)  # a re-written blob counts as fresh for GC
        else:
            os.replace(self._path, final)
            fsync_dir(self._blob_dir)
        self._digest = actual
        return actual

    def abort(self) -> None:
        """Drop the data (a resumable partial file is kept)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._file.flush()
        finally:
            self._file.close()
        if not self.resume:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path)

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()
