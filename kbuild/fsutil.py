"""Crash-safe file writes shared by every package: temp file, fsync, rename.

A reader sees either the old file or the complete new one, never a partial
write; a failed write leaves no temp file behind.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """fsync a directory so a rename in it survives a crash."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def replacing(path: Path, *, tmp_dir: Path | None = None) -> Iterator[Path]:
    """A temp path to write ``path``'s new content to (in ``tmp_dir``, default
    next to ``path``; same file system). On a clean exit it replaces ``path``
    in one rename; on any error it is removed, so no half-written file stays."""
    tmp = (tmp_dir or path.parent) / f".{path.name}.{secrets.token_hex(8)}.tmp"
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write(
    path: Path,
    data: bytes,
    *,
    mode: int = 0o644,
    tmp_dir: Path | None = None,
    sync_dir: bool = True,
) -> None:
    """Write ``data`` to ``path`` atomically, the file getting ``mode``.

    The temp file is created with ``mode`` already set (never wider, even for
    a moment), in ``tmp_dir`` (default: next to ``path``; it must be on the
    same file system).
    """
    with replacing(path, tmp_dir=tmp_dir) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)  # O_CREAT's mode is cut by the umask
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    if sync_dir:
        fsync_dir(path.parent)


def write_private(path: Path, data: bytes) -> None:
    """Write a file that holds secrets: mode 0600, in a directory made 0700 if new."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic_write(path, data, mode=0o600)
